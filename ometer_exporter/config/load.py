"""Settings: YAML + environment + flags -> frozen, validated objects.

Everything downstream trusts these objects; validation happens once, here. `load_settings` reads
the file, the environment and the command-line flags, collects every problem it finds, and either
returns a `Settings` or raises one `ConfigError` that lists them all, each naming its key path
(``targets[1].interval``), the offending value and what is allowed.

Precedence, highest first: flags (`Overrides`), environment, the YAML file, built-in defaults.
Environment variables read (an empty variable counts as unset):

    OMETER_CONFIG_FILE      YAML file to read when --config.file is not given
    OMETER_LISTEN_ADDRESS   host:port or :port to serve on        (--web.listen-address beats it)
    OMETER_STORAGE_PATH     data directory, beats storage.path    (--storage.path beats it)
    OMETER_LOG_LEVEL        debug | info | warning | error        (--log.level beats it)
    OMETER_LOG_FORMAT       text | json                           (--log.format beats it)
    OMETER_WEB_CONFIG_FILE  exporter-toolkit web config file      (--web.config.file beats it)
    OLLAMA_LOCAL_BASE_URL   URL of the default `local` target when the file has no `targets`
    OLLAMA_HOST             the same in Ollama's own forms, when OLLAMA_LOCAL_BASE_URL is unset

Besides these, only the variables that a target's ``api_key_env`` names are read: a key lying in
the environment never adds a cloud target by itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from ometer_exporter.config.checks import Checker, ConfigError, join_path, kind_of, show, show_path
from ometer_exporter.config.settings import (
    DEFAULT_LISTEN_ADDRESS,
    DEFAULT_LOCAL_URL,
    DEFAULT_LOG_FORMAT,
    DEFAULT_LOG_LEVEL,
    DEFAULT_RETENTION,
    DEFAULT_STORAGE_PATH,
    BenchmarkSettings,
    Overrides,
    SelectMode,
    Settings,
    StorageSettings,
    TargetSettings,
    ThinkMode,
    Timeouts,
)
from ometer_exporter.config.urls import is_cloud_host, normalize_ollama_host

_T = TypeVar("_T")

_TOP_KEYS = ("storage", "benchmark", "targets")
_STORAGE_KEYS = ("path", "retention")
_TIMEOUT_KEYS = ("connect", "first_byte", "idle", "total")
_BENCHMARK_KEYS = (
    "interval", "jitter", "runs", "prompts", "num_predict",
    "temperature", "seed", "think", "unload_after", "timeouts",
)  # fmt: skip
_TARGET_KEYS = (
    "name", "url", "cloud", "api_key_env", "api_key_file", "select", "include", "exclude",
    *_BENCHMARK_KEYS,
)  # fmt: skip

# Keys people reach for that live elsewhere: the hint replaces a bare "unknown key".
_TOP_HINTS = {
    "listen_address": "set it with --web.listen-address or OMETER_LISTEN_ADDRESS",
    "log_level": "set it with --log.level or OMETER_LOG_LEVEL",
    "log_format": "set it with --log.format or OMETER_LOG_FORMAT",
    "web_config_file": "set it with --web.config.file or OMETER_WEB_CONFIG_FILE",
}
_TARGET_HINTS = {
    "api_key": "the key itself never goes in this file: put it in an environment variable or a "
    "file and name that with api_key_env or api_key_file",
}

_THINK_MODES: dict[str, ThinkMode] = {"auto": "auto", "true": "true", "false": "false"}
_SELECT_MODES: dict[str, SelectMode] = {"loaded": "loaded", "all": "all"}
_LOG_LEVELS = {name: name for name in ("debug", "info", "warning", "error")}
_LOG_FORMATS = {name: name for name in ("text", "json")}

_TARGET_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_API_KEY_TEXT = re.compile(r"[\x21-\x7e]+")  # one header-safe token: printable ASCII, no spaces
_MAX_KEY_FILE_BYTES = 64 * 1024

# ---------------------------------------------------------------------------------------------
# The file


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that records duplicate keys: plain YAML lets the later value win silently."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` overrides on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # the base class reports it
            if key in seen:
                mark = key_node.start_mark
                self.duplicates.append(
                    f"line {mark.line + 1}, column {mark.column + 1}: duplicate key {show(key)} "
                    "(the later value would silently win); allowed: each key once per mapping"
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_file(checker: Checker, path: str, origin: str) -> dict[str, object]:
    """The file's top-level mapping; {} (with the problem recorded) when it cannot be used."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        checker.add(
            origin,
            f"cannot read config file {show_path(path)}: {error.strerror or error}; "
            "allowed: a readable YAML file",
        )
        return {}
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        checker.add(origin, f"config file {show_path(path)} is not UTF-8 text")
        return {}
    try:
        loader = _StrictLoader(text)  # the reader rejects control characters right here
    except yaml.reader.ReaderError as error:
        checker.add(origin, f"config file {show_path(path)} has a control character "
                            f"(#x{error.character:04x}) at position {error.position}; "
                            "allowed: printable text")  # fmt: skip
        return {}
    try:
        document = loader.get_single_data()
    except yaml.MarkedYAMLError as error:
        # Only the parser's own words and the position: the quoted snippet could hold anything.
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else origin
        context = f" ({error.context})" if error.context else ""
        checker.add(where, f"YAML syntax error: {error.problem}{context}")
        return {}
    except yaml.YAMLError as error:
        checker.add(origin, f"YAML error: {type(error).__name__}")
        return {}
    finally:
        loader.dispose()
    checker.problems.extend(loader.duplicates)
    if document is None:  # empty or only comments: all defaults
        return {}
    if not isinstance(document, dict):
        checker.wrong_type("top level", document, f"a mapping with keys {', '.join(_TOP_KEYS)}")
        return {}
    return checker.mapping(document, "", _TOP_KEYS, hints=_TOP_HINTS) or {}


