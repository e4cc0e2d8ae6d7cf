"""Stream ingest: chunks/s the client reads from one NDJSON stream, one core (performance §3).

    python perf/ingest.py [--chunks 200000] [--reps 5] [--quick]

A minimal HTTP/1.1 server in its own process (pinned to core 1) answers every POST with one
long chunked NDJSON stream as fast as it can: ``--chunks`` Ollama chat chunks (prebuilt, written
64 KiB at a time) and a ``done`` line. This process (pinned to core 0) reads it, alternately:

* with the exporter's client, ``OllamaClient.chat`` (timestamps, phased deadlines, parsing);
* with a naive reader: httpx ``aiter_lines`` + ``json.loads`` per line (+ a content check).

Each reader keeps its connection alive across repetitions; the figure is the median of
``--reps`` streams: chunks per second of wall time from the request to the end of the body.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import _common
import httpx

from ometer_exporter.client.ollama import OllamaClient
from ometer_exporter.config.settings import Timeouts

CHUNK = (
    b'{"model":"llama3.2:latest","created_at":"2026-07-30T07:14:03.512233456Z",'
    b'"message":{"role":"assistant","content":" word"},"done":false}\n'
)
DONE = (
    b'{"model":"llama3.2:latest","created_at":"2026-07-30T07:14:05.512233456Z",'
    b'"message":{"role":"assistant","content":""},"done":true,"done_reason":"stop",'
    b'"total_duration":2000000000,"load_duration":1000000,"prompt_eval_count":26,'
    b'"prompt_eval_duration":13000000,"eval_count":%d,"eval_duration":1900000000}\n'
)


# -- the server process ----------------------------------------------------------------------


def chunked_body(chunks: int, piece: int = 64 * 1024) -> list[bytes]:
    body = CHUNK * chunks + DONE % chunks
    return [
        b"%x\r\n%s\r\n" % (len(body[i : i + piece]), body[i : i + piece])
        for i in range(0, len(body), piece)
    ] + [b"0\r\n\r\n"]


async def serve(chunks: int, port: int) -> None:
    frames = chunked_body(chunks)
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in header.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                writer.write(head)
                for frame in frames:
                    writer.write(frame)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


# -- a proposed reader for ollama.py (measured here; the package keeps its own) -------------

# -- the readers -----------------------------------------------------------------------------


async def ours(client: OllamaClient) -> tuple[float, int]:
    started = time.perf_counter()
    stream = await client.chat("llama3.2:latest", [{"role": "user", "content": "hi"}],
                               options={"num_predict": 128})  # fmt: skip
    return time.perf_counter() - started, stream.content_chunks


async def naive(http: httpx.AsyncClient) -> tuple[float, int]:
    started = time.perf_counter()
    count = 0
    body = {"model": "llama3.2:latest", "messages": [{"role": "user", "content": "hi"}]}
    async with http.stream("POST", "/api/chat", json=body) as response:
        async for line in response.aiter_lines():
            if not line:
                continue
            obj = json.loads(line)
            if obj.get("message", {}).get("content"):
                count += 1
    return time.perf_counter() - started, count


async def measure(url: str, chunks: int, reps: int) -> dict[str, list[float]]:
    timeouts = Timeouts(connect=10, first_byte=60, idle=60, total=600)
    rates: dict[str, list[float]] = {"client": [], "naive": []}
    async with OllamaClient(url, timeouts=timeouts) as client, httpx.AsyncClient(
        base_url=url, timeout=60
    ) as http:
        await ours(client)  # warm up the connections and code paths
        await naive(http)
        for _ in range(reps):
            for name in ("client", "naive"):
                if name == "naive":
                    seconds, seen = await naive(http)
                else:
                    seconds, seen = await ours(client)
                if seen != chunks:
                    raise RuntimeError(f"{name} counted {seen} content chunks of {chunks}")
                rates[name].append(chunks / seconds)
    return rates


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--chunks", type=int, default=200_000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="tiny size: 5,000 chunks, 1 rep")
    p.add_argument("--json", type=Path)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.chunks, args.reps = 5_000, 1
    if args.serve:
        asyncio.run(serve(args.chunks, args.port))
        return 0
    print(_common.machine(), flush=True)
    print(f"stream ingest: one stream of {args.chunks} chunks ({len(CHUNK)} bytes each), "
          f"server on core 1, reader on core 0, median of {args.reps}", flush=True)  # fmt: skip
    server = [sys.executable, str(Path(__file__)), "--serve", "--chunks", str(args.chunks)]
    with _common.running(server, cpu=1) as (port, _proc):
        _common.pin(0)
        rates = asyncio.run(measure(f"http://127.0.0.1:{port}", args.chunks, args.reps))
    client = statistics.median(rates["client"])
    naive_rate = statistics.median(rates["naive"])
    _common.figure("OllamaClient.chat", f"{client:,.0f} chunks/s "
                   f"(runs: {', '.join(f'{r:,.0f}' for r in rates['client'])})",
                   ">= 5,000 chunks/s", client >= 5000)  # fmt: skip
    _common.figure("naive httpx aiter_lines + json.loads", f"{naive_rate:,.0f} chunks/s "
                   f"(runs: {', '.join(f'{r:,.0f}' for r in rates['naive'])})")  # fmt: skip
    _common.figure("client / naive", f"{client / naive_rate:.2f}", ">= 1.00",
                   client >= naive_rate)  # fmt: skip
    print(f"  ({_common.load()} at the end)")
    if args.json:
        args.json.write_text(json.dumps({"client": client, "naive": naive_rate, "runs": rates}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
