"""What Go puts on the wire: encoding/json output, RFC 3339 times, time.ParseDuration, and the
decoder's error messages for request bodies (docs/ollama-protocol.md §1.3, §1.5, §4.1)."""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

__all__ = [
    "CHAT_FIELDS",
    "EMBED_FIELDS",
    "GENERATE_FIELDS",
    "MAX_DURATION_NS",
    "SHOW_FIELDS",
    "Float32",
    "GoDecodeError",
    "RawJSON",
    "datetime_ns",
    "decode_request",
    "go_float",
    "go_json",
    "go_quote",
    "go_string",
    "parse_go_duration",
    "parse_json_body",
    "plain",
    "rfc3339_nano",
    "validate_request",
]

MAX_DURATION_NS = 2**63 - 1  # math.MaxInt64: Ollama's "forever"


class Float32(float):
    """A value Go holds as float32: printed in float32 shortest round-trip form."""


class RawJSON(str):
    """Already-encoded JSON, inserted verbatim by :func:`go_json`."""


_GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def go_string(s: str) -> str:
    """A JSON string as Go's encoding/json writes it (HTML characters escaped)."""
    return json.dumps(s, ensure_ascii=False).translate(_GO_ESCAPES)


def go_quote(s: str) -> str:
    """Go's ``%q`` for ordinary (printable) strings."""
    return json.dumps(s, ensure_ascii=False)


