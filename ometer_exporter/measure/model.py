"""How a number is measured: one model on one target -> :class:`ModelResult`.

The rules, each for a reason:

* TTFT is client-measured: request sent (its headers start out on the wire) -> first
  streamed chunk carrying thinking or content.
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
* On a local server, a run that shared the model with someone else's request is discarded as
  ``contended`` and ends the attempt (``measure.contention`` says how that is seen).
* Every prompt starts with a nonce so Ollama's prefix cache cannot inflate the prefill rate.
* Runs with fewer than 8 output tokens are "short": kept for TTFT, left out of tokens/s.
* Aggregates over the good warm runs: median TTFT; Σ eval_count / Σ eval_duration for tokens/s
  (Ollama's own formula: N tokens over N-1 intervals).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any, Final

from ometer_exporter.client.engine import EngineClient
from ometer_exporter.client.errors import (
    ErrorType,
    OllamaConnectError,
    OllamaError,
    OllamaRateLimited,
)
from ometer_exporter.client.replies import ChatStream, EmbedResponse
from ometer_exporter.config.settings import BenchmarkSettings
from ometer_exporter.measure.capacity import OnLevel, Sweep, sweep
from ometer_exporter.measure.contention import (
    BusyGate,
    IdleWatch,
    QuietGate,
    loaded_entry,
    queued,
)
from ometer_exporter.measure.lag import LoopLagProbe
from ometer_exporter.measure.lengths import OLD_DEFAULT_CONTEXT, measure_lengths, plan_lengths
from ometer_exporter.measure.results import (
    DiscardReason,
    Kind,
    ModelResult,
    Plan,
    RunResult,
    model_kind,
)

log = logging.getLogger(__name__)

RELOAD_THRESHOLD: Final = 0.1  # seconds of load_duration that mean "the runner was (re)loaded"
SHORT_OUTPUT_TOKENS: Final = 8
LOOP_LAG_LIMIT: Final = 0.010  # a run that saw the event loop stall longer is not trusted
MAX_RETRIES: Final = 2
RETRY_BASE: Final = 1.0  # seconds before the first retry without Retry-After
MAX_RETRY_AFTER: Final = 60.0  # a longer Retry-After fails the run instead of stalling the cycle
UNLOAD_ON_STOP: Final = 1.0  # seconds an unload may take when a run is cancelled


async def measure_model(
    client: EngineClient,
    model: str,
    capabilities: Iterable[str],
    settings: BenchmarkSettings,
    *,
    cloud: bool = False,
    cold: bool = False,
    allow_load: bool = True,
    lag_probe: LoopLagProbe | None = None,
    trained_context: int | None = None,
    tokens_per_word: float | None = None,
) -> ModelResult | None:
    """Benchmark one model on one target; None when it is not loaded and loading is not allowed.
    ``cloud``: no /api/ps (Ollama Cloud, OpenAI-compatible servers): no load, unload or checks.
    ``cold``: such a server said the model is not in memory (LM Studio loads on first use): a
    warmup takes the load, so no TTFT does.

    Failures are recorded in the result, never raised: a run that fails is counted with its
    error type and left out of the aggregates. With ``settings.prompt_tokens`` a loaded local
    chat model also gets the prompt-length axis (``trained_context`` bounds it;
    ``tokens_per_word`` is the model's ratio from an earlier cycle, if known).
    """
    caps = frozenset(capabilities)
    kind: Kind = model_kind(caps)
    requests = _Requests(client, model, kind, caps, settings, lag_probe)
    started_at = time.time()
    watch: IdleWatch | None = None
    if not cloud:
        try:
            watch = await _watch(client, model)
        except OllamaError as exc:
            failed = _failed(exc, warmup=False)
            return ModelResult(model, kind, started_at, time.time(), runs=(failed,))
    loaded_by_us = (watch is not None and not watch.loaded) or cold
    if loaded_by_us and not allow_load:
        return None
    unload = loaded_by_us and settings.unload_after
    axis = bool(settings.prompt_tokens) and kind == "chat"
    try:
        warmup, runs, extra = await _attempt(
            requests, watch, load=loaded_by_us, unload_last=unload and not axis, axis=axis,
            trained=trained_context, tokens_per_word=tokens_per_word,
        )  # fmt: skip
    except asyncio.CancelledError:
        if unload:
            await requests.unload_on_stop()
        raise
    result = ModelResult(
        model, kind, started_at, time.time(), tuple(runs), warmup, loaded_by_us, **extra
    )
    complete = bool(runs) and len(runs) == settings.runs and runs[-1].ok and not axis
    if unload and runs and not result.contended and not complete:
        # The run that would have unloaded it failed, never came, or the prompt-length axis
        # came after it: leave the server as we found it anyway. (A model someone started
        # using meanwhile is theirs: it stays.)
        with contextlib.suppress(OllamaError):
            await requests.unload()
    return result


async def measure_capacity(
    client: EngineClient,
    model: str,
    capabilities: Iterable[str],
    settings: BenchmarkSettings,
    *,
    watches_loaded: bool = True,
    allow_load: bool = True,
    lag_probe: LoopLagProbe | None = None,
    pause: float = 1.0,
    on_level: OnLevel | None = None,
) -> Sweep | None:
    """The load sweep (``settings.capacity``) on one chat model; None when it is not loaded and
    loading is not allowed. ``pause`` is the quiet wait around each level: on a server with
    ``/api/ps`` (``watches_loaded``) its expiries show foreign traffic, elsewhere the server's
    busy flag where it has one (llama.cpp's ``/slots``). A model the sweep loaded is unloaded
    after it, and on cancellation within a second."""
    caps = frozenset(capabilities)
    capacity = settings.capacity
    requests = _Requests(client, model, model_kind(caps), caps, settings, lag_probe)
    quiet: Callable[[], Awaitable[bool]] = BusyGate(client, pause)
    loaded_by_us = False
    if watches_loaded:
        watch = await _watch(client, model)
        loaded_by_us = not watch.loaded
        if loaded_by_us and not allow_load:
            return None
        quiet = QuietGate(watch, pause)
    try:
        if loaded_by_us:
            warmup = await requests.run(warmup=True, keep_alive=None, index=0)
            if not warmup.ok:
                now = time.time()
                return Sweep((), now, now, "load_failed", capacity.slo, warmup.error)
            await watch.went_idle()
        index = itertools.count()

        async def send() -> RunResult:
            return await requests.run(
                warmup=False,
                keep_alive=None,
                index=next(index),
                num_predict=capacity.num_predict,
                retry=False,
            )

        result = await sweep(
            send, capacity.concurrency, requests=capacity.requests_per_level, slo=capacity.slo,
            quiet=quiet, refine=capacity.refine, warm=lambda n: _open_connections(client, n),
            on_level=on_level,
        )  # fmt: skip
    except asyncio.CancelledError:
        if loaded_by_us:
            await requests.unload_on_stop()
        raise
    if loaded_by_us and settings.unload_after:
        with contextlib.suppress(OllamaError):
            await requests.unload()
    return result


async def _open_connections(client: EngineClient, connections: int) -> None:
    """A level's connections opened beforehand (at once, so none is reused): no request of
    the level pays a connect in its TTFT."""
    with contextlib.suppress(OllamaError):
        await asyncio.gather(*(client.version() for _ in range(connections)))


async def _attempt(
    requests: _Requests,
    watch: IdleWatch | None,
    *,
    load: bool,
    unload_last: bool,
    axis: bool,
    trained: int | None,
    tokens_per_word: float | None,
) -> tuple[RunResult | None, list[RunResult], dict[str, Any]]:
    """Warmup (when we load the model), the measured runs, then the prompt-length axis."""
    warmup: RunResult | None = None
    if load:
        warmup = await requests.run(warmup=True, keep_alive=None, index=0)
        if not warmup.ok:
            return warmup, [], {}
        if watch is not None:
            await watch.went_idle()  # the expiry our warmup set is the one to follow
    runs = await requests.runs(requests.settings.runs, unload_after_last=unload_last, watch=watch)
    last = runs[-1] if runs else None
    if axis and last is not None and last.ok and "contended" not in last.discarded:
        return warmup, runs, await _prompt_axis(requests, watch, trained, tokens_per_word)
    return warmup, runs, {}


async def _contended(result: RunResult, watch: IdleWatch) -> RunResult:
    """``result``, discarded as contended if someone else's request shared the model."""
    if result.ok and (queued(result) or not await watch.went_idle()):
        return replace(result, discarded=(*result.discarded, "contended"))
    return result


async def _prompt_axis(
    requests: _Requests,
    watch: IdleWatch | None,
    trained: int | None,
    tokens_per_word: float | None,
) -> dict[str, Any]:
    """The prompt-length axis on the loaded model, against the context it runs with: what
    ``/api/ps`` says (``watch``: a local Ollama), else the context the server reports for the
    model (an OpenAI-compatible server's ``/props``, a cloud model's own)."""
    s = requests.settings
    context: int | None = trained
    if watch is not None:
        try:
            entry = await loaded_entry(requests.client, requests.model)
        except OllamaError:
            entry = None
        context = entry.context_length if entry and entry.context_length else OLD_DEFAULT_CONTEXT
    if context is None:
        why = "the server does not say the context the model runs with"
        plans = [Plan(n, None, skipped=why) for n in s.prompt_tokens]
    else:
        plans = plan_lengths(
            s.prompt_tokens, context=context, trained=trained, num_predict=s.prompt_num_predict
        )

    async def run(content: str, num_predict: int, warmup: bool) -> RunResult:
        return await requests.run(
            warmup=warmup, keep_alive=None, index=0, content=content, num_predict=num_predict
        )

    async def check(result: RunResult) -> RunResult:
        return result if watch is None else await _contended(result, watch)

    calibration, lengths, ratio = await measure_lengths(
        run, check, plans, runs=s.runs, num_predict=s.prompt_num_predict,
        tokens_per_word=tokens_per_word,
    )  # fmt: skip
    return {"calibration": calibration, "lengths": lengths, "tokens_per_word": ratio}


async def _watch(client: EngineClient, model: str) -> IdleWatch:
    """Whether the model is loaded, and its expiry to follow across our runs."""
    entry = await loaded_entry(client, model)
    return IdleWatch(client, model, entry.expires_at if entry is not None else None,
                     loaded=entry is not None)  # fmt: skip


class _Requests:
    """The fixed request shape of one model's runs."""

    def __init__(
        self,
        client: EngineClient,
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

    async def runs(
        self, count: int, *, unload_after_last: bool, watch: IdleWatch | None
    ) -> list[RunResult]:
        """The measured runs; the last one carries ``keep_alive: 0`` when ``unload_after_last``.

        ``watch`` (local servers) checks after each run that no one else's request shared the
        model; the first contended run ends the attempt: the model is busy, try again later.
        """
        results: list[RunResult] = []
        for index in range(count):
            last = index == count - 1
            result = await self.run(
                warmup=False,
                keep_alive=0 if unload_after_last and last else None,
                index=index,
                detect_reload=watch is not None,
            )
            if watch is not None:
                result = await _contended(result, watch)
            results.append(result)
            if result.usage_limit or "contended" in result.discarded:
                break  # the cloud said stop, or the model is in use: more requests only hurt
        return results

    async def unload(self) -> None:
        await self.client.unload(self.model, embedding=self.kind == "embedding")

    async def unload_on_stop(self) -> None:
        """Stopped mid-cycle (SIGTERM, reload, Ctrl-C in the one-shot): still leave the server
        as we found it, within a second so shutdown stays prompt."""
        with contextlib.suppress(OllamaError, TimeoutError):
            async with asyncio.timeout(UNLOAD_ON_STOP):
                await self.unload()

    async def run(
        self,
        *,
        warmup: bool,
        keep_alive: float | None,
        index: int,
        detect_reload: bool = True,
        content: str | None = None,
        num_predict: int | None = None,
        retry: bool = True,
    ) -> RunResult:
        """One request, retried where safe (unless ``retry`` is off: under a sweep's load a
        refusal is the answer); ``content`` and ``num_predict`` replace the prompt and output
        length (the prompt-length axis)."""
        probe_start = time.perf_counter()
        retried: list[ErrorType] = []
        while True:
            try:
                result = await self._request(
                    warmup=warmup, keep_alive=keep_alive, index=index, content=content,
                    num_predict=num_predict,
                )  # fmt: skip
                break
            except OllamaError as exc:
                delay = _retry_delay(exc, len(retried)) if retry else None
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
        if self.kind == "chat" and num_predict is None and (eval_count or 0) < SHORT_OUTPUT_TOKENS:
            reasons.append("short")
        return replace(result, discarded=tuple(reasons), loop_lag=lag)

    async def _request(
        self,
        *,
        warmup: bool,
        keep_alive: float | None,
        index: int,
        content: str | None,
        num_predict: int | None,
    ) -> RunResult:
        if self.kind == "embedding":
            embedded = await self.client.embed(
                self.model, [self.prompt(index)], keep_alive=keep_alive
            )
            return _from_embed(embedded, warmup=warmup)
        options = self.options(warmup=warmup)
        if num_predict is not None:
            options["num_predict"] = num_predict
        stream = await self.client.chat(
            self.model,
            [{"role": "user", "content": content or self.prompt(index)}],
            options=options,
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
