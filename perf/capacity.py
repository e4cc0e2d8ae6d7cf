"""The load sweep's own ceiling: up to how many concurrent streams the client's TTFT is exact.

    python perf/capacity.py [--levels 1,2,4,8,16,32,64,128,256] [--requests 100] [--quick]

Two processes: the emulator (``python -m ollama_emulator --control``: one chat model pinned in
memory, as many slots as the largest level so nothing queues, no batching slowdown, prefill
~0.5 ms, ``--tokens`` tokens at ``--rate`` tok/s each) pinned to core 0, and this process,
pinned to core 1, driving it the way a sweep does: one ``OllamaClient`` with a connection per
user, the level's connections opened before it, then ``measure.capacity.run_level`` — ``c``
users back to back until ``max(requests, c)`` replies are complete — over
``OllamaClient.chat``. The exporter's loop-lag probe runs beside it, as in the exporter.

Per request, matched by its prompt to the emulator's record (``perf_counter`` is
CLOCK_MONOTONIC, one clock for both processes):

* TTFT error = client TTFT − the emulator's socket truth (first token chunk handed to its
  transport − its first read of the request). Never negative (both ends are causal); it is
  the request's trip over loopback plus how late the client reads the first chunk — split
  into *request transit* (emulator's first read − client send) and *read delay* (client
  first-token time − emulator's first token chunk handed over); beside it, how long after its
  first read the emulator's handler started (what a truth taken in the handler would miss);
* the emulator's own pacing: ``token_late_max``, its worst token write behind schedule, and
  its wire rate ``(eval_count − 1) / (last − first token chunk written)`` against ``--rate``;
* CPU per request: this process's CPU time over the level (``time.process_time``) ÷ its
  requests; the emulator's CPU time over the level from ``/proc``.

The ceiling is the largest level at which the TTFT error's p99 stays within 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import httpx

from ometer_exporter.client.ollama import OllamaClient
from ometer_exporter.config.settings import Slo
from ometer_exporter.measure.capacity import run_level
from ometer_exporter.measure.lag import LoopLagProbe
from ometer_exporter.measure.results import RunResult

MODEL = "llama3.2:latest"
LAX = Slo(ttft=60.0, tpot=60.0, attainment=0.0)  # the sweep's SLO plays no part here
CEILING = 0.002  # p99 TTFT error, seconds
TARGET_STREAMS = 64


def model_json(rate: float, tokens: int) -> dict[str, Any]:
    return {"name": MODEL, "decode_tokens_per_second": rate, "output_tokens": tokens,
            "prefill_tokens_per_second": 20_000.0}  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    url: str, emulator_pid: int, levels: list[int], requests: int, tokens: int, rate: float
) -> list[dict[str, Any]]:
    """Each level in turn: the client's streams, matched to the emulator's records."""
    probe = LoopLagProbe()
    probing = asyncio.create_task(probe.run())
    streams: dict[str, Any] = {}
    numbers = itertools.count()
    out: list[dict[str, Any]] = []
    async with OllamaClient(url, connections=max(levels)) as client:

        async def send() -> RunResult:
            prompt = f"[{next(numbers):06d}] why is the sky blue"
            stream = await client.chat(MODEL, [{"role": "user", "content": prompt}],
                                       options={"num_predict": tokens, "temperature": 0.0,
                                                "seed": 1})  # fmt: skip
            streams[prompt] = stream
            return RunResult(warmup=False, sent_at=stream.sent_at,
                             first_token_at=stream.first_token_at, ended_at=stream.ended_at,
                             done=stream.done)  # fmt: skip

        await send()  # the first request's one-off costs (imports, the first connection)
        for users in levels:
            await asyncio.gather(*(client.version() for _ in range(users)))  # as the sweep
            streams.clear()
            cpu, emu_cpu, started = time.process_time(), cpu_seconds(emulator_pid), time.time()
            level = await run_level(send, users, requests, LAX)
            cpu, emu_cpu = time.process_time() - cpu, cpu_seconds(emulator_pid) - emu_cpu
            lag = probe.worst_since(level.started)
            records = await emulator_records(url)
            out.append(figures(users, level.runs, dict(streams), records, rate,
                               (cpu, emu_cpu, time.time() - started), lag))  # fmt: skip
            report(out[-1])
    probing.cancel()
    return out


async def emulator_records(url: str) -> dict[str, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        records = (await http.get("/_emulator/records")).json()
    return {r["body"]["messages"][0]["content"]: r for r in records
            if r["path"] == "/api/chat" and (r["body"] or {}).get("messages")}  # fmt: skip


def figures(
    users: int,
    runs: tuple[RunResult, ...],
    streams: dict[str, Any],
    records: dict[str, dict[str, Any]],
    rate: float,
    cpu_times: tuple[float, float, float],  # this process, the emulator, wall seconds
    lag: float,
) -> dict[str, Any]:
    cpu, emulator_cpu, wall = cpu_times
    errors, transit, delay, handler, late, rate_error = [], [], [], [], [], []
    for prompt, stream in streams.items():
        rec = records.get(prompt)
        if rec is None or stream.first_token_at is None or rec["socket_first_chunk"] is None:
            continue
        truth = rec["socket_first_chunk"] - rec["socket_arrived"]
        errors.append(stream.first_token_at - stream.sent_at - truth)
        transit.append(rec["socket_arrived"] - stream.sent_at)
        delay.append(stream.first_token_at - rec["socket_first_chunk"])
        handler.append(rec["arrived"] - rec["socket_arrived"])
        late.append(rec["token_late_max"])
        span = rec["last_token_chunk"] - rec["first_chunk"]
        if rec["eval_count"] >= 2 and span > 0:
            rate_error.append(abs((rec["eval_count"] - 1) / span / rate - 1))
    return {
        "streams": users,
        "requests": len(runs),
        "failed": sum(1 for r in runs if not r.ok),
        "matched": len(errors),
        "ttft_error_s": errors,
        "ttft_error_p50_s": _common.percentile(errors, 50),
        "ttft_error_p99_s": _common.percentile(errors, 99),
        "ttft_error_min_s": min(errors, default=float("nan")),
        "request_transit_p50_s": _common.percentile(transit, 50),
        "request_transit_p99_s": _common.percentile(transit, 99),
        "read_delay_p50_s": _common.percentile(delay, 50),
        "read_delay_p99_s": _common.percentile(delay, 99),
        "handler_start_p50_s": _common.percentile(handler, 50),
        "handler_start_p99_s": _common.percentile(handler, 99),
        "emulator_late_p50_s": _common.percentile(late, 50),
        "emulator_late_p99_s": _common.percentile(late, 99),
        "emulator_rate_error_p99": _common.percentile(rate_error, 99),
        "client_cpu_per_request_s": cpu / max(1, len(runs)),
        "emulator_cpu_share": emulator_cpu / max(wall, 1e-9),
        "worst_loop_lag_s": lag,
    }


def report(level: dict[str, Any]) -> None:
    ok = level["ttft_error_p99_s"] <= CEILING and not level["failed"]
    _common.figure(
        f"{level['streams']:>3} streams, TTFT error",
        _common.summary(level["ttft_error_s"]) + f", min {level['ttft_error_min_s'] * 1e3:.3f} ms",
        "p99 <= 2 ms", ok,
    )  # fmt: skip
    ms = 1e3
    _common.figure(
        "    request transit p50/p99",
        f"{level['request_transit_p50_s'] * ms:.3f} / {level['request_transit_p99_s'] * ms:.3f}"
        f" ms; read delay p50/p99 {level['read_delay_p50_s'] * ms:.3f} / "
        f"{level['read_delay_p99_s'] * ms:.3f} ms; the emulator's handler started "
        f"{level['handler_start_p50_s'] * ms:.3f} / {level['handler_start_p99_s'] * ms:.3f} ms "
        "after its socket read",
    )
    _common.figure(
        "    client CPU per request",
        f"{level['client_cpu_per_request_s'] * ms:.2f} ms ({level['requests']} requests, "
        f"{level['failed']} failed); worst loop lag {level['worst_loop_lag_s'] * ms:.1f} ms; "
        f"emulator: {level['emulator_cpu_share'] * 100:.0f} % of a core, token late p50/p99 "
        f"{level['emulator_late_p50_s'] * ms:.2f} / {level['emulator_late_p99_s'] * ms:.2f} ms, "
        f"wire rate error p99 {level['emulator_rate_error_p99'] * 100:.2f} %",
    )


def run(levels: list[int], requests: int, rate: float, tokens: int) -> dict[str, Any]:
    print(_common.machine(), flush=True)
    print(f"capacity harness: {tokens} tokens at {rate:g} tok/s per stream, "
          f"max({requests}, users) requests per level; emulator on core 0, client on core 1",
          flush=True)  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="ometer-capacity-"))
    models = _common.write_models(tmp / "models.json", [model_json(rate, tokens)])
    args = [sys.executable, "-m", "ollama_emulator", "--port", "0", "--models", str(models),
            "--num-parallel", str(max(levels)), "--control"]  # fmt: skip
    _common.pin(1)
    with _common.running(args, cpu=0) as (url, emulator):
        httpx.post(f"{url}/_emulator/preload", json={"name": MODEL, "keep_alive": -1})
        results = asyncio.run(drive(url, emulator.pid, levels, requests, tokens, rate))
    held = [lv["streams"] for lv in results
            if lv["ttft_error_p99_s"] <= CEILING and not lv["failed"]]  # fmt: skip
    # The ceiling: every level up to it held (a level that missed ends it).
    ceiling = 0
    for level in results:
        if level["streams"] not in held:
            break
        ceiling = level["streams"]
    _common.figure("largest level with TTFT error p99 <= 2 ms (the harness's ceiling)",
                   f"{ceiling} streams", f">= {TARGET_STREAMS} streams",
                   ceiling >= TARGET_STREAMS)  # fmt: skip
    print(f"  ({_common.load()} at the end)")
    return {"levels": results, "ceiling_streams": ceiling}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--levels", default="1,2,4,8,16,32,64,128,256",
                   help="concurrent streams, comma-separated")  # fmt: skip
    p.add_argument("--requests", type=int, default=100, help="requests per level (at least)")
    p.add_argument("--rate", type=float, default=50.0, help="tokens/s of each stream")
    p.add_argument("--tokens", type=int, default=16, help="output tokens per request")
    p.add_argument("--quick", action="store_true", help="tiny size: levels 1,2,4, 4 requests")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    levels = sorted({int(x) for x in args.levels.split(",") if x.strip()})
    if args.quick:
        levels, args.requests, args.tokens = [1, 2, 4], 4, 4
    results = run(levels, args.requests, args.rate, args.tokens)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
