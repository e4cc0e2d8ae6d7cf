"""Scrape cost of ``/metrics`` with many models (docs/performance.md, "2. Scrape cost").

    python perf/scrape.py [--models 1000] [--capacity-levels 5] [--duration 10] [--quick]

A server process (not pinned, as in production) runs the exporter's real aiohttp app
(``web.app.create_app`` with its lifecycle, no targets) whose store holds a snapshot of
``--models`` models built directly with ``tests/factories.py``, spread over 4 targets, plus
the exporter's loop-lag probe and a 1 ms stall probe. Every series is present: each model also
has a load sweep of ``--capacity-levels`` levels (``factories.capacity``, the capacity series
of ``benchmark.capacity``); ``--capacity-levels 0`` gives the model set of the runs before
capacity existed. Load comes from other processes pinned
to core 1, always with Prometheus's ``Accept`` header and ``Accept-Encoding: gzip``:

1. cold: the first scrape (every model rendered) — its latency and the loop stall it caused;
2. open-loop 50 scrapes/s (``perf/openloop.py``) on an unchanged snapshot: p50/p99;
3. the same while one model's result changes every second (a new snapshot generation);
4. closed-loop throughput: ``wrk`` with 20 connections (skipped when wrk is missing);
5. re-render after one model's result changed (an ``Exposition`` warmed on the snapshot, then
   one entry replaced under a new generation), against a full prometheus_client render of the
   same series (``collector.full_render``), measured in this process.

The worst event-loop stall of each phase is measured inside the server process.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import _common
from aiohttp import web
from factories import capacity, entry, snapshot
from openloop import PROMETHEUS_ACCEPT, SCRAPE_HEADERS

from ometer_exporter.store.records import Snapshot
from ometer_exporter.views.exposition import Exposition
from ometer_exporter.views.reference import full_render

TARGETS = 4


def build_snapshot(models: int, levels: int = 0, generation: int = 1) -> Snapshot:
    """``models`` models spread over ``TARGETS`` targets, every series present; with a load
    sweep of ``levels`` levels (1, 2, 4, …) each when ``levels`` > 0."""
    concurrency = tuple(2**n for n in range(levels))
    entries = []
    for i in range(models):
        e = entry(f"gpu-{i % TARGETS}", f"family{i // 7}/model-{i}:q{i % 5}",
                  ttft=0.05 + i * 1e-4, tps=40 + i % 90)  # fmt: skip
        if levels:
            sweep = capacity(levels=concurrency, slots=1 + i % 8, tokens_per_second=40 + i % 90)
            e = replace(e, capacity=sweep, capacity_aborted=(("contended", i % 3),))
        entries.append(e)
    return snapshot(entries, generation=generation)


def changed(snap: Snapshot, index: int) -> Snapshot:
    """A new generation in which one model's latest result changed (as ``Store.record``)."""
    models = dict(snap.models)
    key = list(models)[index % len(models)]
    old = models[key]
    assert old.benchmark is not None
    new_bench = replace(old.benchmark, ttft=(old.benchmark.ttft or 0) * 1.01,
                        finished_at=time.time())  # fmt: skip
    models[key] = replace(old, benchmark=new_bench)
    return Snapshot(snap.generation + 1, snap.targets, MappingProxyType(models),
                    snap.config_reload_ok)  # fmt: skip


# -- the server process ----------------------------------------------------------------------


async def serve(models: int, levels: int, port: int) -> None:
    from ometer_exporter.config.load import load_settings
    from ometer_exporter.config.settings import Overrides
    from ometer_exporter.web.app import EXPORTER, create_app, settle_memory

    storage = tempfile.mkdtemp(prefix="ometer-bench-")
    overrides = Overrides(storage_path=storage, listen_address=f"127.0.0.1:{port}")
    settings = replace(load_settings(overrides, {}), targets=())  # no benchmark loop runs
    app = create_app(settings, overrides=overrides, env={})
    exporter = app[EXPORTER]
    probe = _common.StallProbe()
    churn: list[asyncio.Task[None]] = []

    async def churn_loop(every: float) -> None:
        i = 0
        while True:
            await asyncio.sleep(every)
            exporter.store._snapshot = changed(exporter.store.snapshot, i)
            i += 1

    async def stall(request: web.Request) -> web.Response:
        return web.json_response(probe.mark())

    async def set_churn(request: web.Request) -> web.Response:
        for task in churn:
            task.cancel()
        churn.clear()
        every = float(request.query.get("every", "0"))
        if every > 0:
            churn.append(asyncio.create_task(churn_loop(every)))
        return web.json_response({"every": every})

    async def rss(request: web.Request) -> web.Response:
        return web.json_response({"rss": _common.read_rss(), "peak": _common.read_peak_rss()})

    app.router.add_get("/-/perf/stall", stall)
    app.router.add_post("/-/perf/churn", set_churn)
    app.router.add_get("/-/perf/rss", rss)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()  # the lifecycle: the loop-lag probe, an empty restore, ready
    try:
        await exporter.wait_ready()
        # The snapshot is built directly: the store's current snapshot.
        exporter.store._snapshot = build_snapshot(models, levels)
        settle_memory()  # as start-up does once results are restored
        probe.start()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()
    finally:
        probe.stop()
        await runner.cleanup()


