"""Issue 17 in real headless Chromium: history on the page and colours that mean something.

The exporter benchmarks the emulator for three cycles; between the first and the second the
server's Ollama version changes, between the second and the third one model's decode rate drops
(100 → 30 tokens/s). Then each model's sparklines hold three points, the slowed model shows
↓ in colour of the configured thresholds, its detail view draws four charts with the version
marker, the 10 s refresh keeps it all, and at 420 px the model, TTFT and tokens/s stay in view."""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import time

import pytest
from chromium import CHROMIUM, Tab, chromium
from ollama_emulator import chat_model
from service import Running

from ometer_exporter.config.settings import DisplaySettings
from ometer_exporter.views import grades

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None and not os.environ.get("CI"),
    reason="needs Debian's chromium (scripts/test installs it)",
)

READY = "document.documentElement.dataset.ready === '1'"
DRAWN = "document.documentElement.dataset.history === '1'"
SLOWED, STEADY = "llama3.2:latest", "phi3:mini"
DISPLAY = DisplaySettings(ttft=(0.5, 2.0), tokens_per_second=(80.0, 40.0))


def config(url: str, interval: str) -> str:
    return f"""
benchmark: {{interval: {interval}, jitter: 0%, idle_before: 0s, runs: 1, num_predict: 16}}
targets:
  - {{name: local, url: "{url}", select: all}}
display:
  grading: absolute
  thresholds: {{ttft: [500ms, 2s], tokens_per_second: [80, 40]}}
"""


async def three_cycles(emulator_factory, start_exporter) -> Running:
    slowed = chat_model(SLOWED, decode_tokens_per_second=100.0, output_tokens=24)
    steady = chat_model(STEADY, family="phi3", decode_tokens_per_second=200.0, output_tokens=24)
    # Scaled decode of 24 tokens must last long enough (tens of ms) for a steady rate: the
    # arrow compares two rates within 5 %.
    emulator = await emulator_factory([slowed, steady], time_scale=0.2)
    running = await start_exporter(config(emulator.url, "2s"))
    assert running.exporter.settings.display == DISPLAY
    await running.cycles("local", 1)
    emulator.version = "0.34.0"  # an upgrade of the server before the second
    await running.cycles("local", 2)
    slowed.decode_tokens_per_second = 30.0  # the third finds it slower
    await running.cycles("local", 3)
    # No fourth cycle while the browser looks: the same targets, measured again in an hour.
    running.config.write_text(config(emulator.url, "1h"))
    assert await running.exporter.reload() is None

    # Each result is written to SQLite after its cycle: poll the endpoint until all are there.
    deadline = time.monotonic() + 10
    while True:
        series = (await running.http.get("/api/history")).json()["series"]
        counts = sorted(len(s["t"]) for s in series)
        if counts == [3, 3] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert counts == [3, 3], series
    return running


def cells(column: str) -> str:
    """Per chat row: model, sparkline points, arrow, grade class and shown value of a column."""
    return f"""[...document.querySelectorAll('#rows-chat tr[data-target]')].map((tr) => {{
        const td = tr.querySelector('td[data-col="{column}"]');
        const svg = td.querySelector('svg.sparkline');
        return [tr.dataset.model, svg ? Number(svg.dataset.points) : -1,
                td.querySelector('.arrow').textContent.trim(),
                ['good', 'fair', 'poor'].find((g) => td.classList.contains(g)) || '',
                td.querySelector('.v').textContent];
    }})"""


