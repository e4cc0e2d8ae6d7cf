"""Hostile servers: every reply an adversarial pass found harmful, against the running exporter.

For each case the exporter runs with two targets: ``good`` (the emulator) and ``evil`` (the
hostile server, tests/hostile_server.py). Whatever ``evil`` sends: ``good`` keeps its numbers;
``/metrics`` passes ``promtool check metrics``, ``/export`` is strict JSON (no NaN, no
Infinity), ``/`` and ``/-/healthy`` answer 200, each within a second; and all of it again after
a restart on the same storage directory (nothing poisonous was stored).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hostile_server import (
    MODEL,
    Bodies,
    HostileServer,
    Reply,
    chunk,
    done_line,
    dumps,
    ps_entry,
    show_body,
    tag_entry,
)
from ollama_emulator import chat_model
from prometheus_tools import promtool
from service import Running, Start, sample, until

from ometer_exporter.client.replies import MAX_LIST_ITEMS
from ometer_exporter.store.records import Snapshot

KEY = "sk-Hostile-Reflected-8c2d4e6f1a"
HUGE = 10**400  # 401 digits
GOOD = "steady:latest"
MAX_MODELS = 20
DEEP = b'{"a":' * 100_000  # json.loads would raise RecursionError


def config(good_url: str, evil_url: str) -> str:
    return f"""
benchmark:
  interval: 1h
  idle_before: 0s  # a loaded model is measured at once: these tests are about hostile values
  runs: 2
  num_predict: 16
  timeouts: {{connect: 1s, first_byte: 2s, idle: 1s, total: 5s}}
targets:
  - name: good
    url: {good_url}
    select: all
  - name: evil
    url: {evil_url}
    select: all
    api_key_env: KEY
    max_models: {MAX_MODELS}
