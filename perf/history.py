"""``/api/history`` with a week of history (docs/performance.md, "6. History endpoint").

    python perf/history.py [--models 200] [--days 7] [--interval 600] [--requests 50] [--quick]

A server process runs the exporter's real aiohttp app (``web.app.create_app`` with its
lifecycle, no benchmark loop) over a SQLite file filled beforehand with ``--days`` of results
every ``--interval`` seconds for each of ``--models`` models (``tests/factories.py``, spread
over 4 targets: 201,600 rows by default), its snapshot holding those models. A client process
(this one, pinned to core 1) sends ``--requests`` sequential requests of each kind:

1. the page's sparklines: ``/api/history?points=30`` (every model, the newest 30 each);
2. the most one answer holds: ``/api/history?points=1000`` (the total bound applies);
3. a detail view: ``/api/history?target=…&model=…&points=1000`` (one model, 1000 points).

Each kind is measured three ways: ``cold`` (nothing cached: every model read from SQLite and
encoded), ``unchanged`` (nothing measured since: every series comes from the cache,
``views.history.HistoryCache``) and ``one new result`` (before each request one more model has
a new result, stored and in the snapshot, as a cycle leaves it: that model is read again); the
sparklines also right after the warm-up that start-up runs (``Exporter.warm_history``).
Target: each answers within 50 ms (p99). The worst event-loop stall of each phase is measured
inside the server process: the read and the JSON encoding run in worker threads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import _common
from aiohttp import web
from factories import entry, snapshot
from scrape import Stall, http

from ometer_exporter.store.database import POINT_COLUMNS, Database, point_values
from ometer_exporter.store.records import Snapshot

TARGETS = 4
TARGET_MS = 50.0


def build_snapshot(models: int) -> Snapshot:
    return snapshot([entry(f"gpu-{i % TARGETS}", f"model-{i}:latest") for i in range(models)])


def fill(directory: Path, snap: Snapshot, days: float, interval: float) -> int:
    """The SQLite file as the store writes it (``Database``'s schema and columns), in bulk."""
    path = directory / "ometer.sqlite3"
    database = Database(path, retention=days * 86400)
    database._connect()  # the schema, the point columns
    database.close()
    now = time.time()
    steps = int(days * 86400 / interval)
    names = ", ".join(name for name, _, _ in POINT_COLUMNS)
    marks = ", ".join("?" * (5 + len(POINT_COLUMNS)))
    with sqlite3.connect(path) as db:
        for (target, model), e in snap.models.items():
            assert e.benchmark is not None
            rows = []
            for i in range(steps):
                at = now - (steps - i) * interval
                record = replace(e.benchmark, started_at=at - 5, finished_at=at,
                                 tokens_per_second=90 + i % 20, ttft=0.2 + (i % 7) / 100,
                                 url=f"http://{target}:11434", ollama_version="0.33.0")  # fmt: skip
                values = point_values(record)
                rows.append((target, model, at, record.to_json(), None, *values))
            db.executemany(
                f"INSERT INTO results (target, model, finished_at, benchmark, inventory, "
                f"{names}) VALUES ({marks})",
                rows,
            )
    return steps * len(snap.models)


# -- the server process ----------------------------------------------------------------------


async def serve(models: int, storage: str, port: int) -> None:
    from ometer_exporter.config.load import load_settings
    from ometer_exporter.config.settings import Overrides
    from ometer_exporter.web.app import EXPORTER, create_app, settle_memory

    overrides = Overrides(storage_path=storage, listen_address=f"127.0.0.1:{port}")
    settings = replace(load_settings(overrides, {}), targets=())  # no benchmark loop runs
    app = create_app(settings, overrides=overrides, env={})
    exporter = app[EXPORTER]
    probe = _common.StallProbe()

    async def stall(request: web.Request) -> web.Response:
        return web.json_response(probe.mark())

    turn = [0]

    async def measured(request: web.Request) -> web.Response:
        """The next model has a new result: stored, then in the snapshot (as a cycle)."""
        store = exporter.store
        key = sorted(store.snapshot.models)[turn[0] % len(store.snapshot.models)]
        turn[0] += 1
        old = store.snapshot.models[key]
        assert old.benchmark is not None
        now = time.time()
        bench = replace(old.benchmark, started_at=now - 5, finished_at=now)
        models = dict(store.snapshot.models)
        models[key] = replace(old, benchmark=bench)
        store._snapshot = replace(store.snapshot, generation=store.snapshot.generation + 1,
                                  models=MappingProxyType(models))  # fmt: skip
        await store.persist(key[0], key[1], bench)
        return web.json_response({"model": key[1]})

    async def warm(request: web.Request) -> web.Response:
        """Forget the cache and warm it as start-up does (``Exporter.warm_history``)."""
        from ometer_exporter.views.history import HistoryCache

        exporter.history_cache = HistoryCache()
        started = time.perf_counter()
        exporter.warm_history()
        assert exporter._warming is not None
        await exporter._warming
        return web.json_response({"seconds": time.perf_counter() - started})

    app.router.add_get("/-/perf/stall", stall)
    app.router.add_post("/-/perf/measured", measured)
    app.router.add_post("/-/perf/warm", warm)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await exporter.wait_ready()
        exporter.store._snapshot = build_snapshot(models)  # the targets of the file's models
        await exporter.store.restore()  # each model's newest stored result, as at start-up
        settle_memory()
        probe.start()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        print(port, flush=True)
        await asyncio.Event().wait()
    finally:
        probe.stop()
        await runner.cleanup()


# -- the driver ------------------------------------------------------------------------------


def phase(
    base: str, path: str, requests: int, *, churn: bool
) -> tuple[list[float], dict[str, Any], Stall]:
    http("GET", base + "/-/perf/stall")  # reset the stall mark
    seconds = []
    body = b""
    for _ in range(requests):
        if churn:
            http("POST", base + "/-/perf/measured")
        status, _, body, took = http("GET", base + path)
        assert status == 200, (status, body[:200])
        seconds.append(took)
    answer: dict[str, Any] = json.loads(body)
    return seconds, answer, Stall(json.loads(http("GET", base + "/-/perf/stall")[2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--interval", type=float, default=600.0)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="20 models, 1 day, 5 requests")
    parser.add_argument("--serve", nargs=2, metavar=("STORAGE", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.models, args.serve[0], int(args.serve[1])))
        return
    if args.quick:
        args.models, args.days, args.requests = 20, 1.0, 5
    print(_common.machine(), flush=True)
    _common.pin(1)
    storage = Path(tempfile.mkdtemp(prefix="ometer-history-"))
    started = time.perf_counter()
    rows = fill(storage, build_snapshot(args.models), args.days, args.interval)
    size = (storage / "ometer.sqlite3").stat().st_size
    print(f"  stored: {rows} rows ({args.models} models, {args.days:g} days every "
          f"{args.interval:g} s), {size / 2**20:.1f} MiB, written in "
          f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
    server = [sys.executable, str(Path(__file__)), "--models", str(args.models),
              "--serve", str(storage), str(_common.free_port())]  # fmt: skip
    with _common.running(server, cpu=0) as (port, _):
        base = f"http://127.0.0.1:{port}"
        one = "/api/history?target=gpu-0&model=model-0:latest&points=1000"
        for name, path in (("sparklines, points=30", "/api/history?points=30"),
                           ("every model, points=1000 (bounded)", "/api/history?points=1000"),
                           ("one model's detail, points=1000", one)):  # fmt: skip
            cold, answer, stalled = phase(base, path, 1, churn=False)
            points = sum(len(s["t"]) for s in answer["series"])
            print(f"  {name}: {len(answer['series'])} series, {points} points", flush=True)
            _common.figure("cold (every model read)", f"{cold[0] * 1e3:.1f} ms",
                           f"within {TARGET_MS:g} ms", cold[0] * 1e3 <= TARGET_MS)  # fmt: skip
            print(f"    worst loop stall: {stalled}", flush=True)
            if path.endswith("points=30"):
                warmed = json.loads(http("POST", base + "/-/perf/warm")[2])["seconds"]
                first, _, _ = phase(base, path, 1, churn=False)
                _common.figure("after the start-up warm-up (which took "
                               f"{warmed * 1e3:.0f} ms in the background): first answer",
                               f"{first[0] * 1e3:.1f} ms", f"within {TARGET_MS:g} ms",
                               first[0] * 1e3 <= TARGET_MS)  # fmt: skip
            for how, churn in (("unchanged", False), ("one new result each", True)):
                seconds, _, stalled = phase(base, path, args.requests, churn=churn)
                p99 = _common.percentile(seconds, 99) * 1e3
                _common.figure(how, _common.summary(seconds), f"p99 within {TARGET_MS:g} ms",
                               p99 <= TARGET_MS)  # fmt: skip
                print(f"    worst loop stall: {stalled}", flush=True)
    print(f"  {_common.load()}", flush=True)


if __name__ == "__main__":
    main()