# ---------------------------------------------------------------------------------------------
# Sections


@dataclass(slots=True)
class _BenchmarkPatch:
    """The benchmark keys one section sets; None = not set there (or invalid, already reported)."""

    interval: float | None = None
    jitter: float | None = None
    runs: int | None = None
    prompts: tuple[str, ...] | None = None
    num_predict: int | None = None
    temperature: float | None = None
    seed: int | None = None
    think: ThinkMode | None = None
    unload_after: bool | None = None
    timeouts: dict[str, float] = field(default_factory=dict)

    def apply(self, base: BenchmarkSettings) -> BenchmarkSettings:
        t = self.timeouts
        return BenchmarkSettings(
            interval=_first(self.interval, base.interval),
            jitter=_first(self.jitter, base.jitter),
            runs=_first(self.runs, base.runs),
            prompts=_first(self.prompts, base.prompts),
            num_predict=_first(self.num_predict, base.num_predict),
            temperature=_first(self.temperature, base.temperature),
            seed=_first(self.seed, base.seed),
            think=_first(self.think, base.think),
            unload_after=_first(self.unload_after, base.unload_after),
            timeouts=Timeouts(
                connect=t.get("connect", base.timeouts.connect),
                first_byte=t.get("first_byte", base.timeouts.first_byte),
                idle=t.get("idle", base.timeouts.idle),
                total=t.get("total", base.timeouts.total),
            ),
        )


def _first(value: _T | None, default: _T) -> _T:
    return default if value is None else value


def _parse_benchmark(checker: Checker, section: Mapping[str, object], path: str) -> _BenchmarkPatch:
    """The benchmark keys present in `section` (the `benchmark` section or a target)."""
    patch = _BenchmarkPatch()

    def at(key: str) -> str:
        return join_path(path, key)

    if "interval" in section:
        patch.interval = checker.duration(section["interval"], at("interval"))
    if "jitter" in section:
        patch.jitter = _jitter(checker, section["jitter"], at("jitter"))
    if "runs" in section:
        patch.runs = checker.integer(section["runs"], at("runs"), 1, 100)
    if "prompts" in section:
        patch.prompts = checker.strings(
            section["prompts"], at("prompts"), "prompts", '"Why is the sky blue?"', non_empty=True
        )
    if "num_predict" in section:
        patch.num_predict = checker.integer(
            section["num_predict"], at("num_predict"), 8, 100_000,
            " (fewer than 8 output tokens never give a tokens/s figure: such runs are discarded)",
        )  # fmt: skip
    if "temperature" in section:
        patch.temperature = checker.number(section["temperature"], at("temperature"), 0.0, 2.0)
    if "seed" in section:
        patch.seed = checker.integer(
            section["seed"], at("seed"), -(2**63), 2**63 - 1, allowed="a 64-bit integer"
        )
    if "think" in section:
        think = section["think"]
        if isinstance(think, bool):  # `think: true` in YAML is a boolean: same meaning
            think = str(think).lower()
        patch.think = checker.choice(think, at("think"), _THINK_MODES)
    if "unload_after" in section:
        patch.unload_after = checker.boolean(section["unload_after"], at("unload_after"))
    if "timeouts" in section:
        timeouts = checker.mapping(section["timeouts"], at("timeouts"), _TIMEOUT_KEYS)
        for key, value in (timeouts or {}).items():
            seconds = checker.duration(value, join_path(at("timeouts"), key))
            if seconds is not None:
                patch.timeouts[key] = seconds
    return patch


