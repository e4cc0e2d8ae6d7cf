"""Measurement accuracy under scrape load (docs/performance.md, "1. Accuracy under load").

    python perf/accuracy.py [--runs 100] [--rate 50] [--quick]

Three processes, as in production:

* the emulator (``perf/emulator.py``: the test suite's Ollama, models preloaded, time scale
  1), which records when it wrote every chunk (``perf_counter``: CLOCK_MONOTONIC, the same
  clock in every process on Linux) and serves those records on a second port;
* the exporter: the real app of ``web.app.create_app`` (scheduler, client, measurement,
  store, collector and routes over a YAML configuration, like ``python -m ometer_exporter``)
  in a process of its own; the only addition is a hook on ``Store.record`` that keeps each
  run's client timestamps and serves them at ``/-/perf/runs``;
* the scraper: ``perf/openloop.py`` GETting the exporter's ``/metrics`` open-loop at
  ``--rate``/s with Prometheus's headers (gzip) for the whole run.

Figures, per measured (warm) chat run, each client run matched to the emulator's record of
the same request:

* TTFT error = client ``first_token_at`` − emulator ``first_chunk`` (the same instant seen
  from both ends: how late the client's clock reads it; a request's send time is common to
  both TTFTs, so this is client TTFT − true TTFT);
* request transit = emulator ``arrived`` − client ``sent_at`` (part of the real TTFT; shown);
* decode rate error = client ``(eval_count − 1) / (last − first token chunk)`` over the wire
  rate ``(eval_count − 1) / (last − first chunk written)``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import _common
from aiohttp import web

from ometer_exporter.measure.results import ModelResult

MODELS: list[dict[str, Any]] = [
    {"name": "llama3.2:latest", "decode_tokens_per_second": 100.0, "output_tokens": 48,
     "prefill_tokens_per_second": 2000.0},
    {"name": "qwen3:8b", "family": "qwen3", "capabilities": ["completion", "tools", "thinking"],
     "thinking_tokens": 12, "output_tokens": 36, "decode_tokens_per_second": 80.0,
     "prefill_tokens_per_second": 1200.0},
]  # fmt: skip
BENCHMARKED = ("llama3.2:latest", "qwen3:8b")

CONFIG = """\
storage:
  path: {storage}
benchmark:
  interval: 100ms
  jitter: 0%
  runs: 3
  num_predict: 128
  unload_after: false
targets:
  - name: local
    url: {url}
    select: all
    include: [{include}]
"""


def inventory_models(count: int) -> list[dict[str, Any]]:
    """Listed but not benchmarked: they make /metrics as large as a real server's."""
    return [{"name": f"listed-{i}:latest", "decode_tokens_per_second": 50.0} for i in range(count)]


# -- the exporter process --------------------------------------------------------------------


def run_fields(result: ModelResult) -> list[dict[str, Any]]:
    return [
        {
            "model": result.model,
            "sent_at": r.sent_at,
            "first_token_at": r.first_token_at,
            "last_token_at": r.last_token_at,
            "ended_at": r.ended_at,
            "eval_count": r.done.eval_count,
            "eval_duration": r.done.eval_duration,
            "discarded": list(r.discarded),
            "loop_lag": r.loop_lag,
            "error": r.error,
        }
        for r in result.runs
    ]


