"""The landing page ``/``: version, targets and their state, and a live leaderboard.

Everything is rendered here, in Python, from one snapshot: untrusted text (model names, errors,
versions) goes through ``html.escape`` and nowhere else, colours come from ``grades.grades`` (the
terminal table's thresholds) and every sort order from ``rows.sort_rows``. Each row carries its
rank for every sort key and direction (``data-r-tps``, ``data-r-tps-rev``), so the page's small
script never compares values: a click on a header or a change of the target filter only reorders
and hides rows. Every 10 s the script fetches the page again, parses it (``DOMParser``: no script
runs, nothing is re-parsed as markup from strings) and swaps the new targets and rows in,
keeping the sort and filter (also kept in the URL fragment: ``/#sort=ttft&reverse=1&target=gpu``).

A model's latest load sweep comes with its row: the "Users within SLO" cell carries what the
detail view's capacity chart draws (``page_capacity``).

No external assets: inline CSS and JS (``page_assets``), allowed by hash in a strict
Content-Security-Policy, so even a markup mistake could not run injected script.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from ometer_exporter.config.settings import DEFAULT_DISPLAY, DisplaySettings
from ometer_exporter.store.capacity import CapacityRecord
from ometer_exporter.store.records import Snapshot, TargetState
from ometer_exporter.views import grades, page_assets, page_capacity, page_charts, query, rows
from ometer_exporter.views.isolation import RENDER_ERRORS
from ometer_exporter.views.rows import Row

REFRESH_SECONDS: Final = 10
DEFAULT_SORT: Final = "tps"

SORT_LABELS: Final = {
    "name": "Name",
    "size": "Size",
    "ctx": "Context",
    "modified": "Modified",
    "ttft": "TTFT",
    "tps": "Tokens/s",
    "users": "Users within SLO",
}

CONTENT_SECURITY_POLICY: Final = page_assets.CONTENT_SECURITY_POLICY

_e = html.escape  # quote=True: safe in text and in double-quoted attributes


def render(
    snapshot: Snapshot,
    *,
    version: str,
    now: float | None = None,
    display: DisplaySettings = DEFAULT_DISPLAY,
) -> str:
    """The whole page for one snapshot, coloured as ``display`` says."""
    now = time.time() if now is None else now
    items = rows.rows(snapshot, query.Query(), view="page")
    targets = sorted(snapshot.targets.values(), key=lambda t: t.name)
    return f"""{_head(version, display)}
<main>
  <h2>Targets</h2>
  {_targets(targets, items)}
  {_bar(targets, items)}
  {_board(items, _sweeps(snapshot), display)}
  <footer>
    <span id="summary">{_summary(items, targets, now)}</span> ·
    <span id="legend" data-grading="{display.grading}">{legend(display)}</span>
    Arrows: the newest result against the one before it, of the same server and method
    (within 5 %: →). A click on a model shows its history.
  </footer>
</main>
{page_charts.DIALOG}
<script>{page_assets.SCRIPT}</script>
<script>{page_charts.SCRIPT}</script>
</body>
</html>
"""


def legend(display: DisplaySettings) -> str:
    """What the colours mean, as configured (``display.grading``)."""
    if display.grading == "relative":
        return (
            'Colours (<code>display.grading: relative</code>): <span class="good">best third'
            '</span>, <span class="fair">middle third</span>, <span class="poor">slowest third '
            "or failed</span> (33rd/66th percentile of the table; chat and embedding models "
            "apart)."
        )
    (t_good, t_poor), (r_good, r_poor) = display.ttft, display.tokens_per_second
    ttft_good, ttft_poor = grades.format_seconds(t_good), grades.format_seconds(t_poor)
    return (
        "Colours (<code>display.grading: absolute</code>, <code>display.thresholds</code>): "
        f'<span class="good">TTFT under {ttft_good}, tokens/s {r_good:g} or more</span>, '
        f'<span class="fair">in between</span>, <span class="poor">TTFT {ttft_poor} or more, '
        f"tokens/s under {r_poor:g}, or failed</span>; embedding models by thirds among "
        "themselves."
    )


def _head(version: str, display: DisplaySettings = DEFAULT_DISPLAY) -> str:
    """From the doctype to the page's top bar: title, icon, stylesheet, version and links."""
    limits = (
        f' data-ttft-limits="{display.ttft[0]:g},{display.ttft[1]:g}"'
        f' data-tps-limits="{display.tokens_per_second[0]:g},{display.tokens_per_second[1]:g}"'
    )
    return f"""<!doctype html>
<html lang="en" data-sort="{DEFAULT_SORT}" data-refresh="{REFRESH_SECONDS}"{limits}>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ometer-exporter · leaderboard</title>
<link rel="icon" href="{page_assets.FAVICON}">
<style>{page_assets.STYLE}</style>
</head>
<body>
<header class="top">
  <div class="brand"><h1>ometer-exporter</h1><span class="version">v{_e(version)}</span></div>
  <nav>
    <a href="metrics">Metrics</a>
    <a href="export?format=json">Export JSON</a>
    <a href="export?format=csv">Export CSV</a>
  </nav>
</header>"""


