"""How a number is measured: one model on one target -> :class:`ModelResult`.

The rules (DESIGN §5), each for a reason:

* TTFT is client-measured: request sent -> first streamed chunk carrying thinking or content.
  Time to first *content* and end-to-end time are kept beside it.
* Server fields come only from the ``done`` line; an absent field is unknown, never 0, and one
  field is never substituted for another.
* A model that is not loaded gets a warmup first: a real one-token request with the same
  options. Its ``load_duration`` is the load figure; it never enters TTFT. A measured run that
  still paid a load (``load_duration`` > 0.1 s) was reloaded mid-cycle and is discarded.
* Only ``temperature``, ``seed``, ``num_predict`` (and ``think`` for thinking-capable models)
  are sent: a runner option such as ``num_ctx`` would force a reload for everyone.
* ``keep_alive`` is never sent to a model that was already loaded (it would overwrite the
  owner's setting); a model we loaded is unloaded again after its runs (``unload_after``).
* Every prompt starts with a nonce so Ollama's prefix cache cannot inflate the prefill rate.
* Runs with fewer than 8 output tokens are "short": kept for TTFT, left out of tokens/s.
* Aggregates over the good warm runs: median TTFT; Σ eval_count / Σ eval_duration for tokens/s
  (Ollama's own formula: N tokens over N-1 intervals).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import statistics
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from ometer_exporter.config import BenchmarkSettings
from ometer_exporter.ollama import (
    ChatStream,
    DoneFields,
    EmbedResponse,
    ErrorType,
    OllamaClient,
    OllamaConnectError,
    OllamaError,
    OllamaRateLimited,
    canonical_name,
)

log = logging.getLogger(__name__)

RELOAD_THRESHOLD: Final = 0.1  # seconds of load_duration that mean "the runner was (re)loaded"
SHORT_OUTPUT_TOKENS: Final = 8
LOOP_LAG_LIMIT: Final = 0.010  # a run that saw the event loop stall longer is not trusted
MAX_RETRIES: Final = 2
RETRY_BASE: Final = 1.0  # seconds before the first retry without Retry-After
MAX_RETRY_AFTER: Final = 60.0  # a longer Retry-After fails the run instead of stalling the cycle
UNLOAD_ON_STOP: Final = 1.0  # seconds an unload may take when a run is cancelled
_NS: Final = 1e-9

Kind = Literal["chat", "embedding"]
DiscardReason = Literal["reloaded", "short", "loop_lag"]


@dataclass(frozen=True, slots=True)
class RunResult:
    """One request: client clocks (``perf_counter``), derived seconds and server fields."""

    warmup: bool
    error_type: ErrorType | None = None
    error: str | None = None
    sent_at: float | None = None
    first_token_at: float | None = None
    first_content_at: float | None = None
    last_token_at: float | None = None
    ended_at: float | None = None
    done: DoneFields = field(default_factory=DoneFields)
    discarded: tuple[DiscardReason, ...] = ()
    loop_lag: float = 0.0
    # Errors of attempts that were retried before this result (503, connection refused).
    retried: tuple[ErrorType, ...] = ()
    # Ollama Cloud's session/weekly usage window is exhausted: wait, don't retry.
    usage_limit: bool = False
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.error_type is None

    @property
    def completed(self) -> bool:
        """A measured run that ran to its end without paying a model load."""
        return self.ok and not self.warmup and "reloaded" not in self.discarded

    @property
    def ttft(self) -> float | None:
        return _span(self.sent_at, self.first_token_at)

    @property
    def time_to_first_content(self) -> float | None:
        return _span(self.sent_at, self.first_content_at)

    @property
    def request_duration(self) -> float | None:
        return _span(self.sent_at, self.ended_at)

    @property
    def load_duration(self) -> float | None:
        return _seconds(self.done.load_duration)

    @property
    def tokens_per_second(self) -> float | None:
        """Server decode rate, Ollama's formula ``eval_count / eval_duration``."""
        return _rate(self.done.eval_count, self.done.eval_duration)

    @property
    def client_tokens_per_second(self) -> float | None:
        """``(eval_count - 1) / (last token chunk - first token chunk)``: chunks are not tokens."""
        count = self.done.eval_count
        span = _span(self.first_token_at, self.last_token_at)
        if count is None or count < 2 or not span:
            return None
        return (count - 1) / span

    @property
    def prompt_tokens_per_second(self) -> float | None:
        """Prefill rate for chat; input tokens/s net of load for embeddings."""
        d = self.done
        if d.prompt_eval_duration is not None or d.eval_count is not None:
            return _rate(d.prompt_eval_count, d.prompt_eval_duration)
        if d.total_duration is None:
            return None
        return _rate(d.prompt_eval_count, d.total_duration - (d.load_duration or 0))

    @property
    def time_per_output_token(self) -> float | None:
        tps = self.tokens_per_second
        return 1.0 / tps if tps else None

    @property
    def queue_wait(self) -> float | None:
        """Server-side wait for a slot: ``total - load - prompt_eval - eval``."""
        d = self.done
        parts = (d.total_duration, d.load_duration, d.prompt_eval_duration, d.eval_duration)
        if any(p is None for p in parts):
            return None
        total, load, prompt, decode = (p or 0 for p in parts)
        return max(0, total - load - prompt - decode) * _NS


