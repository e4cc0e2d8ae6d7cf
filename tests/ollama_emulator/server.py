"""An Ollama server emulator on aiohttp, faithful to ``docs/ollama-protocol.md``.

Time model: the emulator sleeps ``x * time_scale`` real seconds for ``x`` emulated seconds
(load, prefill, decode, fault stalls, keep-alive) and reports durations in emulated
nanoseconds. A reported duration is the *real* elapsed time with only its simulated parts
stretched back to emulated length: the emulator's own sleeps count at their nominal emulated
length, waits on other requests (load queue, a busy slot) count as real wait / time_scale, and
everything else (parsing, scheduling jitter, writing) counts as the real time it took. With
``time_scale=1`` that is exactly real elapsed time; with a small time scale, machine overhead is
not magnified, so a 120 s load reports 120 s (+ real overhead) and a warm request's
``load_duration`` stays a few ms or less.

``expires_at`` in ``/api/ps`` is wall clock + keep_alive (emulated seconds); the model really
expires after ``keep_alive * time_scale`` real seconds.

Each chunk costs a few tens of microseconds to build and write; keep the real decode interval
(``time_scale / decode_tokens_per_second``) well above that when a test compares wire rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from time import perf_counter
from types import TracebackType
from typing import Any, ClassVar

from aiohttp import web

from . import openai
from .connection import StampedProtocol, stamps_of
from .models import (
    EmulatedModel,
    Fault,
    LoadedState,
    RequestRecord,
    canonical_key,
    display_name,
    fully_qualified_name,
    is_valid_name,
)
from .text import (
    chat_prompt_tokens,
    content_piece,
    embedding_json,
    thinking_piece,
    token_id,
    words,
)
from .wire import (
    CHAT_FIELDS,
    EMBED_FIELDS,
    GENERATE_FIELDS,
    MAX_DURATION_NS,
    SHOW_FIELDS,
    GoDecodeError,
    datetime_ns,
    go_json,
    go_quote,
    go_string,
    parse_json_body,
    plain,
    rfc3339_nano,
    validate_request,
)

__all__ = ["BUSY_MESSAGE", "USAGE_LIMIT_MESSAGE", "OllamaEmulator"]

BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
USAGE_LIMIT_MESSAGE = (
    "you (user) have reached your session usage limit, upgrade for higher limits: "
    "https://ollama.com/upgrade"
)
# docs/ollama-protocol.md §13: the real text for a completion model on /api/embed (llama-server
# started without --embeddings) is unverified; this is llama.cpp's wording for that case, relayed.
NO_EMBEDDINGS_MESSAGE = (
    "llama-server: This server does not support embeddings. Start it with `--embeddings`"
)
CONTEXT_OVERFLOW_MESSAGE = "the request exceeds the available context size, try increasing it"
EMBED_TOO_LONG_MESSAGE = "the input length exceeds the context length"
MID_STREAM_ERROR = "an error was encountered while running the model: unexpected EOF"

JSON_UTF8 = "application/json; charset=utf-8"
JSON_PLAIN = "application/json"
NDJSON = "application/x-ndjson"
TEXT_UTF8 = "text/plain; charset=utf-8"
TEXT_PLAIN = "text/plain"

# Go's net/http sends Content-Length when the handler's whole body fits its 2 KiB buffer and
# switches to chunked encoding beyond it.
_GO_CHUNKING_THRESHOLD = 2048

_ROUTES: Mapping[str, tuple[str, ...]] = {
    "/": ("GET", "HEAD"),
    "/api/version": ("GET", "HEAD"),
    "/api/tags": ("GET", "HEAD"),
    "/api/ps": ("GET",),
    "/api/show": ("POST",),
    "/api/chat": ("POST",),
    "/api/generate": ("POST",),
    "/api/embed": ("POST",),
}

_MID_STREAM_KINDS = frozenset(
    {"malformed_line", "truncate", "error_line", "stall", "huge_line", "reset"}
)

# api.Options / api.Runner keys and their Go kinds (docs/ollama-protocol.md §4.2); unknown keys
# are ignored.
_OPTION_KINDS: Mapping[str, str] = {
    "num_keep": "int",
    "seed": "int",
    "num_predict": "int",
    "top_k": "int",
    "top_p": "float",
    "min_p": "float",
    "typical_p": "float",
    "repeat_last_n": "int",
    "temperature": "float",
    "repeat_penalty": "float",
    "presence_penalty": "float",
    "frequency_penalty": "float",
    "stop": "strings",
    "num_ctx": "int",
    "num_batch": "int",
    "num_gpu": "int",
    "main_gpu": "int",
    "use_mmap": "bool",
    "num_thread": "int",
    "draft_num_predict": "int",
    "numa": "bool",
}
_OPTION_TYPE_NAMES = {"int": "integer", "float": "float32", "bool": "boolean"}

_FILE_TYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10,
    "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16,
    "Q5_K_M": 17, "Q6_K": 18, "BF16": 32, "MXFP4": 38,
}  # fmt: skip


log = logging.getLogger("ollama_emulator")


class _HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        content_type: str = JSON_UTF8,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.content_type = content_type
        self.headers = dict(headers or {})


class _LazyHeadersResponse(web.StreamResponse):
    """Headers go out together with the first body write, as with Go's buffered writer."""

    _send_headers_immediately: ClassVar[bool] = False  # type: ignore[misc]


class _Slots:
    """A FIFO semaphore: a released slot goes to the longest waiter (no barging)."""

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            elif fut in self._waiters:  # release() may already have dropped it
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1


@dataclass(eq=False)
class _Runner:
    model: EmulatedModel
    options: dict[str, Any]
    num_ctx: int
    parallel: int
    keep_alive: float  # emulated seconds; < 0 forever
    virtual: bool = False  # cloud / remote stub: never loads, never listed
    loading: bool = True
    in_flight: int = 0
    decoding: int = 0  # sequences past prefill, generating (continuous batching)
    expires_ns: int = 0  # wall clock (epoch ns) shown in /api/ps
    expires_perf: float | None = None  # real deadline while idle; None = never
    draining: bool = False
    timer: asyncio.TimerHandle | None = None
    cache: list[str] = field(default_factory=list)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    slots: _Slots = field(init=False)

    def __post_init__(self) -> None:
        self.slots = _Slots(self.parallel)

    def usable_for(self, options: Mapping[str, Any]) -> bool:
        return not self.loading and not self.draining and self.options == options

    def prefix_hit(self, tokens: Sequence[str]) -> int:
        """Prompt tokens reusable from the KV cache; the last token is always re-evaluated."""
        n = 0
        for a, b in zip(self.cache, tokens, strict=False):
            if a != b:
                break
            n += 1
        if tokens and n >= len(tokens):
            n = len(tokens) - 1
        return n


@dataclass
class _Ctx:
    request: web.Request
    rec: RequestRecord
    raw: bytes
    resp: web.StreamResponse | None = None
    # emulated minus real seconds of the simulated parts, per phase (see the module docstring)
    load_stretch: float = 0.0
    wait_stretch: float = 0.0
    prefill_stretch: float = 0.0
    events: openai.EventWriter | None = None  # an OpenAI-style (SSE) chat completion

    @property
    def stretch(self) -> float:
        return self.load_stretch + self.wait_stretch + self.prefill_stretch


async def _sleep_until(deadline: float) -> None:
    """Sleep until ``perf_counter() >= deadline`` without blocking the loop: a coarse sleep,
    then yield-spinning for the last ~1.5 ms (epoll rounds timeouts up to whole ms). Always
    yields at least once so a stream that is behind schedule cannot starve the loop."""
    remaining = deadline - perf_counter()
    if remaining > 0.002:
        await asyncio.sleep(remaining - 0.0015)
    await asyncio.sleep(0)
    while perf_counter() < deadline:  # noqa: ASYNC110 - deliberate yield-spin for precision
        await asyncio.sleep(0)