def _bar(targets: Sequence[TargetState], items: list[Row]) -> str:
    """The leaderboard's controls: target filter, sort, direction and refresh status."""
    target_names = sorted({t.name for t in targets} | {r["target"] for r in items})
    sort_options = "".join(
        f'<option value="{key}" data-desc="{int(descending)}"'
        f"{' selected' if key == DEFAULT_SORT else ''}>{_e(SORT_LABELS[key])}</option>"
        for key, (_, descending) in query.SORT_KEYS.items()
    )
    return f"""<div class="bar">
    <h2>Leaderboard</h2>
    <label>Target <select id="target-filter">{_target_options(target_names)}</select></label>
    <label>Sort <select id="sort">{sort_options}</select></label>
    <button id="reverse" type="button" aria-pressed="false">Best first</button>
    <span id="status" class="status" aria-live="polite">Refreshes every {REFRESH_SECONDS} s</span>
  </div>"""


# (target, model) -> its latest load sweep, and when the next one may start
Sweeps = dict[tuple[str, str], tuple[CapacityRecord, float | None]]


def _sweeps(snapshot: Snapshot) -> Sweeps:
    return {
        key: (e.capacity, e.capacity_due_at)
        for key, e in snapshot.models.items()
        if e.capacity is not None
    }


def _board(items: list[Row], sweeps: Sweeps, display: DisplaySettings = DEFAULT_DISPLAY) -> str:
    """The leaderboard table: chat rows, embedding rows (under their heading), the empty note.
    Columns of class ``fold`` are hidden on a narrow screen: model, TTFT and tokens/s stay."""
    graded = _grades(items, display)
    chat = [r for r in items if r["kind"] != "embedding"]
    embedding = [r for r in items if r["kind"] == "embedding"]
    embedding_heading = (
        "Embedding models <small>TTFT is the request time, tokens/s the input rate</small>"
    )
    return f"""<div class="scroll">
  <table id="board">
    <thead><tr>
      <th data-sort="name" tabindex="0">Model</th><th class="fold">Target</th>
      <th class="num fold" data-sort="size" tabindex="0">Size</th>
      <th class="num fold" data-sort="ctx" tabindex="0">Context</th>
      <th class="fold">Quant</th><th class="fold">Capabilities</th>
      <th class="num" data-sort="ttft" tabindex="0" title="time to first token (median)">TTFT</th>
      <th class="num" data-sort="tps" tabindex="0" title="output tokens per second">Tokens/s</th>
      <th class="num fold" data-sort="users" tabindex="0"
        title="{page_capacity.HEADING_TITLE}">Users<br>within SLO</th>
      <th class="num fold" title="cold load time">Load</th><th class="fold">Status</th>
    </tr></thead>
    {_body("rows-chat", chat, graded, sweeps, None)}
    {_body("rows-embedding", embedding, graded, sweeps, embedding_heading)}
    {_empty(items)}
  </table>
  </div>"""


def _targets(targets: Sequence[TargetState], items: list[Row]) -> str:
    if not targets:
        return '<section id="targets" class="targets"><p class="muted">No targets.</p></section>'
    cards = []
    for t in targets:
        state = "up" if t.up else "down" if t.up is False else "pending"
        label = {"up": "up", "down": "down", "pending": "starting"}[state]
        cycle = "—"
        if t.last_cycle_started is not None:
            cycle = _time(t.last_cycle_started)
            if t.last_cycle_duration is not None:
                cycle += f' <span class="muted">took {_e(_duration(t.last_cycle_duration))}</span>'
        error = f'<p class="err">{_e(t.error)}</p>' if t.error else ""
        next_cycle = _time(t.next_cycle_at) if t.next_cycle_at is not None else "—"
        cards.append(
            f'<article class="target {state}" data-name="{_e(t.name)}">'
            f'<header><span class="dot"></span><h3>{_e(t.name)}</h3>'
            f"{'<span class=tag>cloud</span>' if t.cloud else ''}"
            f'<span class="state">{label}</span></header>'
            f'<dl><dt>URL</dt><dd class="url">{_breakable(t.url or "—")}</dd>'
            f'<dt>Engine</dt><dd class="dd-nowrap">{_e(_engine(t))}</dd>'
            f"<dt>Measures</dt><dd>{_e(SELECT_TEXT.get(t.select, t.select))}</dd>"
            f"<dt>Last cycle</dt><dd>{cycle}</dd>"
            f"<dt>Next cycle</dt><dd>{next_cycle}</dd>"
            f'<dt>Interval</dt><dd class="dd-nowrap">{_e(_duration(t.interval))}</dd></dl>'
            f"{error}</article>"
        )
    hint = _hint(targets, items)
    return f'<section id="targets" class="targets">{"".join(cards)}{hint}</section>'


