"""Async client for Ollama's HTTP API: the one module that knows the wire format.

Endpoints: ``/api/version``, ``/api/tags``, ``/api/show``, ``/api/ps``, streamed ``/api/chat``
and ``/api/embed``. Every failure is an :class:`OllamaError` whose ``error_type`` is one of the
fixed set exported as ``ometer_benchmark_errors_total{error_type}``. Every call has phased
deadlines (connect, first byte, idle between chunks, total) because httpx has no total deadline
of its own and a slow drip must still end.

The client never keeps response text it does not need: chunk contents are counted, not stored.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from time import perf_counter
from typing import Any, Final

import httpx

from ometer_exporter import __version__
from ometer_exporter.config import Timeouts

MAX_LINE_BYTES: Final = 1 << 20  # one NDJSON chunk is ~200 bytes; a 1 MiB line is not Ollama
MAX_BODY_BYTES: Final = 64 << 20  # /api/show lists every tensor; still far below this
_ERROR_TEXT_LIMIT: Final = 300
# Idle connections are kept across benchmark cycles so TCP/TLS setup never lands in a TTFT.
_KEEPALIVE_EXPIRY: Final = 24 * 3600.0


class ErrorType(StrEnum):
    """The fixed set of ``error_type`` label values."""

    TIMEOUT = "timeout"
    CONNECT = "connect"
    AUTH = "auth"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "not_found"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    STREAM_INCOMPLETE = "stream_incomplete"
    STREAM_ERROR = "stream_error"
    BAD_RESPONSE = "bad_response"


class OllamaError(Exception):
    """A failed call. ``str(error)`` is safe to show: bounded, no secrets, no control chars."""

    error_type: ErrorType = ErrorType.BAD_RESPONSE

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


class OllamaTimeout(OllamaError):
    """A phased deadline passed; ``phase`` is connect, first_byte, idle or total."""

    error_type = ErrorType.TIMEOUT

    def __init__(self, message: str, *, phase: str) -> None:
        super().__init__(message)
        self.phase = phase


class OllamaConnectError(OllamaError):
    error_type = ErrorType.CONNECT


class OllamaAuthError(OllamaError):
    """401 (bad or missing key) or 403 (e.g. cloud disabled on the server)."""

    error_type = ErrorType.AUTH


class OllamaRateLimited(OllamaError):
    """429. ``usage_limit`` is true for Ollama Cloud's session/weekly usage windows."""

    error_type = ErrorType.RATE_LIMITED

    @property
    def usage_limit(self) -> bool:
        return "usage limit" in self.message


class OllamaNotFound(OllamaError):
    """404 (model not installed) or 410 (retired cloud model)."""

    error_type = ErrorType.NOT_FOUND


class OllamaHTTPError(OllamaError):
    """Any other HTTP error status; the type says 4xx or 5xx."""

    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message, status=status, retry_after=retry_after)
        self.error_type = ErrorType.HTTP_5XX if status >= 500 else ErrorType.HTTP_4XX


class OllamaStreamIncomplete(OllamaError):
    """The stream ended (EOF or reset) before its ``done`` line."""

    error_type = ErrorType.STREAM_INCOMPLETE


class OllamaStreamError(OllamaError):
    """The server sent ``{"error": ...}`` after streaming had begun (status 200)."""

    error_type = ErrorType.STREAM_ERROR


class OllamaBadResponse(OllamaError):
    error_type = ErrorType.BAD_RESPONSE


# --------------------------------------------------------------------------------------------
# Parsed responses


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


# --------------------------------------------------------------------------------------------
# Helpers that read Ollama's conventions


_CLOUD_NAME = re.compile(r"(?::cloud|-cloud)$", re.IGNORECASE)
_PARAMETER_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMBT]?)\s*$", re.IGNORECASE)
_SCALE = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


def is_cloud_name(name: str) -> bool:
    """``glm-5.1:cloud`` and ``gpt-oss:120b-cloud`` are served by Ollama Cloud."""
    return bool(_CLOUD_NAME.search(name))


