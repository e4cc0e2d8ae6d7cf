"""The first minutes on a workstation: a model is measured soon after it is loaded, never while
someone else uses it, a dead server shows within two polls, and the log says what happens.

The exporter's clock is scaled with the emulator's (``S``): its 15 s poll and 10 s quiet period
become 0.75 s and 0.5 s, so "within a minute" is within 3 s here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import pytest
from ollama_emulator import RequestRecord, chat_model
from service import sample, until

import ometer_exporter.loop.worker as worker

LLAMA = "llama3.2:latest"
S = 0.05  # seconds of the test per second of a real deployment
OURS = "ometer-exporter/"


def defaults(url: str, *, quiet: float = 10.0) -> str:
    """The built-in defaults (select: loaded, interval 10m); only idle_before is on the scaled
    clock, as the poll interval is (monkeypatched)."""
    return f"""
benchmark:
  idle_before: {quiet * S}s
targets:
  - name: local
    url: {url}
"""


@pytest.fixture
def scaled_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "PS_POLL_INTERVAL", 15.0 * S)


async def use(url: str, *, keep_alive: str | None = "5m", num_predict: int = 24) -> None:
    """A person's streaming chat request, as the Ollama CLI sends it."""
    body: dict[str, object] = {
        "model": LLAMA,
        "messages": [{"role": "user", "content": "tell me about the sea"}],
        "options": {"num_predict": num_predict},
    }
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    async with (
        httpx.AsyncClient(base_url=url, timeout=30, headers={"User-Agent": "ollama/cli"}) as http,
        http.stream("POST", "/api/chat", content=json.dumps(body)) as response,
    ):
        assert response.status_code == 200
        async for _ in response.aiter_lines():
            pass


def ours(records: list[RequestRecord]) -> list[RequestRecord]:
    return [r for r in records if r.headers.get("user-agent", "").startswith(OURS)]


def theirs(records: list[RequestRecord]) -> list[RequestRecord]:
    return [r for r in records if not r.headers.get("user-agent", "").startswith(OURS)]


def overlaps(a: RequestRecord, b: RequestRecord) -> bool:
    assert a.finished is not None and b.finished is not None
    return a.arrived < b.finished and b.arrived < a.finished


async def test_a_model_loaded_after_start_is_measured_within_a_minute(
    emulator_factory, start_exporter, scaled_poll
) -> None:
    emu = await emulator_factory([chat_model(LLAMA)], time_scale=S)
    running = await start_exporter(defaults(emu.url))
    started = time.monotonic()
    key = ("local", LLAMA)
    await until(lambda: key in running.exporter.store.snapshot.models, what="the first cycle")
    assert running.exporter.store.snapshot.models[key].status == "not_loaded"
    await asyncio.sleep(20 * S)  # the scenario: the user loads the model 20 s after start
    await use(emu.url, keep_alive="5m")

    def measured() -> bool:
        entry = running.exporter.store.snapshot.models[key]
        return entry.status == "measured" and entry.benchmark is not None

    await until(measured, within=60 * S, what="a TTFT within a minute of start")
    assert time.monotonic() - started <= 60 * S
    ttft = sample(
        await running.metrics(), "ometer_time_to_first_token_seconds", target="local", model=LLAMA
    )
    assert ttft is not None and ttft > 0
    mine = ours(emu.records_for("/api/chat"))
    assert len(mine) == 3 and all("keep_alive" not in r.body for r in mine)


async def test_a_model_in_use_is_measured_only_once_it_is_idle(
    emulator_factory, start_exporter, scaled_poll
) -> None:
    emu = await emulator_factory([chat_model(LLAMA)], time_scale=S)
    emu.preload(LLAMA)
    running = await start_exporter(defaults(emu.url))
    # Back-to-back use with pauses shorter than the quiet period, for about 2 polls' worth.
    deadline = time.monotonic() + 30 * S
    while time.monotonic() < deadline:
        await use(emu.url, keep_alive=None)
        await asyncio.sleep(2 * S)
    key = ("local", LLAMA)
    entry = running.exporter.store.snapshot.models[key]
    assert entry.benchmark is None and entry.status == "waiting_for_idle"
    assert not ours(emu.records_for("/api/chat"))
    await until(
        lambda: running.exporter.store.snapshot.models[key].status == "measured",
        within=40 * S,
        what="the measurement once the user stopped",
    )
    user = theirs(emu.records_for("/api/chat"))
    mine = ours(emu.records_for("/api/chat"))
    assert len(mine) == 3
    assert not [(a, b) for a in mine for b in user if overlaps(a, b)]


