"""Data types of the Ollama emulator: emulated models, faults, ground-truth records.

Everything here is plain data; the behaviour lives in ``server.py``.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "DEFAULT_MODIFIED_AT",
    "FAULT_KINDS",
    "EmulatedModel",
    "Fault",
    "LoadedState",
    "RequestRecord",
    "canonical_key",
    "chat_model",
    "cloud_stub_model",
    "default_models",
    "display_name",
    "embedding_model",
    "fully_qualified_name",
    "is_valid_name",
    "thinking_model",
]

#: modified_at used when a model does not set one (emitted in the emulator's local zone).
DEFAULT_MODIFIED_AT = datetime(2026, 7, 30, 7, 14, 3, 512233, tzinfo=UTC)

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"


@dataclass
class EmulatedModel:
    """One installed model as the emulator presents it (tags, show, ps) and runs it.

    Rates and times are *emulated*: the emulator sleeps ``x * time_scale`` real seconds for
    ``x`` emulated seconds and reports durations in emulated nanoseconds.
    """

    name: str  # canonical "name:tag", e.g. "llama3.2:latest"
    family: str = "llama"
    families: list[str] | None = None  # None -> [family]; [] -> JSON null (a Go nil slice)
    parameter_size: str = "3.2B"
    parameter_count: int = 3_212_749_888
    quantization_level: str = "Q4_K_M"
    format: str = "gguf"
    context_length: int = 131072
    embedding_length: int = 3072
    size: int = 2_019_393_189
    size_vram: int | None = None  # /api/ps; None -> the loaded size (100% GPU)
    capabilities: list[str] = field(default_factory=lambda: ["completion", "tools"])
    modified_at: datetime | None = None  # None -> DEFAULT_MODIFIED_AT
    load_seconds: float = 0.5
    prefill_tokens_per_second: float = 2000.0
    # Attention's share of prefill grows with the square of the context: evaluating tokens
    # c..n costs (n - c) / prefill_tokens_per_second + prefill_quadratic * (n² - c²) seconds.
    prefill_quadratic: float = 0.0
    decode_tokens_per_second: float = 100.0
    # Continuous batching: each extra sequence decoding on the runner at the same time slows
    # every sequence's decode by this fraction (0.1: 4 sequences decode at 1/1.3 the rate each).
    batch_slowdown: float = 0.0
    thinking_tokens: int = 0
    output_tokens: int = 64
    remote_host: str | None = None  # cloud pass-through stub, e.g. "https://ollama.com:443"
    remote_model: str | None = None
    digest: str | None = None  # None -> sha256 of the name

    @property
    def effective_families(self) -> list[str] | None:
        """The ``details.families`` value: None means JSON ``null``."""
        if self.families is None:
            return [self.family]
        return list(self.families) or None

    @property
    def effective_digest(self) -> str:
        if self.digest is not None:
            return self.digest
        return hashlib.sha256(self.name.encode()).hexdigest()

    @property
    def effective_modified_at(self) -> datetime:
        m = self.modified_at or DEFAULT_MODIFIED_AT
        return m if m.tzinfo is not None else m.replace(tzinfo=UTC)

    @property
    def is_remote(self) -> bool:
        """A cloud pass-through stub: served without loading, never listed in /api/ps."""
        return self.remote_host is not None

    @property
    def block_count(self) -> int:
        """A plausible layer count derived from the parameter count (for model_info and ps)."""
        return max(4, round(math.sqrt(math.sqrt(self.parameter_count)) / 8))

    @property
    def is_embedding(self) -> bool:
        return "embedding" in self.capabilities


FAULT_KINDS = frozenset(
    {
        "status",
        "malformed_line",
        "truncate",
        "error_line",
        "stall",
        "no_headers",
        "huge_line",
        "reset",
        "force_reload",
    }
)


@dataclass
class Fault:
    """A misbehaviour injected into the next matching request(s) for one model.

    kinds:
      * ``status``: HTTP ``status`` with ``{"error": message}`` before anything is streamed
        (``retry_after`` adds a ``Retry-After`` header). Applied before the model is loaded.
      * ``malformed_line``: after ``after_chunks`` token chunks a line that is not JSON, then the
        stream continues normally.
      * ``truncate``: clean end of body (chunked terminator) after ``after_chunks`` token chunks,
        no ``done`` line.
      * ``error_line``: after ``after_chunks`` chunks a ``{"error": message}`` line and the end
        of the body (status stays 200); on an OpenAI-compatible stream an event whose data is
        an error object, then ``data: [DONE]``.
      * ``stall``: after ``after_chunks`` chunks pause ``seconds`` (emulated, i.e. scaled), then
        continue at the decode rate.
      * ``no_headers``: pause ``seconds`` (scaled) before anything is sent (after the slot is
        acquired, before prefill), then continue normally.
      * ``huge_line``: after ``after_chunks`` chunks one valid chunk line of exactly ``size``
        bytes (newline included), then continue.
      * ``reset``: after ``after_chunks`` chunks abort the TCP connection (RST).
      * ``force_reload``: unload the model first so the request pays a cold load.

    For ``stream: false`` and ``/api/embed`` (one JSON body) the mid-stream kinds map to:
    malformed_line → a 200 body that is not JSON; truncate → a 200 body cut short (declared
    Content-Length not reached) and the connection closed; error_line → 500
    ``{"error": message}``; huge_line → a valid body padded to ``size`` bytes; stall → pause
    before the body; reset → abort before the body.

    Faults are consumed per model in FIFO order; each request takes at most one fault (the
    first whose ``paths`` include the request path). ``times=-1`` never runs out.
    """

    kind: str
    status: int = 500
    message: str | None = None  # None -> a sensible default for the kind/status
    after_chunks: int = 0
    seconds: float = 0.0
    size: int = 10 * 1024 * 1024
    retry_after: str | None = None
    times: int = 1
    paths: tuple[str, ...] = ("/api/chat", "/api/embed")

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(FAULT_KINDS)}")
        if self.times == 0 or self.times < -1:
            raise ValueError("times must be >= 1, or -1 for a persistent fault")


@dataclass
class RequestRecord:
    """Ground truth for one request. All times are ``time.perf_counter()`` in the emulator's
    process (CLOCK_MONOTONIC: the same clock in every process on Linux). The handler's times
    are taken right after the corresponding ``await response.write(...)`` returned;
    ``arrived`` when the handler was entered.

    Two times are taken at the connection instead (``socket_*``), before aiohttp's parsing and
    after its framing, so they hold what the handler cannot see: ``socket_arrived`` is when the
    request's first bytes were read from its connection (the protocol's ``data_received``),
    ``socket_first_chunk`` when the first token chunk's bytes were handed to the transport
    (``transport.write``, which sends at once when nothing is buffered). So
    ``socket_arrived <= arrived`` and ``socket_first_chunk <= first_chunk``; the gap
    ``arrived - socket_arrived`` is the handler starting late (aiohttp's parsing and task
    hand-offs, and a loop busy with other streams), which a client's TTFT contains and
    ``first_chunk - arrived`` does not. Both are None where not seen (no token chunk; a request
    pipelined behind another on its connection).

    ``status`` is 0 while no status line was sent (e.g. a ``reset`` before the first chunk).
    Header names are lower-cased.
    """

    path: str
    method: str
    model: str | None
    body: Any
    headers: dict[str, str]
    status: int = 0
    arrived: float = 0.0
    headers_sent: float | None = None
    first_chunk: float | None = None
    first_content: float | None = None
    last_token_chunk: float | None = None
    done_written: float | None = None
    finished: float | None = None
    cold_load: bool = False
    load_seconds: float = 0.0
    eval_count: int = 0
    prompt_eval_count: int = 0
    thinking_chunks: int = 0
    content_chunks: int = 0
    decode_interval: float = 0.0
    # additions beyond the agreed API:
    peer: str | None = None  # client "host:port": one value per TCP connection
    runner_ready: float | None = None  # runner ready (end of load / queue), perf_counter
    slot_acquired: float | None = None  # got a parallel slot (prefill starts after it)
    first_token: float | None = None  # first token "sampled" (end of prefill)
    last_token: float | None = None  # last token "sampled"
    prompt_cached_tokens: int = 0  # prompt tokens served from the prefix cache
    prompt_truncated_tokens: int = 0  # prompt tokens cut to fit the loaded num_ctx
    fault: str | None = None  # kind of the fault this request consumed
    metrics: dict[str, int] = field(default_factory=dict)  # metrics exactly as sent
    done_reason: str | None = None
    error: str | None = None  # error text sent (HTTP error body or mid-stream error line)
    socket_arrived: float | None = None  # the request's first bytes read from the connection
    socket_first_chunk: float | None = None  # the first token chunk handed to the transport
    # the emulator keeping its own schedule: the worst delay, in seconds, of a streamed token
    # chunk's write (returned) behind the time it was due (its event loop busy, its process
    # waiting for a CPU)
    token_late_max: float = 0.0


@dataclass(frozen=True)
class LoadedState:
    """A runner as ``/api/ps`` would describe it (plus emulator internals)."""

    name: str  # canonical name:tag
    loading: bool
    keep_alive: float  # emulated seconds; negative = forever
    expires_at: datetime | None  # None = forever (ps shows ~year 2318)
    options: dict[str, Any]  # runner options the model was loaded with
    context_length: int  # loaded num_ctx
    size: int
    size_vram: int
    in_flight: int


# --------------------------------------------------------------------------------------------
# names

_PART_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_NS_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]*$")


def _split(name: str) -> tuple[str, str, str, str]:
    """Split ``[host/][namespace/]model[:tag]`` filling Ollama's defaults."""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        base, tag = name[:colon], name[colon + 1 :]
    else:
        base, tag = name, ""
    parts = base.split("/")
    model = parts[-1]
    namespace = parts[-2] if len(parts) >= 2 else ""
    host = "/".join(parts[:-2]) if len(parts) >= 3 else ""
    return host or DEFAULT_HOST, namespace or DEFAULT_NAMESPACE, model, tag or DEFAULT_TAG


