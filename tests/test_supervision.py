"""Nothing one model or one bug does stops the rest: a worker that dies is restarted (and
``/-/ready`` says so meanwhile), and a cloud usage limit holds only that account's models."""

from __future__ import annotations

import pytest
from ollama_emulator import Fault, chat_model, cloud_stub_model
from service import sample

from ometer_exporter.config.settings import BenchmarkSettings, TargetSettings
from ometer_exporter.loop import scheduler
from ometer_exporter.loop.holds import UsageHolds
from ometer_exporter.loop.selection import target_state
from ometer_exporter.loop.worker import TargetWorker
from ometer_exporter.store.store import Store

LLAMA = "llama3.2:latest"
STUB = "gpt-oss:120b-cloud"


async def test_a_worker_that_dies_is_restarted_and_not_ready_meanwhile(
    emulator_factory, start_exporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler, "RESTART_DELAY", 0.5)
    real = TargetWorker._start
    deaths = {"n": 0}

    async def dies_once(self: TargetWorker) -> None:
        if deaths["n"] == 0:
            deaths["n"] += 1
            raise RuntimeError("a bug at start")
        await real(self)

    monkeypatch.setattr(TargetWorker, "_start", dies_once)
    emu = await emulator_factory([chat_model(LLAMA)], time_scale=0.01)
    emu.preload(LLAMA)
    running = await start_exporter(f"""
benchmark: {{interval: 1h, idle_before: 0s, runs: 1}}
targets: [{{name: local, url: "{emu.url}"}}]
""")
    assert deaths["n"] == 1
    assert (await running.http.get("/-/ready")).status_code == 503  # restart pending
    await running.cycles("local", 1, within=10)
    assert (await running.http.get("/-/ready")).status_code == 200
    m = await running.metrics()
    assert sample(m, "ometer_benchmark_loop_errors_total", target="local") == 1
    assert sample(m, "ometer_benchmark_success", target="local", model=LLAMA) == 1


async def test_a_cloud_usage_limit_holds_the_cloud_models_not_the_local_ones(
    emulator_factory, start_exporter
) -> None:
    emu = await emulator_factory([chat_model(LLAMA), cloud_stub_model(STUB)], time_scale=0.01)
    emu.add_fault(STUB, Fault(kind="status", status=429, times=-1))  # the account's window
    running = await start_exporter(f"""
benchmark: {{interval: 100ms, jitter: 0%, idle_before: 0s, runs: 1, num_predict: 16}}
targets:
  - {{name: local, url: "{emu.url}", select: all, include: [llama3.2, "{STUB}"]}}
""")
    await running.cycles("local", 4)
    local = emu.records_for("/api/chat", LLAMA)
    assert len([r for r in local if r.status == 200]) >= 4 * 2  # warmup + run, every cycle
    assert len(emu.records_for("/api/chat", STUB)) == 1  # asked once, then held
    snapshot = running.exporter.store.snapshot
    assert snapshot.models[("local", STUB)].status == "held"
    assert snapshot.models[("local", LLAMA)].status == "measured"
    state = snapshot.targets["local"]
    assert state.next_cycle_at is not None and state.last_cycle_started is not None
    assert state.next_cycle_at - state.last_cycle_started < 5  # the target is not held
    row = next(r for r in (await running.http.get("/export")).json() if r["model"] == STUB)
    assert row["status"] == "held" and row["error_type"] == "rate_limited"


async def test_a_usage_limit_holds_every_target_of_the_same_account(emulator_factory) -> None:
    first = await emulator_factory([chat_model("gpt-oss:120b")], cloud=True, api_key="sk-one")
    second = await emulator_factory([chat_model("gemma4:31b")], cloud=True, api_key="sk-one")
    other = await emulator_factory([chat_model("qwen3:8b")], cloud=True, api_key="sk-two")
    first.add_fault("gpt-oss:120b", Fault(kind="status", status=429, times=-1))
    holds = UsageHolds()
    store = Store()

    def worker(name: str, url: str, key: str) -> TargetWorker:
        target = TargetSettings(name=name, url=url, cloud=True, api_key=key, select="all",
                                benchmark=BenchmarkSettings(runs=1))  # fmt: skip
        return TargetWorker(target, store, holds=holds)

    workers = [worker("one", first.url, "sk-one"), worker("two", second.url, "sk-one"),
               worker("three", other.url, "sk-two")]  # fmt: skip
    store.set_targets(target_state(w.target) for w in workers)
    for w in workers:  # one after another: the first meets the limit before the others ask
        await w.cycle()
        await w.aclose()
    assert len(first.records_for("/api/chat")) == 1
    assert not second.records_for("/api/chat")  # same account: held without a request
    assert store.snapshot.models[("two", "gemma4:31b")].status == "held"
    assert len(other.records_for("/api/chat")) == 1  # another account: measured
    assert store.snapshot.models[("three", "qwen3:8b")].status == "measured"
