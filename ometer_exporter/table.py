"""The terminal table of ``ometer-exporter bench``, and the colour grades the page shares.

Grades follow OMeter: within a table, a value in the best third (by the 33rd and 66th
percentiles of that column) is *good* (green), the middle third *fair* (orange), the rest
*poor* (red); a failed model is poor. Lower is better for TTFT, higher for tokens/s (the
direction comes from ``export.SORT_KEYS``, so sorting and colouring never disagree). Chat and
embedding rows are graded apart: an embedding's "TTFT" is a whole request and its "TPS" counts
input tokens, so comparing them with chat models would say nothing.

``render`` turns export rows (``export.rows``) into text::

    Model            Size    Context  Quant   Capabilities           TTFT       TPS
    ───────────────  ──────  ───────  ──────  ─────────────────  ─────────  ────────
    llama3.2:1b      1.3 GB   131072  Q8_0    completion, tools  0.081 s ↑  152.4 →
    llama3.2:latest  2.0 GB   131072  Q4_K_M  completion, tools  0.142 s →  101.3 ↓

with ANSI colours when asked (``color=True``), live states (queued, running) for models not
measured yet, and trend arrows against the previous stored result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from ometer_exporter.export import SORT_KEYS, Row

Grade = Literal["good", "fair", "poor"]
Key = tuple[str, str]  # (target, model)

TREND_TOLERANCE: Final = 0.05  # a change within 5 % is no change (→)

ANSI: Final[Mapping[str, str]] = {
    "good": "\x1b[32m",  # green
    "fair": "\x1b[38;5;208m",  # orange (256-colour palette)
    "poor": "\x1b[31m",  # red
    "dim": "\x1b[2m",
    "bold": "\x1b[1m",
}
RESET: Final = "\x1b[0m"

# C0/C1 controls and DEL: a model name or error text from a server must not move the cursor.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


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


def grades(rows: Sequence[Row], column: str) -> list[Grade | None]:
    """A grade per row for ``column`` (None: no value and no failure, e.g. not measured)."""
    better = higher_is_better(column)
    cuts: dict[str, tuple[float, float] | None] = {}
    for kind in {r.get("kind") or "chat" for r in rows}:
        cuts[kind] = thresholds(
            r[column]
            for r in rows
            if (r.get("kind") or "chat") == kind and r.get(column) is not None and not failed(r)
        )
    out: list[Grade | None] = []
    for r in rows:
        value = r.get(column)
        kind_cuts = cuts[r.get("kind") or "chat"]
        if failed(r):
            out.append("poor")
        elif value is None or kind_cuts is None:
            out.append(None)
        else:
            out.append(grade(value, kind_cuts, higher_is_better=better))
    return out


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
    """Untrusted text made safe for a terminal: control characters become ``?``."""
    return _CONTROL.sub("?", "" if text is None else str(text))


# -- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """Which columns the table shows."""

    ttft: bool = True
    tps: bool = True
    runs: int = 0  # per-run columns (``--verbose``); 0 = none
    target: bool = False  # more than one target
    inventory: bool = True  # Size, Context, Quant, Capabilities (history has none)
    benchmarked_at: bool = False  # history: when each result was measured


@dataclass(frozen=True, slots=True)
class _Column:
    key: str
    title: str
    numeric: bool = False
    measured: bool = False  # a TTFT/TPS column: graded, with live states


def _columns(layout: Layout) -> list[_Column]:
    cols = [_Column("model", "Model")]
    if layout.target:
        cols.append(_Column("target", "Target"))
    if layout.inventory:
        cols += [
            _Column("size", "Size", numeric=True),
            _Column("context", "Context", numeric=True),
            _Column("quant", "Quant"),
            _Column("capabilities", "Capabilities"),
        ]
    for base, title in (("ttft", "TTFT"), ("tps", "TPS")):
        if getattr(layout, base):
            cols += [
                _Column(f"{base}_run_{i}", f"{title} #{i}", numeric=True, measured=True)
                for i in range(1, layout.runs + 1)
            ]
            cols.append(_Column(base, title, numeric=True, measured=True))
    if layout.benchmarked_at:
        cols.append(_Column("benchmarked_at", "Benchmarked"))
    return cols


@dataclass(frozen=True, slots=True)
class _Cell:
    text: str
    style: str | None = None  # a key of ANSI


def render(
    rows: Sequence[Row],
    layout: Layout,
    *,
    color: bool = False,
    queued: frozenset[Key] = frozenset(),
    running: frozenset[Key] = frozenset(),
    previous: Mapping[Key, Row] | None = None,
) -> str:
    """The table as text (no trailing newline); failures are listed under it."""
    columns = _columns(layout)
    graded = {c.key: grades(rows, c.key) for c in columns if c.measured}
    body: list[list[_Cell]] = []
    for index, row in enumerate(rows):
        key = (row["target"], row["model"])
        cells = []
        for col in columns:
            if not col.measured:
                cells.append(_Cell(_text(col.key, row.get(col.key))))
            elif key in running:
                cells.append(_Cell("running…", "dim"))
            elif key in queued:
                cells.append(_Cell("queued", "dim"))
            else:
                cells.append(_measured(col.key, row, graded[col.key][index], previous))
        body.append(cells)

    widths = [
        max([len(c.title)] + [len(cells[i].text) for cells in body]) for i, c in enumerate(columns)
    ]

    def line(cells: Sequence[_Cell]) -> str:
        parts = []
        for col, cell, width in zip(columns, cells, widths, strict=True):
            padded = cell.text.rjust(width) if col.numeric else cell.text.ljust(width)
            parts.append(_paint(padded, cell.style, color))
        return "  ".join(parts).rstrip()

    lines = [
        line([_Cell(c.title, "bold") for c in columns]),
        "  ".join("─" * w for w in widths),
        *(line(cells) for cells in body),
    ]
    if not rows:
        lines.append("(no models)")
    failures = [r for r in rows if r.get("error") and (r["target"], r["model"]) not in running]
    if failures:
        lines += ["", _paint("Errors:", "poor", color)]
        lines += [f"  {plain(r['model'])} ({plain(r['target'])}): {plain(r['error'])}"
                  for r in failures]  # fmt: skip
    return "\n".join(lines)


def _text(column: str, value: object) -> str:
    if value is None or value == "":
        return "—"
    if column == "benchmarked_at":  # RFC 3339 in the exports; easier to read here
        return plain(value).replace("T", " ").split(".")[0].removesuffix("Z") + " UTC"
    return plain(value)


def _measured(
    column: str, row: Row, graded: Grade | None, previous: Mapping[Key, Row] | None
) -> _Cell:
    value = row.get(column)
    if value is None:
        return _Cell(failure_text(row), "poor") if failed(row) else _Cell("—")
    text = format_value(column, value)
    if previous is not None and "_run_" not in column:
        old = previous.get((row["target"], row["model"]))
        arrow = trend(value, old.get(column) if old else None, column)
        if arrow:
            text = f"{text} {arrow}"
    return _Cell(text, graded)


def _paint(text: str, style: str | None, color: bool) -> str:
    if not color or style is None or not text.strip():
        return text
    # Colour only the visible text so padding stays plain (and copy-paste stays clean).
    stripped = text.strip()
    start = text.index(stripped)
    end = start + len(stripped)
    return f"{text[:start]}{ANSI[style]}{stripped}{RESET}{text[end:]}"