def _to_f32(v: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", v))[0])


def _shortest_f32(v: float) -> str:
    """Shortest decimal that reads back as the same float32 (round-trip is monotone in the
    number of digits, so a binary search finds the minimum)."""
    lo, hi = 1, 9
    while lo < hi:
        mid = (lo + hi) // 2
        if _to_f32(float(f"{v:.{mid}g}")) == v:
            hi = mid
        else:
            lo = mid + 1
    return f"{v:.{lo}g}"


def go_float(v: float, bits: int = 64) -> str:
    """``strconv.AppendFloat`` the way encoding/json calls it (``'f'`` unless tiny/huge)."""
    if math.isnan(v) or math.isinf(v):
        raise ValueError(f"json: unsupported value: {v}")
    if bits == 32:
        v = _to_f32(v)
        shortest = _shortest_f32(v)
    else:
        shortest = repr(v)
    a = abs(v)
    d = Decimal(shortest)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        sign, digits, exp = d.normalize().as_tuple()
        assert isinstance(exp, int)
        ds = "".join(map(str, digits))
        sci = len(ds) - 1 + exp
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        out = f"{'-' if sign else ''}{mant}e{'-' if sci < 0 else '+'}{abs(sci):02d}"
        if len(out) >= 4 and out[-4] == "e" and out[-3] == "-" and out[-2] == "0":
            out = out[:-2] + out[-1]  # Go cleans e-09 up to e-9
        return out
    out = format(d, "f")
    if "." in out:
        out = out.rstrip("0").rstrip(".")
    return out


def go_json(value: Any) -> str:
    """Compact JSON like Go's encoding/json: mappings keep their (struct field) order."""
    out: list[str] = []
    _encode(value, out.append)
    return "".join(out)


def _encode(v: Any, w: Callable[[str], Any]) -> None:
    if v is None:
        w("null")
    elif v is True:
        w("true")
    elif v is False:
        w("false")
    elif isinstance(v, RawJSON):
        w(v)
    elif isinstance(v, str):
        w(go_string(v))
    elif isinstance(v, int):
        w(str(v))
    elif isinstance(v, Float32):
        w(go_float(v, 32))
    elif isinstance(v, float):
        w(go_float(v, 64))
    elif isinstance(v, Mapping):
        w("{")
        first = True
        for k, item in v.items():
            if not first:
                w(",")
            first = False
            w(go_string(str(k)))
            w(":")
            _encode(item, w)
        w("}")
    elif isinstance(v, (list, tuple)):
        w("[")
        for i, item in enumerate(v):
            if i:
                w(",")
            _encode(item, w)
        w("]")
    else:
        raise TypeError(f"cannot encode {type(v).__name__}")


def rfc3339_nano(epoch_ns: int, utc_offset: timedelta | None = None) -> str:
    """Go's ``time.RFC3339Nano``: up to 9 fractional digits, trailing zeros trimmed.
    ``utc_offset=None`` formats UTC with ``Z`` (like ``created_at``); a zero offset also prints
    ``Z`` as Go does."""
    secs, frac = divmod(epoch_ns, 1_000_000_000)
    s = _whole_seconds(secs, utc_offset)
    if frac:
        s += "." + f"{frac:09d}".rstrip("0")
    if not utc_offset:
        return s + "Z"
    total = int(utc_offset.total_seconds())
    sign = "-" if total < 0 else "+"
    hh, mm = divmod(abs(total) // 60, 60)
    return f"{s}{sign}{hh:02d}:{mm:02d}"


@functools.lru_cache(maxsize=8)
def _whole_seconds(secs: int, utc_offset: timedelta | None) -> str:
    tz = UTC if not utc_offset else timezone(utc_offset)
    return datetime.fromtimestamp(secs, tz).strftime("%Y-%m-%dT%H:%M:%S")


def datetime_ns(dt: datetime) -> int:
    """Nanoseconds since the epoch of an aware (or UTC-naive) datetime."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta // timedelta(microseconds=1)) * 1000


# --------------------------------------------------------------------------------------------
# time.ParseDuration

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # µ (micro sign)
    "\u03bcs": 1_000,  # μ (Greek mu)
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_go_duration(s: str) -> int:
    """``time.ParseDuration`` → nanoseconds; raises ValueError with Go's message."""
    orig = s
    invalid = f"time: invalid duration {go_quote(orig)}"
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(invalid)
    total = Decimal(0)
    while s:
        if not (s[0] == "." or s[0].isdigit()):
            raise ValueError(invalid)
        i = 0
        while i < len(s) and "0" <= s[i] <= "9":
            i += 1
        whole, s = s[:i], s[i:]
        frac = ""
        if s and s[0] == ".":
            j = 1
            while j < len(s) and "0" <= s[j] <= "9":
                j += 1
            frac, s = s[1:j], s[j:]
            if not whole and not frac:
                raise ValueError(invalid)
        elif not whole:
            raise ValueError(invalid)
        k = 0
        while k < len(s) and s[k] != "." and not ("0" <= s[k] <= "9"):
            k += 1
        if k == 0:
            raise ValueError(f"time: missing unit in duration {go_quote(orig)}")
        unit, s = s[:k], s[k:]
        if unit not in _UNITS_NS:
            raise ValueError(f"time: unknown unit {go_quote(unit)} in duration {go_quote(orig)}")
        total += Decimal(f"{whole or '0'}.{frac or '0'}") * _UNITS_NS[unit]
        if total > MAX_DURATION_NS:
            raise ValueError(invalid)
    ns = int(total)
    return -ns if neg else ns


# --------------------------------------------------------------------------------------------
# request decoding with Go's error messages


class GoDecodeError(Exception):
    """A body the Go handler would reject during ``ShouldBindJSON`` (HTTP 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _GoNumber(float):
    """A JSON number that remembers its literal (Go reports ``number 1.5`` for int fields)."""

    literal: str

    def __new__(cls, literal: str) -> _GoNumber:
        obj = super().__new__(cls, literal)
        obj.literal = literal
        return obj


@dataclass(frozen=True)
class _Field:
    kind: str  # string|bool|int|map|any|think|duration|list
    go_type: str
    elem: _Field | None = None
    struct: Mapping[str, _Field] | None = None  # element struct fields for "list" of structs


_STRING = _Field("string", "string")
_BOOL = _Field("bool", "bool")
_INT = _Field("int", "int")
_MAP = _Field("map", "map[string]interface {}")
_ANY = _Field("any", "interface {}")
_THINK = _Field("think", "api.ThinkValue")
_DURATION = _Field("duration", "api.Duration")

_TOOL_CALL = _Field("struct", "api.ToolCall", struct={})
_MESSAGE = _Field(
    "struct",
    "api.Message",
    struct={
        "role": _STRING,
        "content": _STRING,
        "thinking": _STRING,
        "images": _Field("list", "[]api.ImageData", elem=_Field("string", "api.ImageData")),
        "tool_calls": _Field("list", "[]api.ToolCall", elem=_TOOL_CALL),
        "tool_name": _STRING,
        "tool_call_id": _STRING,
    },
)
_TOOLS = _Field("list", "api.Tools", elem=_Field("struct", "api.Tool", struct={}))

CHAT_FIELDS: Mapping[str, _Field] = {
    "model": _STRING,
    "messages": _Field("list", "[]api.Message", elem=_MESSAGE),
    "stream": _BOOL,
    "format": _ANY,
    "keep_alive": _DURATION,
    "tools": _TOOLS,
    "options": _MAP,
    "think": _THINK,
    "truncate": _BOOL,
    "shift": _BOOL,
    "logprobs": _BOOL,
    "top_logprobs": _INT,
}

GENERATE_FIELDS: Mapping[str, _Field] = {
    "model": _STRING,
    "prompt": _STRING,
    "suffix": _STRING,
    "system": _STRING,
    "template": _STRING,
    "context": _Field("list", "[]int", elem=_INT),
    "stream": _BOOL,
    "raw": _BOOL,
    "format": _ANY,
    "keep_alive": _DURATION,
    "images": _Field("list", "[]api.ImageData", elem=_Field("string", "api.ImageData")),
    "options": _MAP,
    "think": _THINK,
    "truncate": _BOOL,
    "shift": _BOOL,
    "logprobs": _BOOL,
    "top_logprobs": _INT,
}

EMBED_FIELDS: Mapping[str, _Field] = {
    "model": _STRING,
    "input": _ANY,
    "keep_alive": _DURATION,
    "truncate": _BOOL,
    "dimensions": _INT,
    "options": _MAP,
}

SHOW_FIELDS: Mapping[str, _Field] = {
    "model": _STRING,
    "system": _STRING,
    "template": _STRING,
    "verbose": _BOOL,
    "options": _MAP,
    "name": _STRING,
}


def _json_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


def _go_type_of(v: Any) -> str:
    """``reflect.TypeOf`` of a value json.Unmarshal put into ``any``."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "[]interface {}"
    if isinstance(v, dict):
        return "map[string]interface {}"
    return "%!s(<nil>)"


def _quote_char(c: str) -> str:
    """Go's encoding/json ``quoteChar``."""
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    q = json.dumps(c)
    return "'" + q[1:-1] + "'"


def _container_at(doc: str, pos: int) -> str:
    """Innermost open container ('{' or '[') at ``pos`` (for Go's syntax error wording)."""
    stack: list[str] = []
    in_str = esc = False
    for ch in doc[:pos]:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append(ch)
        elif ch in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _syntax_message(doc: str, err: json.JSONDecodeError) -> str:
    pos = err.pos
    if pos >= len(doc) or err.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    c = _quote_char(doc[pos])
    msg = err.msg
    if msg.startswith("Expecting property name"):
        return f"invalid character {c} looking for beginning of object key string"
    if msg.startswith("Expecting ':'"):
        return f"invalid character {c} after object key"
    if msg.startswith("Expecting ',' delimiter"):
        if _container_at(doc, pos) == "[":
            return f"invalid character {c} after array element"
        return f"invalid character {c} after object key:value pair"
    if msg.startswith("Invalid control character"):
        return f"invalid character {c} in string literal"
    if msg.startswith("Invalid \\uXXXX"):
        return f"invalid character {c} in \\u hexadecimal character escape"
    if msg.startswith("Invalid \\escape"):
        return f"invalid character {c} in string escape code"
    return f"invalid character {c} looking for beginning of value"


def _reject_constant(name: str) -> Any:
    c = _quote_char(name.lstrip("-")[0])
    raise GoDecodeError(f"invalid character {c} looking for beginning of value")


_DECODER = json.JSONDecoder(parse_float=_GoNumber, parse_constant=_reject_constant)


def parse_json_body(body: bytes) -> Any:
    """Decode the first JSON value like ``json.Decoder.Decode`` (trailing data is ignored).
    Raises GoDecodeError with ``missing request body`` for an empty body."""
    doc = body.decode("utf-8", errors="replace").lstrip(" \t\r\n")
    if not doc:
        raise GoDecodeError("missing request body")
    try:
        value, _ = _DECODER.raw_decode(doc)
    except json.JSONDecodeError as e:
        raise GoDecodeError(_syntax_message(doc, e)) from None
    return value


def _find_key(obj: Mapping[str, Any], name: str) -> str | None:
    """encoding/json matches keys to fields exactly first, then case-insensitively."""
    if name in obj:
        return name
    for k in obj:
        if k.lower() == name:
            return k
    return None


class _TypeErrors:
    def __init__(self, struct: str) -> None:
        self.struct = struct
        self.first: str | None = None

    def add(self, value: Any, path: str, go_type: str) -> None:
        if self.first is None:
            kind = _json_kind(value)
            if kind == "number" and go_type in ("int", "api.ImageData"):
                lit = value.literal if isinstance(value, _GoNumber) else str(value)
                kind = f"number {lit}"
            self.first = (
                f"json: cannot unmarshal {kind} into Go struct field "
                f"{self.struct}.{path} of type {go_type}"
            )


def _check(value: Any, f: _Field, path: str, errs: _TypeErrors) -> Any:
    """Validate one value against a field; returns the Go-typed value (None if unset)."""
    if value is None:
        return None
    kind = f.kind
    if kind == "any":
        return value
    if kind == "string":
        if isinstance(value, str):
            return value
    elif kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind == "map":
        if isinstance(value, dict):
            return value
    elif kind == "think":
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            if value not in ("high", "medium", "low", "max"):
                raise GoDecodeError(
                    f"invalid think value: {go_quote(value)} "
                    '(must be "high", "medium", "low", "max", true, or false)'
                )
            return value
        raise GoDecodeError("think must be a boolean or string")
    elif kind == "duration":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value < 0:
                return -1.0
            return float(value)
        if isinstance(value, str):
            try:
                ns = parse_go_duration(value)
            except ValueError as e:
                raise GoDecodeError(str(e)) from None
            return -1.0 if ns < 0 else ns / 1e9
        raise GoDecodeError(f"Unsupported type: '{_go_type_of(value)}'")
    elif kind == "struct":
        if isinstance(value, dict):
            return _check_struct(value, f.struct or {}, path, errs)
    elif kind == "list" and isinstance(value, list):
        assert f.elem is not None
        return [_check(item, f.elem, path, errs) for item in value]
    errs.add(value, path, f.go_type)
    return None


def _check_struct(
    obj: Mapping[str, Any], fields: Mapping[str, _Field], prefix: str, errs: _TypeErrors
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Go walks the object in document order; a custom unmarshaler's error aborts at once,
    # a type mismatch is remembered (the first one wins) and decoding continues.
    matched: dict[str, str] = {}
    for name in fields:
        k = _find_key(obj, name)
        if k is not None:
            matched[k] = name
    for k, v in obj.items():
        field_name = matched.get(k)
        if field_name is None:
            continue
        path = f"{prefix}.{field_name}" if prefix else field_name
        checked = _check(v, fields[field_name], path, errs)
        if checked is not None:
            out[field_name] = checked
    return out


def decode_request(body: bytes, fields: Mapping[str, _Field], go_struct: str) -> dict[str, Any]:
    """``c.ShouldBindJSON(&req)`` for one of the request structs (``ChatRequest`` …).

    Returns the known fields present with a non-null, well-typed value; raises GoDecodeError
    with the message Ollama sends back in its 400 reply."""
    return validate_request(parse_json_body(body), fields, go_struct)


def validate_request(value: Any, fields: Mapping[str, _Field], go_struct: str) -> dict[str, Any]:
    """The type-checking half of :func:`decode_request` for an already parsed body."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GoDecodeError(
            f"json: cannot unmarshal {_json_kind(value)} into Go value of type api.{go_struct}"
        )
    errs = _TypeErrors(go_struct)
    out = _check_struct(value, fields, "", errs)
    if errs.first is not None:
        raise GoDecodeError(errs.first)
    return out


def plain(value: Any) -> Any:
    """The parsed body with number literals turned back into plain ints/floats (for records)."""
    if isinstance(value, _GoNumber):
        return float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
