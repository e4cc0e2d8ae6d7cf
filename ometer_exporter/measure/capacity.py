"""The load sweep: how many concurrent users a model serves within its SLO.

Method (the definitions vLLM's ``bench serve`` and AIPerf use):

* **Closed loop per level** ``c``: ``c`` workers send back-to-back requests, each with its own
  nonce-led prompt, until ``max(requests_per_level, c)`` have completed; levels ascending.
* **Per request**: TTFT; TPOT = (e2e − TTFT) / (output tokens − 1), the first token excluded;
  e2e; the server's queue wait where it reports one.
* **Per level**: p50/p90/p95/p99 of TTFT, TPOT and e2e (linear interpolation between ranks);
  aggregate output tokens/s over the level's window (first request sent to last reply ended);
  goodput (requests/s meeting every SLO) and attainment (the share that does).
* **Max concurrency under SLO**: the largest level whose attainment reaches the target. The
  sweep stops one level after the first failing one (to show the knee), or when the server
  refuses (an error), recorded with the reason.
* **Parallel slots**: the largest level at which requests did not wait for a slot (their median
  queue wait at most ``Sweep.queue_limit``): beyond it, TTFT is queueing. A hint, never a change
  to the server.
* **Polite**: between levels the model must stay quiet for a pause — an expiry in ``/api/ps``
  that moves while we send nothing is someone else's request — and each level must end with
  the model idle (its expiry moved): otherwise the sweep stops as ``contended`` and the level
  that met the foreign traffic is not published. Every request goes through the loop-lag guard;
  a level whose requests saw lag is flagged.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from ometer_exporter.config.settings import Slo
from ometer_exporter.measure.contention import QUEUE_WAIT_LIMIT
from ometer_exporter.measure.results import RunResult

QUANTILES: Final = (0.5, 0.9, 0.95, 0.99)
QUEUE_SHARE: Final = 0.25  # of one user's request duration: a longer wait is for a slot

Send = Callable[[], Awaitable[RunResult]]  # one request of the sweep's shape
Quiet = Callable[[], Awaitable[bool]]  # True when no foreign request was seen
Warm = Callable[[int], Awaitable[object]]  # opens that many connections before a level
OnLevel = Callable[["Level"], None]  # told of each level as it is kept (progress, logs)
# Why a sweep ended before its last level: someone else's traffic (nothing of the level that
# met it is kept), the server refused a request (the levels before it are kept, with the
# error), or the model could not be loaded.
Abort = Literal["contended", "refused", "load_failed"]
ABORTS: Final[tuple[Abort, ...]] = ("contended", "refused", "load_failed")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile with linear interpolation between closest ranks (numpy's default)."""
    data = sorted(values)
    if not data:
        return None
    rank = q * (len(data) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def tpot(run: RunResult) -> float | None:
    """(e2e − TTFT) / (output tokens − 1): time per output token after the first."""
    ttft, e2e, tokens = run.ttft, run.request_duration, run.done.eval_count
    if ttft is None or e2e is None or tokens is None or tokens < 2:
        return None
    return (e2e - ttft) / (tokens - 1)


@dataclass(frozen=True, slots=True)
class Level:
    """One concurrency level's requests and what they say."""

    concurrency: int
    runs: tuple[RunResult, ...]
    started: float  # perf_counter: the first request sent
    ended: float  # perf_counter: the last reply ended
    slo: Slo
    error: str | None = None  # the server refused (a failed request): the sweep stopped here

    @property
    def good(self) -> list[RunResult]:
        return [r for r in self.runs if r.ok]

    def quantiles(self, measure: Callable[[RunResult], float | None]) -> dict[float, float]:
        values = [v for r in self.good if (v := measure(r)) is not None]
        return {q: p for q in QUANTILES if (p := percentile(values, q)) is not None}

    @property
    def window(self) -> float:
        return max(self.ended - self.started, 1e-9)

    @property
    def output_tokens_per_second(self) -> float | None:
        tokens = sum(r.done.eval_count or 0 for r in self.good)
        return tokens / self.window if tokens else None

    def meets(self, run: RunResult) -> bool:
        ttft, per_token = run.ttft, tpot(run)
        return (
            run.ok
            and ttft is not None
            and ttft <= self.slo.ttft
            and (per_token is None or per_token <= self.slo.tpot)
        )

    @property
    def attainment(self) -> float:
        return sum(self.meets(r) for r in self.runs) / len(self.runs) if self.runs else 0.0

    @property
    def goodput(self) -> float:
        """Requests per second that met every SLO."""
        return sum(self.meets(r) for r in self.runs) / self.window

    @property
    def passed(self) -> bool:
        return self.error is None and self.attainment >= self.slo.attainment

    @property
    def queue_wait(self) -> float | None:
        """The median wait the server reports (None: it reports none)."""
        waits = [w for r in self.good if (w := r.queue_wait) is not None]
        return percentile(waits, 0.5)

    @property
    def lagged(self) -> bool:
        """A request saw the exporter's event loop stall: its timestamps are doubtful."""
        return any("loop_lag" in r.discarded for r in self.runs)


@dataclass(frozen=True, slots=True)
class Sweep:
    """A model's sweep: the levels published, and how it ended."""

    levels: tuple[Level, ...]
    started_at: float  # wall clock
    finished_at: float
    aborted: Abort | None = None
    slo: Slo = field(default_factory=Slo)
    error: str | None = None  # what the server said when it refused (``refused``, ``load_failed``)

    @property
    def max_concurrency(self) -> int | None:
        """The largest level whose attainment reached the target (None: none did)."""
        passing = [level.concurrency for level in self.levels if level.passed]
        return max(passing) if passing else None

    @property
    def queue_limit(self) -> float:
        """A median wait above this is a wait for a parallel slot: :data:`QUEUE_WAIT_LIMIT`, or
        a quarter of one user's request duration when that is more (a batching server adds a
        new request at its next decode step: a wait of a step or two, not of a slot)."""
        first = min(self.levels, key=lambda lv: lv.concurrency, default=None)
        if first is None:
            return QUEUE_WAIT_LIMIT
        alone = percentile([d for r in first.good if (d := r.request_duration) is not None], 0.5)
        return max(QUEUE_WAIT_LIMIT, QUEUE_SHARE * (alone or 0.0))

    def queued(self, level: Level) -> bool:
        """At this level requests waited for a slot (their median wait is above the limit)."""
        wait = level.queue_wait
        return wait is not None and wait > self.queue_limit

    @property
    def parallel_slots(self) -> int | None:
        """The largest level at which requests did not wait for a slot, below the first level
        at which they did (None: the server reports no queue wait, or every level queued)."""
        if all(level.queue_wait is None for level in self.levels):
            return None
        slots = None
        for level in sorted(self.levels, key=lambda lv: lv.concurrency):
            if self.queued(level):
                break
            slots = level.concurrency
        return slots


async def run_level(send: Send, concurrency: int, requests: int, slo: Slo) -> Level:
    """``concurrency`` workers, back to back, until ``max(requests, concurrency)`` completed."""
    total = max(requests, concurrency)
    claimed = 0
    runs: list[RunResult] = []
    error: list[str] = []

    async def worker() -> None:
        nonlocal claimed
        while claimed < total and not error:
            claimed += 1
            run = await send()
            runs.append(run)
            if not run.ok:
                error.append(f"{run.error_type.value if run.error_type else 'error'}: {run.error}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    sent = [r.sent_at for r in runs if r.sent_at is not None]
    ends = [r.ended_at for r in runs if r.ended_at is not None]
    ended = max(ends, default=time.perf_counter())
    first = min(sent, default=started)
    return Level(concurrency, tuple(runs), first, ended, slo, error[0] if error else None)


async def sweep(
    send: Send,
    levels: Sequence[int],
    *,
    requests: int,
    slo: Slo,
    quiet: Quiet,
    refine: bool = False,
    warm: Warm | None = None,
    on_level: OnLevel | None = None,
) -> Sweep:
    """Levels ascending; stop one level after the first failing one, on a refusal, or when
    ``quiet`` sees someone else's traffic (that level is not published). ``on_level`` hears of
    each level kept, as it is."""
    told: OnLevel = on_level or (lambda level: None)
    started_at = time.time()
    done: list[Level] = []
    failed_at: int | None = None
    if not await quiet():  # before the first level; after each one below
        return Sweep((), started_at, time.time(), "contended", slo)
    for concurrency in sorted(levels):
        if warm is not None:  # no request of the level pays a new connection in its TTFT
            await warm(concurrency)
        level = await run_level(send, concurrency, requests, slo)
        if level.error is not None:  # a refusal first: a request refused before it reached
            done.append(level)  # the model moves no expiry, and is no one else's traffic
            told(level)
            return Sweep(tuple(done), started_at, time.time(), "refused", slo, level.error)
        if not await quiet():
            return Sweep(tuple(done), started_at, time.time(), "contended", slo)
        done.append(level)
        told(level)
        if failed_at is not None:
            break
        if not level.passed:
            failed_at = concurrency
    if refine:
        done = await _bisect(send, done, requests=requests, slo=slo, quiet=quiet, warm=warm,
                             told=told)  # fmt: skip
    return Sweep(tuple(sorted(done, key=lambda lv: lv.concurrency)), started_at, time.time(),
                 None, slo)  # fmt: skip


async def _bisect(
    send: Send,
    done: list[Level],
    *,
    requests: int,
    slo: Slo,
    quiet: Quiet,
    warm: Warm | None,
    told: OnLevel,
) -> list[Level]:
    """Between the last passing and the first failing level, halve the gap until it is one."""
    while True:
        ordered = sorted(done, key=lambda lv: lv.concurrency)
        passing = [lv.concurrency for lv in ordered if lv.passed]
        failing = [lv.concurrency for lv in ordered if not lv.passed]
        if not passing or not failing:
            return done
        low = max(passing)
        above = [c for c in failing if c > low]
        if not above or min(above) - low <= 1:
            return done
        high = min(above)
        if warm is not None:
            await warm((low + high) // 2)
        level = await run_level(send, (low + high) // 2, requests, slo)
        if not await quiet() or level.error is not None:
            return done
        done.append(level)
        told(level)