def _hint(targets: Sequence[TargetState], items: list[Row]) -> str:
    """While nothing has been measured: why, and what would change that."""
    if any(r["success"] for r in items):
        return ""
    by_target = {t.name: [r for r in items if r["target"] == t.name] for t in targets}
    notes = []
    for t in targets:
        mine = by_target[t.name]
        if t.up is False:
            notes.append(f"<b>{_e(t.name)}</b> cannot be reached: check its URL and that "
                         "Ollama runs there.")  # fmt: skip
        elif any(r["status"] == "waiting_for_idle" for r in mine):
            notes.append(
                f"<b>{_e(t.name)}</b>: a loaded model is measured once no one else has used it "
                "for a few seconds (<code>benchmark.idle_before</code>)."
            )
        elif t.select == "loaded" and t.up and not any(r["loaded"] for r in mine):
            notes.append(
                f"<b>{_e(t.name)}</b> measures models while they are in memory "
                "(<code>select: loaded</code>) and none is: load one, e.g. "
                "<code>ollama run llama3.2</code>, and it is measured within seconds; or set "
                "<code>select: all</code> on the target to measure every model (each is loaded "
                "in turn, then unloaded)."
            )
    if not notes:
        notes.append("The first cycle is running, one model at a time.")
    body = "</p><p>".join(notes)
    return f'<div class="hint" id="hint"><h3>No numbers yet</h3><p>{body}</p></div>'


def _breakable(url: str) -> str:
    """A URL, escaped, that may wrap after ``//`` and before the port or a path, never inside
    the host's or the port's figures (unless one alone is wider than the card)."""
    scheme, sep, rest = url.partition("//")
    host, slash, path = rest.partition("/")
    name, colon, port = host.rpartition(":") if ":" in host.rpartition("]")[2] else (host, "", "")
    parts = [scheme + sep, name, colon + port, slash + path] if sep else [url]
    return "<wbr>".join(_e(p) for p in parts if p)


def _engine(t: TargetState) -> str:
    """The server behind the target and its version, with the API when it is not Ollama's."""
    engine = t.engine or ("ollama" if t.api == "ollama" else "")
    text = " ".join(part for part in (engine, t.version) if part) or "—"
    if t.slots is not None:
        text += f", {t.slots} parallel slot{'s' if t.slots != 1 else ''}"
    return text if t.api == "ollama" else f"{text} (OpenAI API)"


SELECT_TEXT: Final = {
    "loaded": "models in memory (select: loaded)",
    "all": "every model (select: all)",
}


def _target_options(names: Sequence[str]) -> str:
    return '<option value="">All targets</option>' + "".join(
        f'<option value="{_e(n)}">{_e(n)}</option>' for n in names
    )


Grades = dict[str, dict[int, grades.Grade | None]]  # column -> id(row) -> grade


def _grades(items: list[Row], display: DisplaySettings = DEFAULT_DISPLAY) -> Grades:
    """TTFT and TPS grades over the whole table (``grades.grades`` keeps kinds apart)."""
    return {
        column: dict(zip(map(id, items), grades.grades(items, column, display), strict=True))
        for column in ("ttft", "tps")
    }


COLUMNS: Final = 11  # of the leaderboard (a heading or a note spans them all)


def _body(
    body_id: str, group: list[Row], graded: Grades, sweeps: Sweeps, heading: str | None
) -> str:
    """A ``<tbody>`` of one kind's rows, in the default order, ranked for every sort."""
    ranks: dict[str, dict[int, int]] = {}
    for key in query.SORT_KEYS:
        for reverse in (False, True):
            ordered = rows.sort_rows(group, key, reverse=reverse)
            ranks[f"{key}{'-rev' if reverse else ''}"] = {id(r): i for i, r in enumerate(ordered)}
    head = ""
    if heading and group:  # a heading over no rows would say nothing
        head = f'<tr class="group-head"><th colspan="{COLUMNS}">{heading}</th></tr>'
    lines = []
    for r in rows.sort_rows(group, DEFAULT_SORT):
        try:
            lines.append(_row(r, {name: order[id(r)] for name, order in ranks.items()},
                              graded["ttft"][id(r)], graded["tps"][id(r)],
                              *sweeps.get((r["target"], r["model"]), (None, None))))  # fmt: skip
        except Exception as exc:  # one model's row never takes the page down
            RENDER_ERRORS.failed("page", str(r.get("target")), str(r.get("model")), exc)
    return f'<tbody id="{body_id}" class="rows">{head}{"".join(lines)}</tbody>'


