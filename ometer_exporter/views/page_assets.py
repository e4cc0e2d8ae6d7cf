"""The landing page's static assets: its inline stylesheet and script, its icon, and the
Content-Security-Policy that allows exactly that stylesheet and those scripts by their sha256
hashes.

The page inserts ``STYLE``, ``SCRIPT`` and ``page_charts.SCRIPT`` (the history) verbatim; any
change to one changes its hash, and the policy is computed from the same strings, so the two
cannot drift apart.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

from ometer_exporter.views import page_charts

STYLE: Final = """
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
.target .url { overflow-wrap: break-word; }
.hint { grid-column: 1 / -1; border: 1px dashed var(--line); border-radius: 8px;
        padding: 10px 14px; }
.hint h3 { margin: 0 0 4px; font-size: 14px; }
.hint p { margin: 4px 0; }
.where { font-size: 13px; }
.where .tag { margin-left: 6px; }
.st-failed, .st-target_down { color: var(--poor); }
.st-waiting_for_idle, .st-contended, .st-held { color: var(--fair); }
.cap {
  display: inline-block; font-size: 12px; padding: 0 7px; margin: 0 3px 2px 0;
  border-radius: 999px; background: var(--chip); color: var(--muted);
}
.metric .v { display: inline-block; min-width: 64px; padding: 1px 8px; border-radius: 6px; }
.metric.good .v { color: var(--good); background: var(--good-bg); font-weight: 600; }
.metric.fair .v { color: var(--fair); background: var(--fair-bg); font-weight: 600; }
.metric.poor .v, .users.poor .v {
  color: var(--poor); background: var(--poor-bg); font-weight: 600;
}
.users .v { display: inline-block; min-width: 2.4em; padding: 1px 8px; border-radius: 6px; }
.arrow { display: inline-block; min-width: 1.2em; color: var(--muted); font-weight: 600; }
.arrow.up { color: var(--good); } .arrow.down { color: var(--poor); }
.spark { display: block; height: 18px; margin-top: 2px; }
.sparkline { display: inline-block; vertical-align: top; }
.spark-line, .chart-line { fill: none; stroke: var(--accent); stroke-width: 1.5; }
.spark-dot { fill: var(--accent); }
.model .name { cursor: pointer; border-bottom: 1px dotted var(--muted); }
.model .name:hover, .model .name:focus-visible { color: var(--accent); outline: none; }
dialog#detail {
  width: min(720px, 96vw); max-height: 92vh; overflow: auto; color: var(--fg);
  background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 14px 18px;
}
dialog#detail::backdrop { background: rgba(0, 0, 0, 0.45); }
dialog#detail header { display: flex; align-items: center; gap: 12px; }
dialog#detail h3 { margin: 0 auto 0 0; font-size: 16px; overflow-wrap: anywhere; }
.chart { margin: 12px 0 0; }
.chart figcaption { font-size: 13px; color: var(--muted); }
.detail-chart { width: 100%; height: auto; display: block; }
.chart-dot { fill: var(--accent); }
.axis { stroke: var(--line); }
.threshold { stroke: var(--fair); stroke-dasharray: 4 3; }
.change { stroke: var(--muted); stroke-dasharray: 2 2; stroke-width: 1.5; }
.change.version { stroke: var(--poor); }
.tick { font-size: 10px; fill: var(--muted); }
.tick.end { text-anchor: end; }
.tick.mid { text-anchor: middle; }
.chart-dot.failed { fill: var(--card); stroke: var(--poor); stroke-width: 2; }
.max-mark { stroke: var(--good); stroke-width: 2; }
.max-label { font-size: 11px; font-weight: 600; fill: var(--good); }
.lag-flag { font-size: 12px; font-weight: 700; fill: var(--fair); text-anchor: middle; }
.capacity-note { margin: 4px 0 0; font-size: 13px; }
.target dd time, .target dd .muted, .target .dd-nowrap { white-space: nowrap; }
@media (max-width: 640px) {
  .top, main { padding-left: 12px; padding-right: 12px; }
  .fold { display: none; }
  th, td { padding: 6px 6px; }
  .metric .v { min-width: 0; padding: 1px 4px; }
  td.model { white-space: normal; overflow-wrap: anywhere; }
  .targets { grid-template-columns: 1fr; }
}
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

SCRIPT: Final = """
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
    const d = Date.now() / 1000 - seconds;
    const s = Math.abs(d);
    let text = Math.round(s / 86400) + " d";
    if (s < 60) text = Math.round(s) + " s";
    else if (s < 3600) text = Math.round(s / 60) + " min";
    else if (s < 86400) text = Math.round(s / 3600) + " h";
    return d >= -1 ? text + " ago" : "in " + text;
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
      for (const id of ["targets", "rows-chat", "rows-embedding", "summary", "legend", "no-rows"]) {
        const now = document.getElementById(id);
        const next = fresh.getElementById(id);
        if (now && next) now.replaceWith(document.importNode(next, true));
      }
      const options = fresh.getElementById("target-filter");
      if (options) $("#target-filter").replaceChildren(
        ...Array.from(options.children, (node) => document.importNode(node, true)));
      apply();
      relativeTimes();
      document.dispatchEvent(new Event("ometer:refreshed"));  // page_charts redraws
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

FAVICON: Final = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
    "%3Ccircle cx='8' cy='8' r='7' fill='%233563e9'/%3E%3Cpath d='M8 8l3.5-3.5' "
    "stroke='white' stroke-width='2' stroke-linecap='round'/%3E%3C/svg%3E"
)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CONTENT_SECURITY_POLICY: Final = (
    f"default-src 'none'; script-src {_sha256(SCRIPT)} {_sha256(page_charts.SCRIPT)}; "
    f"style-src {_sha256(STYLE)}; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
