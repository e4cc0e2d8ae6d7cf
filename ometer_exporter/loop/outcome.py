"""What a pass of the loop did, for its log line: measured, failed, contended, skipped and why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from ometer_exporter.config.checks import format_duration
from ometer_exporter.measure.capacity import Level, Sweep
from ometer_exporter.measure.results import ModelResult

NAMES_SHOWN: Final = 8  # a line names at most this many models per group, then "+N more"

_REASONS: Final = {
    "measured": "not due",
    "failed": "not due",
    "waiting_for_idle": "waiting for idle",
    "not_loaded": "not loaded",
    "excluded": "excluded",
    "held": "usage limit",
}


@dataclass
class Outcome:
    """Filled model by model during a pass; ``summary`` is its INFO line."""

    done: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    skips: dict[str, list[str]] = field(default_factory=dict)  # reason -> models

    def measured(self, model: str) -> None:
        self.done.append(model)

    def failed(self, model: str, error: str) -> None:
        self.errors.append((model, error))

    def contended(self, model: str) -> None:
        self.busy.append(model)

    def skipped(self, model: str, status: str) -> None:
        self.skips.setdefault(_REASONS.get(status, status), []).append(model)

    @property
    def attempted(self) -> bool:
        return bool(self.done or self.errors or self.busy)

    def summary(self, duration: float | None = None, delay: float | None = None) -> str:
        parts = [f"measured {len(self.done)}{_names(self.done)}"]
        if self.errors:
            shown = [f"{m}: {e}" for m, e in self.errors]
            parts.append(f"failed {len(self.errors)}{_names(shown)}")
        if self.busy:
            parts.append(f"in use by others, tried again when idle {len(self.busy)}"
                         f"{_names(self.busy)}")  # fmt: skip
        skipped = sum(len(v) for v in self.skips.values())
        if skipped:
            groups = "; ".join(f"{why}: {_list(models)}" for why, models in self.skips.items())
            parts.append(f"skipped {skipped} ({groups})")
        line = ", ".join(parts)
        if duration is not None:
            line = f"cycle took {duration:.1f}s: {line}"
        if delay is not None:
            line += f"; next cycle in {format_duration(max(1, round(delay)))}"
        return line


def _names(models: Sequence[str]) -> str:
    return f" ({_list(models)})" if models else ""


def _list(models: Sequence[str]) -> str:
    shown = ", ".join(models[:NAMES_SHOWN])
    more = len(models) - NAMES_SHOWN
    return f"{shown}, +{more} more" if more > 0 else shown


def describe_run(result: ModelResult) -> str:
    """One model's attempt for the DEBUG log: its figures and what was left out."""
    figures = []
    if result.ttft is not None:
        figures.append(f"TTFT {result.ttft:.3f}s")
    if result.tokens_per_second is not None:
        figures.append(f"{result.tokens_per_second:.1f} tok/s")
    if result.kind == "embedding" and result.request_duration is not None:
        figures.append(f"request {result.request_duration:.3f}s")
    if result.load_duration is not None:
        figures.append(f"load {result.load_duration:.2f}s")
    good = len(result.good_runs)
    figures.append(f"{good} of {len(result.runs)} runs good")
    if result.discarded:
        left_out = ", ".join(f"{reason} {n}" for reason, n in sorted(result.discarded.items()))
        figures.append(f"discarded: {left_out}")
    first = result.first_error
    if first is not None and first.error:
        figures.append(f"error: {first.error}")
    return f"{result.model}: " + ", ".join(figures)


_ABORTED: Final = {
    "contended": "someone else's requests came in; tried again once the model is idle",
    "load_failed": "the model could not be loaded",
}


def describe_level(level: Level) -> str:
    """One level of a load sweep in a phrase: "4: pass 100%, p95 TTFT 182ms, 96.3 tok/s"."""
    p95 = level.quantiles(lambda r: r.ttft).get(0.95)
    rate = level.output_tokens_per_second
    return (
        f"{level.concurrency}: {'pass' if level.passed else 'miss'} "
        f"{level.attainment * 100:.0f}%"
        + (f", p95 TTFT {p95 * 1000:.0f}ms" if p95 is not None else "")
        + (f", {rate:.1f} tok/s" if rate is not None else "")
        + (" (event loop lag)" if level.lagged else "")
    )


def describe_sweep(model: str, sweep: Sweep) -> str:
    """A load sweep's INFO line: the verdict, each level's figures, how it ended."""
    took = format_duration(max(1, round(sweep.finished_at - sweep.started_at)))
    slo = sweep.slo
    if sweep.aborted in _ABORTED:
        error = f": {sweep.error}" if sweep.error else ""
        return f"load sweep of {model} aborted after {took} ({_ABORTED[sweep.aborted]}{error})"
    best = sweep.max_concurrency
    verdict = f"{best or 0} concurrent users within SLO"
    levels = [describe_level(level) for level in sweep.levels]
    line = (
        f"load sweep of {model} took {took}: {verdict} (TTFT ≤ {format_duration(slo.ttft)}, "
        f"TPOT ≤ {format_duration(slo.tpot)}, {slo.attainment * 100:g}% of requests); "
        f"levels {'; '.join(levels) or 'none'}"
    )
    if sweep.parallel_slots is not None:
        line += f"; the server runs {sweep.parallel_slots} requests at a time"
    if sweep.aborted == "refused":
        line += f"; stopped: the server refused a request ({sweep.error})"
    return line
