"""What Ollama's endpoints answer, parsed into typed values (and the stream's line reader).

An absent server field is unknown (None), never 0; a field of the wrong type is a
``bad_response``. Everything a server sends is bounded before it leaves this module: JSON nesting
is checked before decoding (so ``RecursionError`` cannot happen), integers fit Go's int64 and are
never negative (Ollama's are sizes, counts and durations), strings are capped and printable (a
lone surrogate is not), timestamps are timezone-aware and within 1970-9999, lists are capped.
Every refusal is an :class:`OllamaBadResponse`, never another exception type.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ometer_exporter.client.errors import OllamaBadResponse
from ometer_exporter.names import is_cloud_name, parse_parameter_size

MAX_LINE_BYTES: Final = 1 << 20  # one NDJSON chunk is ~200 bytes; a 1 MiB line is not Ollama
MAX_DEPTH: Final = 32  # Ollama's replies nest 4 deep (show: 3); 32 leaves room, never recursion
MAX_INT: Final = 2**63 - 1  # Ollama is Go: every integer it sends is an int64
# Ollama caps each part of a name (host, namespace, model, tag) at 80 characters: four parts and
# their separators fit in 256.
MAX_NAME_CHARS: Final = 256
MAX_LABEL_CHARS: Final = 128  # family, format, quantization, digest, capability: short words
MAX_PARAMETER_SIZE_CHARS: Final = 32  # "8.0B", "137M"
MAX_LIST_ITEMS: Final = 64  # capabilities and families: Ollama has 8 capabilities today
MAX_VERSION_CHARS: Final = 64
# Unix seconds of 1970-01-01 and 9999-01-01: every later conversion (local time, formatting)
# of a timestamp in this range stays inside datetime's years 1-9999.
_FIRST_TIME: Final = 0.0
_LAST_TIME: Final = 253370764800.0


@dataclass(frozen=True, slots=True)
class TagModel:
    """One entry of ``/api/tags``."""

    name: str
    size: int | None
    digest: str
    modified_at: datetime | None
    format: str
    family: str
    families: tuple[str, ...]
    parameter_size: str
    quantization_level: str
    context_length: int | None
    embedding_length: int | None
    capabilities: tuple[str, ...] | None  # None: the server predates capabilities in tags
    remote_host: str | None
    remote_model: str | None

    def texts(self) -> tuple[str, ...]:
        """Every string of the entry (where a reflected API key would show)."""
        return (
            self.name, self.digest, self.format, self.family, self.parameter_size,
            self.quantization_level, self.remote_host or "", self.remote_model or "",
            *self.families, *(self.capabilities or ()),
        )  # fmt: skip

    @property
    def is_cloud_passthrough(self) -> bool:
        """A local server's stub for a cloud model: benchmarking it would bill the cloud."""
        return is_cloud_name(self.name) or bool(self.remote_host)


@dataclass(frozen=True, slots=True)
class ShowInfo:
    """What ``/api/show`` adds to the tags entry."""

    architecture: str | None
    parameter_count: int | None
    context_length: int | None
    embedding_length: int | None
    capabilities: tuple[str, ...]

    def texts(self) -> tuple[str, ...]:
        return (self.architecture or "", *self.capabilities)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """One entry of ``/api/ps``."""

    name: str
    size: int | None
    size_vram: int | None
    expires_at: datetime | None
    context_length: int | None

    def texts(self) -> tuple[str, ...]:
        return (self.name,)


@dataclass(frozen=True, slots=True)
class DoneFields:
    """Server fields of the final (``done: true``) line, in nanoseconds; None = absent.

    Ollama omits zero values, so an absent field means unknown, never 0.
    """

    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
    # eval_count is the streamed chunks counted, not the server's count (an OpenAI-compatible
    # server that reports no usage): about one token a chunk.
    eval_count_approximate: bool = False


