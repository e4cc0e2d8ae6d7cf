"""``/api/history``: its parameters (a 400 naming the bad one), its bounds, the stored figures
it reads (checked, from old files too), the trend rule and the change markers."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from factories import entry
from service import until

from ometer_exporter.measure.results import ModelResult
from ometer_exporter.store.database import Database
from ometer_exporter.store.records import Method, Record, TargetState
from ometer_exporter.store.store import Store
from ometer_exporter.views import history
from ometer_exporter.views.history import HistoryQuery
from ometer_exporter.views.query import ExportError

METHOD = Method("default", 128, "auto")
NOW = 1_790_000_000.0


def record(at: float, **changes: object) -> Record:
    bench = entry("local", "m:latest").benchmark
    assert bench is not None
    base = dataclasses.replace(bench, started_at=at - 2, finished_at=at, url="http://gpu:11434",
                               prompt_set="default", num_predict=128, think="auto",
                               ollama_version="0.33.0", load_duration=1.25)  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def fill(path: Path, series: dict[str, list[Record]]) -> None:
    db = Database(path / "ometer.sqlite3", retention=10 * 365 * 86400.0)
    for model, records in series.items():
        for r in records:
            db.write("local", model, r, None)
    db.close()


def answer(path: Path, query: HistoryQuery, models: list[str]) -> Any:
    db = Database(path / "ometer.sqlite3", retention=10 * 365 * 86400.0)
    keys = [("local", m) for m in models]
    per_model = query.per_model(len(keys))
    body = history.to_json(query, per_model, keys, db.points(keys, query.since, per_model + 1))
    db.close()
    return json.loads(body)


# -- parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"sort": ["tps"]}, "unknown parameter 'sort' (allowed: model, points, since, target)"),
        ({"since": ["yesterday"]}, "since='yesterday' is not allowed (use a duration"),
        ({"since": ["2026-01-31T12:00:00"]}, "since='2026-01-31T12:00:00' is not allowed"),
        ({"since": ["1h", "2h"]}, "since given 2 times; give it once"),
        ({"points": ["0"]}, "points='0' is not allowed (use an integer from 1 to 1000)"),
        ({"points": ["1001"]}, "points='1001' is not allowed"),
        ({"points": ["-5"]}, "points='-5' is not allowed"),
        ({"points": ["٣"]}, "points='٣' is not allowed"),  # a digit, but not ASCII
    ],
)
def test_bad_parameters_are_named(params: dict[str, list[str]], problem: str) -> None:
    with pytest.raises(ExportError) as caught:
        HistoryQuery.parse(params, now=NOW)
    assert problem in str(caught.value)


def test_every_problem_at_once_and_good_values() -> None:
    with pytest.raises(ExportError) as caught:
        HistoryQuery.parse({"since": ["soon"], "points": ["x"], "format": ["csv"]}, now=NOW)
    assert len(caught.value.problems) == 3
    query = HistoryQuery.parse(
        {"target": ["gpu", ""], "model": ["llama3.2"], "since": ["24h"], "points": ["7"]},
        now=NOW,
    )
    assert query == HistoryQuery(("gpu",), ("llama3.2",), NOW - 86400, 7)
    at = HistoryQuery.parse({"since": ["2026-01-31T12:00:00Z"]}, now=NOW).since
    assert at == 1_769_860_800.0
    assert HistoryQuery.parse({}, now=NOW) == HistoryQuery(since=0.0, points=30)


def test_points_per_model_are_bounded_in_all() -> None:
    query = HistoryQuery(points=1000)
    assert query.per_model(1) == 1000
    assert query.per_model(200) == history.MAX_TOTAL // 200 == 60
    assert query.per_model(100_000) == 1  # every model keeps its newest result
    assert HistoryQuery(points=5).per_model(200) == 5


# -- the answer ----------------------------------------------------------------------------------


def test_newest_points_oldest_first_truncated_and_since(tmp_path: Path) -> None:
    fill(tmp_path, {"a:latest": [record(NOW - 600 * i - 300, tokens_per_second=100.0 + i)
                                 for i in range(40)]})  # fmt: skip
    body = answer(tmp_path, HistoryQuery(points=5), ["a:latest"])
    [series] = body["series"]
    assert series["t"] == [NOW - 600 * i - 300 for i in (4, 3, 2, 1, 0)]
    assert series["tps"] == [104.0, 103.0, 102.0, 101.0, 100.0]
    assert series["truncated"] is True and body["points_per_model"] == 5
    every = answer(tmp_path, HistoryQuery(points=1000), ["a:latest"])["series"][0]
    assert len(every["t"]) == 40 and every["truncated"] is False
    recent = answer(tmp_path, HistoryQuery(since=NOW - 3600, points=1000), ["a:latest"])
    assert len(recent["series"][0]["t"]) == 6  # 300 s … 3300 s ago


def test_total_is_bounded_with_many_models(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(history, "MAX_TOTAL", 30)
    models = [f"m{i}:latest" for i in range(3)]
    fill(tmp_path, {m: [record(NOW - 60 * i) for i in range(25)] for m in models})
    body = answer(tmp_path, HistoryQuery(points=1000), models)
    assert body["points_per_model"] == 10
    assert [len(s["t"]) for s in body["series"]] == [10, 10, 10]
    assert all(s["truncated"] for s in body["series"])


def test_trend_follows_the_one_shot_rule(tmp_path: Path) -> None:
    fill(tmp_path, {
        "slower:latest": [record(NOW - 20, tokens_per_second=100.0, ttft=0.2),
                          record(NOW - 10, tokens_per_second=45.7, ttft=0.205)],
        "method:latest": [record(NOW - 20, tokens_per_second=100.0),
                          record(NOW - 10, tokens_per_second=45.7, num_predict=256)],
        "moved:latest": [record(NOW - 20, tokens_per_second=100.0),
                         record(NOW - 10, tokens_per_second=45.7, url="http://gpu2:11434")],
        "failed:latest": [record(NOW - 30, tokens_per_second=50.0),
                          record(NOW - 20, tokens_per_second=100.0),
                          record(NOW - 10, success=False, error="boom")],
        "upgraded:latest": [record(NOW - 20), record(NOW - 10, ollama_version="0.34.0")],
    })  # fmt: skip
    models = ["failed:latest", "method:latest", "moved:latest", "slower:latest",
              "upgraded:latest"]  # fmt: skip
    by_model = {s["model"]: s for s in answer(tmp_path, HistoryQuery(), models)["series"]}
    assert by_model["slower:latest"]["trend"] == {"ttft": "→", "tps": "↓"}
    # Another method or another server: no arrow, and a marker where it changed.
    assert by_model["method:latest"]["trend"] == {"ttft": "", "tps": ""}
    assert [c["what"] for c in by_model["method:latest"]["changes"]] == ["method"]
    assert by_model["moved:latest"]["trend"] == {"ttft": "", "tps": ""}
    assert [c["what"] for c in by_model["moved:latest"]["changes"]] == ["url"]
    # A failed cycle has no figures: the arrow compares the two good results before it.
    failed = by_model["failed:latest"]
    assert failed["ok"] == [1, 1, 0] and failed["tps"] == [50.0, 100.0, None]
    assert failed["trend"]["tps"] == "↑"
    upgraded = by_model["upgraded:latest"]
    assert upgraded["changes"] == [
        {"t": NOW - 10, "what": "version", "text": "Ollama 0.33.0 → 0.34.0"}
    ]
    assert upgraded["trend"] == {"ttft": "→", "tps": "→"}  # a new version still compares


def test_bad_stored_figures_are_left_out(tmp_path: Path) -> None:
    fill(tmp_path, {"a:latest": [record(NOW - 20), record(NOW - 10), record(NOW)]})
    with sqlite3.connect(tmp_path / "ometer.sqlite3") as db:
        db.execute("UPDATE results SET tps = 'fast' WHERE finished_at = ?", (NOW - 10,))
        db.execute("UPDATE results SET ttft = -1.0 WHERE finished_at = ?", (NOW,))
    [series] = answer(tmp_path, HistoryQuery(), ["a:latest"])["series"]
    assert series["t"] == [NOW - 20] and series["skipped"] == 2


def test_a_file_from_before_the_point_columns_is_filled_in(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "ometer.sqlite3") as db:
        db.execute(
            "CREATE TABLE results (target TEXT NOT NULL, model TEXT NOT NULL, "
            "finished_at REAL NOT NULL, benchmark TEXT NOT NULL, inventory TEXT)"
        )
        for at, rate in ((NOW - 10, 80.0), (NOW, 40.0)):
            old = json.loads(record(at, tokens_per_second=rate).to_json())
            del old["ollama_version"]  # not kept then
            db.execute("INSERT INTO results VALUES ('local', 'a:latest', ?, ?, NULL)",
                       (at, json.dumps(old)))  # fmt: skip
        db.execute("INSERT INTO results VALUES ('local', 'a:latest', ?, 'not json', NULL)",
                   (NOW - 5,))  # fmt: skip
    [series] = answer(tmp_path, HistoryQuery(), ["a:latest"])["series"]
    assert series["t"] == [NOW - 10, NOW] and series["tps"] == [80.0, 40.0]
    assert series["trend"]["tps"] == "↓" and series["skipped"] == 1


async def test_a_record_keeps_the_targets_ollama_version(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.set_targets([TargetState("local", cloud=False, interval=600.0, method=METHOD)])
    now = time.time()
    unknown = store.record("local", ModelResult("a:latest", "chat", now - 1, now, ()), METHOD)
    assert unknown.ollama_version == ""  # /api/version not answered yet
    store.update_target("local", version="0.34.0")
    known = store.record("local", ModelResult("b:latest", "chat", now - 1, now, ()), METHOD)
    assert known.ollama_version == "0.34.0"
    await store.persist("local", "b:latest", known)
    [points] = await store.points([("local", "b:latest")], 0.0, 10)
    assert [p[-1] for p in points] == ["0.34.0"]
    await store.close()


# -- the route -----------------------------------------------------------------------------------


async def test_route_answers_json_and_400s(tmp_path: Path, start_exporter) -> None:
    fill(tmp_path / "data", {"a:latest": [record(NOW - 10), record(NOW)],
                             "b:latest": [record(NOW)]})  # fmt: skip
    running = await start_exporter(
        'targets: [{name: local, url: "http://127.0.0.1:9", select: all}]\n'
        "benchmark: {interval: 1h}\n",
        storage=tmp_path / "data",
    )
    # Start-up encodes the restored history for the page before anyone asks.
    await until(lambda: len(running.exporter.history_cache) == 2, what="the warmed history")
    response = await running.http.get("/api/history", params={"model": "a", "points": "1"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert [(s["model"], s["t"], s["truncated"]) for s in body["series"]] == [
        ("a:latest", [NOW], True)
    ]
    other = (await running.http.get("/api/history?target=gpu")).json()
    assert other["series"] == []  # a target that is not configured has no models
    bad = await running.http.get("/api/history?points=2000&since=later&sort=tps")
    assert bad.status_code == 400
    assert bad.text.startswith("bad request: unknown parameter 'sort'")
    assert "since='later' is not allowed" in bad.text and "points='2000'" in bad.text


async def test_cached_series_are_read_again_only_once_measured_again(tmp_path: Path) -> None:
    fill(tmp_path, {"a:latest": [record(NOW - 20), record(NOW - 10)], "b:latest": [record(NOW)]})
    store = Store(tmp_path, retention=10 * 365 * 86400.0)
    store.set_targets([TargetState("local", cloud=False, interval=600.0, method=METHOD)])
    await store.restore()  # the snapshot's latest results are the newest stored ones
    asked: list[list[str]] = []
    read = store.points

    async def points(keys: Any, since: float, limit: int) -> Any:
        asked.append([model for _, model in keys])
        return await read(keys, since, limit)

    store.points = points  # type: ignore[method-assign]
    cache = history.HistoryCache()
    first = await history.answer(store, HistoryQuery(), cache)
    assert asked == [["a:latest", "b:latest"]] and len(cache) == 2
    assert await history.answer(store, HistoryQuery(), cache) == first
    assert asked[1:] == []  # nothing read: both cached
    # Another number of points, or a window, is read (the window is never cached).
    await history.answer(store, HistoryQuery(since=NOW - 15), cache)
    assert asked[1:] == [["a:latest", "b:latest"]]
    # A new result of a: in the snapshot at once, stored a moment later.
    now = time.time()
    bench = store.record("local", ModelResult("a:latest", "chat", now - 1, now, ()), METHOD)
    asked.clear()
    before_stored = json.loads(await history.answer(store, HistoryQuery(), cache))
    assert asked == [["a:latest"]] and len(before_stored["series"][0]["t"]) == 2
    await store.persist("local", "a:latest", bench)
    after = json.loads(await history.answer(store, HistoryQuery(), cache))
    assert asked == [["a:latest"], ["a:latest"]]  # not kept while the row was missing
    assert (
        after["series"][0]["ok"] == [1, 1, 0] and after["series"][1] == before_stored["series"][1]
    )
    asked.clear()
    assert json.loads(await history.answer(store, HistoryQuery(), cache)) == after
    assert asked == []
    await store.close()


def test_an_embedding_model_has_the_figures_every_view_shows(tmp_path: Path) -> None:
    # Its "TTFT" is the request time, its rate the input rate (``views.rows``), stored so both
    # when written and when filled in from an older file's JSON.
    embedding = record(NOW, kind="embedding", ttft=None, tokens_per_second=None,
                       request_duration=0.011, prompt_tokens_per_second=2387.5)  # fmt: skip
    fill(tmp_path, {"e:latest": [embedding]})
    [written] = answer(tmp_path, HistoryQuery(), ["e:latest"])["series"]
    assert (written["kind"], written["ttft"], written["tps"]) == ("embedding", [0.011], [2387.5])
    with sqlite3.connect(tmp_path / "ometer.sqlite3") as db:
        db.execute("DROP INDEX results_points")
        for column in ("kind", "success", "ttft", "tps", "prefill", "load", "prompt_set",
                       "num_predict", "think", "url", "version"):  # fmt: skip
            db.execute(f"ALTER TABLE results DROP COLUMN {column}")
    [filled] = answer(tmp_path, HistoryQuery(), ["e:latest"])["series"]
    assert filled == written
