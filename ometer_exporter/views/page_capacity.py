"""The landing page's view of a model's latest load sweep (``benchmark.capacity``): the
leaderboard's "Users within SLO" cell, and what the detail view draws and says about the sweep.

The cell carries the sweep as JSON in its ``data-capacity`` attribute (escaped as every
attribute is): per level the concurrency, the aggregate output tokens/s, the p95 TTFT, whether
it met the SLO and whether it lagged; the TTFT SLO; and the lines of text shown under the chart.
All of it is rendered here, from the same snapshot as the row, so the column, the chart and its
text cannot disagree; ``page_charts`` draws the chart from it with DOM calls (``JSON.parse``
and ``textContent``: nothing in it is ever markup).
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any, Final

from ometer_exporter.store.capacity import CapacityRecord
from ometer_exporter.views.isolation import number
from ometer_exporter.views.rows import users_within_slo

_e = html.escape

OPT_IN: Final = "no load sweep yet: sweeps are opt-in (benchmark.capacity.enabled)"
HEADING_TITLE: Final = (
    "the most concurrent users whose requests met the SLO in the latest load sweep "
    "(opt-in: benchmark.capacity.enabled)"
)


def cell(record: CapacityRecord | None, next_at: float | None = None) -> str:
    """The leaderboard's "Users within SLO" cell: ``—`` before any sweep, red at 0;
    ``next_at``: when the next sweep may start (Unix seconds), said under the chart."""
    users = users_within_slo(record)
    if record is None or users is None:
        return f'<td class="num fold users" data-col="users" title="{_e(OPT_IN)}">—</td>'
    poor = " poor" if users == 0 else ""
    return (
        f'<td class="num fold users{poor}" data-col="users" title="{_e(lines(record)[0])}"'
        f' data-capacity="{_e(payload(record, next_at))}"><span class="v">{users}</span></td>'
    )


def payload(record: CapacityRecord, next_at: float | None = None) -> str:
    """What the detail view's capacity chart draws, as JSON: figures to 4 significant digits
    (a chart needs no more; every row of the page carries them), one that is not finite null,
    and a level below one user (no sweep runs one) left out."""
    levels: list[dict[str, Any]] = [
        {
            "concurrency": level.concurrency,
            "tokens_per_second": _figure(level.output_tokens_per_second),
            "ttft_p95": _figure(level.quantile(level.ttft, 0.95)),
            "passed": level.passed,
            "lagged": level.lagged,
        }
        for level in record.levels
        if level.concurrency >= 1
    ]
    data = {
        "max": users_within_slo(record),
        "slo_ttft": number(record.slo_ttft),
        "levels": levels,
        "lines": lines(record, next_at),
    }
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


def lines(record: CapacityRecord, next_at: float | None = None) -> list[str]:
    """The text under the chart: the users within the SLO, when (and when the next sweep may
    start), then what the curve says about the server's parallel slots, the levels that
    lagged, and a refusal part-way."""
    users = users_within_slo(record) or 0
    head = f"{users} user{'' if users == 1 else 's'} within SLO ({slo(record)})"
    if users == 0:
        head += ": not even one"
    then = f" · next sweep {_when(next_at)}" if next_at is not None else ""
    out = [f"{head} · swept {_when(record.finished_at)}{then}"]
    if (hint := record.slots_hint) is not None:
        out.append(hint)
    lagged = [level.concurrency for level in record.levels if level.lagged]
    if lagged:
        out.append(
            f"Lagged at {', '.join(map(str, lagged))} user{'' if lagged == [1] else 's'}: the "
            "exporter's event loop stalled during the level, so its times are doubtful."
        )
    if record.stopped is not None:
        out.append(f"Stopped part-way: the server refused a request ({record.stopped}).")
    return out


def slo(record: CapacityRecord) -> str:
    """The SLO the sweep used, as configured: ``TTFT ≤ 500 ms, TPOT ≤ 25 ms, 95 % of
    requests``."""
    return (
        f"TTFT ≤ {_seconds(record.slo_ttft)}, TPOT ≤ {_seconds(record.slo_tpot)}, "
        f"{record.slo_attainment * 100:g} % of requests"
    )


def _figure(value: float | None) -> float | None:
    finite = number(value)
    return None if finite is None else float(f"{finite:.4g}")


def _seconds(value: float) -> str:
    return f"{value * 1000:g} ms" if value < 1 else f"{value:g} s"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
