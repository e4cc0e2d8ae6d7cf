"""Every benchmark of ``perf/`` runs at its tiny size and prints its figures.

These check that the scripts work, not the figures: speed targets live in ``perf/`` and
``docs/performance.md``, never in the test suite, where a shared machine would make them flaky.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(script: str, *args: str, timeout: float = 60) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    done = subprocess.run(
        [sys.executable, str(ROOT / "perf" / script), *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("machine: "), done.stdout
    assert "cores" in done.stdout.splitlines()[0]
    return done.stdout


def test_scrape_quick() -> None:
    out = run("scrape.py", "--quick")
    for figure in ("open-loop 50/s, unchanged snapshot: p50", "one result changing",
                   "worst loop stall", "re-render after one change", "of a full render"):
        assert figure in out, out  # fmt: skip
    if shutil.which("wrk"):
        assert "scrapes/s" in out, out


def test_ingest_quick() -> None:
    out = run("ingest.py", "--quick")
    assert "OllamaClient.chat: " in out and "chunks/s" in out, out
    assert "client / naive: " in out, out


def test_accuracy_quick() -> None:
    out = run("accuracy.py", "--quick")
    assert "TTFT error" in out and "p99" in out, out
    assert "decode rate error" in out, out
    assert "matched to the emulator's records: " in out, out


def test_memory_quick() -> None:
    out = run("memory.py", "--quick")
    assert "RSS with 40 models" in out and "MiB" in out, out
    assert "open file descriptors" in out and "asyncio tasks" in out, out


@pytest.mark.parametrize("script", ["start.py"])
def test_start_quick(script: str) -> None:
    out = run(script, "--quick")
    assert "first 200 on /metrics: p50" in out, out


def test_history_quick() -> None:
    out = run("history.py", "--quick")
    figures = (
        "stored: 2880 rows (20 models",
        "sparklines, points=30: 20 series, 600 points",
        "every model, points=1000 (bounded): 20 series",
        "one model's detail",
        "cold (every model read)",
        "after the start-up warm-up",
        "unchanged: p50",
        "one new result each: p50",
        "worst loop stall",
    )
    for figure in figures:
        assert figure in out, out


def test_capacity_quick() -> None:
    out = run("capacity.py", "--quick")
    for streams in (1, 2, 4):
        assert f"{streams:>3} streams, TTFT error: p50" in out, out
    for figure in ("request transit p50/p99", "client CPU per request", "token late p50/p99",
                   "the harness's ceiling"):
        assert figure in out, out  # fmt: skip
    assert out.count("(4 requests, 0 failed)") == 3, out  # every level, every request matched
