"""The load sweep in the loop: opt-in, when due, only on an idle model, inside its window, with
the regular measurements paused meanwhile; stored across restarts; and a SIGTERM mid-sweep still
leaves the server as it was."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from ollama_emulator import OllamaEmulator, RequestRecord, chat_model
from service import until
from test_cli import exporter_process, free_port, terminate

import ometer_exporter.loop.worker as worker
from ometer_exporter.loop.sweeps import local_minutes

LLAMA = "llama3.2:latest"
SWEEP_TOKENS = 12  # the sweep's num_predict: tells its requests from the regular ones (8)


def config(url: str, *, select: str = "loaded", window: str = "", extra: str = "") -> str:
    return f"""
benchmark:
  interval: 300ms
  jitter: 0%
  idle_before: 0s
  runs: 1
  num_predict: 8
  capacity:
    enabled: true
    window: "{window}"
    concurrency: [1, 2, 4]
    requests_per_level: 4
    num_predict: {SWEEP_TOKENS}
    slo: {{ttft: 2s, tpot: 500ms}}
{extra}
targets:
  - name: local
    url: {url}
    select: {select}
"""


@pytest.fixture(autouse=True)
def short_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "SWEEP_PAUSE", 0.05)


def tokens(record: RequestRecord) -> object:
    return ((record.body or {}).get("options") or {}).get("num_predict")


def sweep_requests(records: list[RequestRecord]) -> list[RequestRecord]:
    return [r for r in records if tokens(r) == SWEEP_TOKENS]


async def until_unloaded_once(emu: OllamaEmulator, model: str, *, since: float) -> None:
    """The model leaves memory within 2 s, by the one unload (keep-alive 0) sent after
    ``since`` (the emulator's perf_counter)."""
    await until(lambda: not emu.loaded(), what="the model unloaded", within=2)
    unloads = [
        r for r in emu.records_for("/api/chat")
        if r.body == {"model": model, "messages": [], "keep_alive": 0} and r.arrived > since
    ]  # fmt: skip
    assert len(unloads) == 1


def most_at_once(records: list[RequestRecord]) -> int:
    edges = sorted([(r.arrived, 1) for r in records] + [(r.finished or 0.0, -1) for r in records])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


async def test_a_due_idle_model_is_swept_once_and_the_regular_loop_waits(
    emulator_factory, start_exporter
) -> None:
    emu = await emulator_factory([chat_model(LLAMA, output_tokens=SWEEP_TOKENS)], num_parallel=4)
    emu.preload(LLAMA, keep_alive=-1)
    running = await start_exporter(config(emu.url))
    key = ("local", LLAMA)
    await until(lambda: (e := running.exporter.store.snapshot.models.get(key)) is not None
                and e.capacity is not None, what="a published sweep", within=30)  # fmt: skip
    record = running.exporter.store.snapshot.models[key].capacity
    assert record is not None
    assert [level.concurrency for level in record.levels] == [1, 2, 4]
    assert record.max_concurrency == 4 and record.stopped is None
    assert [level.requests for level in record.levels] == [4, 4, 4]
    await running.cycles("local", 4)  # more cycles: the next sweep is a day away
    chats = emu.records_for("/api/chat")
    swept = sweep_requests(chats)
    assert len(swept) == 12  # one sweep: 4 requests at each of 3 levels, none retried
    assert most_at_once(swept) == 4
    start, end = min(r.arrived for r in swept), max(r.finished or 0.0 for r in swept)
    regular = [r for r in chats if tokens(r) == 8]
    assert len(regular) >= 4  # the regular loop measured before and after the sweep
    assert not [r for r in regular if start < r.arrived < end]  # and paused while it ran
    assert not [r for r in swept if "keep_alive" in (r.body or {})]  # never ours to set
    entry = running.exporter.store.snapshot.models[key]
    assert entry.capacity_due_at == pytest.approx(record.finished_at + 86400, abs=1)


async def test_no_sweep_outside_its_window_nor_of_a_model_not_loaded(
    emulator_factory, start_exporter
) -> None:
    emu = await emulator_factory([chat_model(LLAMA), chat_model("qwen3:0.6b")], num_parallel=4)
    emu.preload(LLAMA, keep_alive=-1)
    now = local_minutes(time.time())
    later, end = (now + 120) % 1440, (now + 121) % 1440  # a minute, two hours from now
    window = f"{later // 60:02d}:{later % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    running = await start_exporter(config(emu.url, window=window))
    await running.cycles("local", 4)
    assert not sweep_requests(emu.records_for("/api/chat"))
    entry = running.exporter.store.snapshot.models[("local", LLAMA)]
    assert entry.capacity is None and entry.capacity_due_at is not None
    assert 3600 < entry.capacity_due_at - time.time() < 3 * 3600  # when the window opens
    assert local_minutes(entry.capacity_due_at) == int(window[:2]) * 60 + int(window[3:5])
    assert not emu.records_for("/api/chat", "qwen3:0.6b")  # select: loaded: never loaded


async def test_a_stored_sweep_is_not_repeated_after_a_restart(
    emulator_factory, start_exporter, tmp_path: Path
) -> None:
    emu = await emulator_factory([chat_model(LLAMA, output_tokens=SWEEP_TOKENS)], num_parallel=4)
    emu.preload(LLAMA, keep_alive=-1)
    first = await start_exporter(config(emu.url), storage=tmp_path / "data")
    key = ("local", LLAMA)
    await until(lambda: (e := first.exporter.store.snapshot.models.get(key)) is not None
                and e.capacity is not None, what="a published sweep", within=30)  # fmt: skip
    record = first.exporter.store.snapshot.models[key].capacity
    await first.stop()
    swept = len(sweep_requests(emu.records_for("/api/chat")))
    again = await start_exporter(config(emu.url), storage=tmp_path / "data")
    assert again.exporter.store.snapshot.models[key].capacity == record
    await again.cycles("local", 3)
    assert len(sweep_requests(emu.records_for("/api/chat"))) == swept


async def test_sigterm_mid_sweep_exits_promptly_and_unloads_what_it_loaded(
    emulator_factory, tmp_path: Path
) -> None:
    # A slow model: the sweep's levels take seconds, so SIGTERM lands inside one.
    emu = await emulator_factory(
        [chat_model(LLAMA, decode_tokens_per_second=20.0, output_tokens=100)], num_parallel=4
    )
    path = tmp_path / "config.yaml"
    text = config(emu.url, select="all").replace(f"num_predict: {SWEEP_TOKENS}", "num_predict: 100")
    path.write_text(text.replace("concurrency: [1, 2, 4]", "concurrency: [2, 4]"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "OMETER_"))}
    async with exporter_process(
        "--config.file", str(path), "--web.listen-address", f"127.0.0.1:{port}",
        "--storage.path", str(tmp_path / "data"), env=env,
    ) as process:  # fmt: skip

        def sweeping() -> bool:
            swept = [r for r in emu.records_for("/api/chat") if tokens(r) == 100]
            return sum(r.finished is None for r in swept) >= 2  # level 2 or more, in flight

        await until(sweeping, what="the sweep's concurrent requests", within=60)
        assert emu.loaded()  # the sweep loaded the model (select: all) ...
        signalled = time.perf_counter()  # the emulator's clock: it runs in this process
        seconds = await terminate(process)
    assert seconds < 5
    # The killed process's streams end at the emulator's next write, as Ollama's do: then the
    # keep-alive 0 our unload set takes the model out of memory.
    await until_unloaded_once(emu, LLAMA, since=signalled)  # ... and unloaded it on the way out
