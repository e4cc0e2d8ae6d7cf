"""The soak benchmark on a tiny size: it runs, faults happen, nothing grows or hangs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_soak() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "perf" / "soak.py"), "--runs", "300"],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    figures = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    assert int(figures["runs"]) >= 300
    assert int(figures["errors"]) > 0  # the chaos task really injected faults
    assert figures["flat"] == "yes"
    assert int(figures["fds_end"]) <= int(figures["fds_warm"]) + 3
