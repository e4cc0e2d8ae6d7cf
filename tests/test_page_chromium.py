"""The landing page in real headless Chromium: the leaderboard shows the emulator's models, sorts
on a click (the same orders as ``/export?sort=``), filters by target, refreshes itself keeping
sort and filter, and shows a model name made of HTML as text."""

from __future__ import annotations

import os
import shutil
import struct

import pytest
from chromium import CHROMIUM, Tab, chromium
from ollama_emulator import chat_model, embedding_model, thinking_model

# scripts/test installs chromium; only a bare `pytest` on a machine without it may skip, never CI.
pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None and not os.environ.get("CI"),
    reason="needs Debian's chromium (scripts/test installs it)",
)

EVIL = "<img src=x onerror=alert(1)>:latest"
READY = "document.documentElement.dataset.ready === '1'"
VISIBLE = """[...document.querySelectorAll('#rows-chat tr[data-target]')]
    .filter((tr) => !tr.hidden).map((tr) => [tr.dataset.target, tr.dataset.model])"""


def config(local: str, gpu: str) -> str:
    return f"""
benchmark: {{interval: 1h, jitter: 0%, idle_before: 0s, runs: 1, num_predict: 16}}
targets:
  - {{name: local, url: "{local}", select: all}}
  - {{name: gpu, url: "{gpu}", select: all}}
"""


async def leaderboard(emulator_factory, start_exporter):
    local = await emulator_factory(
        [
            chat_model("llama3.2:latest", decode_tokens_per_second=200.0, output_tokens=24),
            chat_model("llama3.2:1b", decode_tokens_per_second=320.0, output_tokens=24,
                       prefill_tokens_per_second=6000.0),
            thinking_model("qwen3:8b", thinking_tokens=4, output_tokens=24),
            chat_model(EVIL, decode_tokens_per_second=120.0, output_tokens=24),
            embedding_model("nomic-embed-text:latest"),
        ],
        time_scale=0.01,
    )  # fmt: skip
    gpu = await emulator_factory(
        [
            chat_model("mistral:7b", family="mistral", decode_tokens_per_second=90.0,
                       output_tokens=24, size=4_100_000_000),
            chat_model("phi3:mini", family="phi3", decode_tokens_per_second=150.0,
                       output_tokens=24, size=2_200_000_000),
        ],
        time_scale=0.01,
    )  # fmt: skip
    running = await start_exporter(config(local.url, gpu.url))
    await running.cycles("local", 1)
    await running.cycles("gpu", 1)
    return running


async def chat_order(running, query: str) -> list[list[str]]:
    """The chat rows of ``/export`` in its order: what the page must show."""
    rows = (await running.http.get(f"/export?{query}")).json()
    return [[r["target"], r["model"]] for r in rows if r["kind"] == "chat"]


async def open_page(tab: Tab, url: str) -> None:
    await tab.goto(url, ready=READY)


