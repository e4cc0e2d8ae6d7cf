"""/export rows: OMeter's columns, filters, sort, CSV/JSON encodings, bad parameters."""

from __future__ import annotations

import csv
import dataclasses
import io
import json

import pytest
from factories import capacity, entry, snapshot

from ometer_exporter.store.records import ModelEntry
from ometer_exporter.views.query import ExportError, Query
from ometer_exporter.views.rows import COLUMNS, format_size, rows, to_csv, to_json


@pytest.fixture
def snap():
    return snapshot(
        [
            entry("local", "llama3.2:latest", ttft=0.20, tps=90.0, size=2_000_000_000),
            entry("local", "llama3.2:1b", ttft=0.10, tps=150.0, size=1_300_000_000),
            entry("local", "qwen3:8b", ttft=0.40, tps=40.0, size=5_200_000_000),
            entry("cloud", "gpt-oss:120b", ttft=0.90, tps=60.0, size=384),
            ModelEntry("local", "=cmd|' /C calc'!A0:latest"),
        ]
    )


def names(items) -> list[str]:
    return [r["model"] for r in items]


def test_every_column_present_in_json(snap) -> None:
    data = json.loads(to_json(rows(snap, Query())))
    assert len(data) == 5
    for obj in data:
        assert list(obj)[: len(COLUMNS)] == list(COLUMNS)
    unmeasured = next(o for o in data if o["model"].startswith("="))
    assert unmeasured["ttft"] is None and unmeasured["size"] is None


def test_ometer_columns_keep_ometer_units(snap) -> None:
    row = next(r for r in rows(snap, Query()) if r["model"] == "qwen3:8b")
    assert row["size"] == "5.2 GB"
    assert row["size_bytes"] == 5_200_000_000
    assert row["ttft"] == pytest.approx(0.40)
    assert row["tps"] == pytest.approx(40.0)
    assert row["context"] == 131072
    assert row["quant"] == "Q4_K_M"
    assert row["capabilities"] == "completion, tools"
    assert row["benchmarked_at"].endswith("Z")
    assert row["target"] == "local" and row["kind"] == "chat"


def test_embedding_rows_use_request_time_and_input_rate() -> None:
    e = entry("local", "nomic-embed-text:latest", kind="embedding")
    row = rows(snapshot([e]), Query())[0]
    assert e.benchmark is not None
    assert row["ttft"] == e.benchmark.request_duration
    assert row["tps"] == e.benchmark.prompt_tokens_per_second
    assert row["kind"] == "embedding"


@pytest.mark.parametrize(
    ("sort", "reverse", "expected"),
    [
        ("ttft", False, ["llama3.2:1b", "llama3.2:latest", "qwen3:8b", "gpt-oss:120b"]),
        ("ttft", True, ["gpt-oss:120b", "qwen3:8b", "llama3.2:latest", "llama3.2:1b"]),
        ("tps", False, ["llama3.2:1b", "llama3.2:latest", "gpt-oss:120b", "qwen3:8b"]),
        ("size", False, ["qwen3:8b", "llama3.2:latest", "llama3.2:1b", "gpt-oss:120b"]),
        ("name", False, ["gpt-oss:120b", "llama3.2:1b", "llama3.2:latest", "qwen3:8b"]),
    ],
)
def test_sort_best_first_unknown_last(snap, sort, reverse, expected) -> None:
    got = names(rows(snap, Query(sort=sort, reverse=reverse)))
    if sort == "name":
        assert got[1:] == expected  # "=cmd…" sorts first by name
    else:
        assert got[:4] == expected
        assert got[4].startswith("=")


def test_users_within_slo_from_the_latest_sweep() -> None:
    """``capacity_max_concurrency``: the sweep's max concurrency, 0 when a sweep ran and not
    even one user met the SLO, null without a sweep; ``sort=users`` puts the most first."""
    within = capacity(levels=(1, 2, 4, 8), slots=2)
    missed = capacity(levels=(1, 2), slo_ttft=0.001)
    assert within.max_concurrency == 2 and missed.max_concurrency is None
    snap = snapshot([
        entry("local", "none:latest"),
        dataclasses.replace(entry("local", "missed:latest"), capacity=missed),
        dataclasses.replace(entry("local", "within:latest"), capacity=within),
    ])  # fmt: skip
    data = json.loads(to_json(rows(snap, Query(sort="users"))))
    assert [(o["model"], o["capacity_max_concurrency"]) for o in data] == [
        ("within:latest", 2), ("missed:latest", 0), ("none:latest", None),
    ]  # fmt: skip
    backwards = rows(snap, Query(sort="users", reverse=True))
    assert names(backwards) == ["missed:latest", "within:latest", "none:latest"]  # unknown last
    cells = list(csv.DictReader(io.StringIO(to_csv(rows(snap, Query(sort="users"))))))
    assert [c["capacity_max_concurrency"] for c in cells] == ["2", "0", ""]


def test_filters_by_target_and_family(snap) -> None:
    assert names(rows(snap, Query(targets=("cloud",)))) == ["gpt-oss:120b"]
    assert sorted(names(rows(snap, Query(models=("llama3.2",))))) == [
        "llama3.2:1b",
        "llama3.2:latest",
    ]
    assert names(rows(snap, Query(models=("llama3.2:1b",)))) == ["llama3.2:1b"]
    assert names(rows(snap, Query(models=("LLAMA3.2:latest",)))) == ["llama3.2:latest"]


def test_verbose_adds_per_run_columns(snap) -> None:
    data = json.loads(to_json(rows(snap, Query(verbose=True))))
    obj = next(o for o in data if o["model"] == "qwen3:8b")
    assert obj["ttft_run_1"] == pytest.approx(0.40)
    assert obj["tps_run_3"] == pytest.approx(40.0)


def test_csv_neutralises_formulas_and_round_trips(snap) -> None:
    text = to_csv(rows(snap, Query(sort="name")))
    table = list(csv.DictReader(io.StringIO(text)))
    assert table[0]["model"] == "'=cmd|' /C calc'!A0:latest"
    qwen = next(r for r in table if r["model"] == "qwen3:8b")
    assert float(qwen["ttft"]) == pytest.approx(0.40)
    assert qwen["error"] == ""


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"format": ["xml"]}, "format='xml' is not allowed (use json or csv)"),
        ({"sort": ["speed"]}, "sort='speed' is not allowed (use name, size, ctx, modified"),
        ({"reverse": ["1"]}, "reverse=1 needs sort="),
        ({"verbose": ["maybe"]}, "verbose='maybe' is not allowed (use 1 or 0)"),
        ({"colour": ["red"]}, "unknown parameter 'colour'"),
        ({"format": ["csv", "json"]}, "format given 2 times"),
    ],
)
def test_bad_parameters_say_what_is_allowed(params, fragment) -> None:
    with pytest.raises(ExportError) as info:
        Query.parse(params)
    assert fragment in str(info.value)


def test_format_size() -> None:
    assert format_size(4_661_224_676) == "4.7 GB"
    assert format_size(274_302_450) == "274 MB"
    assert format_size(384) == "384 B"
    assert format_size(None) is None