def canonical_name(name: str) -> str:
    """Ollama's display form always carries a tag: ``llama3.2`` -> ``llama3.2:latest``."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def parse_parameter_size(text: str) -> int | None:
    """``"8.2B"`` -> 8_200_000_000; None when it is not a size."""
    match = _PARAMETER_SIZE.match(text)
    if not match:
        return None
    return round(float(match.group(1)) * _SCALE[match.group(2).upper()])


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


def _done_fields(obj: dict[str, Any]) -> DoneFields:
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


def _parse_tag(entry: Any) -> TagModel:
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


def _parse_show(obj: Any) -> ShowInfo:
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


def _parse_loaded(entry: Any) -> LoadedModel:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise OllamaBadResponse("/api/ps: a model entry has no name")
    return LoadedModel(
        name=entry["name"],
        size=_int_field(entry, "size"),
        size_vram=_int_field(entry, "size_vram"),
        expires_at=parse_timestamp(entry.get("expires_at")),
        context_length=_int_field(entry, "context_length"),
    )


def _models_list(obj: Any, path: str) -> list[Any]:
    if not isinstance(obj, dict) or not isinstance(obj.get("models", []), list):
        raise OllamaBadResponse(f"{path}: expected an object with a 'models' list")
    models: list[Any] = obj.get("models") or []
    return models


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form; dates are rare here)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86400 else None


class _LineSplitter:
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


def _parse_line(line: str) -> Any:
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


# --------------------------------------------------------------------------------------------
# The client


class OllamaClient:
    """One keep-alive connection pool to one Ollama server.

    ``api_key`` is sent as ``Authorization: Bearer`` (Ollama Cloud) and redacted from every
    error message the client produces.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeouts = timeouts or Timeouts()
        self._api_key = api_key or None
        headers = {"User-Agent": f"ometer-exporter/{__version__}", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        t = self._timeouts
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            # Reads are bounded by our own phased deadlines (first byte, idle, total).
            timeout=httpx.Timeout(connect=t.connect, read=None, write=t.idle, pool=t.connect),
            limits=httpx.Limits(
                max_connections=16, max_keepalive_connections=4, keepalive_expiry=_KEEPALIVE_EXPIRY
            ),
            transport=transport,
            trust_env=False,  # never route benchmark traffic through an ambient proxy
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> OllamaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- simple JSON endpoints ---------------------------------------------------------------

    async def version(self) -> str:
        obj = await self._json("GET", "/api/version")
        version = obj.get("version") if isinstance(obj, dict) else None
        if not isinstance(version, str):
            raise OllamaBadResponse("/api/version: no version string")
        return version[:64]

    async def tags(self) -> list[TagModel]:
        obj = await self._json("GET", "/api/tags")
        return [_parse_tag(entry) for entry in _models_list(obj, "/api/tags")]

    async def show(self, model: str) -> ShowInfo:
        return _parse_show(await self._json("POST", "/api/show", {"model": model}))

    async def ps(self) -> list[LoadedModel]:
        obj = await self._json("GET", "/api/ps")
        return [_parse_loaded(entry) for entry in _models_list(obj, "/api/ps")]

    async def unload(self, model: str, *, embedding: bool = False) -> None:
        """Unload a model now (empty request with ``keep_alive: 0``)."""
        if embedding:
            await self._json("POST", "/api/embed", {"model": model, "input": [], "keep_alive": 0})
        else:
            await self._json("POST", "/api/chat", {"model": model, "messages": [], "keep_alive": 0})

    async def embed(
        self, model: str, inputs: list[str], *, keep_alive: float | None = None
    ) -> EmbedResponse:
        body: dict[str, Any] = {"model": model, "input": inputs}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        sent_at = perf_counter()
        obj = await self._json("POST", "/api/embed", body)
        ended_at = perf_counter()
        if not isinstance(obj, dict) or not isinstance(obj.get("embeddings"), list):
            raise OllamaBadResponse("/api/embed: no embeddings list in the reply")
        vectors: list[Any] = obj["embeddings"]
        first = vectors[0] if vectors else None
        return EmbedResponse(
            sent_at=sent_at,
            ended_at=ended_at,
            embeddings=len(vectors),
            dimensions=len(first) if isinstance(first, list) else None,
            done=_done_fields(obj),
        )

    # -- streamed chat -----------------------------------------------------------------------

    async def chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        options: dict[str, Any],
        think: bool | None = None,
        keep_alive: float | None = None,
    ) -> ChatStream:
        """Stream one chat request to its end and return its clocks and final fields.

        ``think`` and ``keep_alive`` are sent only when given: each changes server state
        (a 400 on non-thinking models; a loaded model's keep-alive setting).
        """
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": True,
            "options": options,
        }
        if think is not None:
            body["think"] = think
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        return await self._stream_chat(json.dumps(body).encode())

    async def _stream_chat(self, payload: bytes) -> ChatStream:
        loop = asyncio.get_running_loop()
        t = self._timeouts
        request = self._http.build_request(
            "POST", "/api/chat", content=payload, headers={"Content-Type": "application/json"}
        )
        total_deadline = loop.time() + t.total
        phase = "first_byte"
        sent_at = perf_counter()
        try:
            first_byte = min(total_deadline, loop.time() + t.first_byte)
            async with asyncio.timeout_at(first_byte) as deadline:
                response = await self._send(request)
                headers_at = perf_counter()
                try:
                    if response.status_code != 200:
                        raise await self._status_error(response, "/api/chat")
                    phase = "idle"
                    return await self._read_chat(
                        response, deadline, total_deadline, sent_at, headers_at
                    )
                finally:
                    await response.aclose()
        except TimeoutError:
            if loop.time() >= total_deadline - 0.001:
                phase = "total"
            limit = {"first_byte": t.first_byte, "idle": t.idle, "total": t.total}[phase]
            raise OllamaTimeout(
                f"/api/chat: {_PHASE_TEXT[phase]} deadline of {limit:g}s passed", phase=phase
            ) from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc, "/api/chat", streaming=phase == "idle") from None

    async def _read_chat(
        self,
        response: httpx.Response,
        deadline: asyncio.Timeout,
        total_deadline: float,
        sent_at: float,
        headers_at: float,
    ) -> ChatStream:
        loop = asyncio.get_running_loop()
        idle = self._timeouts.idle
        splitter = _LineSplitter()
        first_token_at: float | None = None
        first_content_at: float | None = None
        last_token_at: float | None = None
        thinking_chunks = content_chunks = 0
        done: DoneFields | None = None
        parse = _parse_line
        async for data in response.aiter_raw():
            now = perf_counter()
            deadline.reschedule(min(total_deadline, loop.time() + idle))
            for line in splitter.feed(data):
                obj = parse(line)
                if obj is None:
                    continue
                if "error" in obj:
                    raise OllamaStreamError(
                        f"/api/chat: error during the stream: {self._safe(obj['error'])}"
                    )
                if done is not None:
                    continue  # nothing follows done; tolerate it without counting it
                message = obj.get("message")
                if isinstance(message, dict):
                    thinking = message.get("thinking")
                    content = message.get("content")
                    if thinking or content:
                        if first_token_at is None:
                            first_token_at = now
                        last_token_at = now
                        if content:
                            content_chunks += 1
                            if first_content_at is None:
                                first_content_at = now
                        else:
                            thinking_chunks += 1
                if obj.get("done") is True:
                    done = _done_fields(obj)
        ended_at = perf_counter()
        if splitter.pending.strip():
            raise OllamaStreamIncomplete("/api/chat: the stream ended inside a line")
        if done is None:
            raise OllamaStreamIncomplete("/api/chat: the stream ended without its done line")
        return ChatStream(
            sent_at=sent_at,
            headers_at=headers_at,
            first_token_at=first_token_at,
            first_content_at=first_content_at,
            last_token_at=last_token_at,
            ended_at=ended_at,
            thinking_chunks=thinking_chunks,
            content_chunks=content_chunks,
            done=done,
        )

    # -- plumbing ----------------------------------------------------------------------------

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._http.send(request, stream=True)
        except httpx.ConnectTimeout:
            raise OllamaTimeout(
                f"{request.url.path}: connect deadline of {self._timeouts.connect:g}s passed",
                phase="connect",
            ) from None

    async def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """A non-streamed call with connect, first-byte and total deadlines."""
        loop = asyncio.get_running_loop()
        t = self._timeouts
        content = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        request = self._http.build_request(method, path, content=content, headers=headers)
        total_deadline = loop.time() + t.total
        phase = "first_byte"
        try:
            first_byte = min(total_deadline, loop.time() + t.first_byte)
            async with asyncio.timeout_at(first_byte) as deadline:
                response = await self._send(request)
                try:
                    if response.status_code != 200:
                        raise await self._status_error(response, path)
                    phase = "idle"
                    deadline.reschedule(total_deadline)
                    raw = await self._read_body(response, path)
                finally:
                    await response.aclose()
        except TimeoutError:
            phase = "total" if phase == "idle" or loop.time() >= total_deadline - 0.001 else phase
            limit = t.total if phase == "total" else t.first_byte
            raise OllamaTimeout(
                f"{path}: {_PHASE_TEXT[phase]} deadline of {limit:g}s passed", phase=phase
            ) from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc, path, streaming=phase == "idle") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise OllamaBadResponse(f"{path}: the reply is not JSON") from None

    async def _read_body(self, response: httpx.Response, path: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for data in response.aiter_raw():
            size += len(data)
            if size > MAX_BODY_BYTES:
                raise OllamaBadResponse(f"{path}: the reply exceeds {MAX_BODY_BYTES} bytes")
            chunks.append(data)
        return b"".join(chunks)

    async def _status_error(self, response: httpx.Response, path: str) -> OllamaError:
        """Map an HTTP error status and its ``{"error": ...}`` body to a typed error."""
        status = response.status_code
        text = ""
        try:
            raw = b""
            async for data in response.aiter_raw():
                raw += data
                if len(raw) > 64 << 10:
                    break
            try:
                obj = json.loads(raw)
                text = str(obj.get("error", "")) if isinstance(obj, dict) else ""
            except ValueError:
                text = raw.decode("utf-8", "replace")
        except httpx.TransportError:
            pass
        message = f"{path}: HTTP {status}" + (f": {self._safe(text)}" if text.strip() else "")
        retry_after = _retry_after(response.headers.get("Retry-After"))
        if status in (401, 403):
            return OllamaAuthError(message, status=status)
        if status in (404, 410):
            return OllamaNotFound(message, status=status)
        if status == 429:
            return OllamaRateLimited(message, status=status, retry_after=retry_after)
        if status < 400 or status > 599:
            return OllamaBadResponse(message, status=status)
        return OllamaHTTPError(message, status=status, retry_after=retry_after)

    def _transport_error(
        self, exc: httpx.TransportError, path: str, *, streaming: bool
    ) -> OllamaError:
        detail = self._safe(str(exc) or type(exc).__name__)
        if isinstance(exc, httpx.TimeoutException):
            # httpx's own write/pool timeouts; reads are bounded by our deadlines.
            return OllamaTimeout(f"{path}: {detail}", phase="connect")
        if streaming:
            return OllamaStreamIncomplete(f"{path}: connection lost during the reply: {detail}")
        if isinstance(exc, httpx.ConnectError):
            return OllamaConnectError(f"{path}: cannot connect: {detail}")
        return OllamaConnectError(f"{path}: connection failed before a reply: {detail}")

    def _safe(self, value: object) -> str:
        """Server-supplied text made safe to log and show: one line, bounded, no secret."""
        text = value if isinstance(value, str) else json.dumps(value)
        if self._api_key:
            text = text.replace(self._api_key, "<redacted>")
        text = "".join(ch if ch.isprintable() else " " for ch in text)
        if len(text) > _ERROR_TEXT_LIMIT:
            text = text[:_ERROR_TEXT_LIMIT] + "…"
        return text


_PHASE_TEXT: Final = {
    "connect": "connect",
    "first_byte": "first-byte",
    "idle": "idle (between chunks)",
    "total": "total",
}


def match_model(query: str, name: str) -> bool:
    """OMeter's match: the exact name, or the family (the name without its tag).

    ``llama3.2`` matches ``llama3.2:latest`` and ``llama3.2:1b``; ``llama3.2:1b`` matches only
    itself. Case-insensitive, as Ollama's own lookup.
    """
    q, n = query.strip().lower(), name.lower()
    if not q:
        return False
    if q == n or canonical_name(q) == n:
        return True
    return ":" not in q.rsplit("/", 1)[-1] and n.rsplit(":", 1)[0] == q
