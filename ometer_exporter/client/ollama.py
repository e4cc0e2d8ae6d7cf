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
import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any, Final, TypeVar

import httpx

from ometer_exporter import __version__
from ometer_exporter.client.errors import (
    OllamaAuthError,
    OllamaBadResponse,
    OllamaConnectError,
    OllamaError,
    OllamaHTTPError,
    OllamaNotFound,
    OllamaRateLimited,
    OllamaStreamIncomplete,
    OllamaTimeout,
    redact,
)
from ometer_exporter.client.pool import (
    CLOSED_BEFORE_REPLY,
    Attempt,
    can_retry,
    drop_idle,
)
from ometer_exporter.client.replies import (
    ChatStream,
    EmbedResponse,
    LoadedModel,
    ShowInfo,
    TagModel,
    check_depth,
    done_fields,
    load_json,
    models_list,
    parse_loaded,
    parse_retry_after,
    parse_show,
    parse_tag,
    parse_version,
)
from ometer_exporter.client.tally import ChatTally
from ometer_exporter.config.settings import Timeouts

MAX_BODY_BYTES: Final = 64 << 20  # /api/show lists every tensor; still far below this
_ERROR_TEXT_LIMIT: Final = 300
# Idle connections are kept across benchmark cycles so TCP/TLS setup never lands in a TTFT.
_KEEPALIVE_EXPIRY: Final = 24 * 3600.0
_ENTRY_WARNINGS: Final = 5  # bad entries named one by one per reply; the rest are counted
# A long model list is parsed in slices with the event loop free in between (~5 ms each), and a
# large body decoded off the loop: a server listing 100,000 models must not stall /metrics or
# the timestamps of another target's runs.
_ENTRIES_PER_SLICE: Final = 500
_DECODE_OFF_LOOP_BYTES: Final = 1 << 20

log = logging.getLogger(__name__)
_Entry = TypeVar("_Entry", TagModel, LoadedModel)


# --------------------------------------------------------------------------------------------
# The client


