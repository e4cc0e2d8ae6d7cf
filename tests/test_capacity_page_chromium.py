"""Capacity on the page, in headless Chromium: a store holding load sweeps (written to the
exporter's SQLite file before it starts, read back as on any restart) shows "Users within SLO"
in the leaderboard, and a model's detail view draws its capacity chart: a point per level in
both panels, the TTFT SLO dashed between the levels that met it and the one that did not, the
most users within the SLO marked at that level, the missed and lagged levels told apart, and
the text under it; a hostile model name and server text stay text. No JS or CSP error."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import pytest
from chromium import CHROMIUM, Tab, chromium
from factories import capacity
from ollama_emulator import chat_model

from ometer_exporter.store.capacity import CapacityRecord
from ometer_exporter.store.database import Database
from ometer_exporter.views import page_capacity

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None and not os.environ.get("CI"),
    reason="needs Debian's chromium (scripts/test installs it)",
)

READY = "document.documentElement.dataset.ready === '1'"
LLAMA = "llama3.2:latest"
EVIL = "<img src=x onerror=alert(1)>:latest"

# The capacity figure of the open detail: per panel its points, per dot its level, x, y and
# whether it missed the SLO or lagged; the SLO line's y; the max mark's level and x.
FIGURE = """(() => {
    const f = document.querySelector('#detail figure[data-col=capacity]');
    if (!f) return null;
    const panels = {};
    for (const svg of f.querySelectorAll('svg[data-panel]')) {
        const mark = svg.querySelector('line.max-mark');
        const slo = svg.querySelector('line.threshold');
        panels[svg.dataset.panel] = {
            points: Number(svg.dataset.points),
            dots: [...svg.querySelectorAll('circle.chart-dot')].map((c) => [
                Number(c.dataset.concurrency), Number(c.getAttribute('cx')),
                Number(c.getAttribute('cy')), c.classList.contains('failed')]),
            lagged: [...svg.querySelectorAll('text.lag-flag')].map((t) =>
                Number(t.dataset.concurrency)),
            slo: slo ? [Number(slo.dataset.slo), Number(slo.getAttribute('y1'))] : null,
            mark: mark ? [Number(mark.dataset.concurrency), Number(mark.getAttribute('x1'))]
                       : null,
            path: svg.querySelectorAll('path.chart-line').length,
            height: svg.getBoundingClientRect().height,
        };
    }
    return {panels, lines: [...f.querySelectorAll('p.capacity-note')].map((p) => p.textContent),
            images: document.querySelectorAll('#detail img').length};
})()"""
ORDER = "[...document.querySelectorAll('#rows-chat tr[data-target]')].map((tr) => tr.dataset.model)"
SCROLL = "document.querySelector('#detail figure[data-col=capacity]').scrollIntoView()"


def sweeps() -> tuple[CapacityRecord, CapacityRecord]:
    """A sweep within the SLO up to 4 users (of 1, 2, 4, 8), its 8-user level lagged; and one
    that missed the SLO from the first user on and that the server refused part-way."""
    good = capacity()
    levels = (*good.levels[:-1], dataclasses.replace(good.levels[-1], lagged=True))
    good = dataclasses.replace(good, levels=levels)
    refused = dataclasses.replace(
        capacity(levels=(1, 2), slo_ttft=0.001), stopped="<script>alert('stop')</script> busy"
    )
    return good, refused


async def detail(tab: Tab, model: str) -> dict[str, Any]:
    await tab.click(f'#rows-chat tr[data-model="{model}"] .name')
    drawn = json.dumps("local\n" + model)  # the key the script marks the drawn detail with
    await tab.wait_for(f"document.getElementById('detail').dataset.drawn === {drawn}")
    figure = await tab.evaluate(FIGURE)
    assert figure is not None
    return dict(figure)


async def test_capacity_column_and_chart(emulator_factory, start_exporter, tmp_path) -> None:
    good, refused = sweeps()
    storage = tmp_path / "data"
    db = Database(storage / "ometer.sqlite3", retention=7 * 86400.0)
    db.write_capacity("local", LLAMA, good)
    db.write_capacity("local", EVIL, refused)
    db.close()
    emu = await emulator_factory([chat_model(LLAMA), chat_model(EVIL)], time_scale=0.05)
    running = await start_exporter(
        f"""
