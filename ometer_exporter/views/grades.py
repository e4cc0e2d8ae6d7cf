"""Colour grades and cell text, one definition for the landing page, the terminal table and
(through ``config.settings.DisplaySettings``' defaults) the generated Grafana dashboard.

``display.grading: absolute`` (the default): a chat model's value is *good* (green), *fair*
(orange) or *poor* (red) by the configured thresholds (``display.thresholds``), with Grafana's
step rule: a value at a threshold takes the next step's colour. ``relative`` follows OMeter:
within a table, a value in the best third (by the 33rd and 66th percentiles of that column) is
good, the middle third fair, the rest poor. Either way a failed model is poor, and the value
graded is the one shown (rounded as ``format_value`` rounds it): two cells that read the same
have the same colour. Lower is better for TTFT, higher for tokens/s (the direction comes from
``query.SORT_KEYS``, so sorting and colouring never disagree). Embedding rows are always graded
by thirds among themselves: an embedding's "TTFT" is a whole request and its "TPS" counts input
tokens, so neither a chat model's thresholds nor a comparison with chat models says anything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Final, Literal

from ometer_exporter.config.settings import DEFAULT_DISPLAY, DisplaySettings
from ometer_exporter.store.records import Record
from ometer_exporter.views.query import SORT_KEYS
from ometer_exporter.views.rows import Row

Grade = Literal["good", "fair", "poor"]

TREND_TOLERANCE: Final = 0.05  # a change within 5 % is no change (→)

# C0/C1 controls and DEL: a model name or error text from a server must not move the cursor;
# bidirectional overrides, embeddings, isolates and marks (U+202E turns the rest of a line
# around), line and paragraph separators, and lone surrogates (no terminal can print them).
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)


# -- grades (shared with the landing page) ------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (NumPy's default); ``values`` sorted."""
    if not values:
        raise ValueError("percentile of no values")
    position = (len(values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def thresholds(values: Iterable[float]) -> tuple[float, float] | None:
    """The 33rd and 66th percentiles, or None when there is nothing to grade."""
    ordered = sorted(v for v in values if math.isfinite(v))
    if not ordered:
        return None
    return percentile(ordered, 0.33), percentile(ordered, 0.66)


def grade(value: float, cuts: tuple[float, float], *, higher_is_better: bool) -> Grade:
    p33, p66 = cuts
    if higher_is_better:
        return "good" if value >= p66 else "fair" if value >= p33 else "poor"
    return "good" if value <= p33 else "fair" if value <= p66 else "poor"


def higher_is_better(column: str) -> bool:
    """``ttft``/``ttft_run_N``: lower is better; ``tps``/``tps_run_N``: higher is better."""
    base = "ttft" if column.startswith("ttft") else "tps"
    return SORT_KEYS[base][1]


def failed(row: Row) -> bool:
    return row.get("error") is not None or row.get("success") is False


def failure_text(row: Row) -> str:
    """What a failed model shows instead of a value: ``error``, or ``no run`` when every run
    was left out without one (discarded: the model reloaded, the machine stalled, …)."""
    return "error" if row.get("error") is not None else "no run"


def grades(
    rows: Sequence[Row], column: str, display: DisplaySettings = DEFAULT_DISPLAY
) -> list[Grade | None]:
    """A grade per row for ``column`` (None: no value and no failure, e.g. not measured)."""
    better = higher_is_better(column)
    cuts: dict[str, tuple[float, float] | None] = {}
    for kind in {r.get("kind") or "chat" for r in rows}:
        cuts[kind] = thresholds(
            displayed(column, r[column])
            for r in rows
            if (r.get("kind") or "chat") == kind and r.get(column) is not None and not failed(r)
        )
    out: list[Grade | None] = []
    for r in rows:
        value = r.get(column)
        kind = r.get("kind") or "chat"
        if failed(r):
            out.append("poor")
        elif value is None:
            out.append(None)
        elif display.grading == "absolute" and kind == "chat":
            out.append(absolute(column, value, display))
        elif (kind_cuts := cuts[kind]) is None:
            out.append(None)
        else:
            out.append(grade(displayed(column, value), kind_cuts, higher_is_better=better))
    return out


def limits(column: str, display: DisplaySettings = DEFAULT_DISPLAY) -> tuple[float, float]:
    """(good, poor) thresholds of a column: TTFT good below the first, poor from the second;
    tokens/s good from the first, poor below the second."""
    return display.ttft if column.startswith("ttft") else display.tokens_per_second


def absolute(column: str, value: float, display: DisplaySettings = DEFAULT_DISPLAY) -> Grade:
    """The grade of a chat model's shown value by the configured thresholds, the way Grafana
    steps: a value at a threshold takes the colour of the step it opens."""
    good, poor = limits(column, display)
    shown = displayed(column, value)
    if higher_is_better(column):
        return "good" if shown >= good else "fair" if shown >= poor else "poor"
    return "good" if shown < good else "fair" if shown < poor else "poor"


def displayed(column: str, value: float) -> float:
    """The value as the cell shows it (``format_value``'s rounding), so 60.945 and 60.927,
    both shown as 60.9, get one colour."""
    if not math.isfinite(value):
        return value
    if column.startswith("ttft"):
        return float(f"{value:.3f}") if value < 10 else float(f"{value:.1f}")
    return float(f"{value:.1f}")


def comparable(new: Record, old: Record, *, new_target: str, old_target: str) -> bool:
    """Whether a trend arrow may compare ``new`` with ``old``: the same server (target URL)
    and the same method (prompt set, ``num_predict``, think). A faster server or a shorter
    answer is no improvement of the model.

    A URL of ``""`` is unknown (a result stored before the URL was kept): it compares only
    with another unknown one of the same target name, never with a known URL.
    """
    if (new.prompt_set, new.num_predict, new.think) != (old.prompt_set, old.num_predict, old.think):
        return False
    if new.url or old.url:
        return new.url == old.url
    return new_target == old_target


def trend(new: float | None, old: float | None, column: str) -> str:
    """``↑`` better, ``↓`` worse, ``→`` within 5 %, ``""`` when there is nothing to compare."""
    if new is None or old is None or old <= 0 or not math.isfinite(new):
        return ""
    change = (new - old) / old
    if abs(change) <= TREND_TOLERANCE:
        return "→"
    return "↑" if (change > 0) == higher_is_better(column) else "↓"


# -- cell text (shared with the landing page) ----------------------------------------------------


def format_seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def format_rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def format_value(column: str, value: float | None) -> str:
    return format_seconds(value) if column.startswith("ttft") else format_rate(value)


def plain(text: object) -> str:
    """Untrusted text made safe for a terminal: control and bidi characters become ``?``."""
    return _CONTROL.sub("?", "" if text is None else str(text))