async def test_history_sparklines_arrows_colours_and_detail(
    emulator_factory, start_exporter, tmp_path
) -> None:
    running = await three_cycles(emulator_factory, start_exporter)
    export = {r["model"]: r for r in (await running.http.get("/export")).json()}
    assert export[SLOWED]["tps"] < 40.0 < 80.0 < export[STEADY]["tps"]  # poor and good
    async with chromium(tmp_path / "profile") as browser:
        tab = await browser.new_tab()
        await tab.goto(running.url + "/", ready=READY)
        await tab.wait_for(DRAWN)

        tps = {model: rest for model, *rest in await tab.evaluate(cells("tps"))}
        ttft = {model: rest for model, *rest in await tab.evaluate(cells("ttft"))}
        assert set(tps) == {SLOWED, STEADY}
        for model in (SLOWED, STEADY):
            assert tps[model][0] == 3 and ttft[model][0] == 3  # three cycles, three points
            # The colour is the configured thresholds' grade of the shown figure.
            assert tps[model][2] == grades.absolute("tps", export[model]["tps"], DISPLAY)
            assert ttft[model][2] == grades.absolute("ttft", export[model]["ttft"], DISPLAY)
        assert tps[SLOWED][1:3] == ["↓", "poor"]  # 100 → 30 tokens/s, under 40: red
        assert tps[STEADY][1:3] == ["→", "good"]  # 200 both times
        legend = await tab.evaluate("document.getElementById('legend').textContent")
        assert "display.grading: absolute" in legend and "tokens/s 80 or more" in legend

        # A click on the slowed model opens its detail: four charts of three points each, the
        # version change marked on each.
        await tab.click(f'#rows-chat tr[data-model="{SLOWED}"] .name')
        await tab.wait_for("document.getElementById('detail').dataset.drawn")
        charts = await tab.evaluate(
            """[...document.querySelectorAll('#detail figure.chart')].map((f) => [
                f.dataset.col, Number(f.querySelector('svg').dataset.points),
                f.querySelectorAll('line.change.version').length,
                f.querySelectorAll('path.chart-line').length,
                f.querySelector('svg').getBoundingClientRect().height > 50])"""
        )
        assert charts == [[c, 3, 1, 1, True] for c in ("ttft", "tps", "prefill", "load")]
        note = await tab.evaluate("document.getElementById('detail-note').textContent")
        assert "Ollama 0.33.0 → 0.34.0" in note
        assert await tab.evaluate("document.getElementById('detail').open")
        await tab.screenshot(tmp_path / "detail.png")
        await tab.click("#detail-close")
        assert not await tab.evaluate("document.getElementById('detail').open")

        # The 10 s refresh swaps the rows in: they get their sparklines and arrows again.
        await tab.evaluate("document.documentElement.dataset.history = 'stale'")
        await tab.evaluate("window.ometer.refresh()")
        await tab.wait_for(DRAWN)
        again = {model: rest for model, *rest in await tab.evaluate(cells("tps"))}
        assert again == tps
        assert browser.problems == []  # no exception, CSP violation or dialog


async def test_small_screen_keeps_model_ttft_and_tps(
    emulator_factory, start_exporter, tmp_path
) -> None:
    running = await three_cycles(emulator_factory, start_exporter)
    async with chromium(tmp_path / "profile") as browser:
        tab: Tab = await browser.new_tab(width=420, height=900)
        await tab.goto(running.url + "/", ready=READY)
        await tab.wait_for(DRAWN)
        boxes = await tab.evaluate(
            """[...document.querySelectorAll('#rows-chat tr[data-target]')].map((tr) =>
                ['.model .name', 'td[data-col="ttft"] .v', 'td[data-col="tps"] .v',
                 'td[data-col="tps"] svg.sparkline'].map((selector) => {
                    const r = tr.querySelector(selector).getBoundingClientRect();
                    return [r.left, r.right, r.width, r.height];
                }))"""
        )
        assert len(boxes) == 2
        for row in boxes:
            for left, right, width, height in row:
                assert width > 0 and height > 0 and left >= 0 and right <= 420, boxes
        hidden = await tab.evaluate(
            "[...document.querySelectorAll('#board .fold')]"
            ".every((el) => getComputedStyle(el).display === 'none')"
        )
        assert hidden
        assert await tab.evaluate("document.documentElement.scrollWidth") <= 420
        # No figure in the target cards breaks over two lines.
        lines = await tab.evaluate(
            "[...document.querySelectorAll('#targets time, #targets .muted, #targets .dd-nowrap')]"
            ".map((el) => [el.textContent, el.getClientRects().length])"
        )
        assert lines and all(count == 1 for _, count in lines), lines
        shot = await tab.screenshot(tmp_path / "leaderboard-420.png")
        assert struct.unpack(">II", shot[16:24]) == (420, 900)
        assert browser.problems == []
