"""The landing page ``/``: version, targets and their state, and a live leaderboard.

Everything is rendered here, in Python, from one snapshot: untrusted text (model names, errors,
versions) goes through ``html.escape`` and nowhere else, colours come from ``grades.grades`` (the
terminal table's thresholds) and every sort order from ``rows.sort_rows``. Each row carries its
rank for every sort key and direction (``data-r-tps``, ``data-r-tps-rev``), so the page's small
script never compares values: a click on a header or a change of the target filter only reorders
and hides rows. Every 10 s the script fetches the page again, parses it (``DOMParser``: no script
runs, nothing is re-parsed as markup from strings) and swaps the new targets and rows in,
keeping the sort and filter (also kept in the URL fragment: ``/#sort=ttft&reverse=1&target=gpu``).

No external assets: inline CSS and JS, allowed by hash in a strict Content-Security-Policy, so
even a markup mistake could not run injected script.
"""

from __future__ import annotations

import base64
import hashlib
import html
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from ometer_exporter.store.records import Snapshot, TargetState
from ometer_exporter.views import grades, query, rows
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
}

_STYLE: Final = """
:root {
  color-scheme: light dark;
  --bg: #f5f6f8; --fg: #1b2130; --muted: #687285; --card: #ffffff; --line: #e3e6ec;
  --head: #f0f2f6; --accent: #3563e9; --chip: #eef1f6; --hover: #f7f9fc;
  --good: #11845b; --fair: #b86200; --poor: #cc2f36;
  --good-bg: #e5f5ed; --fair-bg: #fdf0e1; --poor-bg: #fde8e9;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0e1116; --fg: #e4e7ee; --muted: #959fb2; --card: #161a22; --line: #262c37;
    --head: #1b2029; --accent: #7ea2ff; --chip: #232936; --hover: #1c212b;
    --good: #3fd190; --fair: #f5a53a; --poor: #ff7070;
    --good-bg: #133526; --fair-bg: #3a2a12; --poor-bg: #3d1a1c;
  }
}
* { box-sizing: border-box; }
body {
  margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif;
}
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.top {
  display: flex; flex-wrap: wrap; gap: 12px; align-items: center; justify-content: space-between;
  padding: 14px 28px; background: var(--card); border-bottom: 1px solid var(--line);
}
.brand { display: flex; align-items: baseline; gap: 10px; }
.brand h1 { font-size: 18px; margin: 0; letter-spacing: -0.01em; }
.version, .tag {
  font-size: 12px; color: var(--muted); background: var(--chip); border-radius: 999px;
  padding: 1px 8px;
}
nav { display: flex; gap: 6px; }
nav a {
  padding: 5px 12px; border: 1px solid var(--line); border-radius: 8px; color: var(--fg);
  background: var(--card);
}
nav a:hover { border-color: var(--accent); color: var(--accent); text-decoration: none; }
main { max-width: 1440px; margin: 0 auto; padding: 20px 28px 40px; }
h2 { font-size: 15px; margin: 22px 0 10px; text-transform: uppercase; letter-spacing: 0.06em;
     color: var(--muted); }
.targets { display: grid; gap: 12px; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); }
.target {
  background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 12px 16px;
}
.target header { display: flex; align-items: center; gap: 8px; }
.target h3 { margin: 0; font-size: 15px; }
.dot { width: 9px; height: 9px; border-radius: 50%; background: var(--muted); flex: none; }
.target.up .dot { background: var(--good); box-shadow: 0 0 0 3px var(--good-bg); }
.target.down .dot { background: var(--poor); box-shadow: 0 0 0 3px var(--poor-bg); }
.state { margin-left: auto; font-size: 12px; font-weight: 600; color: var(--muted); }
.target.up .state { color: var(--good); }
.target.down .state { color: var(--poor); }
.target dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 12px; margin: 10px 0 0; }
.target dt { color: var(--muted); }
.target dd { margin: 0; }
.bar { display: flex; flex-wrap: wrap; gap: 10px 16px; align-items: center; margin: 22px 0 10px; }
.bar h2 { margin: 0 auto 0 0; }
.bar label { color: var(--muted); display: flex; gap: 6px; align-items: center; }
select, button {
  font: inherit; color: var(--fg); background: var(--card); border: 1px solid var(--line);
  border-radius: 8px; padding: 4px 8px;
}
button { cursor: pointer; }
button:hover, select:hover { border-color: var(--accent); }
.status { font-size: 12px; color: var(--muted); }
.status.stale { color: var(--poor); }
.scroll {
  overflow-x: auto; background: var(--card); border: 1px solid var(--line); border-radius: 12px;
}
table { width: 100%; border-collapse: collapse; }
th, td { padding: 8px 10px; text-align: left; white-space: nowrap; vertical-align: middle; }
td.caps { white-space: normal; min-width: 150px; }
thead th {
  position: sticky; top: 0; background: var(--head); color: var(--muted); font-size: 12px;
  font-weight: 600; text-transform: uppercase; letter-spacing: 0.04em;
  border-bottom: 1px solid var(--line);
}
th[data-sort] { cursor: pointer; user-select: none; }
th[data-sort]:hover, th[data-sort]:focus-visible { color: var(--fg); outline: none; }
th[aria-sort]::after { content: " \\2193"; color: var(--accent); }
th[aria-sort="ascending"]::after { content: " \\2191"; }
tbody tr[data-target]:hover { background: var(--hover); }
tbody td { border-top: 1px solid var(--line); }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.model .name { font-weight: 600; }
.err { color: var(--poor); font-size: 12px; white-space: normal; max-width: 52ch; }
.target .err { margin: 8px 0 0; overflow-wrap: anywhere; }
.cap {
  display: inline-block; font-size: 12px; padding: 0 7px; margin: 0 3px 2px 0;
  border-radius: 999px; background: var(--chip); color: var(--muted);
}
.metric span { display: inline-block; min-width: 64px; padding: 1px 8px; border-radius: 6px; }
.metric.good span { color: var(--good); background: var(--good-bg); font-weight: 600; }
.metric.fair span { color: var(--fair); background: var(--fair-bg); font-weight: 600; }
.metric.poor span { color: var(--poor); background: var(--poor-bg); font-weight: 600; }
.muted, .empty td { color: var(--muted); }
.group-head th {
  background: var(--bg); color: var(--muted); font-size: 12px; font-weight: 600;
  border-top: 1px solid var(--line); text-transform: none; letter-spacing: 0;
}
.group-head small { font-weight: 400; margin-left: 8px; }
.empty td { text-align: center; padding: 28px; }
footer { margin-top: 14px; font-size: 12px; color: var(--muted); }
footer .good { color: var(--good); } footer .fair { color: var(--fair); }
footer .poor { color: var(--poor); }
"""

