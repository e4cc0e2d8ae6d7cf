"""Synthetic store entries for tests that need a snapshot without running benchmarks."""

from __future__ import annotations

import time
from types import MappingProxyType

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
