"""Synthetic store entries for tests that need a snapshot without running benchmarks."""

from __future__ import annotations

import time
from types import MappingProxyType

from ometer_exporter.store.capacity import CapacityLevel, CapacityRecord
from ometer_exporter.store.records import (
    TPOT_BUCKETS,
    TTFT_BUCKETS,
    Counters,
    Histogram,
    Inventory,
    Method,
    ModelEntry,
    Record,
    Snapshot,
    TargetState,
)


def entry(
    target: str,
    model: str,
    *,
    ttft: float = 0.25,
    tps: float = 101.5,
    size: int = 2_019_393_189,
    runs: int = 3,
    kind: str = "chat",
) -> ModelEntry:
    now = time.time()
    return ModelEntry(
        target=target,
        model=model,
        inventory=Inventory(
            family="llama",
            parameter_size="3.2B",
            quantization_level="Q4_K_M",
            format="gguf",
            parameters=3_212_749_888,
            context_length=131072,
            size_bytes=size,
            modified_at=now - 86400,
            capabilities=("completion", "tools"),
            loaded=True,
            vram_bytes=2_500_000_000,
        ),
        benchmark=Record(
            kind=kind,
            started_at=now - 5,
            finished_at=now,
            success=True,
            ttft=ttft,
            time_to_first_content=ttft,
            tokens_per_second=tps,
            client_tokens_per_second=100.25,
            prompt_tokens_per_second=2000.0,
            request_duration=1.5,
            queue_wait=0.001,
            run_ttft=(ttft,) * runs,
            run_tokens_per_second=(tps,) * runs,
        ),
        counters=Counters(
            runs=runs,
            output_tokens=384,
            prompt_tokens=60,
            errors=(("timeout", 1),),
            discarded=(("short", 2),),
            ttft=Histogram.empty(TTFT_BUCKETS).observe(TTFT_BUCKETS, [ttft] * runs),
            tpot=Histogram.empty(TPOT_BUCKETS).observe(TPOT_BUCKETS, [0.0098] * runs),
        ),
        last_success=now,
        load_duration=1.25,
    )


def snapshot(entries: list[ModelEntry], generation: int = 1) -> Snapshot:
    targets = {
        t: TargetState(t, cloud=False, interval=600.0, method=Method("default", 128, "auto"),
                       up=True, version="0.33.0", last_cycle_duration=12.5)
        for t in {e.target for e in entries}
    }  # fmt: skip
    return Snapshot(
        generation,
        MappingProxyType(targets),
        MappingProxyType({(e.target, e.model): e for e in entries}),
    )


def capacity(
    *,
    levels: tuple[int, ...] = (1, 2, 4, 8),
    slots: int = 4,
    slo_ttft: float = 0.5,
    tokens_per_second: float = 100.0,
    slowdown: float = 0.2,
    finished_at: float | None = None,
) -> CapacityRecord:
    """A sweep of a model with ``slots`` parallel slots that batch (each extra sequence slows
    every one's decode by ``slowdown``): up to ``slots`` users TTFT stays low, beyond it requests
    queue and TTFT grows past ``slo_ttft``. Figures are computed, not measured."""
    now = time.time() if finished_at is None else finished_at
    rows: list[CapacityLevel] = []
    for c in levels:
        running = min(c, slots)
        per_token = (1 + slowdown * (running - 1)) / tokens_per_second
        e2e_alone = 0.02 + 63 * per_token
        waits = c > slots
        ttft = 0.02 + (e2e_alone * (c - slots) / slots if waits else 0.0)
        passed = ttft <= slo_ttft
        q = (ttft, ttft * 1.05, ttft * 1.08, ttft * 1.1)
        level = CapacityLevel(
                concurrency=c, requests=max(16, c), good=max(16, c),
                met_slo=max(16, c) if passed else 0,
                ttft=q, tpot=(per_token,) * 4, e2e=tuple(t + 63 * per_token for t in q),
                queue_wait=((ttft - 0.02) if waits else 0.001,) * 4,
                output_tokens_per_second=running / per_token,
                goodput=(running / (ttft + e2e_alone)) if passed else 0.0,
                attainment=1.0 if passed else 0.0, passed=passed, queued=waits, lagged=False,
                window=max(16, c) / running * e2e_alone,
        )  # fmt: skip
        rows.append(level)
    passing = [r.concurrency for r in rows if r.passed]
    return CapacityRecord(
        started_at=now - 60, finished_at=now, levels=tuple(rows),
        max_concurrency=max(passing) if passing else None,
        parallel_slots=slots if any(r.queued for r in rows) else None,
        slo_ttft=slo_ttft, slo_tpot=0.025, slo_attainment=0.95, requests_per_level=16,
        num_predict=64, url="http://localhost:11434", ollama_version="0.33.0",
    )  # fmt: skip
