"""The terminal table of ``ometer-exporter bench``.

``render`` turns export rows (``rows.rows``) into text::
``render`` turns export rows (``export.rows``) into text::

    Model            Size    Context  Quant   Capabilities           TTFT       TPS
    ───────────────  ──────  ───────  ──────  ─────────────────  ─────────  ────────
    llama3.2:1b      1.3 GB   131072  Q8_0    completion, tools  0.081 s ↑  152.4 →
    llama3.2:latest  2.0 GB   131072  Q4_K_M  completion, tools  0.142 s →  101.3 ↓

with ANSI colours when asked (``color=True``), live states (queued, running) for models not
measured yet, and trend arrows against the previous stored result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from ometer_exporter.store.records import ModelKey
from ometer_exporter.views.grades import (
    Grade,
    failed,
    failure_text,
    format_value,
    grades,
    plain,
    trend,
)
from ometer_exporter.views.rows import Row

ANSI: Final[Mapping[str, str]] = {
    "good": "\x1b[32m",  # green
    "fair": "\x1b[38;5;208m",  # orange (256-colour palette)
    "poor": "\x1b[31m",  # red
    "dim": "\x1b[2m",
    "bold": "\x1b[1m",
}
RESET: Final = "\x1b[0m"


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
    queued: frozenset[ModelKey] = frozenset(),
    running: frozenset[ModelKey] = frozenset(),
    previous: Mapping[ModelKey, Row] | None = None,
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
    column: str, row: Row, graded: Grade | None, previous: Mapping[ModelKey, Row] | None
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