@dataclass(frozen=True, slots=True)
class ChatStream:
    """Client clocks (``time.perf_counter``) of one streamed chat and its final fields."""

    sent_at: float  # the request's headers started out on the wire
    headers_at: float  # response headers read
    first_token_at: float | None  # first chunk carrying thinking or content
    first_content_at: float | None  # first chunk carrying content
    last_token_at: float | None  # last chunk carrying thinking or content
    ended_at: float  # end of the body (read past the done line)
    thinking_chunks: int
    content_chunks: int
    done: DoneFields


@dataclass(frozen=True, slots=True)
class EmbedResponse:
    sent_at: float
    ended_at: float
    embeddings: int
    dimensions: int | None
    done: DoneFields  # total_duration, load_duration, prompt_eval_count


def parse_timestamp(value: Any) -> datetime | None:
    """Go RFC 3339 timestamps (up to 9 fractional digits); None when absent or unusable.

    Unusable (None, not a refusal: a timestamp is informational, and Go's zero time, year 1, is
    how Ollama says "never"): unparsable, without a timezone, or outside 1970-9999.
    """
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.utcoffset() is None:
            return None
        seconds = parsed.timestamp()
    except (ValueError, OverflowError):
        return None
    return parsed if _FIRST_TIME <= seconds <= _LAST_TIME else None


def _int_field(obj: dict[str, Any], key: str, where: str) -> int | None:
    """An int64 that Ollama never sends negative; out of range is refused (the entry or the
    run), not clamped: a clamped size or token count would be a wrong number shown as right."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise OllamaBadResponse(f"{where}: field {key!r} is not an integer from 0 to 2**63-1")
    return value


def _text(value: Any, limit: int) -> str | None:
    """`value` if it is a printable string (no lone surrogate, no control) of at most `limit`."""
    if isinstance(value, str) and len(value) <= limit and value.isprintable():
        return value
    return None


def label(obj: dict[str, Any], key: str) -> str:
    """A descriptive string (family, format, …): one a server gets wrong is unknown (""), like
    an absent one, rather than refused: the model is still worth measuring."""
    return _text(obj.get(key), MAX_LABEL_CHARS) or ""


def clipped(value: str, limit: int) -> str:
    """`value` with unprintable characters dropped, cut to `limit` characters."""
    text = value if value.isprintable() else "".join(ch for ch in value if ch.isprintable())
    return text[:limit]


def _words(value: Any) -> tuple[str, ...]:
    """Capabilities or families: distinct valid words, at most MAX_LIST_ITEMS (a longer list is
    cut there, not refused: the first entries are the real ones on any server seen)."""
    if not isinstance(value, list):
        return ()
    words = (_text(w, MAX_LABEL_CHARS) for w in value[: MAX_LIST_ITEMS * 2])
    return tuple(dict.fromkeys(w for w in words if w))[:MAX_LIST_ITEMS]


def _parameter_size(value: Any) -> str:
    """``"8.0B"``; unknown ("") when too long or when its count would not fit an int64."""
    text = _text(value, MAX_PARAMETER_SIZE_CHARS)
    if not text:
        return ""
    count = parse_parameter_size(text)
    return text if count is None or count <= MAX_INT else ""


def model_name(value: Any, where: str) -> str:
    """An entry's name: without a usable one the entry is refused (it is the entry's identity)."""
    if not isinstance(value, str) or not value:
        raise OllamaBadResponse(f"{where}: a model entry has no name")
    if len(value) > MAX_NAME_CHARS:
        raise OllamaBadResponse(f"{where}: a model name is longer than {MAX_NAME_CHARS} characters")
    if not value.isprintable():
        raise OllamaBadResponse(f"{where}: a model name has unprintable characters")
    return value


def done_fields(obj: dict[str, Any], where: str = "/api/chat") -> DoneFields:
    return DoneFields(
        done_reason=_text(obj.get("done_reason"), MAX_LABEL_CHARS),
        total_duration=_int_field(obj, "total_duration", where),
        load_duration=_int_field(obj, "load_duration", where),
        prompt_eval_count=_int_field(obj, "prompt_eval_count", where),
        prompt_eval_duration=_int_field(obj, "prompt_eval_duration", where),
        eval_count=_int_field(obj, "eval_count", where),
        eval_duration=_int_field(obj, "eval_duration", where),
    )


def parse_version(obj: Any) -> str:
    version = obj.get("version") if isinstance(obj, dict) else None
    if not isinstance(version, str):
        raise OllamaBadResponse("/api/version: no version string")
    return clipped(version, MAX_VERSION_CHARS)


def parse_tag(entry: Any) -> TagModel:
    where = "/api/tags"
    if not isinstance(entry, dict):
        raise OllamaBadResponse(f"{where}: a model entry is not an object")
    name = model_name(entry.get("name"), where)
    details = entry.get("details")
    details = details if isinstance(details, dict) else {}
    caps = entry.get("capabilities")
    remote_host = entry.get("remote_host")
    remote_model = entry.get("remote_model")
    return TagModel(
        name=name,
        size=_int_field(entry, "size", where),
        digest=label(entry, "digest"),
        modified_at=parse_timestamp(entry.get("modified_at")),
        format=label(details, "format"),
        family=label(details, "family"),
        families=_words(details.get("families")),
        parameter_size=_parameter_size(details.get("parameter_size")),
        quantization_level=label(details, "quantization_level"),
        context_length=_int_field(details, "context_length", where),
        embedding_length=_int_field(details, "embedding_length", where),
        capabilities=_words(caps) if isinstance(caps, list) else None,
        # Kept (clipped) whatever its form: a remote_host marks a cloud stub, never benchmarked.
        remote_host=clipped(remote_host, MAX_NAME_CHARS) or None
        if isinstance(remote_host, str)
        else None,
        remote_model=clipped(remote_model, MAX_NAME_CHARS) or None
        if isinstance(remote_model, str)
        else None,
    )


def _show_number(info: dict[str, Any], key: str) -> int | None:
    """show's numbers are best effort (the tags entry has its own): a bad one is unknown."""
    value = info.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_INT:
        return None
    return value


