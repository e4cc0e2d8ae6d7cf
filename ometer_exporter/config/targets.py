"""The ``targets`` list: each Ollama server with its own overrides, or the default ``local``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from ometer_exporter.config.api_keys import read_api_key
from ometer_exporter.config.benchmark import (
    BENCHMARK_KEYS,
    check_timeout_order,
    first,
    parse_benchmark,
)
from ometer_exporter.config.checks import Checker, join_path, show
from ometer_exporter.config.settings import (
    DEFAULT_LOCAL_URL,
    ApiMode,
    BenchmarkSettings,
    SelectMode,
    TargetSettings,
)
from ometer_exporter.config.urls import is_cloud_host, normalize_ollama_host

_TARGET_KEYS: Final = (
    "name", "url", "api", "cloud", "api_key_env", "api_key_file", "select", "include", "exclude",
    *BENCHMARK_KEYS,
)  # fmt: skip
_TARGET_HINTS: Final = {
    "api_key": "the key itself never goes in this file: put it in an environment variable or a "
    "file and name that with api_key_env or api_key_file",
}
_SELECT_MODES: Final[dict[str, SelectMode]] = {"loaded": "loaded", "all": "all"}
_API_MODES: Final[dict[str, ApiMode]] = {"ollama": "ollama", "openai": "openai"}
OPENAI_URL_EXAMPLE: Final = "http://localhost:8080/v1"
_TARGET_NAME: Final = re.compile(r"[A-Za-z0-9_.-]+")


def parse_targets(
    checker: Checker,
    value: object,
    defaults: BenchmarkSettings,
    env: Mapping[str, str],
    base_dir: str,
    *,
    api_keys: bool = True,
) -> tuple[TargetSettings, ...]:
    """The file's `targets`; `defaults` is the `benchmark` section, `base_dir` the file's.
    `api_keys=False`: keys are not read (see `load_settings`)."""
    if not isinstance(value, list):
        checker.wrong_type("targets", value, "a list of targets, each a mapping with name and url")
        return ()
    if not value:
        checker.add(
            "targets",
            "the list is empty; allowed: at least one target (or leave the "
            "key out for the default local target)",
        )
        return ()
    targets: list[TargetSettings] = []
    first_use: dict[str, int] = {}
    for index, item in enumerate(value):
        path = f"targets[{index}]"
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and _TARGET_NAME.fullmatch(name):
            if name in first_use:
                checker.add(
                    f"{path}.name",
                    f"{show(name)} is already the name of "
                    f"targets[{first_use[name]}]; allowed: a name used once",
                )
            first_use.setdefault(name, index)
        target = _parse_target(checker, item, path, defaults, env, base_dir, api_keys=api_keys)
        if target is not None:
            targets.append(target)
    return tuple(targets)


def _parse_target(
    checker: Checker,
    value: object,
    path: str,
    defaults: BenchmarkSettings,
    env: Mapping[str, str],
    base_dir: str,
    *,
    api_keys: bool,
) -> TargetSettings | None:
    section = checker.mapping(value, path, _TARGET_KEYS, null_is_empty=False, hints=_TARGET_HINTS)
    if section is None:
        return None
    start = len(checker.problems)
    for required, example in (("name", "local"), ("url", DEFAULT_LOCAL_URL)):
        if required not in section:
            checker.add(path, f"missing required key {required!r} (e.g. {required}: {example})")
    name = _target_name(checker, section, path)
    checked_url = checker.url(section["url"], join_path(path, "url")) if "url" in section else None
    url, host = checked_url or ("", "")
    api = _api(checker, section, path, url)
    cloud = is_cloud_host(host)
    if "cloud" in section:
        cloud = first(checker.boolean(section["cloud"], join_path(path, "cloud")), cloud)
    api_key, api_key_source = (
        read_api_key(checker, section, path, env, base_dir) if api_keys else (None, None)
    )
    select = _select(checker, section, path, cloud, api)
    include, exclude = (_models(checker, section, path, key) for key in ("include", "exclude"))
    patch = parse_benchmark(checker, section, path)
    benchmark = patch.apply(defaults)
    check_timeout_order(
        checker, benchmark.timeouts, patch.timeouts, join_path(path, "timeouts"),
        "from benchmark.timeouts",
    )  # fmt: skip
    if len(checker.problems) > start or name is None or checked_url is None:
        return None
    return TargetSettings(
        name=name, url=url, cloud=cloud, api_key=api_key, api_key_source=api_key_source,
        select=select or "loaded", include=include, exclude=exclude, benchmark=benchmark,
        api=api or "ollama",
    )  # fmt: skip


def _target_name(checker: Checker, section: Mapping[str, object], path: str) -> str | None:
    if "name" not in section:
        return None
    at = join_path(path, "name")
    name = checker.text(section["name"], at, "a name of letters, digits, _ . -")
    if name is not None and not _TARGET_NAME.fullmatch(name):
        checker.add(
            at,
            f"{show(name)} has other characters; allowed: letters, "
            "digits, _ . - (it becomes the `target` label)",
        )
    return name


def _api(checker: Checker, section: Mapping[str, object], path: str, url: str) -> ApiMode | None:
    """`api` (default ollama); an openai target's URL is its base up to ``/v1``."""
    if "api" not in section:
        return "ollama"
    at = join_path(path, "api")
    api = checker.choice(section["api"], at, _API_MODES)
    if api == "openai" and url and not urlsplit(url).path.endswith("/v1"):
        checker.add(
            join_path(path, "url"),
            f"{show(url)} does not end in /v1; allowed: an OpenAI-compatible server's base URL "
            f"up to /v1 (e.g. {OPENAI_URL_EXAMPLE}) with api: openai",
        )
    return api


