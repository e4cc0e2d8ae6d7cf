"""The load sweep against the emulator's batching runners, with its per-request ground truth."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from ollama_emulator import chat_model
from service import until

from ometer_exporter.client.ollama import OllamaClient
from ometer_exporter.config.settings import BenchmarkSettings, CapacitySettings, Slo
from ometer_exporter.measure.capacity import Level, Sweep, percentile, tpot
from ometer_exporter.measure.model import measure_capacity
from ometer_exporter.measure.results import RunResult

LLAMA = "llama3.2:latest"
SLO = Slo(ttft=0.5, tpot=0.025, attainment=0.95)
SETTINGS = BenchmarkSettings(
    capacity=CapacitySettings(enabled=True, concurrency=(1, 2, 4, 8), requests_per_level=8,
                              num_predict=128, slo=SLO),
)  # fmt: skip


def model() -> object:
    # 64 tokens at 100 tok/s: 0.64 s alone; each extra sequence slows every one by 20 %.
    return chat_model(LLAMA, decode_tokens_per_second=100.0, output_tokens=64,
                      batch_slowdown=0.2, prefill_tokens_per_second=20_000.0)  # fmt: skip


MODEL_JSON = {"name": LLAMA, "decode_tokens_per_second": 100.0, "output_tokens": 64,
              "batch_slowdown": 0.2, "prefill_tokens_per_second": 20_000.0}  # fmt: skip


@contextlib.asynccontextmanager
async def emulator_process(tmp_path: Path, slots: int) -> AsyncIterator[str]:
    """The emulator in its own process (so its streams never delay our client's reads), the
    model pinned in memory; its ground truth comes over /_emulator/records."""
    models = tmp_path / f"models-{slots}.json"
    models.write_text(json.dumps([MODEL_JSON]))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollama_emulator", "--port", "0", "--models", str(models),
        "--num-parallel", str(slots), "--control", stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode().strip()
        async with httpx.AsyncClient(base_url=url) as http:
            await http.post("/_emulator/preload", json={"name": LLAMA, "keep_alive": -1})
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 10)


async def ground_truth(url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url) as http:
        records = (await http.get("/_emulator/records")).json()
    return [r for r in records if r["path"] == "/api/chat" and r["body"].get("messages")]


def level_records(records: list[dict[str, Any]], level: Level) -> list[dict[str, Any]]:
    """One level's requests (perf_counter is the system's monotonic clock in both processes)."""
    return [r for r in records if level.started <= r["socket_arrived"] <= level.ended]


def check_against_ground_truth(records: list[dict[str, Any]], result: Sweep) -> None:
    """The issue's bounds: each level's p95 TTFT within 5 ms + 5 % of the emulator's truth, its
    output tokens/s within 3 %. The truth is taken at the emulator's connections (its first
    read of a request, the first token chunk handed to its transport), so it holds all a client
    can see but the two trips over loopback."""
    for level in result.levels:
        mine = level_records(records, level)
        assert len(mine) == len(level.runs) == max(8, level.concurrency)
        ttft = level.quantiles(lambda r: r.ttft)[0.95]
        truth = percentile([r["socket_first_chunk"] - r["socket_arrived"] for r in mine], 0.95)
        assert truth is not None
        assert abs(ttft - truth) <= 0.005 + 0.05 * truth, (level.concurrency, ttft, truth)
        window = max(r["finished"] for r in mine) - min(r["socket_arrived"] for r in mine)
        rate = sum(r["eval_count"] for r in mine) / window
        assert level.output_tokens_per_second == pytest.approx(rate, rel=0.03)


async def test_max_concurrency_and_slots_of_a_batching_and_a_serial_model(tmp_path) -> None:
    async def measure(slots: int) -> tuple[Sweep | None, list[dict[str, Any]]]:
        async with (
            emulator_process(tmp_path, slots) as url,
            OllamaClient(url, connections=8) as client,
        ):
            result = await measure_capacity(client, LLAMA, ["completion"], SETTINGS, pause=0.2)
            return result, await ground_truth(url)

    four, truth4 = await measure(4)  # one at a time: two sweeps would share two cores
    one, truth1 = await measure(1)
    assert four is not None and one is not None and four.aborted is None is one.aborted
    assert [lv.concurrency for lv in four.levels] == [1, 2, 4, 8]  # 8 fails: the knee
    assert [lv.concurrency for lv in one.levels] == [1, 2, 4]  # 2 fails, one more level
    assert (four.max_concurrency, one.max_concurrency) == (4, 1)
    assert (four.parallel_slots, one.parallel_slots) == (4, 1)
    # Batching shows in the decode rate: four sequences each decode at 1/1.6 the rate.
    alone = four.levels[0].quantiles(tpot)[0.5]
    together = four.levels[2].quantiles(tpot)[0.5]
    assert together / alone == pytest.approx(1.6, rel=0.08)
    check_against_ground_truth(truth4, four)
    check_against_ground_truth(truth1, one)


async def test_a_foreign_stream_aborts_the_sweep_as_contended(emulator_factory) -> None:
    emu = await emulator_factory([model()], num_parallel=4)
    emu.preload(LLAMA, keep_alive=-1)
    stop = asyncio.Event()

    async def user() -> None:
        """Someone else's requests, one after another, from the moment level 1 is running."""
        await until(lambda: any(r.body.get("messages") for r in emu.records_for("/api/chat")),
                    what="the sweep's first request")  # fmt: skip
        async with httpx.AsyncClient(base_url=emu.url, timeout=30,
                                     headers={"User-Agent": "someone"}) as http:  # fmt: skip
            while not stop.is_set():
                body = {"model": LLAMA, "stream": False, "options": {"num_predict": 16},
                        "messages": [{"role": "user", "content": "hello"}]}  # fmt: skip
                await http.post("/api/chat", content=json.dumps(body))

    someone = asyncio.create_task(user())
    async with OllamaClient(emu.url, connections=8) as client:
        result = await measure_capacity(client, LLAMA, ["completion"], SETTINGS, pause=0.2)
    stop.set()
    await someone
    assert result is not None and result.aborted == "contended"
    theirs = [r for r in emu.records_for("/api/chat") if r.headers.get("user-agent") == "someone"]
    for level in result.levels:  # nothing published overlaps the foreign requests
        assert not [r for r in theirs if level.started <= r.arrived <= level.ended]


def run(ttft: float, e2e: float, tokens: int) -> RunResult:
    from ometer_exporter.client.replies import DoneFields

    return RunResult(warmup=False, sent_at=0.0, first_token_at=ttft, ended_at=e2e,
                     done=DoneFields(eval_count=tokens))  # fmt: skip


def test_tpot_percentiles_attainment_and_goodput() -> None:
    assert tpot(run(0.2, 1.2, 101)) == pytest.approx(0.01)  # the first token excluded
    assert tpot(run(0.2, 1.2, 1)) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.95) == pytest.approx(3.85)
    runs = (run(0.2, 1.2, 101), run(0.8, 1.8, 101), run(0.2, 4.2, 101))  # ok, ttft, tpot
    level = Level(2, runs, started=0.0, ended=2.0, slo=SLO)
    assert level.attainment == pytest.approx(1 / 3) and not level.passed
    assert level.goodput == pytest.approx(0.5)
    assert level.output_tokens_per_second == pytest.approx(303 / 2.0)
    passing = Level(1, runs[:1], started=0.0, ended=1.2, slo=replace(SLO, attainment=1.0))
    assert passing.passed
    assert Sweep((passing, level), 0.0, 1.0).max_concurrency == 1
