"""Helpers shared by the benchmark scripts of ``perf/`` (not a test module, not a package).

Every benchmark prints the machine it ran on and its figures from one run: percentiles, rates
and ratios. Processes that must not disturb each other (a server and its load generator, the
emulator and the exporter) run as separate processes, pinned to separate cores when asked.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PERF = ROOT / "perf"
TESTS = ROOT / "tests"

# So the scripts run from anywhere: the package (also when not installed) and the emulator.
for _path in (str(ROOT), str(TESTS)):
    if _path not in sys.path:
        sys.path.insert(0, _path)


# -- the machine ---------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """One line: cores, CPU model, Python, OS, load (every benchmark prints it)."""
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return (
        f"machine: {cores} cores ({usable} usable), {cpu_model()}, "
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()}; {load()}"
    )


def load() -> str:
    """The 1-minute load average: other processes on a 2-core machine distort every figure."""
    try:
        return f"load average {os.getloadavg()[0]:.2f}"
    except OSError:
        return "load average unknown"


def pin(cpu: int | None) -> None:
    """Pin the calling process to one core (no-op when there are fewer cores)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return
    cores = os.cpu_count() or 1
    if cores > 1:
        os.sched_setaffinity(0, {cpu % cores})


# -- statistics ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float], scale: float = 1e3, unit: str = "ms") -> str:
    """``p50 1.23 ms, p99 4.56 ms, max 7.89 ms (n=100)``."""
    if not values:
        return "no samples"
    return (
        f"p50 {percentile(values, 50) * scale:.3f} {unit}, "
        f"p99 {percentile(values, 99) * scale:.3f} {unit}, "
        f"max {max(values) * scale:.3f} {unit} (n={len(values)})"
    )


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def figure(name: str, value: str, target: str | None = None, ok: bool | None = None) -> None:
    """One result line: ``name: value  [target: ... -> MET]``."""
    tail = ""
    if target is not None:
        tail = f"  [target {target}: {verdict(bool(ok))}]"
    print(f"  {name}: {value}{tail}", flush=True)


# -- processes -----------------------------------------------------------------------------


def read_rss() -> int:
    """Resident set size of this process, bytes."""
    return _status_field("VmRSS")


def read_peak_rss() -> int:
    return _status_field("VmHWM")


def _status_field(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def env_with_paths() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), str(TESTS), env.get("PYTHONPATH", "")) if p
    )
    return env


def _affinity(cpu: int | None) -> Any:
    if cpu is None:
        return None
    return lambda: pin(cpu)


def spawn(args: Sequence[str], *, cpu: int | None = None, **kwargs: Any) -> subprocess.Popen[str]:
    """Start a helper process (stdout piped, text mode), optionally pinned to a core."""
    return subprocess.Popen(
        list(args),
        stdout=subprocess.PIPE,
        text=True,
        env=env_with_paths(),
        cwd=ROOT,
        preexec_fn=_affinity(cpu),
        **kwargs,
    )


def first_line(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The helper's first stdout line (its URL or port), or an error if it died."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            return line.strip()
        if proc.poll() is not None:
            break
    raise RuntimeError(f"{proc.args!r} exited ({proc.poll()}) before printing its address")


def stop(proc: subprocess.Popen[str], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def running(args: Sequence[str], *, cpu: int | None = None) -> Iterator[tuple[str, Any]]:
    """A helper process that prints its address first; terminated on exit."""
    proc = spawn(args, cpu=cpu)
    try:
        yield first_line(proc), proc
    finally:
        stop(proc)


def emulator_args(
    models: Path, *, time_scale: float = 1.0, truth_port: int | None = None
) -> list[str]:
    """``perf/emulator.py``: the test emulator in its own process (+ its ground truth)."""
    args = [sys.executable, str(PERF / "emulator.py"), "--port", "0", "--models", str(models),
            "--time-scale", repr(time_scale)]  # fmt: skip
    if truth_port is not None:
        args += ["--truth-port", str(truth_port)]
    return args


def write_models(path: Path, models: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(models))
    return path


def run_json(args: Sequence[str], *, cpu: int | None = None, timeout: float = 900) -> Any:
    """Run a helper that prints one JSON document as its last stdout line."""
    done = subprocess.run(
        list(args), capture_output=True, text=True, env=env_with_paths(), cwd=ROOT,
        preexec_fn=_affinity(cpu), timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{args!r} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


async def sleep_until(deadline: float) -> None:
    """Sleep until ``perf_counter() >= deadline``: a coarse sleep, then a short yield-spin."""
    remaining = deadline - time.perf_counter()
    if remaining > 0.002:
        await asyncio.sleep(remaining - 0.0015)
    while time.perf_counter() < deadline:  # noqa: ASYNC110 - deliberate spin for precision
        await asyncio.sleep(0)


class StallProbe:
    """The worst delay of the event loop: a timer every ``interval`` s, lateness recorded.

    Finer than the exporter's own probe (10 ms) so a 5 ms stall shows. Each delay is also
    counted net of the time the loop's thread waited for a CPU (``/proc/thread-self/schedstat``:
    other processes on a 2-core machine), which is not the exporter's doing. ``mark()`` starts a
    new phase and returns the previous one's figures.
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self._worst = self._worst_net = 0.0
        self._samples = 0
        self._task: asyncio.Task[None] | None = None
        self._fd: int | None = None
        self._runq_start = 0

    def _runq(self) -> int:
        """Nanoseconds this thread has spent runnable but waiting for a CPU."""
        if self._fd is None:
            return 0
        try:
            return int(os.pread(self._fd, 128, 0).split()[1])
        except (OSError, IndexError, ValueError):
            return 0

    def start(self) -> None:
        try:
            self._fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None
        self._runq_start = self._runq()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            before = self._runq()
            expected = time.perf_counter() + self.interval
            await asyncio.sleep(self.interval)
            lag = time.perf_counter() - expected
            net = lag - (self._runq() - before) * 1e-9
            self._samples += 1
            self._worst = max(self._worst, lag)
            self._worst_net = max(self._worst_net, net)

    def mark(self) -> dict[str, float]:
        runq = self._runq()
        out = {
            "worst_stall_s": self._worst,
            "worst_stall_net_s": self._worst_net,
            "cpu_wait_s": (runq - self._runq_start) * 1e-9,
            "samples": float(self._samples),
        }
        self._worst = self._worst_net = 0.0
        self._samples = 0
        self._runq_start = runq
        return out

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