def _select(
    checker: Checker, section: Mapping[str, object], path: str, cloud: bool, api: ApiMode | None
) -> SelectMode | None:
    select: SelectMode | None = "loaded"
    at = join_path(path, "select")
    if api == "openai":
        # Every model an OpenAI-compatible server lists is one it serves: all are measured.
        if "select" in section and checker.choice(section["select"], at, _SELECT_MODES) != "all":
            checker.add(
                at,
                "only 'all' applies to an api: openai target, which has no /api/ps (every "
                "model it lists is measured); allowed: all (or leave the key out)",
            )
        return "all"
    if "select" in section:
        select = checker.choice(section["select"], at, _SELECT_MODES)
    if cloud and select == "loaded":
        default = "" if "select" in section else " (the default)"
        checker.add(
            at,
            f"'loaded'{default} selects nothing on a cloud target, which "
            "has no /api/ps; allowed: all (with include to limit metered usage)",
        )
    return select


def _models(
    checker: Checker, section: Mapping[str, object], path: str, key: str
) -> tuple[str, ...]:
    if key not in section:
        return ()
    at = join_path(path, key)
    return checker.strings(section[key], at, "model names", "llama3.2, gpt-oss:20b") or ()


def default_target(
    checker: Checker, env: Mapping[str, str], defaults: BenchmarkSettings
) -> TargetSettings | None:
    """`local` at OLLAMA_LOCAL_BASE_URL, else OLLAMA_HOST, else http://localhost:11434."""
    url = DEFAULT_LOCAL_URL
    for variable in ("OLLAMA_LOCAL_BASE_URL", "OLLAMA_HOST"):
        value = env.get(variable)
        if value is None or not value.strip():
            continue
        try:
            checked = checker.url(normalize_ollama_host(value), f"env {variable}")
        except ValueError as error:
            checker.add(f"env {variable}", str(error))
            return None
        if checked is None:
            return None
        url = checked[0]
        break
    host = urlsplit(url).hostname or ""
    return TargetSettings(name="local", url=url, cloud=is_cloud_host(host), benchmark=defaults)
