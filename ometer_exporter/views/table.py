"""The terminal table of ``ometer-exporter bench``.

``render`` turns export rows (``rows.rows``) into text::

  Model                      Size  Context  Quant   Capabilities            TTFT       TPS     Load
  ───────────────────────  ──────  ───────  ──────  ─────────────────  ─────────  ────────  ───────
  llama3.2:1b              1.3 GB   131072  Q8_0    completion, tools  0.081 s ↑   152.4 →  0.912 s
  llama3.2:latest          2.0 GB   131072  Q4_K_M  completion, tools  0.142 s →   101.3 ↓        —

  Embedding models (TTFT is the request time, TPS the input tokens/s)
  nomic-embed-text:latest  274 MB     2048  F16     embedding          0.011 s ↑  2387.5 →  0.201 s

with ANSI colours when asked (``color=True``; what they mean is ``display``, as on the page),
live states (queued, running) for models not measured yet, and trend arrows against the
previous stored result (the caller passes only the results an arrow may compare with:
``grades.comparable``). As on the landing page, chat rows come first and embedding rows apart
under their heading (``by_kind``), each graded apart.
rich measures display width (a CJK character or an emoji takes two cells) and renders the
colours; cell text is always literal ``Text``, never markup, and untrusted text goes through
``grades.plain`` first.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ometer_exporter.config.settings import DEFAULT_DISPLAY, DisplaySettings
from ometer_exporter.store.records import ModelKey
from ometer_exporter.views.grades import (
    Grade,
    failed,
    failure_text,
    format_seconds,
    format_value,
    grades,
    plain,
    trend,
)
from ometer_exporter.views.rows import Row

if TYPE_CHECKING:  # rich is imported when a table is drawn: the one-shot only, never ``serve``
    from rich.console import Console
    from rich.text import Text

# Cell styles (rich style definitions). Their SGR codes are OMeter's: green, orange from the
# 256-colour palette, red, dim, bold.
STYLES: Final[Mapping[str, str]] = {
    "good": "green",
    "fair": "color(208)",
    "poor": "red",
    "dim": "dim",
    "bold": "bold",
}

EMBEDDING_HEADING: Final = "Embedding models"


def embedding_note(*, ttft: bool, tps: bool) -> str:
    """What the shown columns mean for an embedding model (after ``EMBEDDING_HEADING``)."""
    parts = [text for shown, text in ((ttft, "TTFT is the request time"),
                                      (tps, "TPS the input tokens/s")) if shown]  # fmt: skip
    if parts == ["TPS the input tokens/s"]:
        parts = ["TPS is the input tokens/s"]
    return f" ({', '.join(parts)})" if parts else ""


# -- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """Which columns the table shows."""

    ttft: bool = True
    tps: bool = True
    runs: int = 0  # per-run columns (``--verbose``); 0 = none
    target: bool = False  # more than one target
    inventory: bool = True  # Size, Context, Quant, Capabilities (history has none)
    load: bool = False  # the cold load time (``load_duration``), as the page and /export
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
    if layout.load:
        cols.append(_Column("load_duration_seconds", "Load", numeric=True))
    if layout.benchmarked_at:
        cols.append(_Column("benchmarked_at", "Benchmarked"))
    return cols


@dataclass(frozen=True, slots=True)
class _Cell:
    text: str
    style: str | None = None  # a key of STYLES


def render(
    rows: Sequence[Row],
    layout: Layout,
    *,
    color: bool = False,
    queued: frozenset[ModelKey] = frozenset(),
    running: frozenset[ModelKey] = frozenset(),
    previous: Mapping[ModelKey, Row] | None = None,
    display: DisplaySettings = DEFAULT_DISPLAY,
) -> str:
    """The table as text (no trailing newline); failures are listed under it. Colours follow
    ``display`` (``grades.grades``: the page's and the dashboard's thresholds).

    Chat rows come first, embedding rows after them under ``EMBEDDING_HEADING`` (``by_kind``),
    each group in the order given. Widths are display widths (rich's cell length), so wide
    (CJK) and emoji names line up.
    """
    rows = by_kind(rows)
    columns = _columns(layout)
    graded = {c.key: grades(rows, c.key, display) for c in columns if c.measured}
    body = [
        [_cell(col, row, graded[col.key][index] if col.measured else None, queued, running,
               previous) for col in columns]
        for index, row in enumerate(rows)
    ]  # fmt: skip
    lines = _lines(columns, body)
    chat = sum(1 for r in rows if r.get("kind") != "embedding")
    if chat < len(rows):  # the header and its rule, the chat rows, then the heading
        note = embedding_note(ttft=layout.ttft, tps=layout.tps)
        heading = _styled([(EMBEDDING_HEADING, "bold"), (note, "dim")])
        lines[2 + chat : 2 + chat] = [_styled([]), heading]
    if not rows:
        lines.append(_styled([("(no models)", None)]))
    failures = [r for r in rows if r.get("error") and (r["target"], r["model"]) not in running]
    if failures:
        lines += [_styled([]), _styled([("Errors:", "poor")])]
        lines += [_styled([(f"  {plain(r['model'])} ({plain(r['target'])}): {plain(r['error'])}",
                            None)]) for r in failures]  # fmt: skip
    return _to_string(lines, color=color)


def grid(
    titles: Sequence[tuple[str, bool]],
    body: Sequence[Sequence[tuple[str, str | None]]],
    *,
    color: bool = False,
) -> str:
    """Any other table in the same style (no trailing newline): a bold header, its rule, a line
    per row. ``titles``: each column's title and whether it is numeric (right-aligned);
    ``body``: each cell's text (made safe by the caller) and style (a key of STYLES)."""
    columns = [_Column(title, title, numeric=numeric) for title, numeric in titles]
    cells = [[_Cell(text, style) for text, style in row] for row in body]
    return _to_string(_lines(columns, cells), color=color)


def by_kind(rows: Sequence[Row]) -> list[Row]:
    """Chat rows, then embedding rows, each in the order given (so sorted apart, as on the
    landing page: an embedding's TTFT is a whole request and its TPS counts input tokens)."""
    return [r for r in rows if r.get("kind") != "embedding"] + [
        r for r in rows if r.get("kind") == "embedding"
    ]


def _cell(
    col: _Column,
    row: Row,
    graded: Grade | None,
    queued: frozenset[ModelKey],
    running: frozenset[ModelKey],
    previous: Mapping[ModelKey, Row] | None,
) -> _Cell:
    key = (row["target"], row["model"])
    if not col.measured:
        return _Cell(_text(col.key, row.get(col.key)))
    if key in running:
        return _Cell("running…", "dim")
    if key in queued:
        return _Cell("queued", "dim")
    return _measured(col.key, row, graded, previous)


def _lines(columns: Sequence[_Column], body: Sequence[Sequence[_Cell]]) -> list[Text]:
    """The header, its rule and a line per row: cells padded to the column's display width,
    two spaces apart, numbers right-aligned."""
    from rich.cells import cell_len

    widths = [
        max([cell_len(c.title)] + [cell_len(cells[i].text) for cells in body])
        for i, c in enumerate(columns)
    ]

    def line(cells: Sequence[_Cell]) -> Text:
        parts: list[tuple[str, str | None]] = []
        for i, (col, cell, width) in enumerate(zip(columns, cells, widths, strict=True)):
            pad = " " * (width - cell_len(cell.text))
            parts += [("  " if i else "", None)]
            parts += _painted(pad + cell.text if col.numeric else cell.text + pad, cell.style)
        text = _styled(parts)
        text.rstrip()
        return text

    return [
        line([_Cell(c.title, "bold") for c in columns]),
        _styled([("  ".join("─" * w for w in widths), None)]),
        *(line(cells) for cells in body),
    ]


def _text(column: str, value: object) -> str:
    if value is None or value == "":
        return "—"
    if column == "benchmarked_at":  # RFC 3339 in the exports; easier to read here
        return plain(value).replace("T", " ").split(".")[0].removesuffix("Z") + " UTC"
    if column == "load_duration_seconds" and isinstance(value, int | float):
        return format_seconds(value)
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


def _painted(text: str, style: str | None) -> list[tuple[str, str | None]]:
    """Style only the visible text, so padding stays plain (and copy-paste stays clean)."""
    stripped = text.strip()
    if style is None or not stripped:
        return [(text, None)]
    start = text.index(stripped)
    end = start + len(stripped)
    return [(text[:start], None), (stripped, style), (text[end:], None)]


def _styled(parts: Sequence[tuple[str, str | None]]) -> Text:
    """A line as rich Text: ``parts`` are literal text (never markup), each with a style key."""
    from rich.text import Text

    line = Text(no_wrap=True, end="")
    for text, style in parts:
        line.append(text, STYLES[style] if style else None)
    return line


def _to_string(lines: Sequence[Text], *, color: bool) -> str:
    """The lines as one string: with ANSI colours (rendered by rich) when ``color``."""
    if not color:
        return "\n".join(line.plain for line in lines)
    console = _ansi_console()
    with console.capture() as captured:
        for line in lines:
            console.print(line, end="\n", soft_wrap=True)
    return captured.get().removesuffix("\n")


@functools.cache
def _ansi_console() -> Console:
    """A rich console that renders to text with 256-colour ANSI codes; whether to colour at all
    (a terminal, ``NO_COLOR``) is the caller's choice (``color``), made once for the run."""
    from rich.console import Console

    return Console(
        file=io.StringIO(),
        force_terminal=True,
        color_system="256",
        no_color=False,
        width=1_000_000,
        markup=False,
        emoji=False,
        highlight=False,
        legacy_windows=False,
    )
