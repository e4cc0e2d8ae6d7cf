"""Open-loop HTTP load: GET a URL at a fixed rate, on schedule, whatever the replies do.

    python perf/openloop.py --url http://127.0.0.1:9877/metrics --rate 50 --duration 10 \
        --header 'Accept-Encoding: gzip'

Request ``i`` is sent at ``t0 + i / rate`` on its own connection from a keep-alive pool (a slow
reply never delays the next request: no coordinated omission). Latency is measured from the
scheduled send time to the last byte of the body, which is read raw (not decompressed: the
client's own work stays out of the figure). Runs ``--duration`` seconds, or until SIGTERM when
it is 0, then prints one JSON line: counts, latencies (seconds) and percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

import _common
import aiohttp

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;"
    "q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
SCRAPE_HEADERS = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}


async def load(
    url: str, rate: float, duration: float, headers: dict[str, str], warmup: int = 3
) -> dict[str, object]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    latencies: list[float] = []
    late: list[float] = []
    sizes: list[int] = []
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

        async def one(scheduled: float, record: bool) -> None:
            if record:
                late.append(time.perf_counter() - scheduled)
            try:
                async with session.get(url, headers=headers) as response:
                    body = await response.read()
                    if response.status != 200:
                        errors.append(f"HTTP {response.status}")
                        return
            except aiohttp.ClientError as exc:
                errors.append(type(exc).__name__)
                return
            if record:
                latencies.append(time.perf_counter() - scheduled)
                sizes.append(len(body))

        for _ in range(warmup):  # open the first connections outside the measurement
            await one(time.perf_counter(), record=False)
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.perf_counter() + 0.01
        i = 0
        while not stop.is_set():
            scheduled = t0 + i / rate
            if duration and scheduled - t0 >= duration:
                break
            await _common.sleep_until(scheduled)
            task = asyncio.create_task(one(scheduled, record=True))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.wait(tasks, timeout=30)
    return {
        "url": url,
        "rate": rate,
        "sent": i,
        "ok": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "bytes_p50": _common.percentile(sizes, 50) if sizes else 0,
        "latency_s": latencies,
        "p50_s": _common.percentile(latencies, 50),
        "p99_s": _common.percentile(latencies, 99),
        "max_s": max(latencies, default=float("nan")),
        "send_late_max_s": max(late, default=0.0),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--duration", type=float, default=10.0, help="seconds; 0: until SIGTERM")
    p.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    p.add_argument("--scrape", action="store_true", help="Prometheus's Accept and gzip headers")
    args = p.parse_args(argv)
    headers = dict(SCRAPE_HEADERS) if args.scrape else {}
    for h in args.header:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    result = asyncio.run(load(args.url, args.rate, args.duration, headers))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
