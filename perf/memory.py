"""Memory and growth (docs/performance.md §4: RSS ≤ 100 MB with 1,000 models, no growth).

    python perf/memory.py [--models 1000] [--cycles 10000] [--quick]

Runs in a fresh process, the exporter's own parts, fed synthetic results (no network):

1. RSS after importing the exporter, then with ``--models`` models in a real ``Store`` (through
   its public API: targets, inventories, one recorded cycle each, persisted to SQLite) and
   the ``/metrics`` exposition rendered in both formats, plain and gzip — what a running
   exporter holds;
2. ``--cycles`` accelerated cycles: each records one model's new result (a new snapshot
   generation) and persists it; every 10th cycle ``/metrics`` is rendered (gzip, OpenMetrics),
   every 100th the inventory and loaded state are refreshed (a discovery). RSS, open file
   descriptors and asyncio tasks are sampled along the way; growth is the end against the
   sample after the first tenth (allocator warm-up).

``perf/soak.py`` covers the other half: the whole exporter against the emulator with faults.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

MIB = 2**20


def fake_result(model: str, i: int) -> Any:
    from ometer_exporter.client.replies import DoneFields
    from ometer_exporter.measure.results import ModelResult, RunResult

    base = 1000.0 + i
    runs = tuple(
        RunResult(
            warmup=False,
            sent_at=base,
            first_token_at=base + 0.05 + (i % 7) * 1e-3,
            first_content_at=base + 0.05,
            last_token_at=base + 1.3,
            ended_at=base + 1.31,
            done=DoneFields(done_reason="stop", total_duration=1_310_000_000,
                            load_duration=1_000_000, prompt_eval_count=26,
                            prompt_eval_duration=13_000_000, eval_count=128,
                            eval_duration=1_250_000_000 + i % 1000),
        )
        for _ in range(3)
    )
    now = time.time()
    return ModelResult(model, "chat", now - 4, now, runs)


def inventory(i: int, loaded: bool) -> Any:
    from ometer_exporter.store.records import Inventory

    return Inventory(family="llama", parameter_size="3.2B", quantization_level="Q4_K_M",
                     format="gguf", parameters=3_212_749_888, context_length=131072,
                     size_bytes=2_019_393_189 + i, modified_at=1.75e9 + i,
                     capabilities=("completion", "tools"), loaded=loaded,
                     vram_bytes=2_500_000_000 if loaded else None)  # fmt: skip


async def run(models: int, cycles: int) -> dict[str, Any]:
    gc.collect()
    rss_start = _common.read_rss()
    from ometer_exporter.store.records import Method, TargetState
    from ometer_exporter.store.store import Store
    from ometer_exporter.views.exposition import Exposition

    gc.collect()
    rss_imports = _common.read_rss()
    targets = 4
    method = Method("default", 128, "auto")
    tmp = Path(tempfile.mkdtemp(prefix="ometer-memory-"))
    store = Store(tmp)
    store.set_targets(TargetState(f"gpu-{t}", cloud=False, interval=600.0, method=method)
                      for t in range(targets))  # fmt: skip
    names = {t: [f"family{i // 7}/model-{i}:q{i % 5}" for i in range(t, models, targets)]
             for t in range(targets)}  # fmt: skip
    for t, ns in names.items():
        store.set_inventory(f"gpu-{t}", {n: inventory(i, True) for i, n in enumerate(ns)})
    for t, ns in names.items():
        for i, n in enumerate(ns):
            bench = store.record(f"gpu-{t}", fake_result(n, i), method)
            await store.persist(f"gpu-{t}", n, bench)
    exposition = Exposition()
    for om in (True, False):
        for gz in (True, False):
            await exposition.render(store.snapshot, openmetrics=om, gzip=gz)
    gc.collect()
    rss_models = _common.read_rss()
    print(f"  RSS: {rss_start / MIB:.1f} MiB at start, {rss_imports / MIB:.1f} MiB after "
          f"imports", flush=True)  # fmt: skip
    _common.figure(f"RSS with {models} models (store, SQLite, exposition in both formats)",
                   f"{rss_models / MIB:.1f} MiB (+{(rss_models - rss_imports) / MIB:.1f} MiB "
                   f"for the models)", "<= 100 MB", rss_models <= 100e6)  # fmt: skip

    samples: list[tuple[int, int, int, int]] = []
    flat = [(f"gpu-{t}", n, i) for t, ns in names.items() for i, n in enumerate(ns)]
    started = time.perf_counter()
    every = max(1, cycles // 20)
    for cycle in range(1, cycles + 1):
        target, name, i = flat[cycle % len(flat)]
        bench = store.record(target, fake_result(name, i + cycle), method)
        await store.persist(target, name, bench)
        if cycle % 10 == 0:
            await exposition.render(store.snapshot, openmetrics=True, gzip=True)
        if cycle % 100 == 0:
            t = cycle // 100 % targets
            loaded = {n: 2_500_000_000 for j, n in enumerate(names[t]) if (j + cycle) % 3}
            store.update_loaded(f"gpu-{t}", loaded)
            store.set_inventory(f"gpu-{t}", {n: inventory(j, n in loaded)
                                             for j, n in enumerate(names[t])})  # fmt: skip
            store.update_target(f"gpu-{t}", up=True, version="0.33.0",
                                last_cycle_duration=float(cycle % 17))  # fmt: skip
        if cycle % every == 0:
            samples.append((cycle, _common.read_rss(), _common.open_fds(),
                            len(asyncio.all_tasks())))  # fmt: skip
    elapsed = time.perf_counter() - started
    await store.close()
    # Steady state: the median RSS of the second half against that of the first half (after
    # the first tenth: allocator warm-up); single samples swing by a few MiB with the heap.
    settled = samples[max(1, len(samples) // 10):] or samples
    half = len(settled) // 2
    first = statistics.median(r for _, r, _, _ in settled[: max(1, half)])
    second = statistics.median(r for _, r, _, _ in settled[half:])
    growth = second - first
    peak = max(r for _, r, _, _ in samples)
    print(f"  {cycles} cycles in {elapsed:.1f} s ({cycles / elapsed:,.0f}/s); samples "
          f"(cycle, RSS MiB, fds, tasks): "
          + ", ".join(f"({c}, {r / MIB:.1f}, {f}, {t})"
                      for c, r, f, t in samples[:: max(1, len(samples) // 5)]),
          flush=True)  # fmt: skip
    _common.figure("RSS growth (median of the 2nd half − of the 1st, after the first tenth)",
                   f"{growth / MIB:+.2f} MiB ({first / MIB:.1f} → {second / MIB:.1f} MiB; "
                   f"peak {peak / MIB:.1f} MiB)", "no growth (< 2 MiB)",
                   growth < 2 * MIB)  # fmt: skip
    fds = sorted({f for _, _, f, _ in samples})
    tasks = sorted({t for _, _, _, t in samples})
    _common.figure("open file descriptors", f"{fds[0]}..{fds[-1]}", "constant",
                   len(fds) == 1)  # fmt: skip
    _common.figure("asyncio tasks", f"{tasks[0]}..{tasks[-1]}", "constant", len(tasks) == 1)
    return {"rss_start": rss_start, "rss_imports": rss_imports, "rss_models": rss_models,
            "growth": growth, "peak": peak, "fds": fds, "tasks": tasks,
            "cycles_per_s": cycles / elapsed, "samples": samples}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--cycles", type=int, default=10_000)
    p.add_argument("--quick", action="store_true", help="tiny size: 40 models, 300 cycles")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.cycles = 40, 300
    print(_common.machine(), flush=True)
    print(f"memory: {args.models} models, {args.cycles} accelerated cycles", flush=True)
    results = asyncio.run(run(args.models, args.cycles))
    if args.json:
        args.json.write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
