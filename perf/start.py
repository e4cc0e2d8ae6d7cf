"""Start: process start to the first ``200`` on ``/metrics`` (docs/performance.md §5: ≤ 1 s).

    python perf/start.py [--reps 10] [--quick]

Each repetition starts ``python -m ometer_exporter`` as a subprocess (a fresh data directory,
a config whose one target is the emulator, running in its own process, with a model whose
cold load takes 5 s, so no benchmark can finish first) and polls ``/metrics`` every 2 ms from
the moment ``Popen`` returned; the figure is the time to the first ``200``. The first reply
is checked to hold no benchmark result yet.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import _common

CONFIG = """\
storage:
  path: {storage}
targets:
  - name: local
    url: {url}
    select: all
"""


def first_200(url: str, proc: subprocess.Popen[bytes], started: float) -> tuple[float, bytes]:
    while time.perf_counter() - started < 30:
        if proc.poll() is not None:
            raise RuntimeError(f"the exporter exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.perf_counter() - started, response.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.002)
    raise RuntimeError("no 200 on /metrics within 30 s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="tiny size: 2 repetitions")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.quick:
        args.reps = 2
    print(_common.machine(), flush=True)
    print(f"start: python -m ometer_exporter to the first 200 on /metrics, {args.reps} starts",
          flush=True)  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="ometer-start-"))
    models = _common.write_models(tmp / "models.json", [
        {"name": "llama3.2:latest", "load_seconds": 5.0},
    ])  # fmt: skip
    times: list[float] = []
    with _common.running(_common.emulator_args(models)) as (emu_url, _emu):
        for rep in range(args.reps):
            config = tmp / f"config-{rep}.yaml"
            config.write_text(CONFIG.format(storage=tmp / f"data-{rep}", url=emu_url))
            port = _common.free_port()
            started = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "ometer_exporter", "--config.file", str(config),
                 "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warning"],
                env=_common.env_with_paths(), cwd=_common.ROOT,
            )  # fmt: skip
            try:
                seconds, body = first_200(f"http://127.0.0.1:{port}/metrics", proc, started)
            finally:
                proc.terminate()
                proc.wait(10)
            if b"ometer_benchmark_success" in body:
                raise RuntimeError("a benchmark finished before the first scrape")
            times.append(seconds)
    ok = max(times) <= 1.0
    _common.figure("process start → first 200 on /metrics",
                   _common.summary(times), "<= 1 s (every start)", ok)  # fmt: skip
    _common.figure("median", f"{statistics.median(times) * 1e3:.0f} ms")
    imports = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import ometer_exporter.web.app"],
        capture_output=True, text=True, env=_common.env_with_paths(), check=True,
    ).stderr.splitlines()  # fmt: skip
    total = imports[-1].split("|")[1].strip() if imports else "?"
    print(f"  (importing the web app alone: {int(total) / 1e3:.0f} ms by -X importtime; "
          f"{_common.load()})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"times": times}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