def _jitter(checker: Checker, value: object, path: str) -> float | None:
    allowed = "allowed: a percentage from 0% to 50% such as '10%', or a fraction from 0 to 0.5"
    if isinstance(value, str) and (
        match := re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*", value)
    ):
        fraction = float(match[1]) / 100
    elif isinstance(value, int | float) and not isinstance(value, bool):
        fraction = float(value)
    else:
        checker.add(path, f"{kind_of(value)} is not a jitter; {allowed}")
        return None
    if not 0 <= fraction <= 0.5:
        checker.add(path, f"{show(value)} is out of range; {allowed}")
        return None
    return fraction


def _check_timeout_order(
    checker: Checker, merged: Timeouts, given: Mapping[str, float], path: str, inherited: str
) -> None:
    """connect, first_byte and idle must each fit in total; blame the key set in this section."""
    phases = (("connect", merged.connect), ("first_byte", merged.first_byte), ("idle", merged.idle))
    total = _secs(merged.total)
    for phase, seconds in phases:
        if seconds <= merged.total:
            continue
        rule = "allowed: connect, first_byte and idle each ≤ total"
        if phase in given:
            source = "" if "total" in given else f" ({inherited})"
            checker.add(
                join_path(path, phase),
                f"{_secs(seconds)} is longer than total {total}{source}; {rule}",
            )
        elif "total" in given:
            checker.add(
                join_path(path, "total"),
                f"{total} is shorter than {phase} {_secs(seconds)} ({inherited}); {rule}",
            )


def _secs(seconds: float) -> str:
    return f"{seconds:g}s"


def _parse_targets(
    checker: Checker,
    value: object,
    defaults: BenchmarkSettings,
    env: Mapping[str, str],
    base_dir: str,
) -> tuple[TargetSettings, ...]:
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
        target = _parse_target(checker, item, path, defaults, env, base_dir)
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
) -> TargetSettings | None:
    section = checker.mapping(value, path, _TARGET_KEYS, null_is_empty=False, hints=_TARGET_HINTS)
    if section is None:
        return None
    start = len(checker.problems)

    def at(key: str) -> str:
        return join_path(path, key)

    for required, example in (("name", "local"), ("url", DEFAULT_LOCAL_URL)):
        if required not in section:
            checker.add(path, f"missing required key {required!r} (e.g. {required}: {example})")
    name = None
    if "name" in section:
        name = checker.text(section["name"], at("name"), "a name of letters, digits, _ . -")
        if name is not None and not _TARGET_NAME.fullmatch(name):
            checker.add(
                at("name"),
                f"{show(name)} has other characters; allowed: letters, "
                "digits, _ . - (it becomes the `target` label)",
            )
    checked_url = checker.url(section["url"], at("url")) if "url" in section else None
    url, host = checked_url or ("", "")
    cloud = is_cloud_host(host)
    if "cloud" in section:
        cloud = _first(checker.boolean(section["cloud"], at("cloud")), cloud)
    api_key, api_key_source = _api_key(checker, section, path, env, base_dir)
    select: SelectMode | None = "loaded"
    if "select" in section:
        select = checker.choice(section["select"], at("select"), _SELECT_MODES)
    if cloud and select == "loaded":
        default = "" if "select" in section else " (the default)"
        checker.add(
            at("select"),
            f"'loaded'{default} selects nothing on a cloud target, which "
            "has no /api/ps; allowed: all (with include to limit metered usage)",
        )
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    if "include" in section:
        include = (
            checker.strings(
                section["include"], at("include"), "model names", "llama3.2, gpt-oss:20b"
            )
            or ()
        )
    if "exclude" in section:
        exclude = (
            checker.strings(
                section["exclude"], at("exclude"), "model names", "llama3.2, gpt-oss:20b"
            )
            or ()
        )
    patch = _parse_benchmark(checker, section, path)
    benchmark = patch.apply(defaults)
    _check_timeout_order(
        checker, benchmark.timeouts, patch.timeouts, at("timeouts"), "from benchmark.timeouts"
    )
    if len(checker.problems) > start or name is None or checked_url is None:
        return None
    return TargetSettings(
        name=name, url=url, cloud=cloud, api_key=api_key, api_key_source=api_key_source,
        select=select or "loaded", include=include, exclude=exclude, benchmark=benchmark,
    )  # fmt: skip