_SCRIPT: Final = """
"use strict";
(() => {
  const REFRESH_MS = Number(document.documentElement.dataset.refresh || "10") * 1000;
  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
  const state = { sort: document.documentElement.dataset.sort, reverse: false, target: "" };

  function sortOption(key) {
    return $$("#sort option").find((option) => option.value === key);
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    const sort = params.get("sort");
    if (sort && sortOption(sort)) state.sort = sort;
    state.reverse = params.get("reverse") === "1";
    state.target = params.get("target") || "";
  }

  function writeHash() {
    const params = new URLSearchParams();
    params.set("sort", state.sort);
    if (state.reverse) params.set("reverse", "1");
    if (state.target) params.set("target", state.target);
    history.replaceState(null, "", "#" + params.toString());
  }

  // Order and filter the server-rendered rows: each row carries its rank for every sort.
  function apply() {
    const filter = $("#target-filter");
    filter.value = state.target;
    if (filter.value !== state.target) state.target = filter.value = "";
    const rank = "data-r-" + state.sort + (state.reverse ? "-rev" : "");
    let shown = 0;
    for (const body of $$("#board tbody.rows")) {
      const rows = $$("tr[data-target]", body);
      rows.sort((a, b) => Number(a.getAttribute(rank)) - Number(b.getAttribute(rank)));
      let visible = 0;
      for (const row of rows) {
        body.appendChild(row);
        row.hidden = Boolean(state.target) && row.dataset.target !== state.target;
        if (!row.hidden) visible += 1;
      }
      const head = $("tr.group-head", body);
      if (head) head.hidden = visible === 0;
      shown += visible;
    }
    const none = $("#no-rows");
    if (none) none.hidden = shown > 0;
    $("#sort").value = state.sort;
    const descending = (sortOption(state.sort).dataset.desc === "1") !== state.reverse;
    const button = $("#reverse");
    button.setAttribute("aria-pressed", String(state.reverse));
    button.textContent = state.reverse ? "Reversed" : "Best first";
    for (const th of $$("#board th[data-sort]")) {
      if (th.dataset.sort === state.sort) {
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
      } else {
        th.removeAttribute("aria-sort");
      }
    }
    writeHash();
  }

  function ago(seconds) {
    const s = Math.max(0, Date.now() / 1000 - seconds);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }

  function relativeTimes() {
    for (const el of $$("time[data-ts]")) {
      if (!el.title) el.title = el.textContent;
      el.textContent = ago(Number(el.dataset.ts));
    }
  }

  function sortBy(key) {
    if (state.sort === key) {
      state.reverse = !state.reverse;
    } else {
      state.sort = key;
      state.reverse = false;
    }
    apply();
  }

  // Fetch this page again and swap in what changed; sort and filter stay as they are.
  async function refresh() {
    const status = $("#status");
    try {
      const response = await fetch(location.pathname + location.search,
        { cache: "no-store", headers: { Accept: "text/html" } });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const id of ["targets", "rows-chat", "rows-embedding", "summary", "no-rows"]) {
        const now = document.getElementById(id);
        const next = fresh.getElementById(id);
        if (now && next) now.replaceWith(document.importNode(next, true));
      }
      const options = fresh.getElementById("target-filter");
      if (options) $("#target-filter").replaceChildren(
        ...Array.from(options.children, (node) => document.importNode(node, true)));
      apply();
      relativeTimes();
      status.textContent = "Updated " + new Date().toLocaleTimeString();
      status.classList.remove("stale");
    } catch (error) {
      status.textContent = "Refresh failed (" + error.message + "); retrying";
      status.classList.add("stale");
    }
  }

  let timer = 0;
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => { await refresh(); schedule(); }, REFRESH_MS);
  }

  for (const th of $$("#board th[data-sort]")) {
    th.addEventListener("click", () => sortBy(th.dataset.sort));
    th.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" && event.key !== " ") return;
      event.preventDefault();
      sortBy(th.dataset.sort);
    });
  }
  $("#sort").addEventListener("change", (event) => { state.sort = event.target.value; apply(); });
  $("#reverse").addEventListener("click", () => { state.reverse = !state.reverse; apply(); });
  $("#target-filter").addEventListener("change", (event) => {
    state.target = event.target.value;
    apply();
  });
  window.addEventListener("hashchange", () => { readHash(); apply(); });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") { refresh(); schedule(); }
  });
  window.ometer = { state, apply, refresh };

  readHash();
  apply();
  relativeTimes();
  setInterval(relativeTimes, 5000);
  schedule();
  document.documentElement.dataset.ready = "1";
})();
"""

