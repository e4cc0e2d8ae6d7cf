"""``python -m ollama_emulator --port 11434 [--models models.json] [--time-scale 1.0] [--engine E]``

Runs the emulator in its own process (for manual runs and benchmarks), prints its URL on
stdout and exits on SIGTERM/SIGINT. ``models.json`` is a list of objects with
:class:`EmulatedModel` fields (``modified_at`` as an RFC 3339 string).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from .models import EmulatedModel, default_models
from .openai import ENGINES
from .server import OllamaEmulator


def load_models(path: Path) -> list[EmulatedModel]:
    raw: Any = json.loads(path.read_text())
    if not isinstance(raw, list):
        raise SystemExit(f"{path}: expected a JSON list of model objects")
    out: list[EmulatedModel] = []
    for item in raw:
        fields = dict(item)
        if isinstance(fields.get("modified_at"), str):
            fields["modified_at"] = datetime.fromisoformat(fields["modified_at"])
        out.append(EmulatedModel(**fields))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ollama_emulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=11434)
    p.add_argument("--models", type=Path, help="JSON list of EmulatedModel objects")
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--version", default="0.33.0",
                   help="reported by /api/version (ollama) or /version (vllm)")  # fmt: skip
    p.add_argument("--engine", choices=ENGINES, default="ollama",
                   help="the server to emulate (tests/ollama_emulator/openai.py)")  # fmt: skip
    p.add_argument("--num-parallel", type=int, default=1)
    p.add_argument("--max-queue", type=int, default=512)
    p.add_argument("--keep-alive", type=float, default=300.0, help="default keep-alive, seconds")
    p.add_argument("--api-key", help="require 'Authorization: Bearer <key>' on /api/*")
    p.add_argument("--cloud", action="store_true", help="behave like ollama.com")
    p.add_argument(
        "--max-records", type=int, default=10_000, help="ground-truth records kept in memory"
    )
    p.add_argument("--control", action="store_true",
                   help="serve /_emulator/records and /_emulator/preload (tests)")  # fmt: skip
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    models = load_models(args.models) if args.models else default_models()
    emu = OllamaEmulator(
        models,
        time_scale=args.time_scale,
        version=args.version,
        num_parallel=args.num_parallel,
        max_queue=args.max_queue,
        default_keep_alive=args.keep_alive,
        api_key=args.api_key,
        cloud=args.cloud,
        max_records=args.max_records,
        control=args.control,
        engine=args.engine,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    url = await emu.start(args.host, args.port)
    print(url, flush=True)
    try:
        await stop.wait()
    finally:
        await emu.close()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