def display_name(name: str) -> str:
    """Ollama's DisplayShortest: ``foo`` → ``foo:latest``, ``library/foo`` → ``foo:latest``."""
    host, namespace, model, tag = _split(name.strip())
    prefix = ""
    if host.lower() != DEFAULT_HOST:
        prefix = f"{host}/{namespace}/"
    elif namespace.lower() != DEFAULT_NAMESPACE:
        prefix = f"{namespace}/"
    return f"{prefix}{model}:{tag}"


def fully_qualified_name(name: str) -> str:
    host, namespace, model, tag = _split(name.strip())
    return f"{host}/{namespace}/{model}:{tag}"


def canonical_key(name: str) -> str:
    """Case-insensitive lookup key; ``:latest`` and default host/namespace are implied."""
    return display_name(name).lower()


def is_valid_name(name: str) -> bool:
    host, namespace, model, tag = _split(name.strip())
    if not name.strip() or len(model) > 80 or len(tag) > 80:
        return False
    return bool(
        _HOST_RE.match(host)
        and _NS_RE.match(namespace)
        and _PART_RE.match(model)
        and _PART_RE.match(tag)
    )


# --------------------------------------------------------------------------------------------
# factories


def chat_model(name: str = "llama3.2:latest", **kw: Any) -> EmulatedModel:
    """A completion model (llama 3.2 3B-like)."""
    return EmulatedModel(name=name, **kw)


