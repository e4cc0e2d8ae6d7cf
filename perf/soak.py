"""Soak: an accelerated run of many benchmark runs with random intermittent faults.

The exporter (scheduler, client, measurement, store with SQLite, /metrics and /export under
scrape) runs against the test emulator at a high speed, while a chaos task injects a random
fault into a random model every few milliseconds. It checks that resident memory (RSS), open
file descriptors and live asyncio tasks stay flat, and that every run ended (succeeded or
failed with an error type) — nothing hangs, nothing crashes.

    python perf/soak.py                # 10,000 runs (about two minutes on 2 cores)
    python perf/soak.py --runs 300     # the tiny version the test suite runs
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ollama_emulator import Fault, OllamaEmulator, chat_model, embedding_model

import ometer_exporter.measure.model as measure
from ometer_exporter.config.load import load_settings
from ometer_exporter.config.settings import Overrides
from ometer_exporter.web.app import EXPORTER, Exporter, create_app

FAULTS = (
    lambda: Fault(kind="status", status=random.choice([400, 404, 500, 503])),
    # A plain 429; the cloud's usage-limit 429 pauses a target for an hour (tested elsewhere).
    lambda: Fault(kind="status", status=429, message="too many requests"),
    lambda: Fault(kind="malformed_line", after_chunks=random.randint(0, 4)),
    lambda: Fault(kind="truncate", after_chunks=random.randint(0, 4)),
    lambda: Fault(kind="error_line", after_chunks=random.randint(0, 4)),
    lambda: Fault(kind="stall", after_chunks=1, seconds=0.3),  # > idle: a timeout
    lambda: Fault(kind="no_headers", seconds=0.3),  # > first_byte: a timeout
    lambda: Fault(kind="huge_line", after_chunks=1, size=2 << 20),
    lambda: Fault(kind="reset", after_chunks=random.randint(0, 4)),
    lambda: Fault(kind="force_reload"),
)


def _census() -> dict[str, int]:
    """Live objects by type (a cheap leak finder: tracemalloc slows the soak 50-fold)."""
    gc.collect()
    return dict(Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()))


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def total_runs(exporter: Exporter) -> int:
    return sum(e.counters.runs for e in exporter.store.snapshot.models.values())


def total_errors(exporter: Exporter) -> int:
    return sum(
        count for e in exporter.store.snapshot.models.values() for _, count in e.counters.errors
    )


async def serve_emulators(models_per_target: int, fault_every: float) -> None:
    """The child process: two emulators and the chaos task; prints their URLs, runs until killed.

    They live apart from the exporter so the exporter's memory, descriptors and tasks are
    measured alone (the emulator keeps its own ground-truth records and fault queues).
    """
    names = [f"model{i}:latest" for i in range(models_per_target)]
    emulators = []
    for _ in range(2):
        models = [
            chat_model(
                n,
                decode_tokens_per_second=20000.0,
                output_tokens=12,
                prefill_tokens_per_second=1e6,
                load_seconds=0.002,
            )
            for n in names
        ]
        models.append(embedding_model("embed:latest", prefill_tokens_per_second=1e6,
                                      load_seconds=0.002))  # fmt: skip
        emu = OllamaEmulator(models, max_records=200, default_keep_alive=0.5)
        await emu.start()
        emulators.append(emu)
    print(" ".join(emu.url for emu in emulators), flush=True)
    added = 0
    while True:
        emu = random.choice(emulators)
        emu.add_fault(random.choice(names), random.choice(FAULTS)())
        added += 1
        if added % 250 == 0:  # faults nobody consumed yet: drop them, keep the queue short
            for each in emulators:
                each.clear_faults()
        await asyncio.sleep(fault_every)


async def soak(
    runs: int, models_per_target: int, fault_every: float, *, trace: bool = False
) -> dict[str, float]:
    measure.RETRY_BASE = 0.01  # type: ignore[misc]  # accelerated: retries after ~10 ms
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve-emulators", "--models", str(models_per_target),
        "--fault-every", str(fault_every), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    urls = (await asyncio.wait_for(child.stdout.readline(), timeout=30)).decode().split()
    try:
        return await _soak(runs, urls, trace=trace)
    finally:
        child.terminate()
        await child.wait()


def soak_config(urls: list[str]) -> str:
    """Two targets on the emulators, cycling as fast as they can, with tight timeouts."""
    return f"""
benchmark:
  interval: 1ms
  jitter: 0%
  runs: 3
  num_predict: 12
  timeouts: {{connect: 1s, first_byte: 150ms, idle: 100ms, total: 2s}}
storage: {{retention: 1m}}
targets:
  - {{name: a, url: "{urls[0]}", select: all}}
  - {{name: b, url: "{urls[1]}", select: all}}