_FAVICON: Final = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
    "%3Ccircle cx='8' cy='8' r='7' fill='%233563e9'/%3E%3Cpath d='M8 8l3.5-3.5' "
    "stroke='white' stroke-width='2' stroke-linecap='round'/%3E%3C/svg%3E"
)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CONTENT_SECURITY_POLICY: Final = (
    f"default-src 'none'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

_e = html.escape  # quote=True: safe in text and in double-quoted attributes


def render(snapshot: Snapshot, *, version: str, now: float | None = None) -> str:
    """The whole page for one snapshot."""
    now = time.time() if now is None else now
    items = rows.rows(snapshot, query.Query())
    chat = [r for r in items if r["kind"] != "embedding"]
    embedding = [r for r in items if r["kind"] == "embedding"]
    graded = _grades(items)
    chat_body = _body("rows-chat", chat, graded, None)
    embedding_body = _body(
        "rows-embedding",
        embedding,
        graded,
        "Embedding models <small>TTFT is the request time, tokens/s the input rate</small>",
    )
    targets = sorted(snapshot.targets.values(), key=lambda t: t.name)
    target_names = sorted({t.name for t in targets} | {r["target"] for r in items})
    sort_options = "".join(
        f'<option value="{key}" data-desc="{int(descending)}"'
        f"{' selected' if key == DEFAULT_SORT else ''}>{_e(SORT_LABELS[key])}</option>"
        for key, (_, descending) in query.SORT_KEYS.items()
    )
    return f"""<!doctype html>
<html lang="en" data-sort="{DEFAULT_SORT}" data-refresh="{REFRESH_SECONDS}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ometer-exporter · leaderboard</title>
<link rel="icon" href="{_FAVICON}">
<style>{_STYLE}</style>
</head>
<body>
<header class="top">
  <div class="brand"><h1>ometer-exporter</h1><span class="version">v{_e(version)}</span></div>
  <nav>
    <a href="metrics">Metrics</a>
    <a href="export?format=json">Export JSON</a>
    <a href="export?format=csv">Export CSV</a>
  </nav>
</header>
<main>
  <h2>Targets</h2>
  {_targets(targets)}
  <div class="bar">
    <h2>Leaderboard</h2>
    <label>Target <select id="target-filter">{_target_options(target_names)}</select></label>
    <label>Sort <select id="sort">{sort_options}</select></label>
    <button id="reverse" type="button" aria-pressed="false">Best first</button>
    <span id="status" class="status" aria-live="polite">Refreshes every {REFRESH_SECONDS} s</span>
  </div>
  <div class="scroll">
  <table id="board">
    <thead><tr>
      <th data-sort="name" tabindex="0">Model</th><th>Target</th>
      <th class="num" data-sort="size" tabindex="0">Size</th>
      <th class="num" data-sort="ctx" tabindex="0">Context</th>
      <th>Quant</th><th>Capabilities</th>
      <th class="num" data-sort="ttft" tabindex="0" title="time to first token (median)">TTFT</th>
      <th class="num" data-sort="tps" tabindex="0" title="output tokens per second">Tokens/s</th>
      <th class="num" title="cold load time">Load</th><th>Benchmarked</th>
    </tr></thead>
    {chat_body}
    {embedding_body}
    {_empty(items)}
  </table>
  </div>
  <footer>
    <span id="summary">{_summary(items, targets, now)}</span> ·
    Colours: <span class="good">best third</span>, <span class="fair">middle third</span>,
    <span class="poor">slowest third or failed</span> (33rd/66th percentile of the table; chat and
    embedding models apart).
  </footer>
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def _targets(targets: Sequence[TargetState]) -> str:
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
        cards.append(
            f'<article class="target {state}" data-name="{_e(t.name)}">'
            f'<header><span class="dot"></span><h3>{_e(t.name)}</h3>'
            f"{'<span class=tag>cloud</span>' if t.cloud else ''}"
            f'<span class="state">{label}</span></header>'
            f"<dl><dt>Ollama</dt><dd>{_e(t.version or '—')}</dd>"
            f"<dt>Last cycle</dt><dd>{cycle}</dd>"
            f"<dt>Interval</dt><dd>{_e(_duration(t.interval))}</dd></dl>{error}</article>"
        )
    return f'<section id="targets" class="targets">{"".join(cards)}</section>'


def _target_options(names: Sequence[str]) -> str:
    return '<option value="">All targets</option>' + "".join(
        f'<option value="{_e(n)}">{_e(n)}</option>' for n in names
    )


Grades = dict[str, dict[int, grades.Grade | None]]  # column -> id(row) -> grade


def _grades(items: list[Row]) -> Grades:
    """TTFT and TPS grades over the whole table (``grades.grades`` keeps kinds apart)."""
    return {
        column: dict(zip(map(id, items), grades.grades(items, column), strict=True))
        for column in ("ttft", "tps")
    }


def _body(body_id: str, group: list[Row], graded: Grades, heading: str | None) -> str:
    """A ``<tbody>`` of one kind's rows, in the default order, ranked for every sort."""
    ranks: dict[str, dict[int, int]] = {}
    for key in query.SORT_KEYS:
        for reverse in (False, True):
            ordered = rows.sort_rows(group, key, reverse=reverse)
            ranks[f"{key}{'-rev' if reverse else ''}"] = {id(r): i for i, r in enumerate(ordered)}
    head = ""
    if heading and group:  # a heading over no rows would say nothing
        head = f'<tr class="group-head"><th colspan="10">{heading}</th></tr>'
    lines = [
        _row(r, {name: order[id(r)] for name, order in ranks.items()},
             graded["ttft"][id(r)], graded["tps"][id(r)])
        for r in rows.sort_rows(group, DEFAULT_SORT)
    ]  # fmt: skip
    return f'<tbody id="{body_id}" class="rows">{head}{"".join(lines)}</tbody>'


def _row(r: Row, ranks: dict[str, int], ttft: grades.Grade | None, tps: grades.Grade | None) -> str:
    attrs = "".join(f' data-r-{name}="{rank}"' for name, rank in ranks.items())
    error = f'<div class="err">{_e(r["error"])}</div>' if r["error"] else ""
    caps = "".join(
        f'<span class="cap">{_e(c)}</span>' for c in (r["capabilities"] or "").split(", ") if c
    )
    load = r["load_duration_seconds"]
    return (
        f'<tr data-target="{_e(r["target"])}" data-model="{_e(r["model"])}"{attrs}>'
        f'<td class="model"><span class="name">{_e(r["model"])}</span>{error}</td>'
        f"<td>{_e(r['target'])}</td>"
        f'<td class="num">{_e(r["size"] or "—")}</td>'
        f'<td class="num">{_e(str(r["context"] or "—"))}</td>'
        f"<td>{_e(r['quant'] or '—')}</td>"
        f'<td class="caps">{caps or "—"}</td>'
        f"{_metric('ttft', r, ttft)}{_metric('tps', r, tps)}"
        f'<td class="num">{_e(grades.format_seconds(load)) if load is not None else "—"}</td>'
        f"<td>{_stamp(r)}</td>"
        "</tr>"
    )


def _metric(column: str, r: Row, grade: grades.Grade | None) -> str:
    value = r[column]
    if value is None:
        text = grades.failure_text(r) if grades.failed(r) else "—"
    else:
        text = grades.format_value(column, value)
    return f'<td class="num metric {grade or ""}"><span>{_e(text)}</span></td>'


def _stamp(r: Row) -> str:
    """``benchmarked_at`` (RFC 3339) as a ``<time>`` the script shows as "3 min ago"."""
    text = r["benchmarked_at"]
    if not text:
        return '<span class="muted">not yet</span>'
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
        f'<tbody id="no-rows" class="empty"{hidden}><tr><td colspan="10">{text}</td></tr></tbody>'
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