@dataclass(frozen=True, slots=True)
class ModelResult:
    """One model's cycle on one target: the runs and the aggregates the gauges show."""

    model: str
    kind: Kind
    started_at: float  # wall clock (Unix seconds)
    finished_at: float
    runs: tuple[RunResult, ...]  # measured runs, in order
    warmup: RunResult | None = None
    loaded_by_us: bool = False

    @property
    def good_runs(self) -> list[RunResult]:
        """The runs behind the gauges (short runs still skip tokens/s).

        Runs that saw the event loop stall are left out while clean runs exist; when every run
        stalled (a starved machine) they are used rather than reporting nothing.
        """
        completed = [r for r in self.runs if r.completed]
        clean = [r for r in completed if "loop_lag" not in r.discarded]
        return clean or completed

    @property
    def success(self) -> bool:
        """At least one good measured run (``ometer_benchmark_success``)."""
        return bool(self.good_runs)

    @property
    def ttft(self) -> float | None:
        return _median(r.ttft for r in self.good_runs) if self.kind == "chat" else None

    @property
    def time_to_first_content(self) -> float | None:
        return _median(r.time_to_first_content for r in self.good_runs)

    @property
    def request_duration(self) -> float | None:
        return _median(r.request_duration for r in self.good_runs)

    @property
    def queue_wait(self) -> float | None:
        return _median(r.queue_wait for r in self.good_runs)

    @property
    def load_duration(self) -> float | None:
        """``load_duration`` of the cold (warmup) request; None when the model was loaded."""
        return self.warmup.load_duration if self.warmup and self.warmup.ok else None

    @property
    def tokens_per_second(self) -> float | None:
        runs = self._decode_runs()
        return _ratio(
            [r.done.eval_count for r in runs], [r.done.eval_duration for r in runs], scale=1e9
        )

    @property
    def client_tokens_per_second(self) -> float | None:
        tokens: list[float | None] = []
        spans: list[float | None] = []
        for r in self._decode_runs():
            if r.client_tokens_per_second is not None:
                tokens.append((r.done.eval_count or 0) - 1)
                spans.append(_span(r.first_token_at, r.last_token_at))
        return _ratio(tokens, spans)

    @property
    def prompt_tokens_per_second(self) -> float | None:
        runs = self.good_runs
        if self.kind == "embedding":
            return _ratio(
                [r.done.prompt_eval_count for r in runs],
                [
                    None
                    if r.done.total_duration is None
                    else r.done.total_duration - (r.done.load_duration or 0)
                    for r in runs
                ],
                scale=1e9,
            )
        return _ratio(
            [r.done.prompt_eval_count for r in runs],
            [r.done.prompt_eval_duration for r in runs],
            scale=1e9,
        )

    @property
    def output_tokens(self) -> int:
        """Tokens this cycle made the server generate (warmup included)."""
        return sum(r.done.eval_count or 0 for r in self._all_runs())

    @property
    def prompt_tokens(self) -> int:
        return sum(r.done.prompt_eval_count or 0 for r in self._all_runs())

    @property
    def first_error(self) -> RunResult | None:
        """The first failed request (OMeter keeps the first error message)."""
        return next((r for r in self._all_runs() if not r.ok), None)

    @property
    def errors(self) -> dict[ErrorType, int]:
        counts: dict[ErrorType, int] = {}
        for r in self._all_runs():
            for error_type in (*r.retried, r.error_type):
                if error_type is not None:
                    counts[error_type] = counts.get(error_type, 0) + 1
        return counts

    @property
    def requests(self) -> int:
        """Requests sent for this cycle's runs, warmup and retries included."""
        return sum(1 + len(r.retried) for r in self._all_runs())

    @property
    def usage_limited(self) -> RunResult | None:
        """The run that hit a cloud usage limit, if any: the target must wait for the window."""
        return next((r for r in self._all_runs() if r.usage_limit), None)

    @property
    def discarded(self) -> dict[DiscardReason, int]:
        """Runs left out, by reason (a stalled run that was used after all is not counted)."""
        used = {id(r) for r in self.good_runs}
        counts: dict[DiscardReason, int] = {}
        for r in self.runs:
            for reason in r.discarded:
                if reason == "loop_lag" and id(r) in used:
                    continue
                counts[reason] = counts.get(reason, 0) + 1
        return counts

    def _decode_runs(self) -> list[RunResult]:
        return [r for r in self.good_runs if "short" not in r.discarded]

    def _all_runs(self) -> list[RunResult]:
        return ([self.warmup] if self.warmup else []) + list(self.runs)


