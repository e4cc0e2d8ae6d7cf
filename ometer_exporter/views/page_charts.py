"""The landing page's history: sparklines and arrows in the leaderboard, and a model's detail.

The script fetches ``api/history`` (``views.history``) and draws inline SVG with DOM calls
(``createElementNS``, ``textContent``): no markup is built from strings, nothing is evaluated,
no handler is inline, so the page's strict Content-Security-Policy (which lists this script by
its hash, ``page_assets``) holds. Each leaderboard row's TTFT and tokens/s cells get a
sparkline of that model's stored results and ``↑ ↓ →`` of its newest result against the one
before (the server applies the one-shot's rule). The page's 10 s refresh swaps the rows; it
then fires ``ometer:refreshed``, and the sparklines are drawn again — from the history already
fetched unless a row shows a newer result (``data-at``). A click on a model name (or Enter on
it) opens ``#detail``: larger charts of TTFT, tokens/s, prefill and load over time, with the
configured thresholds dashed and a marker where the Ollama version or the method changed.
"""

from __future__ import annotations

from typing import Final

from ometer_exporter.views.history import DEFAULT_POINTS, MAX_POINTS

SPARK_POINTS: Final = DEFAULT_POINTS  # results per model in a sparkline: the cached default
DETAIL_POINTS: Final = MAX_POINTS  # results in a detail chart (the endpoint's maximum)

DIALOG: Final = """<dialog id="detail" aria-labelledby="detail-title">
  <header><h3 id="detail-title">History</h3>
    <button id="detail-close" type="button">Close</button></header>
  <p id="detail-note" class="muted"></p>
  <div id="detail-charts" class="charts"></div>
</dialog>"""