def parse_show(obj: Any) -> ShowInfo:
    if not isinstance(obj, dict):
        raise OllamaBadResponse("/api/show: the reply is not a JSON object")
    info = obj.get("model_info")
    info = info if isinstance(info, dict) else {}
    arch = _text(info.get("general.architecture"), MAX_LABEL_CHARS) or None
    return ShowInfo(
        architecture=arch,
        parameter_count=_show_number(info, "general.parameter_count"),
        context_length=_show_number(info, f"{arch}.context_length") if arch else None,
        embedding_length=_show_number(info, f"{arch}.embedding_length") if arch else None,
        capabilities=_words(obj.get("capabilities")),
    )


def parse_loaded(entry: Any) -> LoadedModel:
    where = "/api/ps"
    if not isinstance(entry, dict):
        raise OllamaBadResponse(f"{where}: a model entry is not an object")
    return LoadedModel(
        name=model_name(entry.get("name"), where),
        size=_int_field(entry, "size", where),
        size_vram=_int_field(entry, "size_vram", where),
        expires_at=parse_timestamp(entry.get("expires_at")),
        context_length=_int_field(entry, "context_length", where),
    )


def models_list(obj: Any, path: str) -> list[Any]:
    if not isinstance(obj, dict) or not isinstance(obj.get("models", []), list):
        raise OllamaBadResponse(f"{path}: expected an object with a 'models' list")
    models: list[Any] = obj.get("models") or []
    return models


# -- JSON nesting, checked before decoding -------------------------------------------------------

# A string, or an unterminated one (to the end, a lone backslash there included): a match from
# every opening quote keeps the scan linear; a failed one would be retried from each escaped
# quote inside it, quadratic in an unterminated string full of them.
_JSON_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET: Final = bytes(b for b in range(256) if b not in b"[]{}")
_ONE_KIND: Final = bytes.maketrans(b"{}", b"[]")


