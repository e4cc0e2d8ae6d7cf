"""The test suite's Ollama emulator in its own process, with its ground truth served over HTTP.

    PYTHONPATH=tests python perf/emulator.py --port 0 --models models.json --time-scale 1 \
        --truth-port 0

Prints the emulator's URL, then (with ``--truth-port``) the ground-truth URL, each on its own
line. ``GET <truth>/records?path=/api/chat`` returns the emulator's :class:`RequestRecord`\\ s as
JSON (times are ``perf_counter`` in this process: the same CLOCK_MONOTONIC as every other
process on Linux). ``--preload`` marks every model loaded at start, pinned (no cold loads).
Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (sys.path: the package and tests/)
from aiohttp import web
from ollama_emulator import OllamaEmulator
from ollama_emulator.__main__ import load_models

# Ground-truth fields a benchmark compares against (bodies and headers stay out).
FIELDS = (
    "path", "model", "status", "arrived", "headers_sent", "first_chunk", "first_content",
    "last_token_chunk", "done_written", "finished", "cold_load", "eval_count",
    "prompt_eval_count", "thinking_chunks", "content_chunks", "decode_interval", "fault",
    "metrics", "peer", "socket_arrived", "socket_first_chunk", "token_late_max",
)  # fmt: skip


def record_json(record: Any) -> dict[str, Any]:
    data = dataclasses.asdict(record)
    return {k: data[k] for k in FIELDS}


def truth_app(emu: OllamaEmulator) -> web.Application:
    async def records(request: web.Request) -> web.Response:
        path = request.query.get("path")
        items = [record_json(r) for r in emu.records if path is None or r.path == path]
        return web.json_response(items)

    app = web.Application()
    app.router.add_get("/records", records)
    return app


async def serve(args: argparse.Namespace) -> None:
    models = load_models(args.models)
    emu = OllamaEmulator(
        models,
        time_scale=args.time_scale,
        num_parallel=args.num_parallel,
        max_records=args.max_records,
    )
    if args.preload:
        for name in [m.name for m in models]:
            emu.preload(name, keep_alive=-1)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(await emu.start("127.0.0.1", args.port), flush=True)
    runner: web.AppRunner | None = None
    if args.truth_port is not None:
        runner = web.AppRunner(truth_app(emu), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.truth_port)
        await site.start()
        print(f"http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    try:
        await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        await emu.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--models", type=Path, required=True)
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--num-parallel", type=int, default=1)
    p.add_argument("--max-records", type=int, default=None)
    p.add_argument("--truth-port", type=int, default=None)
    p.add_argument("--preload", action="store_true")
    args = p.parse_args(argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