SCRIPT: Final = """
"use strict";
(() => {
  const SPARK_POINTS = __SPARK_POINTS__;
  const DETAIL_POINTS = __DETAIL_POINTS__;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
  const key = (target, model) => target + "\\n" + model;
  const cache = { stamp: null, series: new Map() };
  const LOWER_IS_BETTER = { ttft: true, tps: false, prefill: false, load: true };

  function svg(name, attributes, parent) {
    const el = document.createElementNS(SVG, name);
    for (const [attribute, value] of Object.entries(attributes)) {
      el.setAttribute(attribute, String(value));
    }
    if (parent) parent.appendChild(el);
    return el;
  }

  function limits(column) {
    const text = document.documentElement.dataset[column + "Limits"];
    return text ? text.split(",").map(Number) : null;
  }

  // The [t, value] pairs of one column, failed cycles (null) left out.
  function pairs(series, column) {
    const out = [];
    series[column].forEach((value, i) => { if (value !== null) out.push([series.t[i], value]); });
    return out;
  }

  function scale(points, width, height, pad) {
    const ts = points.map((p) => p[0]);
    const vs = points.map((p) => p[1]);
    const t0 = Math.min(...ts), t1 = Math.max(...ts);
    let v0 = Math.min(0, ...vs), v1 = Math.max(...vs);
    if (v1 <= v0) v1 = v0 + 1;
    return {
      t0, t1, v0, v1,
      x: (t) => pad + (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5) * (width - 2 * pad),
      y: (v) => height - pad - (v - v0) / (v1 - v0) * (height - 2 * pad),
    };
  }

  function line(points, s) {
    return points.map((p, i) => (i ? "L" : "M") + s.x(p[0]).toFixed(1) + " " +
                                s.y(p[1]).toFixed(1)).join(" ");
  }

  function sparkline(cell, series, column) {
    const holder = $(".spark", cell);
    if (!holder) return;
    const points = series ? pairs(series, column) : [];
    const chart = svg("svg", { class: "sparkline", viewBox: "0 0 72 18", width: 72, height: 18,
                               role: "img", "data-points": points.length });
    svg("title", {}, chart).textContent = points.length + " result" +
      (points.length === 1 ? "" : "s");
    if (points.length) {
      const s = scale(points, 72, 18, 2);
      svg("path", { d: line(points, s), class: "spark-line" }, chart);
      for (const p of points) {
        svg("circle", { cx: s.x(p[0]).toFixed(1), cy: s.y(p[1]).toFixed(1), r: 1.6,
                        class: "spark-dot" }, chart);
      }
    }
    holder.replaceChildren(chart);
  }

  function arrow(cell, series, column) {
    const el = $(".arrow", cell);
    if (!el) return;
    const text = series ? series.trend[column] : "";
    el.textContent = text ? " " + text : "";
    el.className = "arrow" + (text === "↑" ? " up" : text === "↓" ? " down" : "");
    el.title = text ? "against the result before, of the same server and method" : "";
  }

  function drawRows() {
    for (const row of $$("#board tr[data-target]")) {
      const series = cache.series.get(key(row.dataset.target, row.dataset.model));
      for (const cell of $$("td.metric", row)) {
        sparkline(cell, series, cell.dataset.col);
        arrow(cell, series, cell.dataset.col);
      }
    }
    document.documentElement.dataset.history = "1";
  }

  async function history(params) {
    const response = await fetch("api/history?" + new URLSearchParams(params).toString(),
      { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error("HTTP " + response.status);
    return (await response.json()).series;
  }

  // Fetch again only when a row shows a result the cached history does not hold.
  async function update() {
    const stamp = $$("#board tr[data-target]").map((row) =>
      key(row.dataset.target, row.dataset.model) + "@" + row.dataset.at).join("\\n");
    if (stamp !== cache.stamp) {
      try {
        const series = await history({ points: SPARK_POINTS });
        cache.series = new Map(series.map((s) => [key(s.target, s.model), s]));
        cache.stamp = stamp;
      } catch (error) {
        const status = $("#status");
        if (status) status.textContent = "History unavailable (" + error.message + ")";
      }
    }
    drawRows();
  }

  function when(seconds) {
    return new Date(seconds * 1000).toLocaleString();
  }

  const CHARTS = [
    ["ttft", "TTFT", "s"], ["tps", "Tokens/s", "tok/s"],
    ["prefill", "Prefill (prompt tokens/s)", "tok/s"], ["load", "Load", "s"],
  ];

  function chart(series, column, title, unit) {
    const W = 620, H = 150, PAD = 26;
    const figure = document.createElement("figure");
    figure.className = "chart";
    figure.dataset.col = column;
    const caption = document.createElement("figcaption");
    figure.appendChild(caption);
    const points = pairs(series, column);
    const graph = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "detail-chart",
                               role: "img", "data-points": points.length }, figure);
    if (!points.length) {
      caption.textContent = title + ": no results";
      return figure;
    }
    const values = points.map((p) => p[1]);
    const newest = values[values.length - 1];
    caption.textContent = title + ": newest " + newest.toPrecision(4) + " " + unit + ", range " +
      Math.min(...values).toPrecision(4) + "–" + Math.max(...values).toPrecision(4) + " (" +
      (LOWER_IS_BETTER[column] ? "lower" : "higher") + " is better)";
    const s = scale(points, W, H, PAD);
    svg("line", { x1: PAD, x2: W - PAD, y1: s.y(s.v0), y2: s.y(s.v0), class: "axis" }, graph);
    for (const [value, anchor] of [[s.v1, PAD - 8], [s.v0, H - PAD]]) {
      svg("text", { x: 2, y: anchor + 4, class: "tick" }, graph).textContent =
        Number(value.toPrecision(3)).toString();
    }
    svg("text", { x: PAD, y: H - 6, class: "tick" }, graph).textContent = when(s.t0);
    svg("text", { x: W - PAD, y: H - 6, class: "tick end" }, graph).textContent = when(s.t1);
    for (const limit of limits(column) || []) {
      if (limit < s.v0 || limit > s.v1) continue;
      svg("line", { x1: PAD, x2: W - PAD, y1: s.y(limit), y2: s.y(limit),
                    class: "threshold" }, graph);
    }
    for (const change of series.changes) {
      const x = s.x(change.t);
      const marker = svg("line", { x1: x, x2: x, y1: PAD / 2, y2: H - PAD,
                                   class: "change " + change.what }, graph);
      svg("title", {}, marker).textContent = change.text + " (" + when(change.t) + ")";
    }
    svg("path", { d: line(points, s), class: "chart-line" }, graph);
    for (const p of points) {
      const dot = svg("circle", { cx: s.x(p[0]).toFixed(1), cy: s.y(p[1]).toFixed(1), r: 2.5,
                                  class: "chart-dot" }, graph);
      svg("title", {}, dot).textContent = p[1].toPrecision(4) + " " + unit + " · " + when(p[0]);
    }
    return figure;
  }

  // TTFT against prompt length (benchmark.prompt_tokens), from the latest result's rows in
  // /export?view=prompt_length: x is the counted prompt tokens, y the TTFT.
  function lengthChart(rows) {
    const W = 620, H = 150, PAD = 26;
    const figure = document.createElement("figure");
    figure.className = "chart";
    figure.dataset.col = "length";
    const caption = document.createElement("figcaption");
    figure.appendChild(caption);
    const points = rows.map((r) => [r.actual_prompt_tokens, r.time_to_first_token_seconds]);
    const graph = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "detail-chart",
                               role: "img", "data-points": points.length }, figure);
    const slope = rows.length ? rows[0].ttft_seconds_per_1k_tokens : null;
    caption.textContent = "TTFT against prompt length" + (slope !== null && slope !== undefined ?
      ": +" + slope.toPrecision(3) + " s per 1k prompt tokens" : "");
    const s = scale(points, W, H, PAD);
    svg("line", { x1: PAD, x2: W - PAD, y1: s.y(s.v0), y2: s.y(s.v0), class: "axis" }, graph);
    for (const [value, anchor] of [[s.v1, PAD - 8], [s.v0, H - PAD]]) {
      svg("text", { x: 2, y: anchor + 4, class: "tick" }, graph).textContent =
        Number(value.toPrecision(3)).toString();
    }
    svg("text", { x: PAD, y: H - 6, class: "tick" }, graph).textContent = s.t0 + " tokens";
    svg("text", { x: W - PAD, y: H - 6, class: "tick end" }, graph).textContent =
      s.t1 + " tokens";
    svg("path", { d: line(points, s), class: "chart-line" }, graph);
    for (const p of points) {
      const dot = svg("circle", { cx: s.x(p[0]).toFixed(1), cy: s.y(p[1]).toFixed(1), r: 2.5,
                                  class: "chart-dot" }, graph);
      svg("title", {}, dot).textContent = p[1].toPrecision(4) + " s at " + p[0] + " tokens";
    }
    return figure;
  }

  async function lengths(target, model) {
    const query = new URLSearchParams({ view: "prompt_length", target, model });
    const response = await fetch("export?" + query.toString(), { cache: "no-store" });
    if (!response.ok) return [];
    return (await response.json()).filter((r) => r.target === target && r.model === model &&
      r.time_to_first_token_seconds !== null && r.actual_prompt_tokens !== null);
  }

  async function openDetail(target, model) {
    const dialog = $("#detail");
    $("#detail-title").textContent = model + " on " + target;
    const note = $("#detail-note");
    const charts = $("#detail-charts");
    note.textContent = "Loading…";
    charts.replaceChildren();
    if (!dialog.open) dialog.showModal();
    try {
      const found = (await history({ target, model, points: DETAIL_POINTS }))
        .find((s) => s.target === target && s.model === model);
      if (!found || !found.t.length) {
        note.textContent = "No stored results yet.";
        return;
      }
      const changes = found.changes.map((c) => c.text + " at " + when(c.t));
      note.textContent = found.t.length + " results from " + when(found.t[0]) + " to " +
        when(found.t[found.t.length - 1]) + (found.truncated ? " (the newest only)" : "") +
        (changes.length ? ". Changes: " + changes.join("; ") : "") + ".";
      charts.replaceChildren(...CHARTS.map(([column, title, unit]) =>
        chart(found, column, title, unit)));
      const measured = await lengths(target, model);
      if (measured.length) charts.appendChild(lengthChart(measured));
      dialog.dataset.drawn = key(target, model);
    } catch (error) {
      note.textContent = "History unavailable (" + error.message + ")";
    }
  }

  function nameOf(event) {
    const name = event.target.closest && event.target.closest("#board .model .name");
    return name ? name.closest("tr[data-target]") : null;
  }

  const board = $("#board");
  board.addEventListener("click", (event) => {
    const row = nameOf(event);
    if (row) openDetail(row.dataset.target, row.dataset.model);
  });
  board.addEventListener("keydown", (event) => {
    const row = nameOf(event);
    if (!row || (event.key !== "Enter" && event.key !== " ")) return;
    event.preventDefault();
    openDetail(row.dataset.target, row.dataset.model);
  });
  $("#detail-close").addEventListener("click", () => $("#detail").close());
  document.addEventListener("ometer:refreshed", update);
  window.ometerHistory = { update, openDetail, cache };
  update();
})();
""".replace("__SPARK_POINTS__", str(SPARK_POINTS)).replace("__DETAIL_POINTS__", str(DETAIL_POINTS))
