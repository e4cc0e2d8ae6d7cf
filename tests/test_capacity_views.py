"""The load sweep's record on ``/metrics`` and ``/export?view=capacity``: every figure equals
the stored record's, absent without a sweep, the aborted counter with every reason, values that
are not finite left out, promtool, the per-model cache, rows, columns, filters and a 400."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import shutil
import subprocess
from dataclasses import replace
from datetime import datetime

import pytest
from factories import capacity, entry, snapshot
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from ometer_exporter.store.capacity import ABORTS, QUANTILES, CapacityRecord
from ometer_exporter.store.records import ModelEntry, Snapshot
from ometer_exporter.views import query as export_query
from ometer_exporter.views.exposition import Exposition
from ometer_exporter.views.isolation import RENDER_ERRORS
from ometer_exporter.views.query import ExportError, Query
from ometer_exporter.views.reference import full_render
from ometer_exporter.views.rows import CAPACITY_COLUMNS, capacity_rows, to_csv, to_json
from ometer_exporter.web.routes import COLUMNS_OF, ROWS_OF

Key = tuple[str, tuple[tuple[str, str], ...]]  # a sample: its name and sorted labels
Samples = dict[Key, float]
NASTY = 'evil"model\\with\nnewline:latest'
PER_LEVEL = {  # the gauges with a concurrency label and the level's field behind each
    "ometer_capacity_output_tokens_per_second": "output_tokens_per_second",
    "ometer_capacity_goodput_requests_per_second": "goodput",
    "ometer_capacity_slo_attainment_ratio": "attainment",
}
PER_QUANTILE = {  # the gauges with a quantile label too, and the level's tuple behind each
    "ometer_capacity_time_to_first_token_seconds": "ttft",
    "ometer_capacity_time_per_output_token_seconds": "tpot",
    "ometer_capacity_request_duration_seconds": "e2e",
}


def swept(target: str, model: str, record: CapacityRecord | None = None,
          aborted: tuple[tuple[str, int], ...] = ()) -> ModelEntry:  # fmt: skip
    return replace(entry(target, model), capacity=record or capacity(), capacity_aborted=aborted)


def metrics(snap: Snapshot, *, openmetrics: bool = False) -> Samples:
    body = asyncio.run(Exposition().render(snap, openmetrics=openmetrics, gzip=False)).decode()
    parse = parse_openmetrics if openmetrics else parse_text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parse(body)
        for s in family.samples
        if s.name.startswith("ometer_capacity_")
    }


def at(name: str, target: str, model: str, **labels: str) -> Key:
    return name, tuple(sorted({"target": target, "model": model, **labels}.items()))


def expected(target: str, model: str, e: ModelEntry) -> Samples:
    """Every capacity sample of one model, computed from its record field by field."""
    out: Samples = {}
    aborted = dict(e.capacity_aborted)
    for reason in ABORTS:
        out[at("ometer_capacity_sweeps_aborted_total", target, model, reason=reason)] = aborted.get(
            reason, 0
        )
    r = e.capacity
    if r is None:
        return out
    out[at("ometer_capacity_max_concurrency", target, model)] = r.max_concurrency or 0
    for level in r.levels:
        c = str(level.concurrency)
        for name, field in PER_LEVEL.items():
            value = getattr(level, field)
            if value is not None:
                out[at(name, target, model, concurrency=c)] = value
        for name, field in PER_QUANTILE.items():
            for q, value in zip(QUANTILES, getattr(level, field), strict=True):
                if value is not None:
                    out[at(name, target, model, concurrency=c, quantile=str(q))] = value
    if r.parallel_slots is not None:
        out[at("ometer_capacity_server_parallel_slots", target, model)] = r.parallel_slots
    out[at("ometer_capacity_last_run_timestamp_seconds", target, model)] = r.finished_at
    out[at("ometer_capacity_slo_seconds", target, model, slo="ttft")] = r.slo_ttft
    out[at("ometer_capacity_slo_seconds", target, model, slo="tpot")] = r.slo_tpot
    config = {"slo_ttft": f"{r.slo_ttft:g}", "slo_tpot": f"{r.slo_tpot:g}",
              "slo_attainment": f"{r.slo_attainment:g}", "num_predict": str(r.num_predict),
              "requests_per_level": str(r.requests_per_level)}  # fmt: skip
    out[at("ometer_capacity_config_info", target, model, **config)] = 1
    return out


def test_every_series_equals_the_record() -> None:
    batched = swept("gpu", "llama3.2:latest", aborted=(("contended", 2), ("refused", 1)))
    # Not even the first level within a 1 ms TTFT: max concurrency 0; one slot, 5 levels.
    hopeless = swept("gpu", NASTY, capacity(levels=(1, 2, 4, 8, 16), slots=1, slo_ttft=0.001))
    snap = snapshot([batched, hopeless])
    ours = metrics(snap)
    assert ours == expected("gpu", "llama3.2:latest", batched) | expected("gpu", NASTY, hopeless)
    # The figures the record implies, not only copied: the factory's 4 batching slots keep
    # TTFT within 0.5 s up to 4 users; beyond, requests queue (levels 1-4 pass, 8 fails).
    assert batched.capacity is not None and hopeless.capacity is not None
    assert [lv.passed for lv in batched.capacity.levels] == [True, True, True, False]
    assert ours[at("ometer_capacity_max_concurrency", "gpu", "llama3.2:latest")] == 4
    assert ours[at("ometer_capacity_server_parallel_slots", "gpu", "llama3.2:latest")] == 4
    assert ours[at("ometer_capacity_max_concurrency", "gpu", NASTY)] == 0
    assert ours[at("ometer_capacity_server_parallel_slots", "gpu", NASTY)] == 1
    assert len([k for k in ours if k[1] == at("", "gpu", NASTY, concurrency="16",
                                              quantile="0.99")[1]]) == 3  # fmt: skip
    # OpenMetrics carries the same samples (the counter as _total).
    assert metrics(snap, openmetrics=True) == ours


def test_equals_prometheus_clients_rendering() -> None:
    snap = snapshot([swept("gpu", "llama3.2:latest", aborted=(("load_failed", 1),)),
                     swept("cpu", NASTY), entry("cpu", "plain:latest")])  # fmt: skip
    for openmetrics in (False, True):
        parse = parse_openmetrics if openmetrics else parse_text
        reference = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in parse(full_render(snap, openmetrics=openmetrics).decode())
            for s in family.samples
            if s.name.startswith("ometer_capacity_")
        }
        assert metrics(snap, openmetrics=openmetrics) == reference
        assert len(reference) > 100


def test_no_sweep_no_series_and_aborts_alone_give_only_the_counter() -> None:
    never = entry("gpu", "never:latest")
    only_aborted = replace(entry("gpu", "busy:latest"), capacity_aborted=(("contended", 3),))
    ours = metrics(snapshot([never, only_aborted]))
    assert not [k for k in ours if ("model", "never:latest") in k[1]]
    assert ours == {
        at("ometer_capacity_sweeps_aborted_total", "gpu", "busy:latest", reason="contended"): 3,
        at("ometer_capacity_sweeps_aborted_total", "gpu", "busy:latest", reason="refused"): 0,
        at("ometer_capacity_sweeps_aborted_total", "gpu", "busy:latest", reason="load_failed"): 0,
    }


def test_a_value_that_is_not_finite_is_absent_and_counted() -> None:
    record = capacity()
    first, *rest = record.levels
    nan = float("nan")
    broken = replace(first, goodput=nan, ttft=(first.ttft[0], math.inf, *first.ttft[2:]))
    e = swept("gpu", "odd:latest", replace(record, levels=(broken, *rest), slo_tpot=nan))
    before = RENDER_ERRORS.counts().get("metrics", 0)
    ours = metrics(snapshot([e]))
    assert RENDER_ERRORS.counts().get("metrics", 0) == before + 1  # the model, once
    want = expected("gpu", "odd:latest", e)
    gone = {
        at("ometer_capacity_goodput_requests_per_second", "gpu", "odd:latest", concurrency="1"),
        at("ometer_capacity_time_to_first_token_seconds", "gpu", "odd:latest",
           concurrency="1", quantile="0.9"),
        at("ometer_capacity_slo_seconds", "gpu", "odd:latest", slo="tpot"),
    }  # fmt: skip
    config = [k for k in want if k[0] == "ometer_capacity_config_info"]
    assert set(want) - set(ours) == gone | set(config)  # no info with a "nan" label either
    assert all(ours[k] == want[k] for k in ours)


def test_a_repeated_level_is_shown_once() -> None:
    """A tampered store: two series of one name and labels would fail the whole scrape."""
    record = capacity(levels=(1, 2))
    twice = replace(record, levels=(*record.levels, replace(record.levels[0], goodput=99.0)))
    ours = metrics(snapshot([swept("gpu", "m:latest", twice)]))
    key = at("ometer_capacity_goodput_requests_per_second", "gpu", "m:latest", concurrency="1")
    assert ours[key] == record.levels[0].goodput


def test_promtool_accepts_the_capacity_series() -> None:
    assert shutil.which("promtool"), "promtool is missing: scripts/test installs it"
    snap = snapshot([swept("gpu", "llama3.2:latest", aborted=(("refused", 1),)),
                     swept("gpu", NASTY, capacity(levels=(1, 2, 4, 8, 16), slots=2))])  # fmt: skip
    body = asyncio.run(Exposition().render(snap, openmetrics=False, gzip=False))
    assert b"ometer_capacity_time_per_output_token_seconds{" in body
    done = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                          check=False)  # fmt: skip
    problems = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, problems
    assert problems.strip() == ""


async def test_only_the_model_whose_sweep_changed_is_rerendered(monkeypatch) -> None:
    import ometer_exporter.views.exposition as exposition_module

    entries = [swept("gpu", f"m{i}:latest") for i in range(3)]
    exposition = Exposition()
    await exposition.render(snapshot(entries), openmetrics=False, gzip=False)
    rendered: list[str] = []
    original = exposition_module._model_lines

    def counting(e: ModelEntry) -> list[str]:
        rendered.append(e.model)
        return original(e)

    monkeypatch.setattr(exposition_module, "_model_lines", counting)
    entries[1] = replace(entries[1], capacity=capacity(slots=2))
    body = await exposition.render(snapshot(entries, generation=2), openmetrics=False, gzip=False)
    assert rendered == ["m1:latest"]
    assert b'ometer_capacity_server_parallel_slots{target="gpu",model="m1:latest"} 2\n' in body
    assert b'ometer_capacity_server_parallel_slots{target="gpu",model="m0:latest"} 4\n' in body


# -- /export?view=capacity -------------------------------------------------------------------


def export_snapshot() -> Snapshot:
    return snapshot([
        swept("gpu", "qwen3:8b", capacity(levels=(1, 2, 4, 8, 16), slots=2)),
        swept("gpu", "llama3.2:latest"),
        swept("cpu", "llama3.2:1b", replace(capacity(levels=(1,), slo_ttft=0.001),
                                            stopped="http_5xx: slots busy")),
        entry("gpu", "never:latest"),
    ])  # fmt: skip


def test_a_row_per_model_and_level_with_every_figure() -> None:
    snap = export_snapshot()
    items = capacity_rows(snap, Query(view="capacity"))
    keys = [(r["target"], r["model"], r["concurrency"]) for r in items]
    assert keys == [("cpu", "llama3.2:1b", 1),
                    *[("gpu", "llama3.2:latest", c) for c in (1, 2, 4, 8)],
                    *[("gpu", "qwen3:8b", c) for c in (1, 2, 4, 8, 16)]]  # fmt: skip
    for r in items:
        record = snap.models[(r["target"], r["model"])].capacity
        assert record is not None
        level = next(lv for lv in record.levels if lv.concurrency == r["concurrency"])
        for measure in ("ttft", "tpot", "e2e", "queue_wait"):
            got = [r[f"{measure}_p{p}_seconds"] for p in (50, 90, 95, 99)]
            assert got == list(getattr(level, measure))
        assert (r["requests"], r["good"], r["met_slo"]) == (level.requests, level.good,
                                                           level.met_slo)  # fmt: skip
        assert r["output_tokens_per_second"] == level.output_tokens_per_second
        assert r["goodput_requests_per_second"] == level.goodput
        assert r["slo_attainment_ratio"] == level.attainment
        assert (r["passed"], r["queued"], r["lagged"]) == (level.passed, level.queued,
                                                           level.lagged)  # fmt: skip
        assert r["window_seconds"] == level.window
        assert r["max_concurrency"] == (record.max_concurrency or 0)
        assert r["server_parallel_slots"] == record.parallel_slots
        assert (r["slo_ttft_seconds"], r["slo_tpot_seconds"], r["slo_attainment"]) == (
            record.slo_ttft, record.slo_tpot, record.slo_attainment)  # fmt: skip
        assert r["num_predict"] == record.num_predict
        assert r["requests_per_level"] == record.requests_per_level
        for column, moment in (("started_at", record.started_at),
                               ("finished_at", record.finished_at)):  # fmt: skip
            assert r[column].endswith("Z")
            parsed = datetime.fromisoformat(r[column].replace("Z", "+00:00")).timestamp()
            assert parsed == pytest.approx(moment, abs=0.001)
        assert (r["stopped"], r["url"], r["ollama_version"]) == (
            record.stopped, record.url, record.ollama_version)  # fmt: skip
    refused = items[0]
    assert refused["stopped"] == "http_5xx: slots busy" and refused["max_concurrency"] == 0
    assert [r["passed"] for r in items[1:5]] == [True, True, True, False]


def test_json_and_csv_have_the_columns_in_order() -> None:
    items = capacity_rows(export_snapshot(), Query(view="capacity"))
    data = json.loads(to_json(items, columns=CAPACITY_COLUMNS))
    assert len(data) == 10 and all(list(obj) == list(CAPACITY_COLUMNS) for obj in data)
    assert data[0]["server_parallel_slots"] is None  # one level, nothing queued: unknown
    assert {f"ttft_p{p}_seconds" for p in (50, 90, 95, 99)} <= set(CAPACITY_COLUMNS)
    table = list(csv.DictReader(io.StringIO(to_csv(items, columns=CAPACITY_COLUMNS))))
    assert len(table) == 10 and list(table[0]) == list(CAPACITY_COLUMNS)
    for row, obj in zip(table, data, strict=True):
        assert float(row["tpot_p95_seconds"]) == obj["tpot_p95_seconds"]
        assert int(row["concurrency"]) == obj["concurrency"]
        assert row["passed"] == ("true" if obj["passed"] else "false")
    assert table[0]["stopped"] == "http_5xx: slots busy" and table[1]["stopped"] == ""


def test_filters_by_target_and_model() -> None:
    snap = export_snapshot()

    def models(targets: tuple[str, ...] = (), models: tuple[str, ...] = ()) -> set[str]:
        query = Query(view="capacity", targets=targets, models=models)
        return {r["model"] for r in capacity_rows(snap, query)}

    assert models(targets=("cpu",)) == {"llama3.2:1b"}
    assert models(models=("llama3.2",)) == {"llama3.2:1b", "llama3.2:latest"}
    assert models(models=("qwen3:8b",), targets=("cpu",)) == set()
    assert models(models=("never",)) == set()  # no sweep, no rows


def test_each_view_has_its_rows() -> None:
    assert set(ROWS_OF) == set(export_query.VIEWS)
    assert COLUMNS_OF["capacity"] == CAPACITY_COLUMNS


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"view": ["capacity"], "sort": ["ttft"]}, "view=capacity takes no sort= or verbose="),
        ({"view": ["capacity"], "verbose": ["1"]}, "rows come by target, model and concurrency"),
        ({"view": ["load"]}, "view='load' is not allowed (use models, prompt_length, capacity)"),
    ],
)
def test_bad_capacity_queries_say_what_is_wrong(params, fragment) -> None:
    with pytest.raises(ExportError) as info:
        Query.parse(params)
    assert fragment in str(info.value)


async def test_the_view_over_http(emulator_factory, start_exporter) -> None:
    emu = await emulator_factory([])
    running = await start_exporter(f"""
benchmark: {{interval: 1h}}
targets: [{{name: local, url: "{emu.url}"}}]
""")
    await running.cycles("local", 1)
    store = running.exporter.store
    # The loop's store with sweeps of models on other targets (the loop does not schedule
    # sweeps yet): the route serves whatever the snapshot holds.
    store._swap(models={**store.snapshot.models, **export_snapshot().models})
    answer = await running.http.get("/export", params={"view": "capacity", "target": "gpu"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith(
        "application/json")  # fmt: skip
    rows = answer.json()
    assert [(r["model"], r["concurrency"]) for r in rows] == [
        *[("llama3.2:latest", c) for c in (1, 2, 4, 8)],
        *[("qwen3:8b", c) for c in (1, 2, 4, 8, 16)]]  # fmt: skip
    assert list(rows[0]) == list(CAPACITY_COLUMNS)
    text = (await running.http.get("/export?view=capacity&format=csv&model=llama3.2:1b")).text
    assert text.splitlines()[0] == ",".join(CAPACITY_COLUMNS)
    assert len(text.splitlines()) == 2
    bad = await running.http.get("/export?view=capacity&sort=tps")
    assert bad.status_code == 400
    assert "view=capacity takes no sort= or verbose=" in bad.text
