"""The prompt-length axis on the page, in headless Chromium: a model's detail view draws its
TTFT against prompt length, with no JS or CSP error."""

from __future__ import annotations

import os
import shutil

import pytest
from chromium import CHROMIUM, chromium
from ollama_emulator import chat_model

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None and not os.environ.get("CI"),
    reason="needs Debian's chromium (scripts/test installs it)",
)

READY = "document.documentElement.dataset.ready === '1'"
LLAMA = "llama3.2:latest"


async def test_detail_draws_ttft_against_prompt_length(
    emulator_factory, start_exporter, tmp_path
) -> None:
    emu = await emulator_factory(
        [chat_model(LLAMA, prefill_tokens_per_second=20_000.0, prefill_quadratic=2e-8)],
        default_num_ctx=4096, time_scale=0.2,
    )  # fmt: skip
    emu.preload(LLAMA)
    running = await start_exporter(f"""
benchmark: {{interval: 1h, idle_before: 0s, runs: 1, prompt_tokens: [256, 1024, 2048, 8192]}}
targets: [{{name: local, url: "{emu.url}"}}]
""")
    await running.cycles("local", 1)
    rows = (await running.http.get("/export?view=prompt_length")).json()
    measured = [r for r in rows if r["time_to_first_token_seconds"] is not None]
    assert len(measured) == 3  # 8192 does not fit the 4096-token context
    async with chromium(tmp_path / "profile") as browser:
        tab = await browser.new_tab()
        await tab.goto(running.url + "/", ready=READY)
        await tab.click(f'#rows-chat tr[data-model="{LLAMA}"] .name')
        await tab.wait_for("!!document.querySelector('#detail figure[data-col=length]')")
        chart = await tab.evaluate(
            """(() => { const f = document.querySelector('#detail figure[data-col=length]');
                return [Number(f.querySelector('svg').dataset.points),
                        f.querySelectorAll('circle.chart-dot').length,
                        f.querySelector('figcaption').textContent,
                        f.querySelector('svg').getBoundingClientRect().height > 50]; })()"""
        )
        assert chart[0] == chart[1] == 3
        assert "per 1k prompt tokens" in chart[2] and chart[3]
        await tab.screenshot(tmp_path / "lengths.png")
        assert browser.problems == []  # no exception, CSP violation or dialog