def _api_key(
    checker: Checker,
    section: Mapping[str, object],
    path: str,
    env: Mapping[str, str],
    base_dir: str,
) -> tuple[str | None, str | None]:
    """(key, where it came from). No key at all is fine; a named source that fails is not."""
    if "api_key_env" in section and "api_key_file" in section:
        checker.add(path, "both api_key_env and api_key_file are set; allowed: at most one of them")
        return None, None
    if "api_key_env" in section:
        at = join_path(path, "api_key_env")
        name = section["api_key_env"]
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            # Not echoed: a value that is no variable name may well be the key itself.
            checker.add(
                at,
                "is not an environment variable name (value not shown: it may be the "
                "key itself); allowed: letters, digits and _, e.g. OLLAMA_API_KEY",
            )
            return None, None
        raw = env.get(name)
        if raw is None:
            checker.add(
                at,
                f"environment variable {name!r} is not set; allowed: the name of a "
                "set, non-empty variable holding the key (or remove api_key_env)",
            )
            return None, None
        return _checked_key(checker, at, raw, f"environment variable {name!r}"), f"env {name}"
    if "api_key_file" in section:
        at = join_path(path, "api_key_file")
        given = checker.text(section["api_key_file"], at, "the path of a file holding the key")
        if given is None:
            return None, None
        # Relative to the config file, as Prometheus resolves its *_file settings.
        file = os.path.normpath(os.path.join(base_dir, os.path.expanduser(given)))
        try:
            with open(file, "rb") as handle:
                raw_bytes = handle.read(_MAX_KEY_FILE_BYTES + 1)
        except OSError as error:
            checker.add(
                at,
                f"cannot read {show_path(file)}: {error.strerror or type(error).__name__}; "
                "allowed: a readable file holding the key",
            )
            return None, None
        where = f"file {show_path(file)}"
        if len(raw_bytes) > _MAX_KEY_FILE_BYTES:
            checker.add(
                at,
                f"{where} is larger than {_MAX_KEY_FILE_BYTES // 1024} KiB; allowed: "
                "a file holding just the key",
            )
            return None, None
        try:
            raw = raw_bytes.decode("utf-8")
        except UnicodeDecodeError:
            checker.add(
                at,
                f"{where} is not UTF-8 text (content not shown); allowed: a file "
                "holding just the key",
            )
            return None, None
        return _checked_key(checker, at, raw, where), f"file {file}"
    return None, None


def _checked_key(checker: Checker, path: str, raw: str, where: str) -> str | None:
    key = raw.strip()
    if not key:
        checker.add(path, f"{where} is empty; allowed: a non-empty API key")
        return None
    if not _API_KEY_TEXT.fullmatch(key):
        checker.add(
            path,
            f"the key in {where} contains spaces, line breaks or non-ASCII characters "
            "(content not shown); allowed: one line of printable ASCII",
        )
        return None
    return key


def _default_target(
    checker: Checker, env: Mapping[str, str], defaults: BenchmarkSettings
) -> TargetSettings | None:
    """`local` at OLLAMA_LOCAL_BASE_URL, else OLLAMA_HOST, else http://localhost:11434."""
    url = DEFAULT_LOCAL_URL
    for variable in ("OLLAMA_LOCAL_BASE_URL", "OLLAMA_HOST"):
        value = _env(env, variable)
        if value is None:
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