class LoopLagProbe:
    """Measures how late the event loop wakes a timer: every timestamp we take passes through it.

    ``run()`` is a background task; ``worst_since(t)`` is the largest delay seen after ``t``
    (``perf_counter`` clock), ``worst_recent()`` the largest over the last ``window`` seconds.
    """

    def __init__(self, *, interval: float = 0.01, window: float = 60.0) -> None:
        self.interval = interval
        self.window = window
        self._samples: deque[tuple[float, float]] = deque()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - expected)
            now = time.perf_counter()
            samples = self._samples
            samples.append((now, lag))
            while samples and samples[0][0] < now - self.window:
                samples.popleft()

    def worst_since(self, since: float) -> float:
        return max((lag for at, lag in self._samples if at >= since), default=0.0)

    def worst_recent(self) -> float:
        return self.worst_since(time.perf_counter() - self.window)


async def measure_model(
    client: OllamaClient,
    model: str,
    capabilities: Iterable[str],
    settings: BenchmarkSettings,
    *,
    cloud: bool = False,
    allow_load: bool = True,
    lag_probe: LoopLagProbe | None = None,
) -> ModelResult | None:
    """Benchmark one model on one target; None when it is not loaded and loading is not allowed.

    Failures are recorded in the result, never raised: a run that fails is counted with its
    error type and left out of the aggregates.
    """
    caps = frozenset(capabilities)
    kind: Kind = "embedding" if "embedding" in caps and "completion" not in caps else "chat"
    bench = _Bench(client, model, kind, caps, settings, lag_probe)
    started_at = time.time()

    loaded = True
    if not cloud:
        try:
            loaded = canonical_name(model).lower() in {
                canonical_name(m.name).lower() for m in await client.ps()
            }
        except OllamaError as exc:
            failed = _failed(exc, warmup=False)
            return ModelResult(model, kind, started_at, time.time(), runs=(failed,))
    if not loaded and not allow_load:
        return None

    loaded_by_us = not loaded
    unload = loaded_by_us and settings.unload_after
    warmup: RunResult | None = None
    runs: list[RunResult] = []
    try:
        if loaded_by_us:
            warmup = await bench.run(warmup=True, keep_alive=None, index=0)
            if not warmup.ok:
                return ModelResult(model, kind, started_at, time.time(), (), warmup, True)
        for index in range(settings.runs):
            if runs and runs[-1].usage_limit:
                break  # the cloud said stop: more requests would only be refused
            last = index == settings.runs - 1
            runs.append(
                await bench.run(
                    warmup=False,
                    keep_alive=0 if unload and last else None,
                    index=index,
                    detect_reload=not cloud,
                )
            )
    except asyncio.CancelledError:
        # Stopped mid-cycle (SIGTERM, reload, Ctrl-C in bench): still leave the server as we
        # found it, within a second so shutdown stays prompt.
        if unload:
            with contextlib.suppress(OllamaError, TimeoutError):
                async with asyncio.timeout(UNLOAD_ON_STOP):
                    await client.unload(model, embedding=kind == "embedding")
        raise
    if unload and not runs[-1].ok:
        # The run that would have unloaded it failed: leave the server as we found it anyway.
        with contextlib.suppress(OllamaError):
            await client.unload(model, embedding=kind == "embedding")
    return ModelResult(
        model, kind, started_at, time.time(), tuple(runs), warmup, loaded_by_us=loaded_by_us
    )


