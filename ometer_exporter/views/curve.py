"""A model's load sweep in the terminal (``ometer-exporter bench --capacity``).

``render`` turns a model's :class:`CapacityRecord` into text::

  llama3.2:latest (local): load sweep, 16 requests per level, 64 output tokens each
  Users  Requests  Met SLO  TTFT p50  TTFT p95  TPOT p50  e2e p95  Output tok/s  Goodput/s  SLO
  ─────  ────────  ───────  ────────  ────────  ────────  ───────  ────────────  ─────────  ────
      1        16    100 %   3.19 ms   8.77 ms   10.0 ms   639 ms         100.8       1.57  pass
      …
      8        16     25 %    1.01 s    1.02 s   16.0 ms   2.03 s         252.9       0.99  miss
  4 users within SLO (TTFT ≤ 500 ms, TPOT ≤ 25 ms, 95 % of requests)
  from 8 users on, TTFT is queueing: the server decodes 4 requests at a time

Every figure is the record's: the quantiles it keeps (``CapacityLevel.quantile``), its rates and
attainment, its verdict (``max_concurrency``) and its slots hint (``slots_hint``). Met SLO is
rounded down, so a level never reads as reaching a target it missed; a level marked ``*`` saw
the exporter's event loop stall (``CapacityLevel.lagged``).
"""

from __future__ import annotations

import math
from typing import Final

from ometer_exporter.store.capacity import CapacityLevel, CapacityRecord
from ometer_exporter.views.grades import plain
from ometer_exporter.views.table import grid

TITLES: Final = (
    ("Users", True), ("Requests", True), ("Met SLO", True), ("TTFT p50", True),
    ("TTFT p95", True), ("TPOT p50", True), ("e2e p95", True), ("Output tok/s", True),
    ("Goodput/s", True), ("SLO", False),
)  # fmt: skip
LAG_NOTE: Final = "* the exporter's event loop stalled during this level: its times are doubtful"


def _digits(value: float) -> str:
    """Three significant digits, none dropped: 10.02 -> "10.0", 3.021 -> "3.02", 635.2 -> "635"."""
    if value <= 0:
        return "0"
    return f"{value:.{max(0, 2 - math.floor(math.log10(value)))}f}"


def format_time(seconds: float | None) -> str:
    """In ms below a second, else in s: 0.0214 -> "21.4 ms", 0.5 -> "500 ms", 1.5 -> "1.50 s"."""
    if seconds is None:
        return "—"
    return f"{_digits(seconds * 1000)} ms" if seconds < 1 else f"{_digits(seconds)} s"


def percent(ratio: float) -> str:
    """A share rounded down: 0.9375 -> "93 %" (never shown as meeting a target it missed)."""
    return f"{math.floor(ratio * 100 + 1e-9)} %"


def _users(n: int) -> str:
    return f"{n} user{'' if n == 1 else 's'}"


def _limit(seconds: float) -> str:
    """A configured limit as it was set: 0.5 -> "500 ms", 0.025 -> "25 ms", 1.0 -> "1 s"."""
    return f"{seconds * 1000:g} ms" if seconds < 1 else f"{seconds:g} s"


def slo_text(record: CapacityRecord) -> str:
    """The SLO the sweep was judged by, in words."""
    return (
        f"TTFT ≤ {_limit(record.slo_ttft)}, TPOT ≤ {_limit(record.slo_tpot)}, "
        f"{record.slo_attainment * 100:g} % of requests"
    )


def verdict(record: CapacityRecord) -> str:
    """How many concurrent users the model serves within the SLO, and how sure that is."""
    best = record.max_concurrency
    tried = [level.concurrency for level in record.levels]
    if best is None:
        lowest = min(tried, default=1)
        return f"not even {_users(lowest)} within SLO ({slo_text(record)})"
    line = f"{_users(best)} within SLO ({slo_text(record)})"
    if best == max(tried) and record.stopped is None:
        line += "; the largest level tried, so more may fit"
    return line


def _row(level: CapacityLevel) -> list[tuple[str, str | None]]:
    rate = level.output_tokens_per_second
    outcome = ("pass", "good") if level.passed else ("miss", "poor")
    return [
        (str(level.concurrency), None),
        (str(level.requests), None),
        (percent(level.attainment), None),
        (format_time(level.quantile(level.ttft, 0.5)), None),
        (format_time(level.quantile(level.ttft, 0.95)), None),
        (format_time(level.quantile(level.tpot, 0.5)), None),
        (format_time(level.quantile(level.e2e, 0.95)), None),
        ("—" if rate is None else f"{rate:.1f}", None),
        (f"{level.goodput:.2f}", None),
        (outcome[0] + ("*" if level.lagged else ""), outcome[1]),
    ]


def render(target: str, model: str, record: CapacityRecord, *, color: bool = False) -> str:
    """The curve of one model's sweep, its verdict and what it says of the server (no trailing
    newline)."""
    levels = sorted(record.levels, key=lambda level: level.concurrency)
    lines = [
        f"{plain(model)} ({plain(target)}): load sweep, {record.requests_per_level} requests "
        f"per level, {record.num_predict} output tokens each",
        grid(TITLES, [_row(level) for level in levels], color=color),
        verdict(record),
    ]
    if record.stopped is not None and levels:
        lines.append(f"stopped at {_users(levels[-1].concurrency)}: the server refused a "
                     f"request ({plain(record.stopped)})")  # fmt: skip
    if record.slots_hint is not None:
        lines.append(record.slots_hint)
    if any(level.lagged for level in levels):
        lines.append(LAG_NOTE)
    return "\n".join(lines)