"""


def tags(*entries: dict[str, Any]) -> Reply:
    return Reply(dumps({"models": list(entries)}))


def evil_models(snap: Snapshot) -> dict[str, Any]:
    return {m: e for (t, m), e in snap.models.items() if t == "evil" and e.inventory}


def only_other(snap: Snapshot) -> None:
    """The bad entry is left out; the good one beside it is reported."""
    assert set(evil_models(snap)) == {"other:latest"}


def victim_kept(snap: Snapshot) -> None:
    assert MODEL in evil_models(snap)


def victim_failed(error_type: str) -> Callable[[Snapshot], None]:
    def check(snap: Snapshot) -> None:
        bench = snap.models[("evil", MODEL)].benchmark
        assert bench is not None and not bench.success and bench.error_type == error_type

    return check


def ps_refused(snap: Snapshot) -> None:
    """A reply refused whole marks the target down with a typed error (not a loop bug)."""
    state = snap.targets["evil"]
    assert state.up is False and state.error is not None
    assert state.error.startswith("/api/ps: the reply nests deeper than 32 levels")


def int64_rates(snap: Snapshot) -> None:
    """The largest counts Ollama could send are numbers, summed past int64 in the counters."""
    entry = snap.models[("evil", MODEL)]
    assert entry.benchmark is not None and entry.benchmark.tokens_per_second is not None
    assert entry.benchmark.tokens_per_second == pytest.approx((2**63 - 1) / 1.0)
    assert entry.counters.output_tokens == 2 * (2**63 - 1)


def version_bounded(snap: Snapshot) -> None:
    version = snap.targets["evil"].version
    assert version is not None and version.startswith("0.33.0") and len(version) == 64
    assert version.isprintable()


def capped_capabilities(snap: Snapshot) -> None:
    inventory = evil_models(snap)[MODEL].inventory
    assert inventory is not None and len(inventory.capabilities) == MAX_LIST_ITEMS


def no_modified_time(snap: Snapshot) -> None:
    inventory = evil_models(snap)[MODEL].inventory
    assert inventory is not None and inventory.modified_at is None


def capped_models(snap: Snapshot) -> None:
    assert len(evil_models(snap)) == MAX_MODELS


def no_rates(snap: Snapshot) -> None:
    bench = snap.models[("evil", MODEL)].benchmark
    assert bench is not None and bench.success
    assert bench.tokens_per_second is None and bench.prompt_tokens_per_second is None


@dataclass
class Case:
    bodies: Bodies
    expect: Callable[[Snapshot], None]


def case(expect: Callable[[Snapshot], None], **bodies: Any) -> Case:
    return Case(replace(Bodies(), **bodies), expect)


surrogate = (
    b'{"models":['
    + dumps(tag_entry("other:latest"))
    + b","
    + dumps(tag_entry("x"))[:-1].replace(b'"name":"x"', b'"name":"evil\\ud800:latest"')
    + b"}]}"
)

CASES: dict[str, Case] = {
    "tags-size-401-digits": case(only_other, tags=tags(tag_entry(size=HUGE),
                                                       tag_entry("other:latest"))),
    "tags-context-length-401-digits": case(only_other, tags=tags(
        tag_entry(details={"context_length": HUGE}), tag_entry("other:latest"))),
    "show-parameter-count-401-digits": case(victim_kept, show=Reply(dumps(
        show_body(**{"general.parameter_count": HUGE})))),
    "ps-size-vram-401-digits": case(victim_kept, ps=Reply(dumps(
        {"models": [ps_entry(size_vram=HUGE)]}))),
    "done-eval-count-401-digits": case(victim_failed("bad_response"),
                                       chat=[chunk()] * 16 + [done_line(eval_count=HUGE)]),
    "version-2MiB-with-surrogate": case(version_bounded, version=Reply(
        b'{"version":"0.33.0\\ud800' + b"x" * (2 << 20) + b'"}')),
    "embed-prompt-eval-count-401-digits": case(
        victim_failed("bad_response"), tags=tags(tag_entry(capabilities=["embedding"])),
        embed=Reply(dumps({"model": MODEL, "embeddings": [[0.5, 0.25]],
                           "total_duration": 5_000_000, "prompt_eval_count": HUGE}))),
    "deep-embed": case(victim_failed("bad_response"),
                       tags=tags(tag_entry(capabilities=["embedding"])), embed=Reply(DEEP)),
    "50000-capabilities": case(capped_capabilities, tags=tags(tag_entry(
        capabilities=[f"cap{i}" for i in range(50_000)]))),
    "lone-surrogate-name": case(only_other, tags=Reply(surrogate)),
    "modified-at-year-10000": case(no_modified_time, tags=tags(
        tag_entry(modified_at="10000-01-01T00:00:00Z"))),
    # Year 10000 once read in UTC: fromisoformat takes it, every conversion to UTC overflows.
    "modified-at-9999-west": case(no_modified_time, tags=tags(
        tag_entry(modified_at="9999-12-31T23:59:59-14:00"))),
    "naive-zero-date": case(no_modified_time, tags=tags(
        tag_entry(modified_at="0001-01-01T00:00:00"))),
    "400-nines-parameter-size": case(victim_kept, tags=tags(
        tag_entry(details={"parameter_size": "9" * 400})),
        show=Reply(dumps(show_body(**{"general.parameter_count": None})))),
    "deep-show": case(victim_kept, show=Reply(DEEP)),
    "deep-ps": case(ps_refused, ps=Reply(DEEP)),
    "deep-error-body": case(victim_failed("http_5xx"), chat=[DEEP], chat_status=500),
    "deep-stream-line": case(victim_failed("bad_response"), chat=[chunk(), DEEP]),
    "100000-models": case(capped_models, tags=tags(  # names only: 2 MB, not 35
        *({"name": f"m{i}:latest"} for i in range(100_000)))),
    "2MiB-name": case(only_other, tags=tags(tag_entry("n" * (2 << 20)),
                                            tag_entry("other:latest"))),
    # A 301-digit count over 1 ns: float division gives inf (the 401-digit one overflows).
    "infinite-tokens-per-second": case(victim_failed("bad_response"), chat=[chunk()] * 16 + [
        done_line(eval_count=10**300, eval_duration=1)]),
    "eval-count-int64-max": case(int64_rates, chat=[chunk()] * 16 + [done_line(
        eval_count=2**63 - 1, eval_duration=10**9)]),
    "tokens-over-a-nanosecond": case(no_rates, chat=[chunk()] * 16 + [done_line(
        eval_count=1000, eval_duration=1, prompt_eval_duration=1, total_duration=3)]),
    "key-in-model-name": case(only_other, tags=tags(tag_entry(f"{KEY.upper()}:latest"),
                                                    tag_entry("other:latest"))),
    "key-slice-in-a-label": case(only_other, tags=tags(
        tag_entry(details={"family": KEY[2:14].lower()}), tag_entry("other:latest"))),
    "key-slice-in-an-error": case(victim_failed("http_4xx"), chat=[dumps(
        {"error": f"bad key {KEY[:9].upper()}…{KEY[-10:]}"})], chat_status=400),
}  # fmt: skip


def _strict(constant: str) -> float:
    raise ValueError(f"/export carries the JSON constant {constant}")


def leaked(text: str) -> bool:
    """Whether any 8-character slice of the key is in `text`, in any case."""
    low = text.lower()
    return any(KEY[i : i + 8].lower() in low for i in range(len(KEY) - 7))


async def check_endpoints(running: Running) -> None:
    texts: dict[str, str] = {}
    for path in ("/metrics", "/export", "/", "/-/healthy"):
        started = time.perf_counter()
        response = await running.http.get(path)
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
        assert elapsed < 1.0, f"{path} took {elapsed:.3f}s"
        texts[path] = response.text
    code, problems = await promtool("check", "metrics", stdin=texts["/metrics"].encode())
    assert code == 0 and problems.strip() == "", problems
    rows = json.loads(texts["/export"], parse_constant=_strict)
    for row in rows:
        for value in row.values():
            assert not isinstance(value, float) or math.isfinite(value), row
    assert not any(leaked(text) for text in texts.values())
    good = {r["model"]: r for r in rows if r["target"] == "good"}[GOOD]
    assert good["success"] is True and good["ttft"] > 0 and good["tps"] > 0
    m = await running.metrics()
    assert sample(m, "ometer_benchmark_success", target="good", model=GOOD) == 1
    tps = sample(m, "ometer_output_tokens_per_second", target="good", model=GOOD)
    assert tps is not None and tps > 0


async def evil_tried(running: Running, *, whole_cycle: bool = True) -> None:
    """Wait for the evil target's first cycle attempt to end (a failed discovery counts), or
    after a restart with fresh results, for its first discovery."""

    def done() -> bool:
        state = running.exporter.store.snapshot.targets.get("evil")
        if state is None:
            return False
        return state.last_cycle_duration is not None if whole_cycle else state.up is not None

    await until(done, within=60.0, what="a cycle of the evil target")


@pytest.mark.parametrize("name", list(CASES))
async def test_hostile_server(name: str, emulator_factory, start_exporter: Start,
                              tmp_path: Path) -> None:  # fmt: skip
    hostile = CASES[name]
    good = await emulator_factory([chat_model(GOOD)])
    good.preload(GOOD)
    server = HostileServer(hostile.bodies)
    evil_url = await server.start()
    storage = tmp_path / "storage"
    yaml_text = config(good.url, evil_url)
    try:
        running = await start_exporter(yaml_text, storage=storage, env={"KEY": KEY})
        await running.cycles("good", 1, within=30.0)
        await evil_tried(running)
        hostile.expect(running.exporter.store.snapshot)
        assert running.exporter.store.snapshot.targets["evil"].loop_errors == 0  # all typed
        await check_endpoints(running)
        assert server.calls["/api/show"] <= MAX_MODELS
        await running.stop()

        again = await start_exporter(yaml_text, storage=storage, env={"KEY": KEY})
        await check_endpoints(again)  # restored from the same SQLite file
        await evil_tried(again, whole_cycle=False)
        await check_endpoints(again)
    finally:
        await server.close()


ONESHOT_CASES = ("tags-size-401-digits", "lone-surrogate-name", "deep-ps", "deep-stream-line",
                 "infinite-tokens-per-second", "modified-at-year-10000", "50000-capabilities",
                 "deep-show")  # fmt: skip


@pytest.mark.parametrize("name", ONESHOT_CASES)
async def test_the_oneshot_exits_with_its_code_not_a_traceback(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bench`` on a hostile server: a documented exit code, one-line errors, nothing leaked,
    nothing poisonous written to the shared store."""
    import asyncio

    from ometer_exporter.cli.main import main

    monkeypatch.chdir(tmp_path)
    server = HostileServer(CASES[name].bodies)
    url = await server.start()
    env = {"HOME": str(tmp_path), "OLLAMA_HOST": url, "OMETER_STORAGE_PATH": str(tmp_path / "d")}
    try:
        code = await asyncio.to_thread(main, ["bench", "--ttft", "--tps", "--json"], env)
    finally:
        await server.close()
    out, err = capsys.readouterr()
    assert code in (0, 1, 3), (code, err)  # all measured / nothing reachable / some failed
    assert "Traceback" not in err and "Traceback" not in out
    assert KEY not in out + err and KEY[:9].upper() not in out + err
    if code == 1:  # nothing reachable (the deep /api/ps): the reason, and no JSON
        assert out == "" and "cannot reach local" in err
    else:
        rows = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in bench --json"))
        assert isinstance(rows, list)
    for line in err.splitlines():
        assert len(line) < 400, line  # one short line per error, not a dump of the reply
