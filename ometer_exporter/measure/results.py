"""What a measurement produced: one request (:class:`RunResult`) and one model's cycle
(:class:`ModelResult`), with the aggregates the gauges show.

Aggregates are over the good warm runs: median TTFT; Σ eval_count / Σ eval_duration for tokens/s
(Ollama's own formula: N tokens over N-1 intervals).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from ometer_exporter.client.errors import ErrorType
from ometer_exporter.client.replies import DoneFields

_NS: Final = 1e-9
# A rate over less than this is no measurement (Ollama's durations are nanosecond counts; a
# token takes microseconds at the very least): None, never a huge or infinite figure.
MIN_DURATION: Final = 1e-6

Kind = Literal["chat", "embedding"]
DiscardReason = Literal["reloaded", "short", "loop_lag", "contended"]
# Reasons that make a run worthless for every figure (a short run still gives a TTFT).
_VOID: Final = frozenset({"reloaded", "contended"})


def model_kind(capabilities: Iterable[str]) -> Kind:
    """An embedding model embeds and cannot complete; everything else is measured as chat."""
    caps = frozenset(capabilities)
    return "embedding" if "embedding" in caps and "completion" not in caps else "chat"


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
        """A measured run that ran to its end without paying a model load or sharing the model
        with someone else's request."""
        return self.ok and not self.warmup and _VOID.isdisjoint(self.discarded)

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
        if count is None or count < 2 or span is None:
            return None
        return _finite_rate(count - 1, span)

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
        return 1.0 / tps if tps else None  # tps is finite, and at least 1e-10 when not 0

    @property
    def queue_wait(self) -> float | None:
        """Server-side wait for a slot: ``total - load - prompt_eval - eval``. A server that
        reports its prompt and decode times but no total and no load (llama.cpp's ``timings``)
        gets the client's request duration as the total: its wait then includes the round
        trip, a millisecond or so on a local network."""
        d = self.done
        total: float | None = None if d.total_duration is None else d.total_duration * _NS
        load = d.load_duration
        if total is None and load is None and self.request_duration is not None:
            total, load = self.request_duration, 0
        prompt, decode = d.prompt_eval_duration, d.eval_duration
        if total is None or load is None or prompt is None or decode is None:
            return None
        return max(0.0, total - (load + prompt + decode) * _NS)


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
    # The prompt-length axis (``measure.lengths``): its calibration request and each length.
    calibration: RunResult | None = None
    lengths: tuple[LengthResult, ...] = ()
    tokens_per_word: float | None = None  # the model's, from the calibration (kept by the loop)

    @property
    def good_runs(self) -> list[RunResult]:
        """The runs behind the gauges (short runs still skip tokens/s).

        Runs that saw the event loop stall are left out while clean runs exist; when every run
        stalled (a starved machine) they are used rather than reporting nothing.
        """
        return good_runs(self.runs)

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
    def output_tokens_approximate(self) -> bool:
        """The decode runs' output tokens were counted chunks, not the server's count."""
        return any(r.done.eval_count_approximate for r in self._decode_runs())

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
    def contended(self) -> bool:
        """Someone else's request overlapped ours: the attempt is abandoned, tried again later."""
        return any("contended" in r.discarded for r in self._measured())

    @property
    def usage_limited(self) -> RunResult | None:
        """The run that hit a cloud usage limit, if any: the target must wait for the window."""
        return next((r for r in self._all_runs() if r.usage_limit), None)

    @property
    def discarded(self) -> dict[DiscardReason, int]:
        """Runs left out, by reason (a stalled run that was used after all is not counted)."""
        used = {id(r) for r in self.good_runs}
        counts: dict[DiscardReason, int] = {}
        for r in self._measured():
            for reason in r.discarded:
                if reason == "loop_lag" and id(r) in used:
                    continue
                counts[reason] = counts.get(reason, 0) + 1
        return counts

    def _decode_runs(self) -> list[RunResult]:
        return [r for r in self.good_runs if "short" not in r.discarded]

    @property
    def ttft_per_1k_tokens(self) -> float | None:
        """Seconds of TTFT per 1,000 prompt tokens, fitted over the measured lengths."""
        return ttft_slope(self.lengths)

    def _measured(self) -> list[RunResult]:
        calibration = [self.calibration] if self.calibration else []
        return list(self.runs) + calibration + [r for n in self.lengths for r in n.runs]

    def _all_runs(self) -> list[RunResult]:
        return ([self.warmup] if self.warmup else []) + self._measured()


def good_runs(runs: Iterable[RunResult]) -> list[RunResult]:
    """The completed runs, without those that saw the event loop stall while clean ones exist
    (when every run stalled, a starved machine, they are used rather than nothing)."""
    completed = [r for r in runs if r.completed]
    return [r for r in completed if "loop_lag" not in r.discarded] or completed


def _span(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, end - start)


def _seconds(ns: int | None) -> float | None:
    return None if ns is None else ns * _NS


def _rate(count: int | None, duration_ns: int | None) -> float | None:
    if count is None or duration_ns is None:
        return None
    return _finite_rate(count, duration_ns * _NS)


def _finite_rate(amount: float, seconds: float) -> float | None:
    """`amount` per second over `seconds`; None over a zero or near-zero span, or when the
    figure is not a finite float (an absurd count): only finite numbers leave measurement."""
    if not seconds >= MIN_DURATION:  # also refuses NaN
        return None
    try:
        rate = amount / seconds
    except OverflowError:  # an int too large for a float
        return None
    return rate if math.isfinite(rate) else None


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
    return _finite_rate(num, den / scale) if den > 0 else None


@dataclass(frozen=True, slots=True)
class Plan:
    """One configured length, as it will be measured: ``tokens`` aimed at, or why not."""

    configured: int
    tokens: int | None  # None: skipped
    capped: bool = False
    skipped: str | None = None


@dataclass(frozen=True, slots=True)
class LengthResult:
    """One configured length's runs in one cycle."""

    plan: Plan
    runs: tuple[RunResult, ...] = ()

    @property
    def good_runs(self) -> list[RunResult]:
        return good_runs(self.runs)

    @property
    def ttft(self) -> float | None:
        return _median(r.ttft for r in self.good_runs)

    @property
    def prefill_tokens_per_second(self) -> float | None:
        return _median(r.prompt_tokens_per_second for r in self.good_runs)

    @property
    def prompt_tokens(self) -> int | None:
        counts = [r.done.prompt_eval_count for r in self.good_runs]
        known = [c for c in counts if c is not None]
        return round(statistics.median(known)) if known else None

    @property
    def note(self) -> str:
        """ "" measured as configured, "capped", or why it was skipped."""
        if self.plan.skipped:
            return self.plan.skipped
        return "capped" if self.plan.capped else ""


def ttft_slope(results: Sequence[LengthResult]) -> float | None:
    """Least-squares slope of TTFT against prompt tokens, in seconds per 1,000 tokens (None
    with fewer than two measured lengths)."""
    points = [
        (float(n), t) for r in results if (n := r.prompt_tokens) is not None and (t := r.ttft)
    ]
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return sxy / sxx * 1000.0