async def test_leaderboard_sorts_filters_refreshes_and_escapes(
    emulator_factory, start_exporter, tmp_path
) -> None:
    running = await leaderboard(emulator_factory, start_exporter)
    async with chromium(tmp_path / "profile") as browser:
        tab = await browser.new_tab()
        await open_page(tab, running.url + "/")

        # Every model of both emulators, best tokens/s first (the page's default sort).
        assert await tab.evaluate(VISIBLE) == await chat_order(running, "sort=tps")
        embeddings = await tab.evaluate(
            "[...document.querySelectorAll('#rows-embedding tr[data-target]')]"
            ".map((tr) => tr.dataset.model)"
        )
        assert embeddings == ["nomic-embed-text:latest"]

        # The HTML model name is text: no element was injected, no script ran.
        names = await tab.evaluate(
            "[...document.querySelectorAll('.model .name')].map((e) => e.textContent)"
        )
        assert EVIL in names
        assert await tab.evaluate("document.querySelectorAll('img').length") == 0
        cell = await tab.evaluate(
            "[...document.querySelectorAll('.model .name')]"
            f".find((e) => e.textContent === {EVIL!r}).innerHTML"
        )
        assert cell == "&lt;img src=x onerror=alert(1)&gt;:latest"

        # A click on a header sorts best first; a second click reverses.
        await tab.click('th[data-sort="ttft"]')
        assert await tab.evaluate(VISIBLE) == await chat_order(running, "sort=ttft")
        assert await tab.evaluate(
            "document.querySelector('th[data-sort=\"ttft\"]').getAttribute('aria-sort')"
        ) == "ascending"  # fmt: skip
        await tab.click('th[data-sort="ttft"]')
        assert await tab.evaluate(VISIBLE) == await chat_order(running, "sort=ttft&reverse=1")
        await tab.click('th[data-sort="name"]')
        by_name = await chat_order(running, "sort=name")
        assert await tab.evaluate(VISIBLE) == by_name
        assert by_name != await chat_order(running, "sort=tps")  # the click really reordered

        # Filter by target (the select), then a refresh keeps sort and filter.
        await tab.evaluate(
            """(() => { const s = document.getElementById('target-filter');
                        s.value = 'gpu'; s.dispatchEvent(new Event('change')); })()"""
        )
        gpu_by_name = await chat_order(running, "sort=name&target=gpu")
        assert await tab.evaluate(VISIBLE) == gpu_by_name
        assert await tab.evaluate("document.getElementById('rows-embedding').querySelector("
                                  "'.group-head').hidden")  # fmt: skip
        assert await tab.evaluate("location.hash") == "#sort=name&target=gpu"

        running.exporter.store.update_target("gpu", version="9.9.9-refreshed")
        await tab.evaluate("document.getElementById('rows-chat').dataset.stale = '1'")
        await tab.evaluate("window.ometer.refresh()")
        assert await tab.evaluate("document.getElementById('rows-chat').dataset.stale") is None
        assert "9.9.9-refreshed" in await tab.evaluate(
            "document.getElementById('targets').textContent"
        )
        assert await tab.evaluate(VISIBLE) == gpu_by_name
        assert await tab.evaluate("document.getElementById('target-filter').value") == "gpu"

        # The state in the URL survives a reload.
        await tab.evaluate("history.replaceState(null, '', '#sort=tps&reverse=1');"
                           "document.documentElement.dataset.ready = 'reloading'")  # fmt: skip
        await tab.send("Page.reload")
        await tab.wait_for(READY)
        assert await tab.evaluate(VISIBLE) == await chat_order(running, "sort=tps&reverse=1")

        shot = await tab.screenshot(tmp_path / "leaderboard.png")
        assert shot[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", shot[16:24])
        assert (width, height) == (1360, 900)
        assert browser.problems == []  # no exception, CSP violation or dialog


async def test_page_before_any_result(emulator_factory, start_exporter, tmp_path) -> None:
    gpu = await emulator_factory([], time_scale=0.01)  # up, but no model pulled yet
    running = await start_exporter(config("http://127.0.0.1:9", gpu.url))
    await running.cycles("gpu", 1)
    async with chromium(tmp_path / "profile") as browser:
        tab = await browser.new_tab()
        await open_page(tab, running.url + "/")
        states = await tab.evaluate(
            "[...document.querySelectorAll('.target')].map((t) => "
            "[t.dataset.name, t.querySelector('.state').textContent])"
        )
        assert states == [["gpu", "up"], ["local", "down"]]
        assert await tab.evaluate("!document.getElementById('no-rows').hidden")
        links = await tab.evaluate("[...document.querySelectorAll('nav a')].map((a) => a.href)")
        assert links == [f"{running.url}/metrics", f"{running.url}/export?format=json",
                         f"{running.url}/export?format=csv"]  # fmt: skip
        assert browser.problems == []