# -- the driver ------------------------------------------------------------------------------


def http(
    method: str, url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes, float]:
    """A blocking request (outside the measured phases): status, headers, body, seconds."""
    import urllib.request

    req = urllib.request.Request(url, method=method, headers=headers or {})
    started = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as response:
        body = response.read()
        return response.status, dict(response.headers), body, time.perf_counter() - started


class Stall:
    """The server's loop stall over a phase: worst, worst net of waiting for a CPU, CPU wait."""

    def __init__(self, data: dict[str, float]) -> None:
        self.worst = data["worst_stall_s"] * 1e3
        self.net = data["worst_stall_net_s"] * 1e3
        self.cpu_wait = data["cpu_wait_s"] * 1e3

    def __str__(self) -> str:
        return (f"{self.worst:.2f} ms (net of waiting for a CPU {self.net:.2f} ms; "
                f"the loop thread waited {self.cpu_wait:.0f} ms for a CPU in all)")  # fmt: skip

    def as_dict(self) -> dict[str, float]:
        return {"worst_ms": self.worst, "net_ms": self.net, "cpu_wait_ms": self.cpu_wait}


def stall(base: str) -> Stall:
    return Stall(json.loads(http("GET", base + "/-/perf/stall")[2]))


def open_loop(url: str, rate: float, duration: float) -> dict[str, Any]:
    args = [sys.executable, str(_common.PERF / "openloop.py"), "--url", url, "--rate",
            str(rate), "--duration", str(duration), "--scrape"]  # fmt: skip
    result: dict[str, Any] = _common.run_json(args, cpu=1)
    return result


def wrk(url: str, duration: float, connections: int = 20) -> dict[str, float] | None:
    exe = shutil.which("wrk")
    if exe is None:
        return None
    args = [exe, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
            "-H", "Accept-Encoding: gzip", "-H", f"Accept: {PROMETHEUS_ACCEPT}", url]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, check=True,
                          preexec_fn=lambda: _common.pin(1))  # fmt: skip
    out = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:.*", out)
    result = {"rps": rps, "non2xx": float(errors.group(1)) if errors else 0.0,
              "socket_errors": 1.0 if socket_errors else 0.0}  # fmt: skip
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
            result[f"p{q}_ms"] = float(m.group(1)) * scale
    return result


