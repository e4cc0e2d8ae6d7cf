"""The fault matrix: every fault the emulator can produce, against the running exporter.

For each fault: the run ends within its deadline with the right ``error_type``; the other model
on the same target and the model on another target keep their results; ``/metrics`` and
``/export`` answer promptly throughout; the error in ``/export`` is useful and has no secret.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from ollama_emulator import Fault, chat_model
from service import Running, sample

SECRET = "sk-ometer-fault-7d1e0c55a9"
A1, A2, B1 = "faulty:latest", "steady:latest", "elsewhere:latest"
TIMEOUTS = {"connect": 0.5, "first_byte": 0.5, "idle": 0.3, "total": 3.0}
PROMPT = 0.25  # seconds: /metrics and /export must answer within this during any fault


def config(url_a: str, url_b: str) -> str:
    timeouts = ", ".join(f"{k}: {v}s" for k, v in TIMEOUTS.items())
    return f"""
benchmark:
  interval: 1h
  idle_before: 0s  # measure a loaded model at once: these tests are about faults
  runs: 3
  num_predict: 16
  timeouts: {{{timeouts}}}
targets:
  - name: a
    url: {url_a}
    select: all
    api_key_env: KEY
  - name: b
    url: {url_b}
    select: all
"""


async def watch_endpoints(running: Running, stop: asyncio.Event) -> float:
    """The slowest /metrics or /export answer while the fault plays out."""
    worst = 0.0
    while not stop.is_set():
        for path in ("/metrics", "/export"):
            started = time.perf_counter()
            response = await running.http.get(path)
            assert response.status_code == 200
            worst = max(worst, time.perf_counter() - started)
        await asyncio.sleep(0.02)
    return worst


FAULTS = [
    ("400", Fault(kind="status", status=400, message=f"bad option from {SECRET}"), "http_4xx"),
    ("404", Fault(kind="status", status=404, message="model 'faulty' not found"), "not_found"),
    ("429", Fault(kind="status", status=429, message="too many requests"), "rate_limited"),
    ("500", Fault(kind="status", status=500, message="llama-server process has terminated"),
     "http_5xx"),
    ("503", Fault(kind="status", status=503), "http_5xx"),
    ("401", Fault(kind="status", status=401, message="unauthorized"), "auth"),
    ("403", Fault(kind="status", status=403), "auth"),
    ("410", Fault(kind="status", status=410, message="model retired"), "not_found"),
    ("malformed", Fault(kind="malformed_line", after_chunks=2), "bad_response"),
    ("truncated", Fault(kind="truncate", after_chunks=2), "stream_incomplete"),
    ("error-line", Fault(kind="error_line", after_chunks=2), "stream_error"),
    ("stall", Fault(kind="stall", after_chunks=1, seconds=1.5), "timeout"),
    ("no-headers", Fault(kind="no_headers", seconds=1.5), "timeout"),
    ("10MB-line", Fault(kind="huge_line", after_chunks=2, size=10 << 20), "bad_response"),
    ("reset", Fault(kind="reset", after_chunks=2), "stream_incomplete"),
]  # fmt: skip


@pytest.mark.parametrize(("fault", "error_type"), [(f, e) for _, f, e in FAULTS],
                         ids=[name for name, _, _ in FAULTS])  # fmt: skip
async def test_model_fault(emulator_factory, start_exporter, monkeypatch, fault,
                           error_type) -> None:  # fmt: skip
    monkeypatch.setattr("ometer_exporter.measure.model.RETRY_BASE", 0.05)
    a = await emulator_factory([chat_model(A1), chat_model(A2)])
    b = await emulator_factory([chat_model(B1)])
    for emu, name in ((a, A1), (a, A2), (b, B1)):
        emu.preload(name)
    fault.times = -1
    a.add_fault(A1, fault)
    running = await start_exporter(config(a.url, b.url), env={"KEY": SECRET})
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_endpoints(running, stop))
    await running.cycles("a", 1)
    await running.cycles("b", 1)
    stop.set()
    worst = await watcher

    rows = {r["model"]: r for r in (await running.http.get("/export")).json()}
    assert rows[A1]["success"] is False
    assert rows[A1]["error_type"] == error_type
    message = rows[A1]["error"]
    assert message.startswith("/api/chat: ") and len(message) > 20, message
    assert rows[A2]["success"] is True and rows[A2]["ttft"] is not None
    assert rows[B1]["success"] is True and rows[B1]["ttft"] is not None
    m = await running.metrics()
    errors = sample(m, "ometer_benchmark_errors_total", target="a", model=A1,
                    error_type=error_type)  # fmt: skip
    assert errors is not None and errors >= 1
    assert sample(m, "ometer_target_up", target="a") == 1
    # Every run ended within its deadline: 3 runs, each bounded by the longest phase.
    cycle = running.exporter.store.snapshot.targets["a"].last_cycle_duration
    assert cycle is not None and cycle < 3 * (TIMEOUTS["first_byte"] + 0.5) + 1.5
    assert worst < PROMPT, f"an endpoint took {worst:.3f}s during the fault"
    everything = (await running.http.get("/metrics")).text + str(rows)
    assert SECRET not in everything
    assert SECRET in str(a.records_for("/api/chat")[0].headers)  # it was sent, as Bearer


@pytest.mark.parametrize(
    ("url", "error_type", "text"),
    [
        ("http://127.0.0.1:{closed}", "connect", "cannot connect"),
        ("http://no-such-host.invalid:11434", "connect", "cannot connect"),
    ],
    ids=["refused", "dns"],
)
async def test_target_fault(emulator_factory, start_exporter, url, error_type, text) -> None:
    b = await emulator_factory([chat_model(B1)])
    b.preload(B1)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    running = await start_exporter(config(url.format(closed=closed), b.url),
                                   env={"KEY": SECRET})  # fmt: skip
    await running.cycles("b", 1)
    snap = running.exporter.store.snapshot
    await _until_down(running)
    state = running.exporter.store.snapshot.targets["a"]
    assert state.error is not None and text in state.error
    m = await running.metrics()
    assert sample(m, "ometer_target_up", target="a") == 0
    assert sample(m, "ometer_benchmark_success", target="b", model=B1) == 1
    assert snap.targets["b"].up is True


async def test_bad_cloud_key(emulator_factory, start_exporter) -> None:
    cloud = await emulator_factory([chat_model("gpt-oss:120b")], cloud=True, api_key="sk-right")
    b = await emulator_factory([chat_model(B1)])
    b.preload(B1)
    running = await start_exporter(config(cloud.url, b.url), env={"KEY": SECRET})
    await running.cycles("b", 1)
    await _until_down(running)
    state = running.exporter.store.snapshot.targets["a"]
    assert state.error is not None and "HTTP 401" in state.error and SECRET not in state.error
    async with httpx.AsyncClient(base_url=running.url) as http:
        page = (await http.get("/")).text
    assert SECRET not in page


async def _until_down(running: Running) -> None:
    from service import until

    await until(lambda: running.exporter.store.snapshot.targets["a"].up is False,
                what="target a marked down")  # fmt: skip