def thinking_model(name: str = "qwen3:8b", **kw: Any) -> EmulatedModel:
    """A thinking-capable model (qwen3 8B-like) that emits ``thinking_tokens`` first."""
    defaults: dict[str, Any] = {
        "family": "qwen3",
        "parameter_size": "8.2B",
        "parameter_count": 8_190_735_360,
        "context_length": 40960,
        "embedding_length": 4096,
        "size": 5_225_388_164,
        "capabilities": ["completion", "tools", "thinking"],
        "thinking_tokens": 20,
        "decode_tokens_per_second": 60.0,
        "prefill_tokens_per_second": 1200.0,
    }
    defaults.update(kw)
    return EmulatedModel(name=name, **defaults)


def embedding_model(name: str = "nomic-embed-text:latest", **kw: Any) -> EmulatedModel:
    """An embedding-only model (nomic-embed-text-like)."""
    defaults: dict[str, Any] = {
        "family": "nomic-bert",
        "parameter_size": "137M",
        "parameter_count": 136_727_040,
        "quantization_level": "F16",
        "context_length": 2048,
        "embedding_length": 768,
        "size": 274_302_450,
        "capabilities": ["embedding"],
        "load_seconds": 0.2,
        "prefill_tokens_per_second": 8000.0,
        "output_tokens": 0,
    }
    defaults.update(kw)
    return EmulatedModel(name=name, **defaults)


def cloud_stub_model(name: str = "gpt-oss:120b-cloud", **kw: Any) -> EmulatedModel:
    """A pulled cloud pass-through stub as a local /api/tags lists it."""
    defaults: dict[str, Any] = {
        "family": "gptoss",
        "families": [],
        "format": "",
        "parameter_size": "116.8B",
        "parameter_count": 116_829_156_672,
        "quantization_level": "MXFP4",
        "size": 384,
        "capabilities": ["completion", "tools", "thinking"],
        "remote_host": "https://ollama.com:443",
        "remote_model": name.removesuffix("-cloud").removesuffix(":cloud"),
        "load_seconds": 0.0,
    }
    defaults.update(kw)
    return EmulatedModel(name=name, **defaults)


def default_models() -> list[EmulatedModel]:
    """A chat model, a thinking model and an embedding model."""
    return [chat_model(), thinking_model(), embedding_model()]
