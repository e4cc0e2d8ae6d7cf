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
configured thresholds dashed and a marker where the Ollama version or the method changed; TTFT
against prompt length (``/export?view=prompt_length``); and, when the model has a load sweep,
its capacity against concurrent users, from the row's ``data-capacity`` (``page_capacity``).
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

  // The zero line and the range's two ends on the left.
  function yAxis(graph, s, width, height, pad) {
    svg("line", { x1: pad, x2: width - pad, y1: s.y(s.v0), y2: s.y(s.v0), class: "axis" }, graph);
    for (const [value, anchor] of [[s.v1, pad - 8], [s.v0, height - pad]]) {
      svg("text", { x: 2, y: anchor + 4, class: "tick" }, graph).textContent =
        Number(value.toPrecision(3)).toString();
    }
  }

  // A detail chart's <figure> (data-col names it) and its caption.
  function captioned(column) {
    const figure = document.createElement("figure");
    figure.className = "chart";
    figure.dataset.col = column;
    const caption = document.createElement("figcaption");
    figure.appendChild(caption);
    return [figure, caption];
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
    const [figure, caption] = captioned(column);
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
    yAxis(graph, s, W, H, PAD);
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
    const [figure, caption] = captioned("length");
    const points = rows.map((r) => [r.actual_prompt_tokens, r.time_to_first_token_seconds]);
    const graph = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "detail-chart",
                               role: "img", "data-points": points.length }, figure);
    const slope = rows.length ? rows[0].ttft_seconds_per_1k_tokens : null;
    caption.textContent = "TTFT against prompt length" + (slope !== null && slope !== undefined ?
      ": +" + slope.toPrecision(3) + " s per 1k prompt tokens" : "");
    const s = scale(points, W, H, PAD);
    yAxis(graph, s, W, H, PAD);
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

  // The latest load sweep (benchmark.capacity), as the row's data-capacity holds it (rendered
  // with the row from the same snapshot, page_capacity): aggregate output tokens/s and p95
  // TTFT against concurrent users on a log scale (the levels double), the TTFT SLO dashed, the
  // most users within the SLO marked, levels that missed it hollow, lagged ones flagged "!".
  function sweepOf(target, model) {
    const row = $$("#board tr[data-target]").find((tr) =>
      tr.dataset.target === target && tr.dataset.model === model);
    const cell = row ? $("td[data-capacity]", row) : null;
    return cell ? JSON.parse(cell.dataset.capacity) : null;
  }

  const PANELS = [
    ["tps", "tokens_per_second", "Output tokens/s, all users", "tok/s"],
    ["ttft", "ttft_p95", "p95 TTFT", "s"],
  ];

  function capacityChart(sweep) {
    const W = 620, H = 130, PAD = 26;
    const [figure, caption] = captioned("capacity");
    caption.textContent = "Capacity against concurrent users: ● within the SLO, ○ missed it, " +
      "! lagged (times doubtful); dashed: the TTFT SLO; green: the most users within it";
    const levels = sweep.levels;
    const logs = levels.map((l) => Math.log2(l.concurrency));
    const lo = Math.min(...logs), hi = Math.max(...logs);
    const x = (c) => PAD + (hi > lo ? (Math.log2(c) - lo) / (hi - lo) : 0.5) * (W - 2 * PAD);
    for (const [panel, field, title, unit] of PANELS) {
      const slo = panel === "ttft" ? sweep.slo_ttft : null;
      const shown = levels.filter((l) => l[field] !== null);
      const points = shown.map((l) => [l.concurrency, l[field]]);
      const graph = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "detail-chart",
                                 role: "img", "data-panel": panel,
                                 "data-points": points.length }, figure);
      svg("title", {}, graph).textContent = title + " against concurrent users";
      // y as the other charts (the SLO within range, so its line shows); x by concurrency.
      const s = Object.assign(scale(slo === null ? points : [...points, [1, slo]], W, H, PAD),
                              { x });
      yAxis(graph, s, W, H, PAD);
      svg("text", { x: W / 2, y: 10, class: "tick mid" }, graph).textContent = title;
      let right = -Infinity;  // the last level label's x: labels closer than 18 px are left out
      for (const l of levels) {
        if (x(l.concurrency) - right < 18) continue;
        right = x(l.concurrency);
        svg("text", { x: right, y: H - 6, class: "tick mid" }, graph).textContent =
          String(l.concurrency);
      }
      if (slo !== null) {
        svg("line", { x1: PAD, x2: W - PAD, y1: s.y(slo), y2: s.y(slo), class: "threshold",
                      "data-slo": slo }, graph);
        svg("text", { x: W - PAD, y: s.y(slo) - 4, class: "tick end" }, graph).textContent =
          "SLO " + Number(slo.toPrecision(3)) + " s";
      }
      if (sweep.max > 0) {
        const at = x(sweep.max).toFixed(1);
        const mark = svg("line", { x1: at, x2: at, y1: PAD / 2, y2: H - PAD,
                                   class: "max-mark", "data-concurrency": sweep.max }, graph);
        svg("title", {}, mark).textContent = sweep.lines[0];
        if (panel === "tps") {  // said once, over both panels
          const left = Number(at) > W - 120;
          svg("text", { x: Number(at) + (left ? -4 : 4), y: PAD / 2 + 8,
                        class: "max-label" + (left ? " tick end" : "") }, graph).textContent =
            sweep.max + (sweep.max === 1 ? " user" : " users") + " within SLO";
        }
      }
      svg("path", { d: line(points, s), class: "chart-line" }, graph);
      for (const l of shown) {
        const cx = x(l.concurrency), cy = s.y(l[field]);
        const dot = svg("circle", { cx: cx.toFixed(1), cy: cy.toFixed(1), r: 3.5,
                                    class: "chart-dot" + (l.passed ? "" : " failed"),
                                    "data-concurrency": l.concurrency }, graph);
        svg("title", {}, dot).textContent = l[field].toPrecision(4) + " " + unit + " at " +
          l.concurrency + " users" + (l.passed ? "" : ", missed the SLO") +
          (l.lagged ? ", lagged (times doubtful)" : "");
        if (l.lagged) {
          svg("text", { x: cx.toFixed(1), y: (cy - 8).toFixed(1), class: "lag-flag",
                        "data-concurrency": l.concurrency }, graph).textContent = "!";
        }
      }
    }
    for (const text of sweep.lines) {
      const p = document.createElement("p");
      p.className = "capacity-note";
      p.textContent = text;
      figure.appendChild(p);
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
    const sweep = sweepOf(target, model);  // read now: a refresh may swap the row meanwhile
    if (!dialog.open) dialog.showModal();
    try {
      const found = (await history({ target, model, points: DETAIL_POINTS }))
        .find((s) => s.target === target && s.model === model);
      if (found && found.t.length) {
        const changes = found.changes.map((c) => c.text + " at " + when(c.t));
        note.textContent = found.t.length + " results from " + when(found.t[0]) + " to " +
          when(found.t[found.t.length - 1]) + (found.truncated ? " (the newest only)" : "") +
          (changes.length ? ". Changes: " + changes.join("; ") : "") + ".";
        charts.replaceChildren(...CHARTS.map(([column, title, unit]) =>
          chart(found, column, title, unit)));
        const measured = await lengths(target, model);
        if (measured.length) charts.appendChild(lengthChart(measured));
      } else {
        note.textContent = "No stored results yet.";
      }
    } catch (error) {
      note.textContent = "History unavailable (" + error.message + ")";
    }
    if (sweep) charts.appendChild(capacityChart(sweep));
    dialog.dataset.drawn = key(target, model);
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
