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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ometer_exporter.config.benchmark import (
    BENCHMARK_KEYS,
    check_timeout_order,
    first,
    parse_benchmark,
)
from ometer_exporter.config.checks import Checker, ConfigError, show_path
from ometer_exporter.config.display import parse_display
from ometer_exporter.config.settings import (
    DEFAULT_LISTEN_ADDRESS,
    DEFAULT_LOG_FORMAT,
    DEFAULT_LOG_LEVEL,
    DEFAULT_RETENTION,
    DEFAULT_STORAGE_PATH,
    LOG_FORMATS,
    LOG_LEVELS,
    BenchmarkSettings,
    Overrides,
    Settings,
    StorageSettings,
    TargetSettings,
)
from ometer_exporter.config.targets import default_target, parse_targets
from ometer_exporter.config.yaml_file import read_yaml

_TOP_KEYS: Final = ("storage", "benchmark", "targets", "display")
_STORAGE_KEYS: Final = ("path", "retention")

# Keys people reach for that live elsewhere: the hint replaces a bare "unknown key".
_TOP_HINTS: Final = {
    "listen_address": "set it with --web.listen-address or OMETER_LISTEN_ADDRESS",
    "log_level": "set it with --log.level or OMETER_LOG_LEVEL",
    "log_format": "set it with --log.format or OMETER_LOG_FORMAT",
    "web_config_file": "set it with --web.config.file or OMETER_WEB_CONFIG_FILE",
}
_LOG_LEVELS: Final = {name: name for name in LOG_LEVELS}
_LOG_FORMATS: Final = {name: name for name in LOG_FORMATS}


def load_settings(
    overrides: Overrides, env: Mapping[str, str], *, api_keys: bool = True
) -> Settings:
    """Settings from flags > environment > file > defaults; ConfigError lists every problem.

    ``api_keys=False`` leaves every target's key unread (``api_key`` None), for a caller that
    sends nothing to any server (``bench --history``).

    A config file that is named but cannot be read is an error, never a silent fallback. With no
    file, or a file without `targets`, there is one target `local` at OLLAMA_LOCAL_BASE_URL, else
    OLLAMA_HOST (normalised), else http://localhost:11434, with `select: loaded`.
    """
    checker = Checker()
    file_override = _override(
        checker, overrides.config_file, "--config.file", env, "OMETER_CONFIG_FILE"
    )
    config_file = file_override[0] if file_override else None
    top = _read_top(checker, *file_override) if file_override is not None else {}
    storage = _storage(checker, top.get("storage"), overrides, env)
    benchmark_section = checker.mapping(top.get("benchmark"), "benchmark", BENCHMARK_KEYS) or {}
    patch = parse_benchmark(checker, benchmark_section, "benchmark")
    defaults = patch.apply(BenchmarkSettings())
    check_timeout_order(
        checker, defaults.timeouts, patch.timeouts, "benchmark.timeouts", "the default"
    )
    targets = _targets(checker, top, defaults, env, config_file, api_keys=api_keys)
    server = _server(checker, overrides, env)
    display = parse_display(checker, top.get("display"))
    if checker.problems:
        raise ConfigError(checker.problems, config_file)
    return Settings(
        storage=storage, benchmark=defaults, targets=targets, config_file=config_file,
        listen_address=server.listen_address, log_level=server.log_level,
        log_format=server.log_format, web_config_file=server.web_config_file, display=display,
    )  # fmt: skip


def _read_top(checker: Checker, path: str, origin: str) -> dict[str, object]:
    """The file's top-level mapping; {} (with the problem recorded) when it cannot be used."""
    document = read_yaml(checker, path, origin)
    if document is None:  # empty or only comments: all defaults (or a problem recorded)
        return {}
    if not isinstance(document, dict):
        checker.wrong_type("top level", document, f"a mapping with keys {', '.join(_TOP_KEYS)}")
        return {}
    return checker.mapping(document, "", _TOP_KEYS, hints=_TOP_HINTS) or {}


def _storage(
    checker: Checker, value: object, overrides: Overrides, env: Mapping[str, str]
) -> StorageSettings:
    section = checker.mapping(value, "storage", _STORAGE_KEYS) or {}
    path = DEFAULT_STORAGE_PATH
    if "path" in section:
        path = first(checker.text(section["path"], "storage.path", "a directory path"), path)
    path_override = _override(
        checker, overrides.storage_path, "--storage.path", env, "OMETER_STORAGE_PATH"
    )
    if path_override is not None:
        path = path_override[0]
    if os.path.exists(path) and not os.path.isdir(path):
        origin = path_override[1] if path_override else "storage.path"
        checker.add(
            origin,
            f"{show_path(path)} exists and is not a directory; allowed: a "
            "directory (created when missing) for the SQLite file",
        )
    retention = DEFAULT_RETENTION
    if "retention" in section:
        retention = first(checker.duration(section["retention"], "storage.retention"), retention)
    return StorageSettings(path=path, retention=retention)


def _targets(
    checker: Checker,
    top: Mapping[str, object],
    defaults: BenchmarkSettings,
    env: Mapping[str, str],
    config_file: str | None,
    *,
    api_keys: bool,
) -> tuple[TargetSettings, ...]:
    if "targets" in top:
        base_dir = os.path.dirname(config_file) if config_file else "."
        return parse_targets(checker, top["targets"], defaults, env, base_dir, api_keys=api_keys)
    local = default_target(checker, env, defaults)
    return (local,) if local is not None else ()


@dataclass(frozen=True, slots=True)
class _Server:
    """The settings only flags and the environment give: none of them is in the file."""

    listen_address: str
    log_level: str
    log_format: str
    web_config_file: str | None


def _server(checker: Checker, overrides: Overrides, env: Mapping[str, str]) -> _Server:
    listen_address = DEFAULT_LISTEN_ADDRESS
    listen = _override(
        checker, overrides.listen_address, "--web.listen-address", env, "OMETER_LISTEN_ADDRESS"
    )
    if listen is not None:
        listen_address = first(checker.listen_address(*listen), listen_address)
    log_level = DEFAULT_LOG_LEVEL
    level = _override(checker, overrides.log_level, "--log.level", env, "OMETER_LOG_LEVEL")
    if level is not None:
        log_level = first(checker.choice(level[0], level[1], _LOG_LEVELS), log_level)
    log_format = DEFAULT_LOG_FORMAT
    style = _override(checker, overrides.log_format, "--log.format", env, "OMETER_LOG_FORMAT")
    if style is not None:
        log_format = first(checker.choice(style[0], style[1], _LOG_FORMATS), log_format)
    web_config = _override(
        checker, overrides.web_config_file, "--web.config.file", env, "OMETER_WEB_CONFIG_FILE"
    )
    if web_config is not None and not os.path.isfile(web_config[0]):
        checker.add(
            web_config[1],
            f"{show_path(web_config[0])} is not a file; allowed: the path of "
            "an exporter-toolkit web config file",
        )
    return _Server(listen_address, log_level, log_format, web_config[0] if web_config else None)


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