async def rerender_cost(models: int, levels: int, reps: int) -> dict[str, float]:
    """Median seconds: one changed model re-rendered (gzip, as scraped) vs full_render."""
    snap = build_snapshot(models, levels)
    exposition = Exposition()
    for om in (True, False):
        await exposition.render(snap, openmetrics=om, gzip=True)
    cold = Exposition()
    started = time.perf_counter()
    await cold.render(snap, openmetrics=True, gzip=True)
    cold_s = time.perf_counter() - started
    partial: list[float] = []
    for i in range(reps):
        snap = changed(snap, i * 37)
        started = time.perf_counter()
        await exposition.render(snap, openmetrics=True, gzip=True)
        partial.append(time.perf_counter() - started)
    full: list[float] = []
    for _ in range(max(3, reps // 4)):
        started = time.perf_counter()
        full_render(snap, openmetrics=True)
        full.append(time.perf_counter() - started)
    return {"rerender_s": statistics.median(partial), "full_s": statistics.median(full),
            "cold_s": cold_s}  # fmt: skip


def check_body(url: str) -> tuple[int, int, str]:
    status, headers, body, _ = http("GET", url, SCRAPE_HEADERS)
    assert status == 200, status
    assert headers.get("Content-Encoding") == "gzip", headers
    text = gzip.decompress(body)
    return len(body), text.count(b"\n"), headers.get("Content-Type", "")


def closed_loop(base: str, url: str, duration: float) -> dict[str, Any]:
    """Phase 4: closed-loop throughput with wrk (nothing when wrk is missing)."""
    closed = wrk(url, duration)
    wrk_stall = stall(base)
    if closed is None:
        _common.figure("closed-loop (wrk, 20 connections)", "skipped: wrk is not installed")
        return {}
    ok = closed["rps"] >= 1000 and closed["non2xx"] == 0
    _common.figure("closed-loop (wrk -c20 -t1)",
                   f"{closed['rps']:.0f} scrapes/s, p50 {closed.get('p50_ms', 0):.2f} ms, "
                   f"p99 {closed.get('p99_ms', 0):.2f} ms",
                   ">= 1000/s", ok)  # fmt: skip
    # 20 requests in flight on one loop: a timer waits behind the whole batch (queueing,
    # not one scrape's stall); shown for information.
    _common.figure("  worst loop delay (20 scrapes queued at once)", str(wrk_stall))
    return {"wrk": closed, "wrk_stall": wrk_stall.as_dict()}


def run(models: int, levels: int, duration: float, rate: float, reps: int) -> dict[str, Any]:
    print(_common.machine(), flush=True)
    sweeps = f", a {levels}-level load sweep each" if levels else ", no load sweeps"
    print(f"scrape cost: {models} models over {TARGETS} targets{sweeps}, Prometheus Accept + "
          f"gzip; load generators pinned to core 1", flush=True)  # fmt: skip
    args = [sys.executable, str(Path(__file__)), "--serve", "--models", str(models),
            "--capacity-levels", str(levels), "--port", str(_common.free_port())]  # fmt: skip
    results: dict[str, Any] = {}
    with _common.running(args) as (printed, _proc):
        base = f"http://127.0.0.1:{printed}"
        url = base + "/metrics"
        time.sleep(0.1)
        stall(base)  # reset: start-up is not a scrape
        _, _, _, cold = http("GET", url, SCRAPE_HEADERS)
        cold_stall = stall(base)
        size, lines, ctype = check_body(url)
        _common.figure("body", f"{size / 1024:.0f} KiB gzip, {lines} lines, {ctype}")
        _common.figure("cold scrape (renders every model)", f"{cold * 1e3:.1f} ms")
        _common.figure("  worst loop stall", str(cold_stall), "<= 5 ms", cold_stall.worst <= 5)
        results["cold_ms"] = cold * 1e3
        results["cold_stall"] = cold_stall.as_dict()
        time.sleep(min(1.0, duration / 4))
        stall(base)
        time.sleep(min(3.0, duration / 4))
        idle = stall(base)
        _common.figure("loop stall with no scrapes (probe baseline)", str(idle))
        results["idle_stall"] = idle.as_dict()

        def phase(key: str, label: str, *, churn_every: float = 0.0) -> None:
            """One open-loop phase: latency, errors and the worst loop stall it caused."""
            if churn_every:
                http("POST", base + f"/-/perf/churn?every={churn_every:g}")
            load = open_loop(url, rate, duration)
            if churn_every:
                http("POST", base + "/-/perf/churn?every=0")
            worst = stall(base)
            ok = load["p99_s"] <= 0.015 and load["errors"] == 0
            _common.figure(f"open-loop {rate:g}/s, {label}",
                           _common.summary(load["latency_s"]) + f", errors {load['errors']}",
                           "p99 <= 15 ms", ok)  # fmt: skip
            _common.figure("  worst loop stall", str(worst), "<= 5 ms", worst.worst <= 5)
            results[key] = {k: v for k, v in load.items() if k != "latency_s"}
            results[f"{key}_stall"] = worst.as_dict()

        phase("static", "unchanged snapshot")
        phase("churn", "one result changing every 1 s", churn_every=1.0)

        results.update(closed_loop(base, url, duration))
        rss = json.loads(http("GET", base + "/-/perf/rss")[2])
        print(f"  ({_common.load()} at the end)")
        _common.figure("server RSS", f"{rss['rss'] / 2**20:.1f} MiB "
                       f"(peak {rss['peak'] / 2**20:.1f})")  # fmt: skip

    cost = asyncio.run(rerender_cost(models, levels, reps))
    ratio = cost["rerender_s"] / cost["full_s"]
    _common.figure("full prometheus_client render (full_render)", f"{cost['full_s'] * 1e3:.1f} ms")
    _common.figure("cold Exposition render + gzip", f"{cost['cold_s'] * 1e3:.1f} ms")
    _common.figure("re-render after one change + gzip", f"{cost['rerender_s'] * 1e3:.2f} ms "
                   f"= {ratio:.4f} of a full render", "<= 0.1", ratio <= 0.1)  # fmt: skip
    results["render"] = cost | {"ratio": ratio}
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", type=int, default=1000)
    p.add_argument(
        "--capacity-levels", type=int, default=5,
        help="levels of each model's load sweep (0: none, the model set before capacity)",
    )  # fmt: skip
    p.add_argument("--duration", type=float, default=10.0, help="seconds per load phase")
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--reps", type=int, default=20, help="re-render repetitions")
    p.add_argument("--quick", action="store_true", help="tiny size: 50 models, 1 s phases")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.models, args.capacity_levels, args.port))
        return 0
    if args.quick:
        args.models, args.duration, args.reps = min(args.models, 50), 1.0, 3
    results = run(args.models, args.capacity_levels, args.duration, args.rate, args.reps)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