benchmark: {{interval: 1h, jitter: 0%, idle_before: 0s, runs: 1, num_predict: 16}}
targets: [{{name: local, url: "{emu.url}", select: all}}]
""",
        storage=storage,
    )
    await running.cycles("local", 1)
    async with chromium(tmp_path / "profile") as browser:
        tab = await browser.new_tab()
        await tab.goto(running.url + "/", ready=READY)
        column = await tab.evaluate(
            """[...document.querySelectorAll('#rows-chat tr[data-target]')].map((tr) => {
                const td = tr.querySelector('td[data-col=users]');
                return [tr.dataset.model, td.textContent, td.classList.contains('poor')]; })"""
        )
        assert sorted(column) == sorted([[LLAMA, "4", False], [EVIL, "0", True]])
        await tab.click("#board th[data-sort=users]")  # most users first, then the other way
        assert await tab.evaluate(ORDER) == [LLAMA, EVIL]
        await tab.click("#board th[data-sort=users]")
        assert await tab.evaluate(ORDER) == [EVIL, LLAMA]

        figure = await detail(tab, LLAMA)
        levels = [level.concurrency for level in good.levels]
        for name in ("tps", "ttft"):
            panel = figure["panels"][name]
            assert panel["points"] == len(panel["dots"]) == len(levels) and panel["path"] == 1
            assert [d[0] for d in panel["dots"]] == levels
            assert [d[3] for d in panel["dots"]] == [not level.passed for level in good.levels]
            assert panel["lagged"] == [8]
            xs = {d[0]: d[1] for d in panel["dots"]}
            assert panel["mark"] == [good.max_concurrency, xs[good.max_concurrency]]
            assert panel["height"] > 50
        tps, ttft = figure["panels"]["tps"], figure["panels"]["ttft"]
        assert tps["slo"] is None and ttft["slo"] is not None
        assert ttft["slo"][0] == good.slo_ttft
        # SVG y grows downwards: the SLO line lies above the levels within it, below the other.
        within = [d[2] for d in ttft["dots"] if not d[3]]
        missed = [d[2] for d in ttft["dots"] if d[3]]
        assert min(within) > ttft["slo"][1] > max(missed)
        assert figure["lines"] == page_capacity.lines(good)
        assert figure["lines"][0].startswith(
            "4 users within SLO (TTFT ≤ 500 ms, TPOT ≤ 25 ms, 95 % of requests) · swept "
        )
        await tab.evaluate(SCROLL)
        await tab.screenshot(tmp_path / "capacity.png")
        await tab.screenshot(tmp_path / "capacity-dark.png", dark=True)
        await tab.click("#detail-close")

        figure = await detail(tab, EVIL)
        for name in ("tps", "ttft"):
            panel = figure["panels"][name]
            assert [d[0] for d in panel["dots"]] == [1, 2] and all(d[3] for d in panel["dots"])
            assert panel["mark"] is None  # not even one user: nothing to mark
        assert figure["lines"] == page_capacity.lines(refused)
        assert figure["lines"][-1] == (
            "Stopped part-way: the server refused a request (<script>alert('stop')</script> busy)."
        )
        assert figure["images"] == 0
        title = await tab.evaluate("document.getElementById('detail-title').textContent")
        assert title == f"{EVIL} on local"
        await tab.evaluate(SCROLL)
        await tab.screenshot(tmp_path / "capacity-refused.png")

        # At 420 px the column folds away with the others: model, TTFT and tokens/s stay.
        small = await browser.new_tab(width=420, height=900)
        await small.goto(running.url + "/", ready=READY)
        hidden = await small.evaluate(
            "[...document.querySelectorAll('#board [data-col=users], #board [data-sort=users]')]"
            ".map((el) => getComputedStyle(el).display)"
        )
        assert hidden == ["none"] * 3  # the heading and two cells
        assert await small.evaluate("document.documentElement.scrollWidth") <= 420
        await small.screenshot(tmp_path / "leaderboard-420.png")
        assert browser.problems == []  # no exception, CSP violation or dialog
