"""One checker for every input: the config file, the environment, flags, the web configuration
file, the one-shot mode's environment and flags, and the ``/export`` query.

Every problem has one form: ``<where>: <what is wrong>; allowed: <what is allowed>``, with a
did-you-mean where a close match exists. Values are shown bounded (``show``) and URLs with
credentials masked (``show_url``), so a problem message never carries a secret.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Mapping, Sequence
from typing import TypeVar
from urllib.parse import SplitResult, urlsplit

from ometer_exporter.config.settings import IntRange


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


SHOW_LIMIT = 60
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
        raise ValueError(f"{show(text)} is not a duration; {_DURATION_HELP}")
    seconds = _duration_seconds(text.strip()) if isinstance(text, str) else float(text)
    if seconds is None:
        raise ValueError(f"{show(text)} is not a duration; {_DURATION_HELP}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{show(text)} is not a duration: it must be finite and not negative")
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


def format_duration(seconds: float) -> str:
    """600.0 -> "10m", 5400.0 -> "1h30m", 0.25 -> "250ms", 1.5 -> "1.5s"."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds != int(seconds):
        return f"{seconds:g}s"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts)


def show_url(text: str) -> str:
    """repr of a URL with any credentials, query and fragment masked: they may hold secrets."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return show(text) if "@" not in text else "(not shown: it contains '@')"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    shown = SplitResult(
        parts.scheme, netloc, parts.path,
        "***" if parts.query else "", "***" if parts.fragment else "",
    ).geturl()  # fmt: skip
    if "?" in text and not parts.query:
        shown += "?"
    return show(shown)


def show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= SHOW_LIMIT else text[: SHOW_LIMIT - 3] + "..."


def show_path(path: str) -> str:
    """A file path in full: cut short, it would not say which file to fix."""
    return repr(path)


def kind_of(value: object) -> str:
    if value is None:
        return "an empty value (null)"
    kinds = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
             (list, "a list"), (dict, "a mapping"))  # fmt: skip
    name = next((name for cls, name in kinds if isinstance(value, cls)), type(value).__name__)
    return f"{name} {show(value)}" + (_BOOL_HINT if isinstance(value, bool) else "")


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------------------------------------
# Checking values: each method records a problem and returns None when the value is bad.

_T = TypeVar("_T")


class Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def wrong_type(self, path: str, value: object, expected: str) -> None:
        self.add(path, f"expected {expected}, got {kind_of(value)}")

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
            self.add(path or "top level", f"key {kind_of(key)} is not a name; {allowed_text}")
            return
        # The key is shown (in the path), never its value: `api_key: <the secret>` is a likely typo.
        message = "unknown key"
        if key in hints:
            message += f" ({hints[key]})"
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        shown = key if len(key) <= SHOW_LIMIT else key[: SHOW_LIMIT - 3] + "..."
        self.add(join_path(path, shown), f"{message}; {allowed_text}")

    def integer(
        self, value: object, path: str, low: int, high: int, why: str = "", *, allowed: str = ""
    ) -> int | None:
        allowed = allowed or f"an integer from {low} to {high}{why}"
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong_type(path, value, allowed)
            return None
        if not low <= value <= high:
            self.add(path, f"{show(value)} is out of range; allowed: {allowed}")
            return None
        return value

    def in_range(self, value: object, path: str, bounds: IntRange) -> int | None:
        """An integer within one of the knob ranges defined in ``config.settings``."""
        return self.integer(value, path, bounds.low, bounds.high, bounds.why)

    def distinct_integers(
        self, value: object, path: str, bounds: IntRange, what: str, example: str
    ) -> tuple[int, ...] | None:
        """A list of distinct integers within ``bounds``, returned ascending (whether an
        empty list is allowed is the caller's to say)."""
        if not isinstance(value, list):
            self.wrong_type(path, value, f"a list of {what}, each {bounds.allowed}, e.g. {example}")
            return None
        items = [self.in_range(v, f"{path}[{i}]", bounds) for i, v in enumerate(value)]
        if any(item is None for item in items):
            return None
        distinct = sorted({item for item in items if item is not None})
        if len(distinct) != len(items):
            self.add(path, f"{show(value)} repeats a value; allowed: distinct {what}")
            return None
        return tuple(distinct)

    def integer_text(self, text: str, path: str, bounds: IntRange) -> int | None:
        """An integer in a flag or environment variable (text), within `bounds`."""
        if not re.fullmatch(r"\s*[+-]?\d+\s*", text):
            self.add(path, f"{show(text)} is not an integer; allowed: {bounds.allowed}")
            return None
        return self.in_range(int(text), path, bounds)

    def number(self, value: object, path: str, low: float, high: float) -> float | None:
        allowed = f"a number from {low:g} to {high:g}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.wrong_type(path, value, allowed)
            return None
        if not low <= value <= high:  # also false for NaN
            self.add(path, f"{show(value)} is out of range; allowed: {allowed}")
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

    def choice(
        self, value: object, path: str, options: Mapping[str, _T], *, fold_case: bool = True
    ) -> _T | None:
        """The option `value` names; with `fold_case` the options' names are lower case."""
        allowed = " | ".join(options)
        if not isinstance(value, str):
            self.wrong_type(path, value, f"one of {allowed}")
            return None
        name = value.lower() if fold_case else value
        found = options.get(name)
        if found is None:
            close = difflib.get_close_matches(name, list(options), n=1)
            guess = f"; did you mean {close[0]!r}?" if close else ""
            self.add(path, f"{show(value)} is not allowed{guess}; allowed: {allowed}")
        return found

    def duration(self, value: object, path: str, *, allow_zero: bool = False) -> float | None:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.wrong_type(path, value, "a duration such as 250ms, 10s, 10m or 1h30m")
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as error:
            self.add(path, str(error))
            return None
        if seconds == 0 and not allow_zero:
            self.add(path, f"{show(value)} is zero; allowed: a duration > 0, e.g. 10s")
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
        shown = show_url(value)
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
            self.add(path, f"{shown} has scheme {show(parts.scheme)}; allowed: http or https")
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
            self.add(path, f"{show(value)} is not an address{hint}; {allowed}")
            return None
        ipv6 = match["ipv6"]
        try:
            if ipv6 is not None:
                ipaddress.IPv6Address(ipv6)
        except ValueError:
            self.add(path, f"{show(value)} has an invalid IPv6 address; {allowed}")
            return None
        if not 1 <= int(match["port"]) <= 65535:
            self.add(path, f"{show(value)} has port {match['port']}; {allowed}")
            return None
        return value
