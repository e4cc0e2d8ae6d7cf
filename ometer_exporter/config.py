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

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import SplitResult, urlsplit

import yaml

ThinkMode = Literal["auto", "true", "false"]
SelectMode = Literal["loaded", "all"]

# Each prompt asks for several sentences so a run produces enough tokens for a stable decode
# rate (runs under 8 output tokens are discarded as "short").
DEFAULT_PROMPTS: tuple[str, ...] = (
    "Explain in five or six sentences why the sky is blue, as you would to a curious student.",
    "Describe in several sentences how a bicycle stays upright while it is moving.",
    "Write a short paragraph of at least five sentences about the history of the printing press.",
)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Phased deadlines of one Ollama request, in seconds."""

    connect: float = 10.0
    # Headers arrive only with the first token, after any model load: minutes on a big model.
    first_byte: float = 300.0
    idle: float = 60.0
    total: float = 600.0


@dataclass(frozen=True, slots=True)
class BenchmarkSettings:
    """How one target's models are benchmarked (defaults, overridable per target)."""

    interval: float = 600.0
    jitter: float = 0.10
    runs: int = 3
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    num_predict: int = 128
    temperature: float = 0.0
    seed: int = 42
    think: ThinkMode = "auto"
    unload_after: bool = True
    timeouts: Timeouts = field(default_factory=Timeouts)


@dataclass(frozen=True, slots=True)
class TargetSettings:
    """One Ollama server to benchmark, with the `benchmark` defaults merged with its overrides."""

    name: str
    url: str  # http(s)://host[:port][/path], no trailing slash, no credentials
    cloud: bool  # no /api/ps, no warmup, no load metric
    # The secret itself: kept out of repr (and so of str and of every log line made from them).
    api_key: str | None = field(default=None, repr=False)
    api_key_source: str | None = None  # where the key came from: "env NAME" or "file PATH"
    select: SelectMode = "loaded"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    benchmark: BenchmarkSettings = BenchmarkSettings()


# Defaults shared by the dataclasses and the loader: a slots dataclass keeps no class default.
DEFAULT_LOCAL_URL = "http://localhost:11434"
_DEFAULT_STORAGE_PATH = "./ometer-data"
_DEFAULT_RETENTION = 7 * 24 * 3600.0
_DEFAULT_LISTEN_ADDRESS = ":9877"
_DEFAULT_LOG_LEVEL = "info"
_DEFAULT_LOG_FORMAT = "text"


@dataclass(frozen=True, slots=True)
class StorageSettings:
    path: str = _DEFAULT_STORAGE_PATH  # a directory; the SQLite file lives inside it
    retention: float = _DEFAULT_RETENTION  # seconds of per-run history kept


@dataclass(frozen=True, slots=True)
class Settings:
    storage: StorageSettings
    benchmark: BenchmarkSettings  # the file's `benchmark` section: defaults for every target
    targets: tuple[TargetSettings, ...]
    listen_address: str = _DEFAULT_LISTEN_ADDRESS
    log_level: str = _DEFAULT_LOG_LEVEL  # debug | info | warning | error
    log_format: str = _DEFAULT_LOG_FORMAT  # text | json
    config_file: str | None = None
    web_config_file: str | None = None


@dataclass(frozen=True, slots=True)
class Overrides:
    """Values from command-line flags; None means the flag was not given."""

    config_file: str | None = None
    listen_address: str | None = None
    storage_path: str | None = None
    log_level: str | None = None
    log_format: str | None = None
    web_config_file: str | None = None


class ConfigError(Exception):
    """Every problem found in the configuration, reported at once.

    ``str(err)``::

        2 problems in config.yaml:
          - benchmark.runs: 0 is out of range; allowed: an integer from 1 to 100
          - targets[0].url: 'ftp://gpu:11434' has scheme 'ftp'; allowed: http or https
    """

    def __init__(self, problems: Sequence[str], source: str | None = None) -> None:
        self.problems: list[str] = list(problems)
        self.source = source
        super().__init__(self.problems)

    def __str__(self) -> str:
        count = len(self.problems)
        where = self.source if self.source is not None else "the configuration"
        head = f"{count} problem{'' if count == 1 else 's'} in {where}:"
        return "\n  - ".join([head, *self.problems])


