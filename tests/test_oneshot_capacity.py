"""``ometer-exporter bench --capacity`` against the emulator: the curve of each model's load
sweep as stored, its verdict, the exports, the flags, the exit codes and Ctrl-C.

As in test_oneshot, ``cli.main`` runs in a worker thread while the emulator serves in the test's
event loop; the Ctrl-C test runs bench in its own process.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import signal
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import factories
import pytest
from ollama_emulator import Fault, RequestRecord, chat_model, embedding_model
from service import until
from test_capacity_loop import most_at_once, until_unloaded_once
from test_cli import exporter_process
from test_oneshot import environ, run

import ometer_exporter.loop.worker as worker
from ometer_exporter.store.capacity import CapacityRecord
from ometer_exporter.views import curve
from ometer_exporter.views.rows import CAPACITY_COLUMNS

LLAMA, NOMIC = "llama3.2:latest", "nomic-embed-text:latest"
TOKENS = 64  # the sweep's num_predict: tells its requests from the warmup (1 token)


@pytest.fixture(autouse=True)
def short_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "SWEEP_PAUSE", 0.05)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def batching_model(**kw: float) -> object:
    # 64 tokens at 100 tok/s: 0.64 s alone; each extra sequence slows every one by 20 %.
    return chat_model(LLAMA, decode_tokens_per_second=100.0, output_tokens=TOKENS,
                      batch_slowdown=0.2, prefill_tokens_per_second=20_000.0, **kw)  # fmt: skip


def swept(records: list[RequestRecord], tokens: int = TOKENS) -> list[RequestRecord]:
    return [r for r in records
            if ((r.body or {}).get("options") or {}).get("num_predict") == tokens]  # fmt: skip


def stored(home: Path, model: str = LLAMA) -> CapacityRecord:
    with sqlite3.connect(home / "data" / "ometer.sqlite3") as db:
        [(text,)] = db.execute("SELECT record FROM capacity WHERE model = ?", (model,)).fetchall()
    return CapacityRecord.from_json(text)


def curve_rows(out: str) -> list[list[str]]:
    """The cells of each level's line under the curve's header and rule."""
    lines = out.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("Users")) + 2
    rows = []
    for line in lines[start:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != len(curve.TITLES):  # the verdict under the levels
            break
        rows.append(cells)
    return rows


SWEEP = ["--capacity", "--concurrency", "1,4,8", "--slo-ttft", "500ms", "--slo-tpot", "50ms",
         "--requests-per-level", "4", "--num-predict", str(TOKENS)]  # fmt: skip


async def test_the_curve_and_verdict_are_the_stored_sweeps(emulator_factory, home, capsys) -> None:
    emu = await emulator_factory([batching_model(), embedding_model(NOMIC)], num_parallel=4)
    code = await run([*SWEEP, "--json", "curve.json"], environ(home, emu.url))
    out, err = capsys.readouterr()
    assert code == 0, err
    record = stored(home)
    # The server's truth: 4 + 4 + 8 requests (none retried), at most 8 at once, four slots that
    # batch. Up to 4 users every request meets the SLO; at 8 half wait a whole request (~1 s).
    chats = swept(emu.records_for("/api/chat"))
    assert len(chats) == 16 and most_at_once(chats) == 8
    assert [level.concurrency for level in record.levels] == [1, 4, 8]
    assert [level.passed for level in record.levels] == [True, True, False]
    assert (record.max_concurrency, record.parallel_slots) == (4, 4)
    assert (record.slo_ttft, record.slo_tpot, record.slo_attainment) == (0.5, 0.05, 0.95)
    # Every cell is the record's figure.
    fmt = curve.format_time
    expected = [
        [str(lv.concurrency), str(lv.requests), curve.percent(lv.attainment),
         fmt(lv.ttft[0]), fmt(lv.ttft[2]), fmt(lv.tpot[0]), fmt(lv.e2e[2]),
         f"{lv.output_tokens_per_second:.1f}", f"{lv.goodput:.2f}",
         ("pass" if lv.passed else "miss") + ("*" if lv.lagged else "")]
        for lv in record.levels
    ]  # fmt: skip
    assert curve_rows(out) == expected
    assert expected[2][2] != "100 %" and int(expected[2][2].split()[0]) < 95
    assert out.startswith(f"{LLAMA} (local): load sweep, 4 requests per level, 64 output tokens")
    assert "4 users within SLO (TTFT ≤ 500 ms, TPOT ≤ 50 ms, 95 % of requests)" in out
    assert "from 8 users on, TTFT is queueing: the server decodes 4 requests at a time" in out
    assert f"not swept (a load sweep runs on local chat models only): {NOMIC} (local)" in err
    # Progress (not a terminal: a line each) tells each level as it ends, in order.
    told = [line for line in err.splitlines() if line.startswith(f"[0/1] {LLAMA} (local): ")]
    assert [line.split(": ")[1] for line in told] == ["1", "4", "8"]
    assert told[0].endswith("(user)") and "pass 100%" in told[1] and "miss" in told[2]
    # The sweep loaded the model, so it unloaded it; the embedding model was never sent a thing.
    assert not emu.loaded() and not emu.records_for("/api/embed")
    rows = json.loads((home / "curve.json").read_text())
    assert [list(r) for r in rows] == [list(CAPACITY_COLUMNS)] * 3
    assert [r["concurrency"] for r in rows] == [1, 4, 8]
    assert [r["max_concurrency"] for r in rows] == [4] * 3
    assert [r["ttft_p95_seconds"] for r in rows] == [lv.ttft[2] for lv in record.levels]
    assert "wrote 3 rows to curve.json" in err


async def test_csv_to_stdout_carries_only_the_rows(emulator_factory, home, capsys) -> None:
    emu = await emulator_factory([chat_model(LLAMA, output_tokens=8)], num_parallel=2)
    args = ["--capacity", "--concurrency", "1,2", "--requests-per-level", "2", "--num-predict",
            "8", "--csv"]  # fmt: skip
    assert await run(args, environ(home, emu.url)) == 0
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == list(CAPACITY_COLUMNS)
    assert [(r["model"], r["concurrency"], r["requests"]) for r in rows] == [
        (LLAMA, "1", "2"), (LLAMA, "2", "2"),
    ]  # fmt: skip
    assert "load sweep" not in out and "[1/1] llama3.2:latest (local)" in err
    assert len(swept(emu.records_for("/api/chat"), 8)) == 4


async def test_flags_are_checked_every_problem_named(home, capsys) -> None:
    args = ["--capacity", "--concurrency", "0,2,x", "--slo-ttft", "fast", "--slo-tpot", "0ms",
            "--requests-per-level", "0", "--ttft", "--runs", "2"]  # fmt: skip
    nowhere = environ(home, "http://127.0.0.1:9")  # flags are checked before any request
    assert await run(args, nowhere) == 2
    err = capsys.readouterr().err
    for problem in (
        "flag --concurrency[0]: 0 is out of range", "flag --concurrency[2]:",
        "flag --slo-ttft: 'fast' is not a duration", "flag --slo-tpot: '0ms' is zero",
        "flag --requests-per-level: 0 is out of range", "flag --ttft: not with --capacity",
        "flag --runs: not with --capacity",
    ):  # fmt: skip
        assert problem in err
    assert await run(["--capacity", "--concurrency", "1,2,2,300"], nowhere) == 2
    assert "allowed: an integer from 1 to 256" in capsys.readouterr().err
    assert await run(["--capacity", "--concurrency", "4,2,4"], nowhere) == 2
    assert "repeats a value" in capsys.readouterr().err
    assert await run(["--concurrency", "1,2", "--slo-tpot", "25ms"], nowhere) == 2
    err = capsys.readouterr().err
    assert "flag --concurrency: needs --capacity" in err and "flag --slo-tpot: needs" in err
    assert await run(["--help"], {}) == 0
    out = capsys.readouterr().out
    assert "--capacity runs a load sweep instead of the regular runs" in out
    assert "their load sweep was aborted or" in out


async def test_a_refused_sweep_keeps_its_levels_and_exits_3(emulator_factory, home,
                                                            capsys) -> None:  # fmt: skip
    emu = await emulator_factory([batching_model()], num_parallel=4)
    emu.preload(LLAMA, keep_alive=-1)  # loaded: no warmup, the first request is the sweep's
    # The runner fails mid-reply: the model took the request (its expiry moved), then refused.
    crash = Fault("error_line", after_chunks=2, message="model runner crashed", times=-1)
    emu.add_fault(LLAMA, crash)
    code = await run(SWEEP, environ(home, emu.url))
    out, err = capsys.readouterr()
    assert code == 3, (out, err)
    record = stored(home)
    assert [(lv.concurrency, lv.requests, lv.good) for lv in record.levels] == [(1, 1, 0)]
    assert record.max_concurrency is None and "model runner crashed" in (record.stopped or "")
    assert curve_rows(out)[0][-1] == "miss"
    assert "not even 1 user within SLO (TTFT ≤ 500 ms" in out
    assert "stopped at 1 user: the server refused a request (" in out
    assert "1 of 1 model without a complete load sweep: llama3.2:latest (local) (exit 3)" in err
    assert len(emu.records_for("/api/chat")) == 1  # the refusal is the answer: no retry
    assert LLAMA in emu.loaded()  # loaded by someone else: left loaded


async def test_a_model_that_cannot_load_or_cannot_be_swept(emulator_factory, home,
                                                           capsys) -> None:  # fmt: skip
    emu = await emulator_factory([batching_model(), embedding_model(NOMIC)])
    emu.add_fault(LLAMA, Fault("status", status=500, message="out of memory", times=-1))
    env = environ(home, emu.url)
    assert await run(SWEEP, env) == 3
    out, err = capsys.readouterr()
    assert f"{LLAMA} (local): load sweep aborted: the model could not be loaded" in out
    assert "out of memory" in out and "Users" not in out  # nothing was published
    assert "(exit 3)" in err
    assert await run(["--capacity", "--model", NOMIC], env) == 1  # nothing to sweep
    assert "no model to sweep" in capsys.readouterr().err
    assert not emu.records_for("/api/embed")


async def test_an_openai_compatible_target_is_swept(emulator_factory, home, capsys) -> None:
    emu = await emulator_factory([chat_model(LLAMA, output_tokens=16)], engine="llama.cpp",
                                 num_parallel=4)  # fmt: skip
    config = home / "ometer.yaml"
    config.write_text(f"targets:\n  - {{name: box, url: '{emu.url}/v1', api: openai}}\n")
    args = ["--config.file", str(config), "--capacity", "--concurrency", "1,2",
            "--requests-per-level", "2", "--num-predict", "16"]  # fmt: skip
    code = await run(args, {"HOME": str(home), "OMETER_STORAGE_PATH": str(home / "data")})
    out, err = capsys.readouterr()
    assert code == 0, err
    record = stored(home)
    assert [level.concurrency for level in record.levels] == [1, 2]
    assert [row[0] for row in curve_rows(out)] == ["1", "2"]
    assert curve.verdict(record) in out
    completions = swept(emu.records_for("/v1/chat/completions"), 16)  # recorded as /api/chat bodies
    assert len(completions) == 4 and most_at_once(completions) == 2
    assert emu.records_for("/slots")  # the quiet gate asked whether a slot was busy


async def test_ctrl_c_mid_sweep_stops_promptly_and_unloads_the_model(emulator_factory,
                                                                     home) -> None:  # fmt: skip
    # A slow model: each request takes 5 s, so Ctrl-C lands inside a level.
    emu = await emulator_factory(
        [chat_model(LLAMA, decode_tokens_per_second=20.0, output_tokens=100)], num_parallel=4
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "OMETER_"))}
    env |= environ(home, emu.url)
    async with exporter_process(
        "bench", "--capacity", "--concurrency", "2,4", "--num-predict", "100", env=env
    ) as process:

        def sweeping() -> bool:
            return sum(r.finished is None for r in swept(emu.records_for("/api/chat"), 100)) >= 2

        await until(sweeping, what="the sweep's concurrent requests", within=60)
        assert emu.loaded()  # the sweep loaded the model ...
        signalled = time.perf_counter()  # the emulator's clock: it runs in this process
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), 5)
        seconds = time.perf_counter() - signalled
        assert process.stderr is not None
        err = (await process.stderr.read()).decode()
    assert code == 130 and "interrupted" in err and seconds < 5
    await until_unloaded_once(emu, LLAMA, since=signalled)  # ... and unloaded it on the way out


def test_the_verdict_says_what_the_levels_say() -> None:
    within = factories.capacity(levels=(1, 2), slots=4)  # no level queued: every one passes
    assert curve.verdict(within) == (
        "2 users within SLO (TTFT ≤ 500 ms, TPOT ≤ 25 ms, 95 % of requests); the largest level "
        "tried, so more may fit"
    )
    assert within.slots_hint is None and "queueing" not in curve.render("gpu", LLAMA, within)
    knee = factories.capacity(levels=(1, 2, 4, 8), slots=4)
    assert curve.verdict(knee).startswith("4 users within SLO (")
    none = factories.capacity(levels=(1, 2), slo_ttft=0.001)  # TTFT is 20 ms at best
    assert none.max_concurrency is None
    assert curve.verdict(none).startswith("not even 1 user within SLO (TTFT ≤ 1 ms,")
    lagged = replace(knee, levels=(replace(knee.levels[0], lagged=True), *knee.levels[1:]))
    text = curve.render("gpu", LLAMA, lagged)
    assert curve.LAG_NOTE in text and curve_rows(text)[0][-1] == "pass*"
    # A share is rounded down: 94.99 % is not shown as the 95 % it missed.
    assert [curve.percent(x) for x in (0.9499, 0.95, 1.0, 0.0)] == ["94 %", "95 %", "100 %", "0 %"]
    assert [curve.format_time(x) for x in (0.00302, 0.01, 0.635, 1.5, None)] == [
        "3.02 ms", "10.0 ms", "635 ms", "1.50 s", "—",
    ]  # fmt: skip


async def test_history_shows_the_stored_sweeps_and_sends_nothing(
    emulator_factory, home, capsys
) -> None:
    emu = await emulator_factory([batching_model()], num_parallel=4)
    assert await run(SWEEP, environ(home, emu.url)) == 0
    swept_out = capsys.readouterr().out
    sent = len(emu.records)
    code = await run(["--capacity", "--history"], environ(home, emu.url))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len(emu.records) == sent  # read from the store: nothing reached the server
    assert curve_rows(out) == curve_rows(swept_out)
    assert out.startswith(f"{LLAMA} (local): load sweep, 4 requests per level")
    assert "4 users within SLO (TTFT ≤ 500 ms, TPOT ≤ 50 ms, 95 % of requests)" in out
    assert await run(["--capacity", "--history", "--json"], environ(home, emu.url)) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["concurrency"] for r in rows] == [1, 4, 8]
    missing = ["--capacity", "--history", "--model", "nothing-like-it"]
    assert await run(missing, environ(home, emu.url)) == 1
    assert "no stored load sweeps matching 'nothing-like-it'" in capsys.readouterr().err
    code = await run(["--capacity", "--history", "--concurrency", "1,2"], environ(home, emu.url))
    assert code == 2
    assert "flag --concurrency: not with --history" in capsys.readouterr().err