async def exporter(config: Path, port: int) -> None:
    from ometer_exporter.config.load import load_settings
    from ometer_exporter.config.settings import Overrides
    from ometer_exporter.web.app import EXPORTER, create_app

    overrides = Overrides(config_file=str(config), listen_address=f"127.0.0.1:{port}")
    settings = load_settings(overrides, {})
    app = create_app(settings, overrides=overrides, env={})
    exp = app[EXPORTER]
    runs: list[dict[str, Any]] = []
    record = exp.store.record

    def recording(target: str, result: ModelResult, *args: Any, **kwargs: Any) -> Any:
        runs.extend(run_fields(result))
        return record(target, result, *args, **kwargs)

    exp.store.record = recording  # type: ignore[method-assign]

    async def get_runs(request: web.Request) -> web.Response:
        return web.json_response(runs)

    app.router.add_get("/-/perf/runs", get_runs)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()  # the lifecycle starts: restore, then the scheduler
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await exp.wait_ready()
        print(runner.addresses[0][1], flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


# -- the driver ------------------------------------------------------------------------------


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def match(runs: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    """Each client run with the emulator record of the same request (runs are serial)."""
    chats = sorted((r for r in records if r["first_chunk"] is not None),
                   key=lambda r: r["arrived"])  # fmt: skip
    pairs = []
    for run in runs:
        if run["first_token_at"] is None or run["sent_at"] is None:
            continue
        candidates = [r for r in chats if run["sent_at"] <= r["arrived"] <= run["first_token_at"]]
        if len(candidates) == 1:
            pairs.append((run, candidates[0]))
    return pairs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=150, help="measured runs to collect")
    p.add_argument("--rate", type=float, default=50.0, help="scrapes per second")
    p.add_argument("--inventory", type=int, default=200, help="extra listed models")
    p.add_argument("--quick", action="store_true", help="tiny size: 6 runs, 10 listed models")
    p.add_argument("--json", type=Path)
    p.add_argument("--exporter", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.exporter:
        asyncio.run(exporter(args.exporter, args.port))
        return 0
    models = MODELS
    if args.quick:
        args.runs, args.inventory = 6, 10
        models = [m | {"output_tokens": 10, "thinking_tokens": 2 if "thinking_tokens" in m else 0}
                  for m in MODELS]  # fmt: skip
    results = run(args.runs, args.rate, args.inventory, models)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def collect(
    base: str, wanted: int, scraper: subprocess.Popen[str] | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Wait for ``wanted`` measured runs (or the time limit); stop the scraper: runs, scrapes."""
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    while time.monotonic() - started < 60 + wanted * 2:
        time.sleep(0.5)
        runs = get_json(base + "/-/perf/runs")
        if len(runs) >= wanted:
            break
    scrapes: dict[str, Any] = {"ok": 0, "errors": 0, "latency_s": [], "p99_s": None}
    if scraper is not None:
        scraper.send_signal(signal.SIGTERM)
        out, _ = scraper.communicate(timeout=60)
        scrapes = json.loads(out.strip().splitlines()[-1])
    return runs, scrapes


def errors(
    pairs: list[tuple[Any, Any]],
) -> tuple[list[float], list[float], list[float]]:
    """Per matched run: TTFT error, request transit, relative decode-rate error (seconds)."""
    ttft_err = [run["first_token_at"] - rec["first_chunk"] for run, rec in pairs]
    transit = [rec["arrived"] - run["sent_at"] for run, rec in pairs]
    tps_err: list[float] = []
    for run, rec in pairs:
        n = run["eval_count"]
        client_span = (run["last_token_at"] or 0) - run["first_token_at"]
        wire_span = (rec["last_token_chunk"] or 0) - rec["first_chunk"]
        if n and n >= 2 and client_span > 0 and wire_span > 0:
            tps_err.append(((n - 1) / client_span) / ((n - 1) / wire_span) - 1)
    return ttft_err, transit, tps_err


def run(
    wanted: int, rate: float, inventory: int, benchmarked: list[dict[str, Any]]
) -> dict[str, Any]:
    print(_common.machine(), flush=True)
    print(f"accuracy: emulator, exporter and scraper in three processes; {len(BENCHMARKED)} "
          f"models benchmarked ({inventory} more listed); /metrics scraped open-loop at "
          f"{rate:g}/s with gzip", flush=True)  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="ometer-accuracy-"))
    models = _common.write_models(tmp / "models.json", benchmarked + inventory_models(inventory))
    emu_args = [*_common.emulator_args(models, truth_port=0), "--preload"]
    with _common.running(emu_args, cpu=0) as (emu_url, emu_proc):
        truth_url = _common.first_line(emu_proc)
        config = tmp / "config.yaml"
        config.write_text(CONFIG.format(storage=tmp / "data", url=emu_url,
                                        include=", ".join(BENCHMARKED)))  # fmt: skip
        exp_args = [sys.executable, str(Path(__file__)), "--exporter", str(config),
                    "--port", str(_common.free_port())]  # fmt: skip
        with _common.running(exp_args, cpu=1) as (printed, _exp):
            base = f"http://127.0.0.1:{printed}"
            scraper = _common.spawn([sys.executable, str(_common.PERF / "openloop.py"), "--url",
                                     base + "/metrics", "--rate", str(rate), "--duration", "0",
                                     "--scrape"], cpu=0) if rate > 0 else None  # fmt: skip
            runs, scrapes = collect(base, wanted, scraper)
            records = get_json(truth_url + "/records?path=/api/chat")
    pairs = match(runs, records)
    ttft_err, transit, tps_err = errors(pairs)
    abs_ttft = [abs(x) for x in ttft_err]
    abs_tps = [abs(x) for x in tps_err]
    lagged = sum(1 for run in runs if "loop_lag" in run["discarded"])
    failed = sum(1 for run in runs if run["error"])
    print(f"  measured runs: {len(runs)} ({failed} failed, {lagged} discarded for loop lag); "
          f"matched to the emulator's records: {len(pairs)}")  # fmt: skip
    print(f"  scrapes during the run: {scrapes['ok']} ok, {scrapes['errors']} errors, "
          f"{_common.summary(scrapes['latency_s'])}")  # fmt: skip
    ok_ttft = bool(abs_ttft) and _common.percentile(abs_ttft, 99) <= 0.002
    _common.figure("TTFT error |client first token − emulator first chunk|",
                   _common.summary(abs_ttft), "p99 <= 2 ms", ok_ttft)  # fmt: skip
    _common.figure("  signed", f"min {min(ttft_err, default=0) * 1e3:.3f} ms, "
                   f"mean {sum(ttft_err) / max(1, len(ttft_err)) * 1e3:.3f} ms")  # fmt: skip
    _common.figure("request transit (emulator arrival − client send)", _common.summary(transit))
    ok_tps = bool(abs_tps) and max(abs_tps) <= 0.01
    _common.figure("decode rate error |client tok/s ÷ wire tok/s − 1|",
                   _common.summary(abs_tps, scale=100, unit="%"), "every run within 1 %",
                   ok_tps)  # fmt: skip
    print(f"  ({_common.load()} at the end)")
    return {
        "runs": len(runs),
        "matched": len(pairs),
        "failed": failed,
        "loop_lag_discards": lagged,
        "ttft_abs_error_p50_s": _common.percentile(abs_ttft, 50),
        "ttft_abs_error_p99_s": _common.percentile(abs_ttft, 99),
        "ttft_abs_error_max_s": max(abs_ttft, default=float("nan")),
        "transit_p50_s": _common.percentile(transit, 50),
        "tps_abs_error_p50": _common.percentile(abs_tps, 50),
        "tps_abs_error_p99": _common.percentile(abs_tps, 99),
        "tps_abs_error_max": max(abs_tps, default=float("nan")),
        "scrapes_ok": scrapes["ok"],
        "scrape_p99_s": scrapes["p99_s"],
    }


if __name__ == "__main__":
    sys.exit(main())