async def test_a_run_that_meets_someone_elses_request_is_discarded_and_retried(
    emulator_factory, start_exporter, monkeypatch
) -> None:
    monkeypatch.setattr(worker, "PS_POLL_INTERVAL", 0.1)
    # Four slots: the user's request runs beside ours (no queueing to see); only /api/ps's
    # expiry, unmoved when our run ends, shows it.
    model = chat_model(LLAMA, decode_tokens_per_second=400.0, output_tokens=400)
    emu = await emulator_factory([model], num_parallel=4)
    emu.preload(LLAMA)
    running = await start_exporter(f"""
benchmark: {{idle_before: 200ms, num_predict: 16, runs: 3}}
targets:
  - name: local
    url: {emu.url}
""")

    def ours_running() -> bool:
        return any(r.finished is None for r in ours(emu.records_for("/api/chat")))

    await until(ours_running, within=5, what="our first run")
    user = asyncio.create_task(use(emu.url, keep_alive=None, num_predict=400))  # ~1 s
    key = ("local", LLAMA)
    await until(
        lambda: running.exporter.store.snapshot.models[key].status == "contended",
        within=5,
        what="the contended attempt",
    )
    entry = running.exporter.store.snapshot.models[key]
    assert entry.benchmark is None  # nothing published from the attempt
    assert dict(entry.counters.discarded)["contended"] == 1
    assert len(ours(emu.records_for("/api/chat"))) == 1  # the attempt stopped at once
    await user
    await until(
        lambda: running.exporter.store.snapshot.models[key].status == "measured",
        within=10,
        what="the retry once idle",
    )
    published = ours(emu.records_for("/api/chat"))[1:]
    assert len(published) == 3
    assert not [
        (a, b) for a in published for b in theirs(emu.records_for("/api/chat")) if overlaps(a, b)
    ]
    m = await running.metrics()
    discarded = sample(
        m, "ometer_benchmark_discarded_runs_total", target="local", model=LLAMA, reason="contended"
    )
    assert discarded == 1


async def test_a_dead_server_is_down_within_two_polls_and_up_again(
    emulator_factory, start_exporter, scaled_poll
) -> None:
    emu = await emulator_factory([chat_model(LLAMA)], time_scale=S)
    port = int(emu.url.rsplit(":", 1)[1])
    running = await start_exporter(defaults(emu.url))
    state = lambda: running.exporter.store.snapshot.targets["local"]  # noqa: E731
    await until(lambda: state().up is True, what="the first cycle")
    await emu.close()
    killed = time.monotonic()
    await until(lambda: state().up is False, within=3 * 15 * S, what="the target to go down")
    assert time.monotonic() - killed <= 2 * 15 * S + 0.5
    m = await running.metrics()
    assert sample(m, "ometer_target_up", target="local") == 0
    row = (await running.http.get("/export")).json()[0]
    assert row["status"] == "target_down" and row["error"]
    await emu.start(port=port)
    restarted = time.monotonic()
    await until(lambda: state().up is True, within=3 * 15 * S, what="the target to come back")
    assert time.monotonic() - restarted <= 2 * 15 * S + 0.5
    assert sample(await running.metrics(), "ometer_target_up", target="local") == 1


async def test_the_log_narrates_the_first_run(
    emulator_factory, start_exporter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ometer_exporter")
    emu = await emulator_factory(
        [chat_model(LLAMA), chat_model("gemma3:1b"), chat_model("qwen3:0.6b")], time_scale=S
    )
    emu.preload(LLAMA)
    running = await start_exporter(f"""
benchmark: {{idle_before: 0s}}
targets:
  - name: local
    url: {emu.url}
    exclude: [qwen3]
""")
    await running.cycles("local", 1)
    lines = [r.getMessage() for r in caplog.records]
    start = next(line for line in lines if line.startswith("target local: http"))
    assert emu.url in start and "select loaded" in start and "interval 10m" in start
    cycle = next(line for line in lines if "cycle took" in line)
    assert f"measured 1 ({LLAMA})" in cycle
    assert "not loaded: gemma3:1b" in cycle and "excluded: qwen3:0.6b" in cycle
    assert "next cycle in" in cycle