"""


async def _sample_until(
    exporter: Exporter, runs: int, helpers: list[asyncio.Task[None]], *, trace: bool
) -> tuple[list[tuple[int, int, int, int]], float]:
    """Sample RSS, fds and tasks until ``runs`` runs ended: the samples, and the seconds."""
    samples: list[tuple[int, int, int, int]] = []  # runs, rss, fds, tasks
    baseline: dict[str, int] | None = None
    started = time.monotonic()
    next_sample = 0
    deadline = started + max(60.0, runs / 20)  # far beyond the expected pace
    while (done := total_runs(exporter)) < runs:
        if time.monotonic() > deadline:
            raise SystemExit(f"soak stalled: {done} of {runs} runs after {deadline - started:.0f}s")
        if done >= next_sample:
            gc.collect()
            samples.append((done, rss_bytes(), open_fds(), len(asyncio.all_tasks())))
            if trace and len(samples) == 3:
                baseline = _census()
            next_sample += max(runs // 20, 1)
        for task in helpers:
            if task.done():
                task.result()  # a failed scrape ends the soak loudly
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    gc.collect()
    samples.append((total_runs(exporter), rss_bytes(), open_fds(), len(asyncio.all_tasks())))
    if trace and baseline is not None:
        now = _census()
        grown = sorted(((now[k] - baseline.get(k, 0), k) for k in now), reverse=True)
        print("objects that grew after warm-up:")
        for diff, kind in grown[:12]:
            print(f"{diff:>+9} {kind}")
    return samples, elapsed


async def _soak(runs: int, urls: list[str], *, trace: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(soak_config(urls))
        overrides = Overrides(config_file=str(config), storage_path=tmp)
        app = create_app(load_settings(overrides, {}), overrides=overrides, env={})
        exporter = app[EXPORTER]
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()  # the lifecycle starts: restore, then the scheduler
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        await exporter.wait_ready()
        stop = asyncio.Event()

        async def scrape() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=5) as http:
                while not stop.is_set():
                    for path in ("/metrics", "/export?format=csv", "/"):
                        response = await http.get(path, headers={"Accept-Encoding": "gzip"})
                        assert response.status_code == 200, path
                    await asyncio.sleep(0.05)

        helpers = [asyncio.create_task(scrape())]
        samples, elapsed = await _sample_until(exporter, runs, helpers, trace=trace)
        stop.set()
        await asyncio.gather(*helpers)
        errors = total_errors(exporter)
        await runner.cleanup()  # the lifecycle stops the scheduler and closes the store

    # Flatness: compare the first sample after warm-up (a fifth of the way) with the last.
    warm = samples[min(len(samples) - 1, max(1, len(samples) // 5))]
    last = samples[-1]
    print("runs      rss_mb  fds  tasks")
    for done, rss, fds, tasks in samples:
        print(f"{done:>6} {rss / 2**20:>9.1f} {fds:>4} {tasks:>6}")
    return {
        "runs": last[0],
        "seconds": elapsed,
        "runs_per_second": last[0] / elapsed,
        "errors": errors,
        "rss_start_mb": samples[0][1] / 2**20,
        "rss_warm_mb": warm[1] / 2**20,
        "rss_end_mb": last[1] / 2**20,
        "rss_growth_after_warmup_mb": (last[1] - warm[1]) / 2**20,
        "fds_warm": warm[2],
        "fds_end": last[2],
        "tasks_warm": warm[3],
        "tasks_end": last[3],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="benchmark runs (default 10000)")
    parser.add_argument("--models", type=int, default=6, help="chat models per target")
    parser.add_argument("--fault-every", type=float, default=0.02, help="seconds between faults")
    parser.add_argument("--trace", action="store_true",
                        help="print the object types that grew after warm-up")  # fmt: skip
    parser.add_argument("--serve-emulators", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_emulators:
        asyncio.run(serve_emulators(args.models, args.fault_every))
        return 0
    figures = asyncio.run(soak(args.runs, args.models, args.fault_every, trace=args.trace))
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}")  # fmt: skip
    for key, value in figures.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")
    # Limits: a few MB of allocator noise, a descriptor or task in flight at the sample instant.
    flat = (
        figures["rss_growth_after_warmup_mb"] < 10
        and figures["fds_end"] <= figures["fds_warm"] + 3
        and figures["tasks_end"] <= figures["tasks_warm"] + 3
        and figures["errors"] > 0  # the faults really happened
    )
    print(f"flat: {'yes' if flat else 'NO'}")
    return 0 if flat else 1


if __name__ == "__main__":
    raise SystemExit(main())