class OllamaEmulator:
    """A loopback Ollama (v0.30+ local server, or ollama.com with ``cloud=True``).

    >>> async with OllamaEmulator([chat_model()], time_scale=0.01) as emu:  # doctest: +SKIP
    ...     emu.url  # 'http://127.0.0.1:41234'

    Keyword arguments beyond the reference's environment knobs: ``default_num_ctx`` (the
    ``num_ctx`` a request without one gets, capped at the model's context), ``utc_offset`` (the
    "server's local zone" of ``modified_at``/``expires_at``), ``max_records`` (keep about the last
    N ground-truth records; None keeps all).
    """

    def __init__(
        self,
        models: Sequence[EmulatedModel],
        *,
        time_scale: float = 1.0,
        version: str = "0.33.0",
        num_parallel: int = 1,
        max_queue: int = 512,
        default_keep_alive: float = 300.0,
        api_key: str | None = None,
        cloud: bool = False,
        default_num_ctx: int = 4096,
        utc_offset: timedelta = timedelta(hours=2),
        max_records: int | None = None,
        control: bool = False,
        engine: str = "ollama",
        close_reused: bool = False,
        build: str = openai.LLAMA_BUILD,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.time_scale = time_scale
        self.version = version
        self.num_parallel = max(1, num_parallel)
        self.max_queue = max_queue
        self.default_keep_alive = default_keep_alive
        self.api_key = api_key
        self.cloud = cloud
        self.default_num_ctx = default_num_ctx
        self.utc_offset = utc_offset
        self.max_records = max_records
        # Test controls over HTTP, for an emulator in its own process: GET /_emulator/records
        # (the ground truth, perf_counter being the system's monotonic clock) and POST
        # /_emulator/preload {"name", "keep_alive"}. Off unless asked for: Ollama has no such
        # routes.
        self.control = control
        # The OpenAI-compatible API (tests/ollama_emulator/openai.py): "ollama" serves /v1 beside
        # /api as Ollama does; "llama.cpp" is a llama-server (/v1, /props, /health, no /api),
        # "vllm" vLLM's server (/v1, /version), "lmstudio" LM Studio's (/v1, /api/v0/models).
        if engine not in openai.ENGINES:
            raise ValueError(f"engine must be one of {', '.join(openai.ENGINES)}")
        self.engine = engine
        self.close_reused = close_reused
        self.build = build
        self.closed_reused = 0  # requests dropped on a reused connection (close_reused)
        # Connections that carried a streamed completion (weakly: a closed connection's id()
        # can come back as a new one's).
        self._spent: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self.url = ""
        self.records: list[RequestRecord] = []
        self._models: dict[str, EmulatedModel] = {}
        self._runners: dict[str, _Runner] = {}
        self._virtual: dict[str, _Runner] = {}
        self._faults: dict[str, list[Fault]] = {}
        self._load_lock = asyncio.Lock()
        self._pending_loads = 0
        self._app_runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        for m in models:
            self.add_model(m)

    # ---------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        server = runner.server
        assert server is not None
        # aiohttp's protocol behind one that stamps each connection's reads and writes
        # (connection.py): a listener of our own instead of a TCPSite, which cannot wrap it.
        self._listener = await asyncio.get_running_loop().create_server(
            lambda: StampedProtocol(server()), host, port
        )
        self._app_runner = runner
        bound = self._listener.sockets[0].getsockname()
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound[1]}"
        return self.url

    async def close(self) -> None:
        for r in [*self._runners.values(), *self._virtual.values()]:
            if r.timer is not None:
                r.timer.cancel()
                r.timer = None
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        runner, self._app_runner = self._app_runner, None
        if runner is not None:
            await runner.cleanup()  # closes the connections aiohttp's server knows
        if listener is not None:
            await listener.wait_closed()

    async def __aenter__(self) -> OllamaEmulator:
        if self._app_runner is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ---------------------------------------------------------------- test controls

    def records_for(self, path: str, model: str | None = None) -> list[RequestRecord]:
        key = canonical_key(model) if model is not None else None
        return [
            r
            for r in self.records
            if r.path == path
            and (key is None or (r.model is not None and canonical_key(r.model) == key))
        ]

    def add_fault(self, model: str, fault: Fault) -> None:
        self._faults.setdefault(canonical_key(model), []).append(dataclasses.replace(fault))

    def clear_faults(self) -> None:
        self._faults.clear()

    def add_model(self, m: EmulatedModel) -> None:
        self._models[canonical_key(m.name)] = m
        if self.engine != "ollama":
            self.preload(m.name, keep_alive=-1)  # these servers load their models at start

    def remove_model(self, name: str) -> None:
        key = canonical_key(name)
        self._drop(key)
        self._virtual.pop(key, None)
        self._models.pop(key, None)

    def preload(self, name: str, keep_alive: float | None = None) -> None:
        """Mark a model loaded now (no load time); ``keep_alive`` negative = pinned forever."""
        key = canonical_key(name)
        m = self._models[key]
        if self.cloud or m.is_remote:
            return
        self._drop(key)
        opts = self._runner_options(m, {})
        r = self._new_runner(m, opts, self.default_keep_alive if keep_alive is None else keep_alive)
        r.loading = False
        self._runners[key] = r
        self._go_idle(key, r)

    def unload(self, name: str) -> None:
        self._drop(canonical_key(name))

    def loaded(self) -> dict[str, LoadedState]:
        self._expire_idle()
        out: dict[str, LoadedState] = {}
        for r in self._runners.values():
            name = display_name(r.model.name)
            size = self._loaded_size(r)
            out[name] = LoadedState(
                name=name,
                loading=r.loading,
                keep_alive=r.keep_alive,
                expires_at=None if r.keep_alive < 0 else self._local_datetime(r.expires_ns),
                options=dict(r.options),
                context_length=r.num_ctx,
                size=size,
                size_vram=size if r.model.size_vram is None else r.model.size_vram,
                in_flight=r.in_flight,
            )
        return out

    # ---------------------------------------------------------------- HTTP plumbing

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None and transport in self._spent:
            # llama-server's way: the kept-alive connection is gone before any response byte.
            self.closed_reused += 1
            transport.abort()
            return web.StreamResponse()
        rec = RequestRecord(
            path=request.path,
            method=request.method,
            model=None,
            body=None,
            headers={k.lower(): v for k, v in request.headers.items()},
            arrived=perf_counter(),
        )
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if isinstance(peer, tuple) and len(peer) >= 2:
            rec.peer = f"{peer[0]}:{peer[1]}"
        self.records.append(rec)
        if self.max_records is not None and len(self.records) > 2 * self.max_records:
            del self.records[: -self.max_records]  # amortised trimming for long runs
        ctx = _Ctx(request=request, rec=rec, raw=b"")
        stamps = stamps_of(request)
        try:
            try:
                ctx.raw = await request.read()
            finally:
                if stamps is not None:
                    rec.socket_arrived = stamps.take_arrival()
            if openai.serves(self.engine, request.path):
                return await self._openai(ctx)
            control = self.control and request.path.startswith("/_emulator/")
            if self.engine != "ollama" and not control:
                status, body = openai.unknown_route(self.engine, request.method, request.path)
                return await self._send(ctx, status, body, JSON_UTF8)
            if request.path.startswith("/api/") and not self._authorized(request):
                raise _HTTPError(401, "unauthorized")
            routes = dict(_ROUTES)
            if self.cloud:
                del routes["/api/ps"]  # ollama.com has no /api/ps
            if self.control:
                routes.update({"/_emulator/records": ("GET",), "/_emulator/preload": ("POST",)})
            methods = routes.get(request.path)
            if methods is None:
                return await self._send(ctx, 404, b"404 page not found", TEXT_PLAIN)
            if request.method not in methods:
                return await self._send(ctx, 405, b"405 method not allowed", TEXT_PLAIN)
            return await self._route(ctx)
        except _HTTPError as e:
            if ctx.resp is not None and ctx.resp.prepared:
                return ctx.resp
            rec.error = e.message
            body = go_json({"error": e.message}).encode()
            return await self._send(ctx, e.status, body, e.content_type, e.headers)
        except ConnectionError:
            return ctx.resp if ctx.resp is not None else web.StreamResponse()
        finally:
            if rec.finished is None:
                rec.finished = perf_counter()

    async def _openai(self, ctx: _Ctx) -> web.StreamResponse:
        """The OpenAI-compatible routes (and the engine's own), errors in the engine's shape."""
        path = ctx.request.path
        try:
            if not self._authorized(ctx.request) and openai.needs_key(self.engine, path):
                raise _HTTPError(401, "Invalid API Key")
            info = openai.info_reply(self, path)
            if info is not None:
                kind = TEXT_PLAIN if path == "/metrics" else JSON_UTF8
                return await self._send(ctx, 200, info, kind)
            if ctx.request.method != "POST":
                raise _HTTPError(405, "method not allowed")
            body = parse_json_body(ctx.raw) if ctx.raw else None
            if isinstance(body, dict) and body.get("stream") is not True and path.endswith("ions"):
                # Only streamed completions are emulated (the exporter streams every one).
                raise _HTTPError(400, "the emulator serves only stream: true")
            refused = openai.refusal(self, body)
            if refused is not None:
                ctx.rec.model = str((body or {}).get("model", ""))
                raise _HTTPError(*refused)
            if path == "/v1/embeddings":
                return await self._openai_embed(ctx, body)
            ctx.events = openai.EventWriter(
                self, ctx, str((body or {}).get("model", "")), openai.include_usage(body)
            )
            ctx.raw = go_json(openai.chat_request(body)).encode()
            return await self._complete(ctx, chat=True)
        except GoDecodeError as e:
            ctx.rec.error = e.message
            reply = openai.error_body(self.engine, e.message, 400)
            return await self._send(ctx, 400, reply, JSON_UTF8)
        except _HTTPError as e:
            if ctx.resp is not None and ctx.resp.prepared:
                return ctx.resp
            ctx.rec.error = e.message
            reply = openai.error_body(self.engine, e.message, e.status)
            return await self._send(ctx, e.status, reply, JSON_UTF8)

    async def _openai_embed(self, ctx: _Ctx, body: Any) -> web.StreamResponse:
        name = str(body.get("model", "")) if isinstance(body, dict) else ""
        raw = body.get("input") if isinstance(body, dict) else None
        inputs = [raw] if isinstance(raw, str) else raw
        if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
            raise _HTTPError(400, "invalid input type")
        ctx.rec.model = name
        m = self._lookup(name)
        if m is None:
            raise _HTTPError(404, f"model {go_quote(name)} not found")
        if not m.is_embedding:
            raise _HTTPError(501, NO_EMBEDDINGS_MESSAGE)
        counts = [len(words(text)) + 2 for text in inputs]
        busy = sum(counts) / m.prefill_tokens_per_second * self.time_scale
        start = perf_counter()
        vectors = [embedding_json(m.name, t, m.embedding_length, 0) for t in inputs]
        await _sleep_until(start + busy)
        ctx.rec.prompt_eval_count = sum(counts)
        reply = openai.embeddings_body(self.engine, name, vectors, sum(counts))
        return await self._send(ctx, 200, reply, JSON_UTF8)

    async def _route(self, ctx: _Ctx) -> web.StreamResponse:
        path = ctx.request.path
        if self.control and path.startswith("/_emulator/"):
            return await self._control(ctx, path)
        if path == "/":
            return await self._send(ctx, 200, b"Ollama is running", TEXT_UTF8)
        if path == "/api/version":
            return await self._send_json(ctx, 200, {"version": self.version})
        if path == "/api/tags":
            return await self._send_json(ctx, 200, self._tags_body())
        if path == "/api/ps":
            return await self._send_json(ctx, 200, self._ps_body())
        if path == "/api/show":
            return await self._show(ctx)
        if path == "/api/embed":
            return await self._embed(ctx)
        return await self._complete(ctx, chat=path == "/api/chat")

    async def _control(self, ctx: _Ctx, path: str) -> web.StreamResponse:
        if path == "/_emulator/records":
            records = [dataclasses.asdict(r) for r in self.records if not r.path.startswith("/_")]
            text = json.dumps(records, default=str)  # plain JSON: floats in full, not Go's form
            return await self._send(ctx, 200, text.encode(), JSON_UTF8)
        if path == "/_emulator/preload":
            body = json.loads(ctx.raw or b"{}")
            self.preload(body["name"], body.get("keep_alive"))
            return await self._send_json(ctx, 200, {})
        return await self._send_json(ctx, 404, {"error": "no such control"})

    def _authorized(self, request: web.Request) -> bool:
        if self.api_key is None:
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token.strip() == self.api_key

    async def _send(
        self,
        ctx: _Ctx,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        resp = _LazyHeadersResponse(status=status, headers={"Content-Type": content_type})
        for k, v in (headers or {}).items():
            resp.headers[k] = v
        head = ctx.request.method == "HEAD"
        if len(body) > _GO_CHUNKING_THRESHOLD and not head:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = len(body)
        ctx.resp = resp
        ctx.rec.status = status
        await resp.prepare(ctx.request)
        if body and not head:
            await resp.write(body)
        await resp.write_eof()
        ctx.rec.headers_sent = ctx.rec.finished = perf_counter()
        return resp

    async def _send_json(self, ctx: _Ctx, status: int, obj: Any) -> web.StreamResponse:
        return await self._send(ctx, status, go_json(obj).encode(), JSON_UTF8)

    def _decode(self, ctx: _Ctx, fields: Mapping[str, Any], go_struct: str) -> dict[str, Any]:
        try:
            value = parse_json_body(ctx.raw)
            ctx.rec.body = plain(value)
            req = validate_request(value, fields, go_struct)
        except GoDecodeError as e:
            raise _HTTPError(400, e.message) from None
        model = req.get("model")
        if go_struct == "ShowRequest" and not model:
            model = req.get("name")
        ctx.rec.model = model
        return req

    # ---------------------------------------------------------------- time helpers

    def _stretch(self, real_seconds: float) -> float:
        """Extra emulated seconds for a simulated stretch of ``real_seconds``."""
        return real_seconds * (1.0 / self.time_scale - 1.0)

    @staticmethod
    def _ns(seconds: float) -> int:
        return max(0, round(seconds * 1e9))

    def _local(self, epoch_ns: int) -> str:
        return rfc3339_nano(epoch_ns, self.utc_offset)

    def _local_datetime(self, epoch_ns: int) -> datetime:
        tz = timezone(self.utc_offset)
        return datetime.fromtimestamp(epoch_ns // 1_000_000_000, tz) + timedelta(
            microseconds=(epoch_ns % 1_000_000_000) // 1000
        )

    @staticmethod
    def _created_at() -> str:
        return rfc3339_nano(time.time_ns())

    # ---------------------------------------------------------------- inventory endpoints

    def _details(self, m: EmulatedModel, *, lengths: bool) -> dict[str, Any]:
        d: dict[str, Any] = {
            "parent_model": "",
            "format": m.format,
            "family": m.family,
            "families": m.effective_families,
            "parameter_size": m.parameter_size,
            "quantization_level": m.quantization_level,
        }
        if lengths and not m.is_remote:
            if m.context_length:
                d["context_length"] = m.context_length
            if m.embedding_length:
                d["embedding_length"] = m.embedding_length
        return d

    def _tags_body(self) -> dict[str, Any]:
        models = sorted(
            self._models.values(),
            key=lambda m: datetime_ns(m.effective_modified_at) // 1_000_000_000,
            reverse=True,  # Python's sort stays stable with reverse=True
        )
        out: list[dict[str, Any]] = []
        for m in models:
            name = display_name(m.name)
            e: dict[str, Any] = {"name": name, "model": name}
            if m.remote_model:
                e["remote_model"] = m.remote_model
            if m.remote_host:
                e["remote_host"] = m.remote_host
            e["modified_at"] = self._local(datetime_ns(m.effective_modified_at))
            e["size"] = m.size
            e["digest"] = m.effective_digest
            e["details"] = self._details(m, lengths=True)
            if m.capabilities:
                e["capabilities"] = list(m.capabilities)
            out.append(e)
        return {"models": out}

    def _loaded_size(self, r: _Runner) -> int:
        # weights + a KV cache of num_ctx tokens per parallel slot
        return r.model.size + r.num_ctx * r.parallel * r.model.block_count * 2048

    def _ps_body(self) -> dict[str, Any]:
        self._expire_idle()
        runners = sorted(self._runners.values(), key=lambda r: r.expires_ns, reverse=True)
        out: list[dict[str, Any]] = []
        for r in runners:
            m = r.model
            name = display_name(m.name)
            size = self._loaded_size(r)
            out.append(
                {
                    "name": name,
                    "model": name,
                    "size": size,
                    "digest": m.effective_digest,
                    "details": self._details(m, lengths=False),
                    "expires_at": self._local(r.expires_ns),
                    "size_vram": size if m.size_vram is None else m.size_vram,
                    "context_length": r.num_ctx,
                }
            )
        return {"models": out}

    async def _show(self, ctx: _Ctx) -> web.StreamResponse:
        req = self._decode(ctx, SHOW_FIELDS, "ShowRequest")
        name = req.get("model") or req.get("name") or ""
        if not name:
            raise _HTTPError(400, "model is required")
        if not is_valid_name(name):
            raise _HTTPError(400, "invalid model name")
        m = self._lookup(name)
        if m is None:
            raise _HTTPError(404, f"model '{display_name(name)}' not found")
        return await self._send_json(
            ctx, 200, self._show_body(m, verbose=bool(req.get("verbose")), system=req.get("system"))
        )

    def _show_body(self, m: EmulatedModel, *, verbose: bool, system: str | None) -> dict[str, Any]:
        fam = m.family
        embedding = m.is_embedding
        if embedding:
            template = "{{ .Prompt }}"
            params: list[tuple[str, Any]] = []
            tokenizer = "bert"
        elif fam.startswith("qwen"):
            template = (
                "{{- range $i, $_ := .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}"
                "<|im_end|>\n{{ end }}<|im_start|>assistant\n"
            )
            params = [("repeat_penalty", 1), ("stop", "<|im_start|>"), ("stop", "<|im_end|>"),
                      ("temperature", 0.6), ("top_k", 20), ("top_p", 0.95)]  # fmt: skip
            tokenizer = "gpt2"
        else:
            template = (
                "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
                "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>"
                "\n\n"
            )
            params = [("stop", "<|start_header_id|>"), ("stop", "<|end_header_id|>"),
                      ("stop", "<|eot_id|>")]  # fmt: skip
            tokenizer = "gpt2"
        license_text = "Apache License\nVersion 2.0, January 2004"

        def go_value(v: Any) -> str:
            return go_quote(v) if isinstance(v, str) else str(v)

        modelfile_lines = [
            '# Modelfile generated by "ollama show"',
            "# To build a new Modelfile based on this, replace FROM with:",
            f"# FROM {display_name(m.name)}",
            "",
            f"FROM /root/.ollama/models/blobs/sha256-{m.effective_digest}",
            f'TEMPLATE """{template}"""',
            *(f"PARAMETER {k} {v}" for k, v in params),
            f'LICENSE """{license_text}"""',
            "",
        ]
        out: dict[str, Any] = {"license": license_text, "modelfile": "\n".join(modelfile_lines)}
        if params:
            out["parameters"] = "\n".join(f"{k:<30} {go_value(v)}" for k, v in params)
        out["template"] = template
        if system:
            out["system"] = system
        out["details"] = self._details(m, lengths=False)
        if m.remote_model:
            out["remote_model"] = m.remote_model
        if m.remote_host:
            out["remote_host"] = m.remote_host

        info: dict[str, Any] = {
            "general.architecture": fam,
            "general.parameter_count": m.parameter_count,
            f"{fam}.context_length": m.context_length,
            f"{fam}.embedding_length": m.embedding_length,
        }
        if not m.is_remote:
            vocab = 30522 if embedding else 128256
            heads = max(1, m.embedding_length // 128)
            info.update(
                {
                    "general.file_type": _FILE_TYPES.get(m.quantization_level, 15),
                    "general.quantization_version": 2,
                    f"{fam}.attention.head_count": heads,
                    f"{fam}.attention.head_count_kv": heads if embedding else min(8, heads),
                    f"{fam}.block_count": m.block_count,
                    f"{fam}.feed_forward_length": m.embedding_length * 4,
                    f"{fam}.vocab_size": vocab,
                    "tokenizer.ggml.bos_token_id": 101 if embedding else 128000,
                    "tokenizer.ggml.eos_token_id": 102 if embedding else 128009,
                    "tokenizer.ggml.model": tokenizer,
                    "tokenizer.ggml.pre": "default" if embedding else "llama-bpe",
                    "tokenizer.ggml.token_type": [1, 3, 3, 1, 1, 1, 1, 1] if verbose else [],
                    "tokenizer.ggml.tokens": (
                        ["!", '"', "#", "$", "%", "&", "'", "("] if verbose else []
                    ),
                }
            )
            if embedding:
                info[f"{fam}.pooling_type"] = 1  # mean
            else:
                info[f"{fam}.rope.freq_base"] = 500000
                info["tokenizer.ggml.merges"] = ["Ġ Ġ", "Ġ t", "e r", "i n"] if verbose else []
            q = m.quantization_level
            out_info_tensors: list[dict[str, Any]] = [
                {"name": "output_norm.weight", "type": "F32", "shape": [m.embedding_length]},
                {"name": "token_embd.weight", "type": q, "shape": [m.embedding_length, vocab]},
                {"name": "blk.0.attn_norm.weight", "type": "F32", "shape": [m.embedding_length]},
                {
                    "name": "blk.0.attn_q.weight",
                    "type": q,
                    "shape": [m.embedding_length, m.embedding_length],
                },
            ]
        else:
            out_info_tensors = []
        out["model_info"] = dict(sorted(info.items()))  # a Go map: keys sorted
        if out_info_tensors:
            out["tensors"] = out_info_tensors
        if m.capabilities:
            out["capabilities"] = list(m.capabilities)
        out["modified_at"] = self._local(datetime_ns(m.effective_modified_at))
        return out

    # ---------------------------------------------------------------- models, options, faults

    def _lookup(self, name: str) -> EmulatedModel | None:
        if not name.strip():
            return None
        return self._models.get(canonical_key(name))

    def _parse_options(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in raw.items():
            kind = _OPTION_KINDS.get(k)
            if kind is None or v is None:
                continue
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            if kind == "int" and number:
                out[k] = int(v)
            elif kind == "float" and number:
                out[k] = float(v)
            elif kind == "bool" and isinstance(v, bool):
                out[k] = v
            elif kind == "strings":
                if not isinstance(v, list):
                    raise _HTTPError(500, f"option {go_quote(k)} must be of type array")
                if not all(isinstance(s, str) for s in v):
                    raise _HTTPError(500, f"option {go_quote(k)} must be of an array of strings")
                out[k] = list(v)
            else:
                type_name = _OPTION_TYPE_NAMES[kind]
                raise _HTTPError(500, f"option {go_quote(k)} must be of type {type_name}")
        return out

    def _runner_options(self, m: EmulatedModel, opts: Mapping[str, Any]) -> dict[str, Any]:
        """The options that select a runner; any difference forces a reload (§4.2)."""
        num_ctx = int(opts.get("num_ctx") or 0)
        if num_ctx <= 0:
            num_ctx = self.default_num_ctx
        if m.context_length > 0:
            num_ctx = min(num_ctx, m.context_length)
        return {
            "num_ctx": num_ctx,
            "num_batch": opts.get("num_batch", 512),
            "num_gpu": opts.get("num_gpu", -1),
            "main_gpu": opts.get("main_gpu", 0),
            "use_mmap": opts.get("use_mmap"),
            "num_thread": opts.get("num_thread", 0),
            "draft_num_predict": opts.get("draft_num_predict", 0),
        }

    def _take_fault(self, model: str, path: str) -> Fault | None:
        queue = self._faults.get(canonical_key(model))
        if not queue:
            return None
        for i, f in enumerate(queue):
            if path in f.paths:
                if f.times > 0:
                    f.times -= 1
                    if f.times == 0:
                        del queue[i]
                return f
        return None

    @staticmethod
    def _fault_message(f: Fault, default: str) -> str:
        return f.message if f.message is not None else default

    def _status_fault_error(self, f: Fault, model: str, streaming: bool) -> _HTTPError:
        defaults = {
            400: "bad request",
            401: "unauthorized",
            403: "forbidden",
            404: f"model '{model}' not found",
            410: "this model has been retired",
            429: USAGE_LIMIT_MESSAGE,
            502: "dial tcp: lookup ollama.com: no such host",
            503: BUSY_MESSAGE,
        }
        msg = self._fault_message(
            f,
            defaults.get(
                f.status,
                "llama-server process has terminated: exit status 2"
                if f.status >= 500
                else "error",
            ),
        )
        headers = {"Retry-After": f.retry_after} if f.retry_after is not None else {}
        # §1.2: an error after streaming was chosen but before the first line is written
        # carries application/json without charset.
        return _HTTPError(
            f.status, msg, content_type=JSON_PLAIN if streaming else JSON_UTF8, headers=headers
        )

    # ---------------------------------------------------------------- scheduler

    def _new_runner(self, m: EmulatedModel, opts: dict[str, Any], keep_alive: float) -> _Runner:
        parallel = 1 if m.is_embedding else self.num_parallel
        r = _Runner(
            model=m, options=opts, num_ctx=int(opts["num_ctx"]), parallel=parallel,
            keep_alive=keep_alive,
        )  # fmt: skip
        self._set_expiry(r)
        return r

    def _set_expiry(self, r: _Runner) -> None:
        now_ns = time.time_ns()
        if r.keep_alive < 0:
            r.expires_ns = now_ns + MAX_DURATION_NS
            r.expires_perf = None
        else:
            r.expires_ns = now_ns + round(r.keep_alive * 1e9)
            r.expires_perf = perf_counter() + r.keep_alive * self.time_scale

    def _drop(self, key: str) -> None:
        r = self._runners.pop(key, None)
        if r is not None:
            if r.timer is not None:
                r.timer.cancel()
                r.timer = None
            r.cache.clear()

    def _expire_idle(self) -> None:
        now = perf_counter()
        for key, r in list(self._runners.items()):
            if (
                not r.loading
                and r.in_flight == 0
                and r.expires_perf is not None
                and now >= r.expires_perf
            ):
                self._drop(key)

    def _go_idle(self, key: str, r: _Runner) -> None:
        """The in-flight count dropped to 0: start the keep-alive timer (or unload now)."""
        if self._runners.get(key) is not r:
            return
        if r.keep_alive == 0:
            self._drop(key)
            return
        self._set_expiry(r)
        if r.timer is not None:
            r.timer.cancel()
            r.timer = None
        if r.expires_perf is not None:
            with contextlib.suppress(RuntimeError):  # no running loop (preload from sync code)
                loop = asyncio.get_running_loop()
                delay = max(0.0, r.expires_perf - perf_counter())
                r.timer = loop.call_later(delay, self._on_timer, key, r)

    def _on_timer(self, key: str, r: _Runner) -> None:
        r.timer = None
        if self._runners.get(key) is not r or r.in_flight or r.expires_perf is None:
            return
        remaining = r.expires_perf - perf_counter()
        if remaining > 0:
            r.timer = asyncio.get_running_loop().call_later(remaining, self._on_timer, key, r)
        else:
            self._drop(key)

    def _claim(self, r: _Runner, keep_alive: float | None) -> None:
        r.in_flight += 1
        r.idle.clear()
        if r.timer is not None:
            r.timer.cancel()
            r.timer = None
        if keep_alive is not None:
            r.keep_alive = keep_alive

    def _release(self, key: str, r: _Runner) -> None:
        r.in_flight -= 1
        if r.in_flight > 0:
            return
        if not r.virtual:
            self._go_idle(key, r)
        r.idle.set()

    async def _acquire(
        self,
        ctx: _Ctx,
        m: EmulatedModel,
        key: str,
        opts: dict[str, Any],
        keep_alive: float | None,
    ) -> _Runner:
        """Get a ready runner (in-flight count taken), loading it if needed."""
        if self.cloud or m.is_remote:
            r = self._virtual.get(key)
            if r is None:
                r = _Runner(
                    model=m, options=opts, num_ctx=int(opts["num_ctx"]),
                    parallel=self.num_parallel, keep_alive=-1, virtual=True, loading=False,
                )  # fmt: skip
                self._virtual[key] = r
            self._claim(r, None)
            return r
        self._expire_idle()
        r = self._runners.get(key)
        if r is not None and r.usable_for(opts):
            self._claim(r, keep_alive)
            return r
        if self._pending_loads >= self.max_queue:
            raise _HTTPError(503, BUSY_MESSAGE)
        queued_at = perf_counter()
        self._pending_loads += 1
        try:
            await self._load_lock.acquire()
        finally:
            self._pending_loads -= 1
        ctx.load_stretch += self._stretch(perf_counter() - queued_at)  # waited on other loads
        try:
            self._expire_idle()
            r = self._runners.get(key)
            if r is not None and r.usable_for(opts):
                self._claim(r, keep_alive)
                ctx.rec.load_seconds = perf_counter() - queued_at
                return r
            if r is not None:
                # runner options changed: wait for its requests to finish, then unload
                r.draining = True
                drain_start = perf_counter()
                while r.in_flight > 0:
                    await r.idle.wait()
                ctx.load_stretch += self._stretch(perf_counter() - drain_start)
                if self._runners.get(key) is r:
                    self._drop(key)
            new = self._new_runner(
                m, opts, self.default_keep_alive if keep_alive is None else keep_alive
            )
            new.in_flight = 1
            self._runners[key] = new
            ctx.rec.cold_load = True
            nominal = m.load_seconds * self.time_scale
            try:
                await _sleep_until(perf_counter() + nominal)
            except BaseException:
                if self._runners.get(key) is new:
                    self._drop(key)
                raise
            new.loading = False
            ctx.load_stretch += self._stretch(nominal)
            ctx.rec.load_seconds = perf_counter() - queued_at
            return new
        finally:
            self._load_lock.release()

    def _unload_request(self, key: str) -> None:
        """``keep_alive: 0`` with nothing to run: unload now, or when the model goes idle."""
        r = self._runners.get(key)
        if r is None:
            return
        r.keep_alive = 0
        if r.in_flight == 0 and not r.loading:
            self._drop(key)

    def _load_ns(self, ctx: _Ctx, runner: _Runner) -> int:
        """load_duration: handler entry → runner ready (0, i.e. omitted, without loads)."""
        ctx.rec.runner_ready = perf_counter()
        if runner.virtual:
            return 0
        return max(1, self._ns(ctx.rec.runner_ready - ctx.rec.arrived + ctx.load_stretch))

    def _total_ns(self, ctx: _Ctx, extra_stretch: float = 0.0) -> int:
        """total_duration: handler entry → now (the final chunk being built)."""
        return self._ns(perf_counter() - ctx.rec.arrived + ctx.stretch + extra_stretch)

    async def _take_slot(self, ctx: _Ctx, runner: _Runner) -> None:
        start = perf_counter()
        await runner.slots.acquire()
        ctx.rec.slot_acquired = perf_counter()
        ctx.wait_stretch += self._stretch(ctx.rec.slot_acquired - start)

    # ---------------------------------------------------------------- chat / generate

    def _load_reply(self, chat: bool, name: str, reason: str) -> dict[str, Any]:
        out: dict[str, Any] = {"model": name, "created_at": self._created_at()}
        if chat:
            out["message"] = {"role": "assistant", "content": ""}
        else:
            out["response"] = ""
        out["done"] = True
        out["done_reason"] = reason
        return out

    async def _complete(self, ctx: _Ctx, *, chat: bool) -> web.StreamResponse:
        rec = ctx.rec
        what = "chat" if chat else "generate"
        if chat:
            req = self._decode(ctx, CHAT_FIELDS, "ChatRequest")
        else:
            req = self._decode(ctx, GENERATE_FIELDS, "GenerateRequest")
        name: str = req.get("model", "")
        if chat and not name.strip():
            raise _HTTPError(400, "model is required")
        top = req.get("top_logprobs", 0)
        if top < 0 or top > 20:
            raise _HTTPError(400, "top_logprobs must be between 0 and 20")
        m = self._lookup(name)
        if m is None:
            raise _HTTPError(404, f"model '{name}' not found")
        key = canonical_key(m.name)
        raw_mode = bool(req.get("raw"))
        raw_conflict = req.get("template") or req.get("system") or req.get("context")
        if not chat and raw_mode and raw_conflict:
            raise _HTTPError(400, "raw mode does not support template, system, or context")

        if chat:
            messages = [
                (str((msg or {}).get("role", "")).lower(), str((msg or {}).get("content", "")))
                for msg in req.get("messages") or []
            ]
            empty = not messages
        else:
            prompt: str = req.get("prompt", "")
            empty = prompt == ""
        keep_alive: float | None = req.get("keep_alive")

        if empty and keep_alive == 0:
            self._unload_request(key)
            return await self._send_json(ctx, 200, self._load_reply(chat, name, "unload"))

        think = req.get("think")
        caps = m.capabilities
        if (think is True or isinstance(think, str)) and "thinking" not in caps:
            raise _HTTPError(400, f"{go_quote(name)} does not support thinking")
        if "completion" not in caps:
            raise _HTTPError(400, f"{go_quote(name)} does not support {what}")
        if chat and req.get("tools") and "tools" not in caps:
            raise _HTTPError(400, f"{fully_qualified_name(m.name)} does not support tools")
        opts = self._parse_options(req.get("options") or {})
        ropts = self._runner_options(m, opts)
        stream = req.get("stream", True)

        fault = self._take_fault(name, ctx.request.path)
        if fault is not None:
            rec.fault = fault.kind
            if fault.kind == "status":
                raise self._status_fault_error(fault, name, streaming=stream and not empty)
            if fault.kind == "force_reload":
                self._drop(key)

        runner = await self._acquire(ctx, m, key, ropts, keep_alive)
        try:
            load_ns = self._load_ns(ctx, runner)
            if empty:
                return await self._send_json(ctx, 200, self._load_reply(chat, name, "load"))

            # the prompt as the runner sees it
            if chat:
                tokens = chat_prompt_tokens(messages)
            else:
                ctx_tokens = [f"#{i}" for i in req.get("context") or []]
                if raw_mode:
                    tokens = words(prompt)
                else:
                    turns = [("system", req["system"])] if req.get("system") else []
                    tokens = ctx_tokens + chat_prompt_tokens([*turns, ("user", prompt)])
            if len(tokens) > runner.num_ctx:
                if req.get("truncate") is False:
                    ctype = JSON_PLAIN if stream else JSON_UTF8
                    raise _HTTPError(400, CONTEXT_OVERFLOW_MESSAGE, content_type=ctype)
                # The runner keeps the tail that fits and says so (§4.7 step 5).
                log.warning(
                    "truncating input prompt limit=%d prompt=%d keep=%d new=%d",
                    runner.num_ctx, len(tokens), 0, runner.num_ctx,
                )  # fmt: skip
                rec.prompt_truncated_tokens = len(tokens) - runner.num_ctx
                tokens = tokens[-runner.num_ctx :]

            # what the model will say
            thinking_on = "thinking" in caps and think is not False
            n_think = m.thinking_tokens if thinking_on else 0
            total = n_think + m.output_tokens
            num_predict = int(opts.get("num_predict", -1))
            n = total
            done_reason = "stop"
            if 0 < num_predict < total:
                n, done_reason = num_predict, "length"
            plan = [(thinking_piece(i), True) for i in range(min(n_think, n))]
            plan += [(content_piece(j), False) for j in range(n - len(plan))]
            rec.eval_count = n
            rec.prompt_eval_count = len(tokens)
            rec.done_reason = done_reason
            interval = self.time_scale / m.decode_tokens_per_second
            rec.decode_interval = interval
            final_extra: dict[str, Any] = {}
            if not chat and not raw_mode:  # generate's final chunk carries the token ids
                final_extra["context"] = [token_id(t) for t in tokens + [p for p, _ in plan]]

            await self._take_slot(ctx, runner)
            try:
                if fault is not None and fault.kind == "no_headers":
                    pause = fault.seconds * self.time_scale
                    await _sleep_until(perf_counter() + pause)
                    ctx.wait_stretch += self._stretch(pause)
                prefill_start = perf_counter()
                cached = runner.prefix_hit(tokens)
                runner.cache = list(tokens)
                rec.prompt_cached_tokens = cached
                uncached = len(tokens) - cached
                attention = m.prefill_quadratic * (len(tokens) ** 2 - cached**2)
                prefill = (uncached / m.prefill_tokens_per_second + attention) * self.time_scale
                await _sleep_until(prefill_start + prefill)
                t_first = perf_counter()
                ctx.prefill_stretch = self._stretch(prefill)
                prompt_ns = self._ns(t_first - prefill_start + ctx.prefill_stretch)
                job = _Generation(
                    emu=self, ctx=ctx, chat=chat, name=name, plan=plan, interval=interval,
                    t_first=t_first, fault=fault, done_reason=done_reason, runner=runner,
                    final_extra=final_extra, metrics=lambda eval_real, eval_stretch: (
                        self._final_metrics(ctx, load_ns, len(tokens), prompt_ns, n, eval_real,
                                            eval_stretch)),
                )  # fmt: skip
                if stream:
                    return await job.stream()
                return await job.whole()
            finally:
                runner.slots.release()
        finally:
            self._release(key, runner)

    def _final_metrics(
        self,
        ctx: _Ctx,
        load_ns: int,
        prompt_count: int,
        prompt_ns: int,
        eval_count: int,
        eval_real: float,
        eval_stretch: float,
    ) -> dict[str, int]:
        values = {
            "total_duration": self._total_ns(ctx, eval_stretch),
            "load_duration": load_ns,
            "prompt_eval_count": prompt_count,
            "prompt_eval_duration": prompt_ns,
            "eval_count": eval_count,
            "eval_duration": self._ns(eval_real + eval_stretch) if eval_count else 0,
        }
        metrics = {k: v for k, v in values.items() if v}  # omitempty
        ctx.rec.metrics = metrics
        return metrics

    # ---------------------------------------------------------------- embed

    async def _embed(self, ctx: _Ctx) -> web.StreamResponse:
        rec = ctx.rec
        req = self._decode(ctx, EMBED_FIELDS, "EmbedRequest")
        name: str = req.get("model", "")
        raw_input = req.get("input")
        inputs: list[str]
        if raw_input is None:
            inputs = []
        elif isinstance(raw_input, str):
            inputs = [raw_input] if raw_input else []
        elif isinstance(raw_input, list) and all(isinstance(s, str) for s in raw_input):
            inputs = list(raw_input)
        else:
            raise _HTTPError(400, "invalid input type")
        if not name:
            raise _HTTPError(404, "model '' not found")
        m = self._lookup(name)
        if m is None:
            raise _HTTPError(404, f"model {go_quote(name)} not found, try pulling it first")
        key = canonical_key(m.name)
        opts = self._parse_options(req.get("options") or {})
        ropts = self._runner_options(m, opts)
        fault = self._take_fault(name, ctx.request.path)
        if fault is not None:
            rec.fault = fault.kind
            if fault.kind == "status":
                raise self._status_fault_error(fault, name, streaming=False)
            if fault.kind == "force_reload":
                self._drop(key)
        runner = await self._acquire(ctx, m, key, ropts, req.get("keep_alive"))
        try:
            load_ns = self._load_ns(ctx, runner)
            if not inputs:
                return await self._send_json(ctx, 200, {"model": name, "embeddings": []})
            if not m.is_embedding:
                raise _HTTPError(500, NO_EMBEDDINGS_MESSAGE)
            counts: list[int] = []
            for text in inputs:
                c = len(words(text)) + 2  # [CLS] … [SEP]
                if c > runner.num_ctx:
                    if req.get("truncate") is False:
                        raise _HTTPError(400, EMBED_TOO_LONG_MESSAGE)
                    c = runner.num_ctx
                counts.append(c)
            rec.prompt_eval_count = sum(counts)
            dims = int(req.get("dimensions") or 0)
            await self._take_slot(ctx, runner)
            try:
                if fault is not None and fault.kind in ("no_headers", "stall"):
                    pause = fault.seconds * self.time_scale
                    await _sleep_until(perf_counter() + pause)
                    ctx.wait_stretch += self._stretch(pause)
                busy = sum(counts) / m.prefill_tokens_per_second * self.time_scale
                start = perf_counter()
                # encoding new vectors takes real milliseconds: do it inside the simulated time
                vectors = [embedding_json(m.name, t, m.embedding_length, dims) for t in inputs]
                await _sleep_until(start + busy)
                ctx.prefill_stretch = self._stretch(busy)
                values = {
                    "total_duration": self._total_ns(ctx),
                    "load_duration": load_ns,
                    "prompt_eval_count": sum(counts),
                }
                metrics = {k: v for k, v in values.items() if v}
                rec.metrics = metrics
                body: dict[str, Any] = {"model": name, "embeddings": vectors, **metrics}
                return await _send_whole_with_fault(self, ctx, body, fault, padded_key=None)
            finally:
                runner.slots.release()
        finally:
            self._release(key, runner)


async def _send_whole_with_fault(
    emu: OllamaEmulator,
    ctx: _Ctx,
    body: dict[str, Any],
    fault: Fault | None,
    *,
    padded_key: Callable[[dict[str, Any], str], None] | None,
) -> web.StreamResponse:
    """One JSON body (``stream: false`` or /api/embed), with the body-level fault mapping."""
    kind = fault.kind if fault is not None else None
    if fault is not None and kind == "error_line":
        raise _HTTPError(500, emu._fault_message(fault, MID_STREAM_ERROR))
    if kind == "reset":
        transport = ctx.request.transport
        if transport is not None:
            transport.abort()
        return ctx.resp if ctx.resp is not None else web.StreamResponse()
    data = go_json(body).encode()
    if fault is not None and kind == "huge_line":
        pad = max(0, fault.size - len(data))
        if padded_key is not None:
            padded_key(body, "x" * pad)
            data = go_json(body).encode()
        else:
            # pad with insignificant whitespace: still one valid JSON document
            data = data[:-1] + b" " * pad + b"}"
    if kind == "malformed_line":
        data = data[: max(1, len(data) // 2)]
        return await emu._send(ctx, 200, data, JSON_UTF8)
    if kind == "truncate":
        resp = _LazyHeadersResponse(status=200, headers={"Content-Type": JSON_UTF8})
        resp.content_length = len(data)
        ctx.resp = resp
        ctx.rec.status = 200
        await resp.prepare(ctx.request)
        await resp.write(data[: len(data) // 2])
        ctx.rec.headers_sent = perf_counter()
        transport = ctx.request.transport
        if transport is not None:
            transport.close()
        return resp
    sent = await emu._send(ctx, 200, data, JSON_UTF8)
    ctx.rec.done_written = ctx.rec.finished
    return sent


@functools.lru_cache(maxsize=4096)
def _chunk_tail(chat: bool, text: str, thinking: bool) -> bytes:
    """The encoded part of a non-final chunk after ``"created_at":"<time>``."""
    if chat:
        msg: dict[str, Any] = {"role": "assistant", "content": "" if thinking else text}
        if thinking:
            msg["thinking"] = text
        rest: dict[str, Any] = {"message": msg}
    else:
        rest = {"response": "" if thinking else text}
        if thinking:
            rest["thinking"] = text
    rest["done"] = False
    return ('",' + go_json(rest)[1:] + "\n").encode()


@dataclass
class _Generation:
    """Writes one generation: NDJSON chunks on an absolute schedule, or one JSON object."""

    emu: OllamaEmulator
    ctx: _Ctx
    chat: bool
    name: str
    plan: list[tuple[str, bool]]  # (text, is_thinking)
    interval: float
    t_first: float
    fault: Fault | None
    done_reason: str
    final_extra: dict[str, Any]
    metrics: Callable[[float, float], dict[str, int]]  # (eval real s, eval stretch s) → metrics
    runner: _Runner | None = None
    resp: _LazyHeadersResponse | None = None
    eval_stretch: float = 0.0

    def __post_init__(self) -> None:
        self._head = ('{"model":' + go_string(self.name) + ',"created_at":"').encode()

    def _line(self, i: int) -> bytes:
        """One chunk line; everything after created_at comes from a cache (few distinct
        tokens), which keeps a chunk at a few microseconds of CPU."""
        text, thinking = self.plan[i]
        if self.ctx.events is not None:
            last = i == len(self.plan) - 1
            return self.ctx.events.token(text, thinking, self.done_reason if last else None)
        tail = _chunk_tail(self.chat, text, thinking)
        return self._head + rfc3339_nano(time.time_ns()).encode() + tail

    def _chunk(self, text: str, thinking: bool) -> dict[str, Any]:
        created = rfc3339_nano(time.time_ns())
        if self.chat:
            msg: dict[str, Any] = {"role": "assistant", "content": "" if thinking else text}
            if thinking:
                msg["thinking"] = text
            return {"model": self.name, "created_at": created, "message": msg, "done": False}
        out: dict[str, Any] = {
            "model": self.name, "created_at": created, "response": "" if thinking else text,
        }  # fmt: skip
        if thinking:
            out["thinking"] = text
        out["done"] = False
        return out

    def _final(self, content: str, thinking: str, metrics: Mapping[str, int]) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.name, "created_at": rfc3339_nano(time.time_ns())}
        if self.chat:
            msg: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                msg["thinking"] = thinking
            out["message"] = msg
        else:
            out["response"] = content
            if thinking:
                out["thinking"] = thinking
        out["done"] = True
        out["done_reason"] = self.done_reason
        out.update(self.final_extra)
        out.update(metrics)
        return out

    async def _write(self, data: bytes) -> float:
        rec = self.ctx.rec
        if self.resp is None:
            kind = NDJSON if self.ctx.events is None else openai.SSE
            self.resp = _LazyHeadersResponse(status=200, headers={"Content-Type": kind})
            self.ctx.resp = self.resp
            rec.status = 200
            await self.resp.prepare(self.ctx.request)
        await self.resp.write(data)
        t = perf_counter()
        if rec.headers_sent is None:
            rec.headers_sent = t
        return t

    async def _end(self) -> web.StreamResponse:
        if self.resp is None:
            self.resp = _LazyHeadersResponse(status=200, headers={"Content-Type": NDJSON})
            self.ctx.resp = self.resp
            self.ctx.rec.status = 200
            await self.resp.prepare(self.ctx.request)
        await self.resp.write_eof()
        t = perf_counter()
        if self.ctx.rec.headers_sent is None:
            self.ctx.rec.headers_sent = t
        self.ctx.rec.finished = t
        return self.resp

    async def _mid_stream_fault(self, f: Fault) -> bool:
        """Apply a mid-stream fault; True if the stream is over."""
        emu = self.emu
        if f.kind == "stall":
            pause = f.seconds * emu.time_scale
            await _sleep_until(perf_counter() + pause)
            self.eval_stretch += emu._stretch(pause)
            return False
        if f.kind == "malformed_line":
            start = go_json(self._chunk("", False))
            await self._write((start[: len(start) * 2 // 3] + "\n").encode())
            return False
        if f.kind == "huge_line":
            head = go_json(self._chunk("", False))
            cut = head.index('"content":""') + len('"content":"')
            prefix, suffix = head[:cut].encode(), (head[cut:] + "\n").encode()
            pad = max(0, f.size - len(prefix) - len(suffix))
            await self._write(prefix)
            block = b"a" * (1 << 20)
            while pad > 0:
                piece = block[: min(pad, len(block))]
                await self._write(piece)
                pad -= len(piece)
            await self._write(suffix)
            return False
        if f.kind == "error_line":
            msg = emu._fault_message(f, MID_STREAM_ERROR)
            self.ctx.rec.error = msg
            if self.ctx.events is not None:  # server-sent events: an error event, then [DONE]
                await self._write(openai.stream_error(msg))
            else:
                await self._write((go_json({"error": msg}) + "\n").encode())
            await self._end()
            return True
        if f.kind == "truncate":
            await self._end()
            return True
        # reset
        transport = self.ctx.request.transport
        if transport is not None:
            transport.abort()
        return True

    def _step(self) -> float:
        """Seconds to the next token: the decode interval, stretched by the other sequences
        decoding on the same runner (continuous batching)."""
        runner = self.runner
        slowdown = runner.model.batch_slowdown if runner is not None else 0.0
        others = max(0, runner.decoding - 1) if runner is not None else 0
        return self.interval * (1 + slowdown * others)

    async def stream(self) -> web.StreamResponse:
        if self.runner is not None:
            self.runner.decoding += 1
        try:
            return await self._stream()
        finally:
            if self.runner is not None:
                self.runner.decoding -= 1

    async def _stream(self) -> web.StreamResponse:
        rec = self.ctx.rec
        n = len(self.plan)
        f = self.fault
        fault_at = min(f.after_chunks, n) if f is not None and f.kind in _MID_STREAM_KINDS else -1
        batching = self.runner is not None and self.runner.model.batch_slowdown > 0
        origin = due = self.t_first
        rec.first_token = self.t_first if n else None
        events = self.ctx.events
        try:
            if events is not None and events.opening():
                await self._write(events.opening())
            for i in range(n + 1):
                if i == fault_at and f is not None:
                    if await self._mid_stream_fault(f):
                        return self.resp if self.resp is not None else web.StreamResponse()
                    # continue at the decode rate from where the stall left off
                    origin = max(origin, perf_counter() - i * self.interval)
                    due = max(due, perf_counter())
                if i == n:
                    break
                if batching:
                    due = due + self._step() if i else due
                scheduled = due if batching else origin + i * self.interval
                await _sleep_until(scheduled)
                rec.last_token = perf_counter()
                thinking = self.plan[i][1]
                t = await self._write(self._line(i))
                rec.token_late_max = max(rec.token_late_max, t - scheduled)
                if rec.first_chunk is None:
                    rec.first_chunk = t
                    stamps = stamps_of(self.ctx.request)
                    rec.socket_first_chunk = stamps.last_write if stamps is not None else None
                if thinking:
                    rec.thinking_chunks += 1
                else:
                    rec.content_chunks += 1
                    if rec.first_content is None:
                        rec.first_content = t
                rec.last_token_chunk = t
            if n:
                span = rec.last_token - self.t_first if batching and rec.last_token else None
                self.eval_stretch += self.emu._stretch(
                    span if span is not None else (n - 1) * self.interval
                )
            metrics = self.metrics(perf_counter() - self.t_first, self.eval_stretch)
            if events is not None:
                rec.done_written = await self._write(events.final(self.done_reason, metrics))
                if self.emu.close_reused and self.ctx.request.transport is not None:
                    self.emu._spent.add(self.ctx.request.transport)
            else:
                rec.done_written = await self._write(
                    (go_json(self._final("", "", metrics)) + "\n").encode()
                )
            return await self._end()
        except ConnectionError:
            # the client went away: stop generating, like Ollama does
            return self.resp if self.resp is not None else web.StreamResponse()

    async def whole(self) -> web.StreamResponse:
        rec = self.ctx.rec
        n = len(self.plan)
        if n:
            rec.first_token = self.t_first
            await _sleep_until(self.t_first + (n - 1) * self.interval)
            rec.last_token = perf_counter()
            self.eval_stretch += self.emu._stretch((n - 1) * self.interval)
        f = self.fault
        if f is not None and f.kind == "stall":
            pause = f.seconds * self.emu.time_scale
            await _sleep_until(perf_counter() + pause)
            self.eval_stretch += self.emu._stretch(pause)
        rec.thinking_chunks = sum(1 for _, th in self.plan if th)
        rec.content_chunks = n - rec.thinking_chunks
        content = "".join(t for t, th in self.plan if not th)
        thinking = "".join(t for t, th in self.plan if th)
        metrics = self.metrics(perf_counter() - self.t_first, self.eval_stretch)
        body = self._final(content, thinking, metrics)

        def pad(b: dict[str, Any], filler: str) -> None:
            if self.chat:
                b["message"]["content"] = content + filler
            else:
                b["response"] = content + filler

        try:
            return await _send_whole_with_fault(self.emu, self.ctx, body, f, padded_key=pad)
        except ConnectionError:
            return self.ctx.resp if self.ctx.resp is not None else web.StreamResponse()


# The conftest fixture's type.
EmulatorFactory = Callable[..., Awaitable[OllamaEmulator]]