def _env(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value if value is not None and value.strip() else None


def _override(
    checker: Checker,
    flag_value: str | None,
    flag: str,
    env: Mapping[str, str],
    variable: str,
) -> tuple[str, str] | None:
    """(value, where it came from) of a flag, else its environment variable, else None."""
    if flag_value is not None:
        if not flag_value.strip():
            checker.add(
                f"flag {flag}", "is empty; allowed: a non-empty value (or leave the flag out)"
            )
            return None
        return flag_value, f"flag {flag}"
    value = _env(env, variable)
    return (value, f"env {variable}") if value is not None else None


# ---------------------------------------------------------------------------------------------
# Entry points


def load_settings(overrides: Overrides, env: Mapping[str, str]) -> Settings:
    """Settings from flags > environment > file > defaults; ConfigError lists every problem.

    A config file that is named but cannot be read is an error, never a silent fallback. With no
    file, or a file without `targets`, there is one target `local` at OLLAMA_LOCAL_BASE_URL, else
    OLLAMA_HOST (normalised), else http://localhost:11434, with `select: loaded`.
    """
    checker = Checker()
    file_override = _override(
        checker, overrides.config_file, "--config.file", env, "OMETER_CONFIG_FILE"
    )
    config_file = file_override[0] if file_override else None
    top: dict[str, object] = {}
    if file_override is not None:
        top = _read_file(checker, *file_override)
    base_dir = os.path.dirname(config_file) if config_file else "."

    storage_section = checker.mapping(top.get("storage"), "storage", _STORAGE_KEYS) or {}
    storage_path = DEFAULT_STORAGE_PATH
    if "path" in storage_section:
        storage_path = _first(
            checker.text(storage_section["path"], "storage.path", "a directory path"), storage_path
        )
    path_override = _override(
        checker, overrides.storage_path, "--storage.path", env, "OMETER_STORAGE_PATH"
    )
    if path_override is not None:
        storage_path = path_override[0]
    if os.path.exists(storage_path) and not os.path.isdir(storage_path):
        origin = path_override[1] if path_override else "storage.path"
        checker.add(
            origin,
            f"{show_path(storage_path)} exists and is not a directory; allowed: a "
            "directory (created when missing) for the SQLite file",
        )
    retention = DEFAULT_RETENTION
    if "retention" in storage_section:
        retention = _first(
            checker.duration(storage_section["retention"], "storage.retention"), retention
        )

    benchmark_section = checker.mapping(top.get("benchmark"), "benchmark", _BENCHMARK_KEYS) or {}
    patch = _parse_benchmark(checker, benchmark_section, "benchmark")
    defaults = patch.apply(BenchmarkSettings())
    _check_timeout_order(
        checker, defaults.timeouts, patch.timeouts, "benchmark.timeouts", "the default"
    )

    if "targets" in top:
        targets = _parse_targets(checker, top["targets"], defaults, env, base_dir)
    else:
        local = _default_target(checker, env, defaults)
        targets = (local,) if local is not None else ()

    listen_address = DEFAULT_LISTEN_ADDRESS
    listen = _override(
        checker, overrides.listen_address, "--web.listen-address", env, "OMETER_LISTEN_ADDRESS"
    )
    if listen is not None:
        listen_address = _first(checker.listen_address(*listen), listen_address)
    log_level = DEFAULT_LOG_LEVEL
    level = _override(checker, overrides.log_level, "--log.level", env, "OMETER_LOG_LEVEL")
    if level is not None:
        log_level = _first(checker.choice(level[0], level[1], _LOG_LEVELS), log_level)
    log_format = DEFAULT_LOG_FORMAT
    style = _override(checker, overrides.log_format, "--log.format", env, "OMETER_LOG_FORMAT")
    if style is not None:
        log_format = _first(checker.choice(style[0], style[1], _LOG_FORMATS), log_format)
    web_config = _override(
        checker, overrides.web_config_file, "--web.config.file", env, "OMETER_WEB_CONFIG_FILE"
    )
    if web_config is not None and not os.path.isfile(web_config[0]):
        checker.add(
            web_config[1],
            f"{show_path(web_config[0])} is not a file; allowed: the path of "
            "an exporter-toolkit web config file",
        )

    if checker.problems:
        raise ConfigError(checker.problems, config_file)
    return Settings(
        storage=StorageSettings(path=storage_path, retention=retention),
        benchmark=defaults,
        targets=targets,
        listen_address=listen_address,
        log_level=log_level,
        log_format=log_format,
        config_file=config_file,
        web_config_file=web_config[0] if web_config else None,
    )