_OLLAMA_PORT = 11434

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
_SHOW_LIMIT = 60
_BOOL_HINT = " (YAML reads unquoted yes/no/on/off/true/false as booleans)"

# ---------------------------------------------------------------------------------------------
# Durations

_DURATION_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001))
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|[dhms])")
_BARE_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_DURATION_HELP = (
    "allowed: a number with a unit (ms, s, m, h, d), units combined largest first, "
    "e.g. 250ms, 10s, 1h30m, 1.5s; a bare number means seconds"
)


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``"250ms"``, ``"10s"``, ``"10m"``, ``"1h"``, ``"1h30m"``, ``"1.5s"``, ``"7d"``.

    A bare number (or numeric string) means seconds. Zero parses to 0.0: where the configuration
    needs a duration it also requires it to be > 0. Raises ValueError saying what is accepted.
    """
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise ValueError(f"{_show(text)} is not a duration; {_DURATION_HELP}")
    seconds = _duration_seconds(text.strip()) if isinstance(text, str) else float(text)
    if seconds is None:
        raise ValueError(f"{_show(text)} is not a duration; {_DURATION_HELP}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{_show(text)} is not a duration: it must be finite and not negative")
    return seconds


def _duration_seconds(text: str) -> float | None:
    if _BARE_NUMBER.fullmatch(text):
        return float(text)
    if not text:
        return None
    units = [unit for unit, _ in _DURATION_UNITS]
    factors = dict(_DURATION_UNITS)
    seconds, position, last_rank = 0.0, 0, -1
    while position < len(text):
        part = _DURATION_PART.match(text, position)
        if part is None:
            return None
        rank = units.index(part[2])
        if rank <= last_rank:  # "30m1h", "1m1m": Prometheus rejects these too
            return None
        seconds += float(part[1]) * factors[part[2]]
        position, last_rank = part.end(), rank
    return seconds


def _format_duration(seconds: float) -> str:
    """600.0 -> "10m", 5400.0 -> "1h30m", 0.25 -> "250ms", 1.5 -> "1.5s"."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds != int(seconds):
        return f"{seconds:g}s"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# URLs and addresses


def normalize_ollama_host(value: str) -> str:
    """The server URL meant by an ``OLLAMA_HOST`` value, in Ollama's own forms.

    ``"0.0.0.0"`` -> ``"http://127.0.0.1:11434"``, ``"host:8080"`` -> ``"http://host:8080"``,
    ``":11434"`` -> ``"http://127.0.0.1:11434"``, ``"https://host/"`` -> ``"https://host"``.
    Without a scheme, http and port 11434 are assumed; with one, the port is left to the scheme.
    A bind-all address is not a destination: 0.0.0.0 and :: become 127.0.0.1 and [::1].
    Raises ValueError for another scheme or a bad port.
    """
    text = value.strip().strip("\"'")
    scheme, has_scheme, rest = text.partition("://")
    if has_scheme:
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(
                f"{_show_url(text)} has scheme {_show(scheme)}; allowed: http or https"
            )
        default_port: int | None = None
    else:
        scheme, rest, default_port = "http", text, _OLLAMA_PORT
    hostport, slash, path = rest.partition("/")
    host, port_text = _split_host_port(hostport)
    if port_text is None:
        port = default_port
    elif port_text.isdigit() and 1 <= int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise ValueError(
            f"{_show_url(text)} has port {_show(port_text)}; allowed: a port from 1 to 65535"
        )
    host = host.lower()
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return f"{scheme}://{netloc}" + (f"/{path}".rstrip("/") if slash else "")


def _split_host_port(hostport: str) -> tuple[str, str | None]:
    """ "[::1]:80" -> ("::1", "80"); "::1" -> ("::1", None); "h:80" -> ("h", "80")."""
    if hostport.startswith("["):
        host, _, after = hostport[1:].partition("]")
        return host, (after[1:] if after.startswith(":") else None)
    if hostport.count(":") > 1:  # a bare IPv6 address
        return hostport, None
    host, colon, port = hostport.partition(":")
    return host, (port if colon else None)