class _Bench:
    """The fixed request shape of one model's runs."""

    def __init__(
        self,
        client: OllamaClient,
        model: str,
        kind: Kind,
        caps: frozenset[str],
        settings: BenchmarkSettings,
        lag_probe: LoopLagProbe | None,
    ) -> None:
        self.client = client
        self.model = model
        self.kind = kind
        self.settings = settings
        self.lag_probe = lag_probe
        self.think: bool | None = None
        if "thinking" in caps and settings.think != "auto":
            self.think = settings.think == "true"

    def options(self, *, warmup: bool) -> dict[str, Any]:
        s = self.settings
        return {
            "temperature": s.temperature,
            "seed": s.seed,
            "num_predict": 1 if warmup else s.num_predict,
        }

    def prompt(self, index: int) -> str:
        prompts = self.settings.prompts
        # The nonce leads so no two runs share a cached prefix.
        return f"[{secrets.token_hex(4)}] {prompts[index % len(prompts)]}"

    async def run(
        self, *, warmup: bool, keep_alive: float | None, index: int, detect_reload: bool = True
    ) -> RunResult:
        probe_start = time.perf_counter()
        retried: list[ErrorType] = []
        while True:
            try:
                result = await self._request(warmup=warmup, keep_alive=keep_alive, index=index)
                break
            except OllamaError as exc:
                delay = _retry_delay(exc, len(retried))
                if delay is None:
                    return replace(_failed(exc, warmup=warmup), retried=tuple(retried))
                retried.append(exc.error_type)
                log.info("retrying %s in %.1fs after: %s", self.model, delay, exc)
                await asyncio.sleep(delay)
                probe_start = time.perf_counter()
        result = replace(result, retried=tuple(retried))
        if warmup:
            return result
        reasons: list[DiscardReason] = []
        load = result.load_duration
        if detect_reload and load is not None and load > RELOAD_THRESHOLD:
            reasons.append("reloaded")
        lag = self.lag_probe.worst_since(probe_start) if self.lag_probe else 0.0
        if lag > LOOP_LAG_LIMIT:
            reasons.append("loop_lag")
        eval_count = result.done.eval_count
        if self.kind == "chat" and (eval_count or 0) < SHORT_OUTPUT_TOKENS:
            reasons.append("short")
        return replace(result, discarded=tuple(reasons), loop_lag=lag)

    async def _request(self, *, warmup: bool, keep_alive: float | None, index: int) -> RunResult:
        if self.kind == "embedding":
            embedded = await self.client.embed(
                self.model, [self.prompt(index)], keep_alive=keep_alive
            )
            return _from_embed(embedded, warmup=warmup)
        stream = await self.client.chat(
            self.model,
            [{"role": "user", "content": self.prompt(index)}],
            options=self.options(warmup=warmup),
            think=self.think,
            keep_alive=keep_alive,
        )
        return _from_chat(stream, warmup=warmup)


def _retry_delay(exc: OllamaError, attempt: int) -> float | None:
    """Seconds before retrying a failed request, or None when it must not be retried.

    Only what is safe to repeat: a 503 (server busy/overloaded) and a refused connection.
    ``Retry-After`` is honoured when given; otherwise exponential backoff with jitter.
    """
    if attempt >= MAX_RETRIES:
        return None
    if not (exc.status == 503 or isinstance(exc, OllamaConnectError)):
        return None
    if exc.retry_after is not None:
        return exc.retry_after if exc.retry_after <= MAX_RETRY_AFTER else None
    return float(RETRY_BASE * 2**attempt * random.uniform(0.5, 1.5))


def _from_chat(stream: ChatStream, *, warmup: bool) -> RunResult:
    return RunResult(
        warmup=warmup,
        sent_at=stream.sent_at,
        first_token_at=stream.first_token_at,
        first_content_at=stream.first_content_at,
        last_token_at=stream.last_token_at,
        ended_at=stream.ended_at,
        done=stream.done,
    )


def _from_embed(response: EmbedResponse, *, warmup: bool) -> RunResult:
    return RunResult(
        warmup=warmup, sent_at=response.sent_at, ended_at=response.ended_at, done=response.done
    )


def _failed(exc: OllamaError, *, warmup: bool) -> RunResult:
    return RunResult(
        warmup=warmup,
        error_type=exc.error_type,
        error=exc.message,
        usage_limit=isinstance(exc, OllamaRateLimited) and exc.usage_limit,
        retry_after=exc.retry_after,
    )


def _span(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, end - start)


def _seconds(ns: int | None) -> float | None:
    return None if ns is None else ns * _NS


def _rate(count: int | None, duration_ns: int | None) -> float | None:
    if count is None or not duration_ns or duration_ns <= 0:
        return None
    return count / (duration_ns * _NS)


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(
    numerators: Sequence[float | None], denominators: Sequence[float | None], *, scale: float = 1.0
) -> float | None:
    """Σ numerator / Σ denominator over the pairs where both are known."""
    num = den = 0.0
    for n, d in zip(numerators, denominators, strict=True):
        if n is not None and d is not None and d > 0:
            num += n
            den += d
    return num / den * scale if den > 0 else None
