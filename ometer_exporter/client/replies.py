"""What Ollama's endpoints answer, parsed into typed values (and the stream's line reader).

An absent server field is unknown (None), never 0; a field of the wrong type is a
``bad_response``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ometer_exporter.client.errors import OllamaBadResponse
from ometer_exporter.names import is_cloud_name

MAX_LINE_BYTES: Final = 1 << 20  # one NDJSON chunk is ~200 bytes; a 1 MiB line is not Ollama


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


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """One entry of ``/api/ps``."""

    name: str
    size: int | None
    size_vram: int | None
    expires_at: datetime | None
    context_length: int | None


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


@dataclass(frozen=True, slots=True)
class ChatStream:
    """Client clocks (``time.perf_counter``) of one streamed chat and its final fields."""

    sent_at: float  # just before the request left
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
    """Go RFC 3339 timestamps (up to 9 fractional digits); None when absent or unparsable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _int_field(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OllamaBadResponse(f"field {key!r} is not a non-negative integer")
    return value


def _str_field(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def done_fields(obj: dict[str, Any]) -> DoneFields:
    reason = obj.get("done_reason")
    return DoneFields(
        done_reason=reason if isinstance(reason, str) else None,
        total_duration=_int_field(obj, "total_duration"),
        load_duration=_int_field(obj, "load_duration"),
        prompt_eval_count=_int_field(obj, "prompt_eval_count"),
        prompt_eval_duration=_int_field(obj, "prompt_eval_duration"),
        eval_count=_int_field(obj, "eval_count"),
        eval_duration=_int_field(obj, "eval_duration"),
    )


def parse_tag(entry: Any) -> TagModel:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise OllamaBadResponse("/api/tags: a model entry has no name")
    details = entry.get("details")
    details = details if isinstance(details, dict) else {}
    families = details.get("families")
    caps = entry.get("capabilities")
    remote_host = entry.get("remote_host")
    remote_model = entry.get("remote_model")
    return TagModel(
        name=entry["name"],
        size=_int_field(entry, "size"),
        digest=_str_field(entry, "digest"),
        modified_at=parse_timestamp(entry.get("modified_at")),
        format=_str_field(details, "format"),
        family=_str_field(details, "family"),
        families=tuple(f for f in families if isinstance(f, str))
        if isinstance(families, list)
        else (),
        parameter_size=_str_field(details, "parameter_size"),
        quantization_level=_str_field(details, "quantization_level"),
        context_length=_int_field(details, "context_length"),
        embedding_length=_int_field(details, "embedding_length"),
        capabilities=tuple(c for c in caps if isinstance(c, str))
        if isinstance(caps, list)
        else None,
        remote_host=remote_host if isinstance(remote_host, str) and remote_host else None,
        remote_model=remote_model if isinstance(remote_model, str) and remote_model else None,
    )


def parse_show(obj: Any) -> ShowInfo:
    if not isinstance(obj, dict):
        raise OllamaBadResponse("/api/show: the reply is not a JSON object")
    info = obj.get("model_info")
    info = info if isinstance(info, dict) else {}
    arch = info.get("general.architecture")
    arch = arch if isinstance(arch, str) and arch else None

    def number(key: str) -> int | None:
        value = info.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            return None
        return value

    caps = obj.get("capabilities")
    return ShowInfo(
        architecture=arch,
        parameter_count=number("general.parameter_count"),
        context_length=number(f"{arch}.context_length") if arch else None,
        embedding_length=number(f"{arch}.embedding_length") if arch else None,
        capabilities=tuple(c for c in caps if isinstance(c, str)) if isinstance(caps, list) else (),
    )


def parse_loaded(entry: Any) -> LoadedModel:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise OllamaBadResponse("/api/ps: a model entry has no name")
    return LoadedModel(
        name=entry["name"],
        size=_int_field(entry, "size"),
        size_vram=_int_field(entry, "size_vram"),
        expires_at=parse_timestamp(entry.get("expires_at")),
        context_length=_int_field(entry, "context_length"),
    )


def models_list(obj: Any, path: str) -> list[Any]:
    if not isinstance(obj, dict) or not isinstance(obj.get("models", []), list):
        raise OllamaBadResponse(f"{path}: expected an object with a 'models' list")
    models: list[Any] = obj.get("models") or []
    return models


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
    spans a newline): decoding ~150-byte lines one by one cost a third of the parse time.
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
        try:
            return data[:cut].decode("utf-8").split("\n")
        except UnicodeDecodeError:
            raise OllamaBadResponse("/api/chat: a streamed line is not UTF-8") from None

    @property
    def pending(self) -> bytes:
        return self._pending


_raw_decode = json.JSONDecoder().raw_decode


def parse_line(line: str) -> Any:
    """One NDJSON line -> its JSON value; None for a blank line."""
    try:
        obj, end = _raw_decode(line)
    except ValueError:
        line = line.strip()  # raw_decode refuses leading whitespace; JSON allows it
        if not line:
            return None
        try:
            obj, end = _raw_decode(line)
        except ValueError:
            raise OllamaBadResponse("/api/chat: a streamed line is not JSON") from None
    if end != len(line) and line[end:].strip():
        raise OllamaBadResponse("/api/chat: a streamed line is not JSON")
    if not isinstance(obj, dict):
        raise OllamaBadResponse("/api/chat: a streamed line is not a JSON object")
    return obj
