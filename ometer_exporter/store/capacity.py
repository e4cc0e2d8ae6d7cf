"""What a model's latest load sweep left behind: :class:`CapacityRecord`, one
:class:`CapacityLevel` per concurrency level (persisted; survives restarts).

A sweep that met someone else's traffic (``contended``) or could not load the model leaves no
record: the previous one stays, and the abort is counted by reason. A sweep the server refused
part-way keeps the levels before the refusal, and says what the server said (``stopped``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

from ometer_exporter.config.settings import CapacitySettings
from ometer_exporter.measure.capacity import ABORTS, QUANTILES, Abort, Level, Sweep, tpot
from ometer_exporter.measure.results import RunResult
from ometer_exporter.store.records import (
    MAX_ERROR,
    MAX_TEXT,
    MAX_TIMESTAMP,
    Rule,
    a_float,
    boolean,
    checked_fields,
    count,
    items,
    optional,
    stored_fields,
    text,
)

__all__ = ["ABORTS", "QUANTILES", "Abort", "CapacityLevel", "CapacityRecord"]

Quantiles = tuple[float | None, ...]  # one value per QUANTILES entry (None: no request had it)


def _quantiles(level: Level, measure: Callable[[RunResult], float | None]) -> Quantiles:
    values = level.quantiles(measure)
    return tuple(values.get(q) for q in QUANTILES)


@dataclass(frozen=True, slots=True)
class CapacityLevel:
    """One concurrency level: what its requests met, as quantiles and rates."""

    concurrency: int
    requests: int  # requests completed (good or failed)
    good: int  # requests that succeeded
    met_slo: int  # requests that met every SLO
    ttft: Quantiles  # seconds, QUANTILES order
    tpot: Quantiles  # seconds per output token after the first
    e2e: Quantiles  # seconds, request sent to reply ended
    queue_wait: Quantiles  # seconds the server says a request waited (None: not reported)
    output_tokens_per_second: float | None  # aggregate over the level's window
    goodput: float  # requests per second that met every SLO
    attainment: float  # share of the requests that met every SLO (0-1)
    passed: bool  # attainment reached the target and nothing was refused
    queued: bool  # requests waited for a parallel slot (``Sweep.queued``)
    lagged: bool  # a request saw the exporter's event loop stall: timestamps doubtful
    window: float  # seconds from the first request sent to the last reply ended

    @classmethod
    def from_level(cls, level: Level, *, queued: bool) -> CapacityLevel:
        return cls(
            concurrency=level.concurrency,
            requests=len(level.runs),
            good=len(level.good),
            met_slo=sum(level.meets(r) for r in level.runs),
            ttft=_quantiles(level, lambda r: r.ttft),
            tpot=_quantiles(level, tpot),
            e2e=_quantiles(level, lambda r: r.request_duration),
            queue_wait=_quantiles(level, lambda r: r.queue_wait),
            output_tokens_per_second=level.output_tokens_per_second,
            goodput=level.goodput,
            attainment=level.attainment,
            passed=level.passed,
            queued=queued,
            lagged=level.lagged,
            window=level.window,
        )

    def quantile(self, values: Quantiles, q: float) -> float | None:
        """The value for quantile ``q`` of one of this level's tuples."""
        return values[QUANTILES.index(q)] if q in QUANTILES and len(values) > 0 else None


@dataclass(frozen=True, slots=True)
class CapacityRecord:
    """A model's latest published sweep."""

    started_at: float
    finished_at: float
    levels: tuple[CapacityLevel, ...]
    max_concurrency: int | None  # the largest level within the SLO (None: not even the first)
    parallel_slots: int | None  # inferred from where queueing starts (None: not reported)
    slo_ttft: float
    slo_tpot: float
    slo_attainment: float
    requests_per_level: int
    num_predict: int
    stopped: str | None = None  # the server refused a request: what it said (levels kept)
    url: str = ""  # the target's, without credentials
    ollama_version: str = ""  # what /api/version said when it ran ("" unknown)

    @classmethod
    def from_sweep(
        cls, sweep: Sweep, settings: CapacitySettings, *, url: str = "", ollama_version: str = ""
    ) -> CapacityRecord:
        return cls(
            started_at=sweep.started_at,
            finished_at=sweep.finished_at,
            levels=tuple(
                CapacityLevel.from_level(lv, queued=sweep.queued(lv)) for lv in sweep.levels
            ),
            max_concurrency=sweep.max_concurrency,
            parallel_slots=sweep.parallel_slots,
            slo_ttft=sweep.slo.ttft,
            slo_tpot=sweep.slo.tpot,
            slo_attainment=sweep.slo.attainment,
            requests_per_level=settings.requests_per_level,
            num_predict=settings.num_predict,
            stopped=(sweep.error or "refused")[:MAX_ERROR] if sweep.aborted == "refused" else None,
            url=url,
            ollama_version=ollama_version[:MAX_TEXT],
        )

    @property
    def slots_hint(self) -> str | None:
        """What the curve says about the server's parallel slots, in a sentence (None: it
        says nothing: no level queued, or the server reports no queue wait)."""
        slots = self.parallel_slots
        queued = [level.concurrency for level in self.levels if level.queued]
        if slots is None or not queued:
            return None
        at_a_time = "one request at a time" if slots == 1 else f"{slots} requests at a time"
        return f"from {min(queued)} users on, TTFT is queueing: the server decodes {at_a_time}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> CapacityRecord:
        return cls(**stored_fields(cls, text, CAPACITY_RULES))


_TIME: Final[Rule] = lambda value: a_float(value, 0.0, MAX_TIMESTAMP)  # noqa: E731
_SECONDS: Final[Rule] = optional(lambda value: a_float(value, 0.0))
_QUANTILES: Final[Rule] = items(_SECONDS)
_WAIT: Final[Rule] = items(optional(a_float))  # total - load - prompt - eval: may dip below 0
_RATIO: Final[Rule] = lambda value: a_float(value, 0.0, 1.0)  # noqa: E731


def _level(value: Any) -> CapacityLevel:
    if not isinstance(value, dict):
        raise TypeError(f"{type(value).__name__}, not an object")
    return CapacityLevel(**checked_fields(CapacityLevel, value, LEVEL_RULES))


LEVEL_RULES: Final[Mapping[str, Rule]] = {
    "concurrency": count,
    "requests": count,
    "good": count,
    "met_slo": count,
    "ttft": _QUANTILES,
    "tpot": _QUANTILES,
    "e2e": _QUANTILES,
    "queue_wait": _WAIT,
    "output_tokens_per_second": _SECONDS,
    "goodput": lambda value: a_float(value, 0.0),
    "attainment": _RATIO,
    "passed": boolean,
    "queued": boolean,
    "lagged": boolean,
    "window": lambda value: a_float(value, 0.0),
}
CAPACITY_RULES: Final[Mapping[str, Rule]] = {
    "started_at": _TIME,
    "finished_at": _TIME,
    "levels": items(_level),
    "max_concurrency": optional(count),
    "parallel_slots": optional(count),
    "slo_ttft": lambda value: a_float(value, 0.0),
    "slo_tpot": lambda value: a_float(value, 0.0),
    "slo_attainment": _RATIO,
    "requests_per_level": count,
    "num_predict": count,
    "stopped": optional(text(MAX_ERROR)),
    "url": text(MAX_ERROR),
    "ollama_version": text(MAX_TEXT),
}