def check_depth(raw: bytes, where: str) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH before ``json`` recurses into it.

    A byte scan: strings dropped, only brackets kept, innermost pairs removed one level per
    pass. Unbalanced brackets (not JSON anyway) count as too deep. Replies with at most
    MAX_DEPTH opening brackets in all (every stream line) skip the scan.
    """
    if raw.count(b"{") + raw.count(b"[") <= MAX_DEPTH:
        return
    brackets = _JSON_STRING.sub(b"", raw).translate(_ONE_KIND, _NOT_BRACKET)
    for _ in range(MAX_DEPTH):
        if not brackets:
            return
        inner = brackets.replace(b"[]", b"")
        if len(inner) == len(brackets):
            break
        brackets = inner
    if brackets:
        raise OllamaBadResponse(f"{where}: the reply nests deeper than {MAX_DEPTH} levels")


_FEW_LINES_BYTES: Final = 512
_NOT_BRACKET_NOR_NEWLINE: Final = bytes(b for b in range(256) if b not in b"[]{}\n")


def _lines_shallow(block: bytes) -> bool:
    """Whether no line of `block` nests deeper than MAX_DEPTH, counting brackets inside strings
    too: a conservative first look in one pass over the bytes (the newlines keep the lines
    apart), so that the stream's hot path pays no string scan."""
    brackets = block.translate(_ONE_KIND, _NOT_BRACKET_NOR_NEWLINE)
    for _ in range(MAX_DEPTH):
        inner = brackets.replace(b"[]", b"")
        if len(inner) == len(brackets):
            break
        brackets = inner
    return b"[" not in brackets and b"]" not in brackets


def _shallow_read(block: bytes) -> bool:
    """A conservative first look at the lines of one network read. One line (the usual case)
    has about two braces: two counts clear it; many lines are cleared by one bracket pass."""
    if len(block) < _FEW_LINES_BYTES and block.count(b"{") + block.count(b"[") <= MAX_DEPTH:
        return True
    return _lines_shallow(block)


def load_json(raw: bytes, where: str) -> Any:
    """A whole reply body as JSON, or a ``bad_response``."""
    check_depth(raw, where)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise OllamaBadResponse(f"{where}: the reply is not JSON") from None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form; dates are rare here)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86400 else None


class LineSplitter:
    """Splits a byte stream into text lines, refusing absurdly long ones.

    The complete lines of each network read are decoded in one call (a UTF-8 character never
    spans a newline): decoding ~150-byte lines one by one cost a third of the parse time. Their
    nesting is checked here too, once per read: the lines it returns are safe to decode.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[str]:
        if self._pending:
            data = self._pending + data
        cut = data.rfind(b"\n")
        self._pending = data[cut + 1 :]
        if len(self._pending) > MAX_LINE_BYTES:
            raise OllamaBadResponse(f"/api/chat: a streamed line exceeds {MAX_LINE_BYTES} bytes")
        if cut < 0:
            return []
        block = data[:cut]
        if not _shallow_read(block):  # rare: look at each line, its strings left out
            for raw in block.split(b"\n"):
                check_depth(raw, "/api/chat: a streamed line")
        try:
            return block.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            raise OllamaBadResponse("/api/chat: a streamed line is not UTF-8") from None

    @property
    def pending(self) -> bytes:
        return self._pending


_raw_decode = json.JSONDecoder().raw_decode


def parse_line(line: str) -> Any:
    """One NDJSON line -> its JSON value; None for a blank line."""
    if line.count("{") + line.count("[") > MAX_DEPTH:
        check_depth(line.encode("utf-8", "surrogatepass"), "/api/chat: a streamed line")
    return parse_split_line(line)


def parse_split_line(line: str) -> Any:
    """:func:`parse_line` for a line from :class:`LineSplitter`, whose nesting it checked."""
    try:
        obj, end = _raw_decode(line)
    except (ValueError, RecursionError):
        line = line.strip()  # raw_decode refuses leading whitespace; JSON allows it
        if not line:
            return None
        try:
            obj, end = _raw_decode(line)
        except (ValueError, RecursionError):
            raise OllamaBadResponse("/api/chat: a streamed line is not JSON") from None
    if end != len(line) and line[end:].strip():
        raise OllamaBadResponse("/api/chat: a streamed line is not JSON")
    if not isinstance(obj, dict):
        raise OllamaBadResponse("/api/chat: a streamed line is not a JSON object")
    return obj