def _is_cloud_host(host: str) -> bool:
    return host == "ollama.com" or host.endswith(".ollama.com")


def _show_url(text: str) -> str:
    """repr of a URL with any credentials, query and fragment masked: they may hold secrets."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return _show(text) if "@" not in text else "(not shown: it contains '@')"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    shown = SplitResult(
        parts.scheme, netloc, parts.path,
        "***" if parts.query else "", "***" if parts.fragment else "",
    ).geturl()  # fmt: skip
    if "?" in text and not parts.query:
        shown += "?"
    return _show(shown)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 3] + "..."


def _show_path(path: str) -> str:
    """A file path in full: cut short, it would not say which file to fix."""
    return repr(path)


def _kind(value: object) -> str:
    if value is None:
        return "an empty value (null)"
    kinds = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
             (list, "a list"), (dict, "a mapping"))  # fmt: skip
    name = next((name for cls, name in kinds if isinstance(value, cls)), type(value).__name__)
    return f"{name} {_show(value)}" + (_BOOL_HINT if isinstance(value, bool) else "")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------------------------------------
# Checking values: each method records a problem and returns None when the value is bad.

_T = TypeVar("_T")


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def wrong_type(self, path: str, value: object, expected: str) -> None:
        self.add(path, f"expected {expected}, got {_kind(value)}")

    def mapping(
        self,
        value: object,
        path: str,
        allowed: Sequence[str],
        *,
        null_is_empty: bool = True,
        hints: Mapping[str, str] | None = None,
    ) -> dict[str, object] | None:
        """The known keys of a mapping; unknown ones are problems naming the allowed keys."""
        if value is None and null_is_empty:  # a section whose keys are all commented out
            return {}
        if not isinstance(value, dict):
            self.wrong_type(path, value, f"a mapping with keys {', '.join(allowed)}")
            return None
        known: dict[str, object] = {}
        for key, item in value.items():
            if isinstance(key, str) and key in allowed:
                known[key] = item
            else:
                self._unknown_key(path, key, allowed, hints or {})
        return known

    def _unknown_key(
        self, path: str, key: object, allowed: Sequence[str], hints: Mapping[str, str]
    ) -> None:
        allowed_text = f"allowed keys: {', '.join(allowed)}"
        if not isinstance(key, str):
            self.add(path or "top level", f"key {_kind(key)} is not a name; {allowed_text}")
            return
        # The key is shown (in the path), never its value: `api_key: <the secret>` is a likely typo.
        message = "unknown key"
        if key in hints:
            message += f" ({hints[key]})"
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        shown = key if len(key) <= _SHOW_LIMIT else key[: _SHOW_LIMIT - 3] + "..."
        self.add(_join(path, shown), f"{message}; {allowed_text}")

    def integer(
        self, value: object, path: str, low: int, high: int, why: str = "", *, allowed: str = ""
    ) -> int | None:
        allowed = allowed or f"an integer from {low} to {high}{why}"
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong_type(path, value, allowed)
            return None
        if not low <= value <= high:
            self.add(path, f"{_show(value)} is out of range; allowed: {allowed}")
            return None
        return value

    def number(self, value: object, path: str, low: float, high: float) -> float | None:
        allowed = f"a number from {low:g} to {high:g}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.wrong_type(path, value, allowed)
            return None
        if not low <= value <= high:  # also false for NaN
            self.add(path, f"{_show(value)} is out of range; allowed: {allowed}")
            return None
        return float(value)

    def boolean(self, value: object, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.wrong_type(path, value, "true or false")
            return None
        return value

    def text(self, value: object, path: str, expected: str) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.wrong_type(path, value, expected)
            return None
        return value

    def choice(self, value: object, path: str, options: Mapping[str, _T]) -> _T | None:
        allowed = " | ".join(options)
        if not isinstance(value, str):
            self.wrong_type(path, value, f"one of {allowed}")
            return None
        found = options.get(value.lower())
        if found is None:
            close = difflib.get_close_matches(value.lower(), list(options), n=1)
            guess = f"; did you mean {close[0]!r}?" if close else ""
            self.add(path, f"{_show(value)} is not allowed{guess}; allowed: {allowed}")
        return found

    def duration(self, value: object, path: str) -> float | None:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.wrong_type(path, value, "a duration such as 250ms, 10s, 10m or 1h30m")
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as error:
            self.add(path, str(error))
            return None
        if seconds == 0:
            self.add(path, f"{_show(value)} is zero; allowed: a duration > 0, e.g. 10s")
            return None
        return seconds

    def strings(
        self, value: object, path: str, what: str, example: str, *, non_empty: bool = False
    ) -> tuple[str, ...] | None:
        expected = f"a{' non-empty' if non_empty else ''} list of {what}"
        if not isinstance(value, list):
            self.wrong_type(path, value, f"{expected}, e.g. [{example}]")
            return None
        if non_empty and not value:
            self.add(path, f"the list is empty; allowed: {expected}")
            return None
        good = True
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.wrong_type(f"{path}[{index}]", item, f"a non-empty string ({what})")
                good = False
        return tuple(value) if good else None

    def url(self, value: object, path: str) -> tuple[str, str] | None:
        """(normalised URL, host): http(s)://host[:port][/path], nothing that could leak."""
        if not isinstance(value, str):
            self.wrong_type(path, value, "a URL such as http://localhost:11434")
            return None
        shown = _show_url(value)
        if any(char.isspace() for char in value):
            self.add(path, f"{shown} contains whitespace; allowed: a URL such as http://host:11434")
            return None
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError as error:
            self.add(path, f"{shown} is not a valid URL ({error}); allowed: http(s)://host[:port]")
            return None
        start = len(self.problems)
        scheme = parts.scheme.lower()
        if "://" not in value:  # urlsplit reads "gpu:11434" as scheme "gpu"
            self.add(
                path,
                f"{shown} has no scheme; allowed: http:// or https://, e.g. http://localhost:11434",
            )
        elif scheme not in ("http", "https"):
            self.add(path, f"{shown} has scheme {_show(parts.scheme)}; allowed: http or https")
        if "@" in parts.netloc:
            self.add(
                path,
                f"{shown} contains credentials, which would leak into logs and "
                "errors; allowed: a URL without user:password@ (for an API key use "
                "api_key_env or api_key_file)",
            )
        if "://" in value and not parts.hostname:
            self.add(path, f"{shown} has no host; allowed: http(s)://host[:port][/path]")
        if port == 0:
            self.add(path, f"{shown} has port 0; allowed: a port from 1 to 65535")
        if parts.query or parts.fragment or "?" in value or "#" in value:
            self.add(
                path, f"{shown} has a query or fragment; allowed: http(s)://host[:port][/path]"
            )
        if len(self.problems) > start or not parts.hostname:
            return None
        netloc = parts.netloc.lower()
        return f"{scheme}://{netloc}{parts.path.rstrip('/')}", parts.hostname

    def listen_address(self, value: str, path: str) -> str | None:
        allowed = (
            "allowed: host:port or :port, port 1-65535, e.g. ':9877', '0.0.0.0:9877', '[::1]:9877'"
        )
        match = re.fullmatch(
            r"(?:\[(?P<ipv6>[^\]]+)\]|(?P<host>[A-Za-z0-9._-]*)):(?P<port>\d{1,5})", value
        )
        if match is None:
            hint = " (IPv6 addresses go in brackets)" if value.count(":") > 1 else ""
            self.add(path, f"{_show(value)} is not an address{hint}; {allowed}")
            return None
        ipv6 = match["ipv6"]
        try:
            if ipv6 is not None:
                ipaddress.IPv6Address(ipv6)
        except ValueError:
            self.add(path, f"{_show(value)} has an invalid IPv6 address; {allowed}")
            return None
        if not 1 <= int(match["port"]) <= 65535:
            self.add(path, f"{_show(value)} has port {match['port']}; {allowed}")
            return None
        return value


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
                    f"line {mark.line + 1}, column {mark.column + 1}: duplicate key {_show(key)} "
                    "(the later value would silently win); allowed: each key once per mapping"
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_file(checker: _Checker, path: str, origin: str) -> dict[str, object]:
    """The file's top-level mapping; {} (with the problem recorded) when it cannot be used."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        checker.add(
            origin,
            f"cannot read config file {_show_path(path)}: {error.strerror or error}; "
            "allowed: a readable YAML file",
        )
        return {}
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        checker.add(origin, f"config file {_show_path(path)} is not UTF-8 text")
        return {}
    try:
        loader = _StrictLoader(text)  # the reader rejects control characters right here
    except yaml.reader.ReaderError as error:
        checker.add(origin, f"config file {_show_path(path)} has a control character "
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


def _parse_benchmark(
    checker: _Checker, section: Mapping[str, object], path: str
) -> _BenchmarkPatch:
    """The benchmark keys present in `section` (the `benchmark` section or a target)."""
    patch = _BenchmarkPatch()

    def at(key: str) -> str:
        return _join(path, key)

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
            seconds = checker.duration(value, _join(at("timeouts"), key))
            if seconds is not None:
                patch.timeouts[key] = seconds
    return patch


def _jitter(checker: _Checker, value: object, path: str) -> float | None:
    allowed = "allowed: a percentage from 0% to 50% such as '10%', or a fraction from 0 to 0.5"
    if isinstance(value, str) and (
        match := re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*", value)
    ):
        fraction = float(match[1]) / 100
    elif isinstance(value, int | float) and not isinstance(value, bool):
        fraction = float(value)
    else:
        checker.add(path, f"{_kind(value)} is not a jitter; {allowed}")
        return None
    if not 0 <= fraction <= 0.5:
        checker.add(path, f"{_show(value)} is out of range; {allowed}")
        return None
    return fraction


def _check_timeout_order(
    checker: _Checker, merged: Timeouts, given: Mapping[str, float], path: str, inherited: str
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
                _join(path, phase), f"{_secs(seconds)} is longer than total {total}{source}; {rule}"
            )
        elif "total" in given:
            checker.add(
                _join(path, "total"),
                f"{total} is shorter than {phase} {_secs(seconds)} ({inherited}); {rule}",
            )


def _secs(seconds: float) -> str:
    return f"{seconds:g}s"


def _parse_targets(
    checker: _Checker,
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
                    f"{_show(name)} is already the name of "
                    f"targets[{first_use[name]}]; allowed: a name used once",
                )
            first_use.setdefault(name, index)
        target = _parse_target(checker, item, path, defaults, env, base_dir)
        if target is not None:
            targets.append(target)
    return tuple(targets)


def _parse_target(
    checker: _Checker,
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
        return _join(path, key)

    for required, example in (("name", "local"), ("url", DEFAULT_LOCAL_URL)):
        if required not in section:
            checker.add(path, f"missing required key {required!r} (e.g. {required}: {example})")
    name = None
    if "name" in section:
        name = checker.text(section["name"], at("name"), "a name of letters, digits, _ . -")
        if name is not None and not _TARGET_NAME.fullmatch(name):
            checker.add(
                at("name"),
                f"{_show(name)} has other characters; allowed: letters, "
                "digits, _ . - (it becomes the `target` label)",
            )
    checked_url = checker.url(section["url"], at("url")) if "url" in section else None
    url, host = checked_url or ("", "")
    cloud = _is_cloud_host(host)
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
    checker: _Checker,
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
        at = _join(path, "api_key_env")
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
        at = _join(path, "api_key_file")
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
                f"cannot read {_show_path(file)}: {error.strerror or type(error).__name__}; "
                "allowed: a readable file holding the key",
            )
            return None, None
        where = f"file {_show_path(file)}"
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


def _checked_key(checker: _Checker, path: str, raw: str, where: str) -> str | None:
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
    checker: _Checker, env: Mapping[str, str], defaults: BenchmarkSettings
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
    return TargetSettings(name="local", url=url, cloud=_is_cloud_host(host), benchmark=defaults)


def _env(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value if value is not None and value.strip() else None


def _override(
    checker: _Checker,
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
    checker = _Checker()
    file_override = _override(
        checker, overrides.config_file, "--config.file", env, "OMETER_CONFIG_FILE"
    )
    config_file = file_override[0] if file_override else None
    top: dict[str, object] = {}
    if file_override is not None:
        top = _read_file(checker, *file_override)
    base_dir = os.path.dirname(config_file) if config_file else "."

    storage_section = checker.mapping(top.get("storage"), "storage", _STORAGE_KEYS) or {}
    storage_path = _DEFAULT_STORAGE_PATH
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
            f"{_show_path(storage_path)} exists and is not a directory; allowed: a "
            "directory (created when missing) for the SQLite file",
        )
    retention = _DEFAULT_RETENTION
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

    listen_address = _DEFAULT_LISTEN_ADDRESS
    listen = _override(
        checker, overrides.listen_address, "--web.listen-address", env, "OMETER_LISTEN_ADDRESS"
    )
    if listen is not None:
        listen_address = _first(checker.listen_address(*listen), listen_address)
    log_level = _DEFAULT_LOG_LEVEL
    level = _override(checker, overrides.log_level, "--log.level", env, "OMETER_LOG_LEVEL")
    if level is not None:
        log_level = _first(checker.choice(level[0], level[1], _LOG_LEVELS), log_level)
    log_format = _DEFAULT_LOG_FORMAT
    style = _override(checker, overrides.log_format, "--log.format", env, "OMETER_LOG_FORMAT")
    if style is not None:
        log_format = _first(checker.choice(style[0], style[1], _LOG_FORMATS), log_format)
    web_config = _override(
        checker, overrides.web_config_file, "--web.config.file", env, "OMETER_WEB_CONFIG_FILE"
    )
    if web_config is not None and not os.path.isfile(web_config[0]):
        checker.add(
            web_config[1],
            f"{_show_path(web_config[0])} is not a file; allowed: the path of "
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


def describe(settings: Settings) -> str:
    """A human summary for ``--config.check``; API keys appear only as their source::

    config file: /etc/ometer/config.yaml
    listen address: :9877
    ...
    targets (1):
      local  http://localhost:11434
        api key: none
        select: loaded; include: any; exclude: none
        interval 10m, jitter 10%, runs 3, ...
    """
    lines = [
        f"config file: {settings.config_file or 'none (built-in defaults and environment)'}",
        f"listen address: {settings.listen_address}",
        f"web config file: {settings.web_config_file or 'none (plain HTTP, no authentication)'}",
        f"log: level {settings.log_level}, format {settings.log_format}",
        f"storage: {settings.storage.path} (history kept "
        f"{_format_duration(settings.storage.retention)})",
        f"benchmark defaults: {_describe_benchmark(settings.benchmark)}",
        f"targets ({len(settings.targets)}):",
    ]
    for target in settings.targets:
        if target.api_key_source:
            key = f"from {target.api_key_source}"
        else:
            key = "set" if target.api_key else "none"
        lines += [
            f"  {target.name}  {target.url}{'  (cloud)' if target.cloud else ''}",
            f"    api key: {key}",
            f"    select: {target.select}; include: {', '.join(target.include) or 'any'}; "
            f"exclude: {', '.join(target.exclude) or 'none'}",
            f"    {_describe_benchmark(target.benchmark)}",
        ]
    return "\n".join(lines)


def _describe_benchmark(b: BenchmarkSettings) -> str:
    t = b.timeouts
    return (
        f"interval {_format_duration(b.interval)}, jitter {b.jitter * 100:g}%, runs {b.runs}, "
        f"{len(b.prompts)} prompts, num_predict {b.num_predict}, temperature {b.temperature:g}, "
        f"seed {b.seed}, think {b.think}, unload_after {str(b.unload_after).lower()}; timeouts: "
        f"connect {_format_duration(t.connect)}, first_byte {_format_duration(t.first_byte)}, "
        f"idle {_format_duration(t.idle)}, total {_format_duration(t.total)}"
    )