def _row(
    r: Row,
    ranks: dict[str, int],
    ttft: grades.Grade | None,
    tps: grades.Grade | None,
    sweep: CapacityRecord | None,
    due: float | None,
) -> str:
    attrs = "".join(f' data-r-{name}="{rank}"' for name, rank in ranks.items())
    error = f'<div class="err">{_e(r["error"])}</div>' if r["error"] else ""
    caps = "".join(
        f'<span class="cap">{_e(c)}</span>' for c in (r["capabilities"] or "").split(", ") if c
    )
    load = r["load_duration_seconds"]
    return (
        f'<tr data-target="{_e(r["target"])}" data-model="{_e(r["model"])}"'
        f' data-at="{_e(r["benchmarked_at"] or "")}"{attrs}>'
        f'<td class="model"><span class="name" role="button" tabindex="0" '
        f'title="Show its history">{_e(r["model"])}</span>{error}</td>'
        f'<td class="fold">{_e(r["target"])}</td>'
        f'<td class="num fold">{_e(r["size"] or "—")}</td>'
        f'<td class="num fold">{_e(str(r["context"] or "—"))}</td>'
        f'<td class="fold">{_e(r["quant"] or "—")}</td>'
        f'<td class="caps fold">{caps or "—"}</td>'
        f"{_metric('ttft', r, ttft)}{_metric('tps', r, tps)}{page_capacity.cell(sweep, due)}"
        f'<td class="num fold">{_e(grades.format_seconds(load)) if load is not None else "—"}'
        f'</td><td class="where fold">{_status(r)}</td>'
        "</tr>"
    )


def _metric(column: str, r: Row, grade: grades.Grade | None) -> str:
    value = r[column]
    if value is None:
        text = grades.failure_text(r) if grades.failed(r) else "—"
    else:
        text = grades.format_value(column, value)
    # The script adds the arrow and the sparkline from /api/history (``page_charts``).
    return (
        f'<td class="num metric {grade or ""}" data-col="{column}"><span class="v">{_e(text)}'
        '</span><span class="arrow"></span><span class="spark"></span></td>'
    )


STATUS_TEXT: Final = {
    "pending": "not measured yet",
    "measured": "measured",
    "failed": "failed",
    "due": "due: next cycle",
    "waiting_for_idle": "waiting for idle",
    "contended": "in use: retried when idle",
    "not_loaded": "not loaded",
    "excluded": "excluded",
    "held": "usage limit",
    "target_down": "target down",
}


def _status(r: Row) -> str:
    """Where the model stands, when it was last attempted, its last success when that attempt
    failed, when it is next due, and whether it is in memory."""
    status = str(r["status"])
    parts = [f'<span class="st st-{_e(status)}">{_e(STATUS_TEXT.get(status, status))}</span>']
    if r["benchmarked_at"]:
        parts.append(f" {_stamp(r['benchmarked_at'])}")
    if r["last_success_at"] and r["last_success_at"] != r["benchmarked_at"]:
        parts.append(f'<div class="muted">last success {_stamp(r["last_success_at"])}</div>')
    if r["next_due_at"] and status in ("measured", "failed", "held"):
        parts.append(f'<div class="muted">next {_stamp(r["next_due_at"])}</div>')
    if r["loaded"]:
        parts.append('<span class="tag">in memory</span>')
    return "".join(parts)


def _stamp(text: str) -> str:
    """An RFC 3339 time as a ``<time>`` the script shows as "3 min ago" or "in 5 min"."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return _time(moment.timestamp())


def _time(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return (
        f'<time datetime="{moment.isoformat(timespec="seconds").replace("+00:00", "Z")}" '
        f'data-ts="{ts:.3f}">{moment.strftime("%Y-%m-%d %H:%M:%S UTC")}</time>'
    )


def _empty(items: list[Row]) -> str:
    text = (
        "No results for this target."
        if items
        else "No results yet: the first benchmark cycle is running, one model at a time."
    )
    hidden = " hidden" if items else ""
    return (
        f'<tbody id="no-rows" class="empty"{hidden}>'
        f'<tr><td colspan="{COLUMNS}">{text}</td></tr></tbody>'
    )


def _summary(items: list[Row], targets: Sequence[TargetState], now: float) -> str:
    measured = sum(1 for r in items if r["benchmarked_at"])
    return (
        f"{len(items)} model{'' if len(items) == 1 else 's'} on {len(targets)} "
        f"target{'' if len(targets) == 1 else 's'}, {measured} benchmarked · page rendered "
        f"{datetime.fromtimestamp(now, UTC).strftime('%H:%M:%S UTC')}"
    )


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h".replace(".0 h", " h")
    return f"{seconds / 86400:.1f} d".replace(".0 d", " d")