class OllamaClient:
    """One keep-alive connection pool to one Ollama server.

    ``api_key`` is sent as ``Authorization: Bearer`` (Ollama Cloud) and redacted from every
    error message the client produces.
    """

    api: str = "ollama"  # the API the target speaks, and the engine behind it (target info)
    engine: str | None = "ollama"
    slots: int | None = None  # parallel request slots, where the server says (not Ollama)
    reconnects = 0  # requests sent again after a server closed their kept-alive connection
    # Models the server said were in memory at discovery where it says so without /api/ps
    # (LM Studio's /api/v0/models); None: not told that way (Ollama tells it in /api/ps).
    loaded_now: frozenset[str] | None = None

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        connections: int = 4,
    ) -> None:
        """``connections``: kept-alive connections (a load sweep needs one per concurrent
        user, or each request past them would pay a new connection in its TTFT)."""
        self._timeouts = timeouts or Timeouts()
        self._api_key = api_key or None
        self._keepalive = connections
        headers = {
            "User-Agent": f"ometer-exporter/{__version__}",
            "Accept": "application/json",
            # Bodies are read raw (to time each chunk and cap the size): a compressed reply from
            # a server or proxy would be unreadable, so none is asked for.
            "Accept-Encoding": "identity",
        }
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        t = self._timeouts
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            # Reads are bounded by our own phased deadlines (first byte, idle, total).
            timeout=httpx.Timeout(connect=t.connect, read=None, write=t.idle, pool=t.connect),
            limits=httpx.Limits(
                max_connections=max(16, connections),
                max_keepalive_connections=connections,
                keepalive_expiry=_KEEPALIVE_EXPIRY,
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
        return redact(parse_version(await self._json("GET", "/api/version")), self._api_key)

    async def tags(self) -> list[TagModel]:
        """The models listed; a bad entry is left out (with a warning), not the whole reply."""
        return await self._entries(await self._json("GET", "/api/tags"), "/api/tags", parse_tag)

    async def show(self, model: str) -> ShowInfo:
        info = parse_show(await self._json("POST", "/api/show", {"model": model}))
        if self._leaks(info):
            raise OllamaBadResponse("/api/show: the reply carries the API key")
        return info

    async def ps(self) -> list[LoadedModel]:
        """The models loaded; a bad entry is left out (with a warning), not the whole reply."""
        return await self._entries(await self._json("GET", "/api/ps"), "/api/ps", parse_loaded)

    async def busy(self) -> bool | None:
        """Whether the server is serving a request now, where it says so directly: Ollama does
        not (its ``/api/ps`` expiries tell it, see ``measure.contention``)."""
        return None

    async def _entries(self, obj: Any, path: str, parse: Callable[[Any], _Entry]) -> list[_Entry]:
        out: list[_Entry] = []
        bad = 0
        for index, entry in enumerate(models_list(obj, path)):
            if index and not index % _ENTRIES_PER_SLICE:
                await asyncio.sleep(0)
            try:
                parsed = parse(entry)
                if self._leaks(parsed):  # a key in a label would reach /metrics
                    raise OllamaBadResponse(f"{path}: the entry carries the API key")
            except OllamaBadResponse as exc:
                bad += 1
                if bad <= _ENTRY_WARNINGS:
                    log.warning(
                        "%s%s: model entry %d (%s) left out: %s",
                        self._http.base_url, path, index, self._entry_name(entry), exc,
                    )  # fmt: skip
                continue
            out.append(parsed)
        if bad > _ENTRY_WARNINGS:
            log.warning(
                "%s%s: %d more bad model entries left out", self._http.base_url, path,
                bad - _ENTRY_WARNINGS,
            )  # fmt: skip
        return out

    def _entry_name(self, entry: Any) -> str:
        name = entry.get("name") if isinstance(entry, dict) else None
        return f"name {self._safe(name[:80])!r}" if isinstance(name, str) else "no name"

    def _leaks(self, value: TagModel | LoadedModel | ShowInfo) -> bool:
        """Whether a parsed reply carries (a slice of) the API key in any of its strings."""
        if self._api_key is None:
            return False
        texts = "\0".join(value.texts())  # a key is printable: no slice spans a \0
        return redact(texts, self._api_key) != texts

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
            done=done_fields(obj, "/api/embed"),
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

    async def _stream_chat(self, payload: bytes, path: str = "/api/chat") -> ChatStream:
        loop = asyncio.get_running_loop()
        t = self._timeouts
        request = self._http.build_request(
            "POST", path, content=payload, headers={"Content-Type": "application/json"}
        )
        total_deadline = loop.time() + t.total
        phase = "first_byte"
        first_byte = min(total_deadline, loop.time() + t.first_byte)
        deadline: asyncio.Timeout | None = None
        try:
            async with asyncio.timeout_at(first_byte) as deadline:
                response, sent_at = await self._send(request)
                headers_at = perf_counter()
                try:
                    if response.status_code != 200:
                        raise await self._status_error(response, path)
                    phase = "idle"
                    return await self._read_chat(
                        response, deadline, total_deadline, sent_at, headers_at
                    )
                finally:
                    await response.aclose()
        except TimeoutError:
            if phase == "idle" and deadline is not None and deadline.when() == first_byte:
                phase = "first_byte"  # headers came, but no chunk: still the first-byte deadline
            if loop.time() >= total_deadline - 0.001:
                phase = "total"
            limit = {"first_byte": t.first_byte, "idle": t.idle, "total": t.total}[phase]
            raise OllamaTimeout(
                f"{path}: {_PHASE_TEXT[phase]} deadline of {limit:g}s passed", phase=phase
            ) from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc, path, streaming=phase == "idle") from None

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
        tally = self._tally()
        feed = tally.feed
        async for data in response.aiter_raw():
            now = perf_counter()
            deadline.reschedule(min(total_deadline, loop.time() + idle))
            feed(data, now)
        return tally.stream(sent_at, headers_at, perf_counter())

    def _tally(self) -> ChatTally:
        return ChatTally(self._safe)

    # -- plumbing ----------------------------------------------------------------------------

    async def _send(self, request: httpx.Request) -> tuple[httpx.Response, float]:
        """The response's headers, and when the request that got them was sent: when its
        headers started out on the wire (``client/pool.py``), so the client's own work before
        that — the pool, a new connection, the other requests its event loop is sending at the
        same moment — is never in a TTFT. A request that a reused connection lost before any
        response byte is sent again until it goes out on a connection it opened itself."""
        sent_at = perf_counter()  # without httpcore underneath (tests' mock transports)
        retry = can_retry(self._http)
        sent_again = 0
        try:
            while True:
                attempt = Attempt(request)
                try:
                    response = await self._http.send(request, stream=True)
                    return response, attempt.headers_at or sent_at
                except CLOSED_BEFORE_REPLY:
                    if not retry or attempt.connected or sent_again > self._keepalive:
                        raise
                # A kept-alive connection the server had closed. Under concurrent requests
                # another one's spent connection can come back to the pool meanwhile: sent
                # again until it goes out on a connection it opened itself.
                sent_again += 1
                self.reconnects += 1
                log.debug("%s: a kept-alive connection was closed; sending again",
                          request.url.path)  # fmt: skip
                await drop_idle(self._http)
        except httpx.ConnectTimeout:
            raise OllamaTimeout(
                f"{request.url.path}: connect deadline of {self._timeouts.connect:g}s passed",
                phase="connect",
            ) from None

    async def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """A non-streamed call with connect, first-byte and total deadlines: its JSON reply."""
        raw = await self._raw(method, path, body)
        if len(raw) > _DECODE_OFF_LOOP_BYTES:
            return await asyncio.to_thread(load_json, raw, path)
        return load_json(raw, path)

    async def _raw(self, method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        """A non-streamed call with connect, first-byte and total deadlines: its body."""
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
                response, _ = await self._send(request)
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
        return raw

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
                check_depth(raw, path)
                obj = json.loads(raw)
                error = obj.get("error", "") if isinstance(obj, dict) else ""
                # OpenAI-style servers nest it: {"error": {"message": ..., "type": ...}}
                text = str(error.get("message", "") if isinstance(error, dict) else error)
            except (ValueError, RecursionError, OllamaBadResponse):
                text = raw.decode("utf-8", "replace")
        except httpx.TransportError:
            pass
        message = f"{path}: HTTP {status}" + (f": {self._safe(text)}" if text.strip() else "")
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
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
        cut = len(text) > _ERROR_TEXT_LIMIT
        text = text[:_ERROR_TEXT_LIMIT]
        if not text.isprintable():
            text = "".join(ch if ch.isprintable() else " " for ch in text)
        return redact(text, self._api_key) + ("…" if cut else "")


_PHASE_TEXT: Final = {
    "connect": "connect",
    "first_byte": "first-byte",
    "idle": "idle (between chunks)",
    "total": "total",
}
