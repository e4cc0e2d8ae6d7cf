"""The Grafana dashboard's structure (Grafana cannot run here; its PromQL runs against a real
Prometheus in test_prometheus_e2e.py) and its provisioning files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml
from prometheus_tools import (
    DASHBOARD,
    DASHBOARD_SOURCE,
    GRAFANA_BUILTINS,
    REPO,
    all_panels,
    dashboard_queries,
    load_dashboard,
    substitute,
    variables_in,
)

Json = dict[str, Any]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@pytest.fixture(scope="module")
def dashboard() -> Json:
    return load_dashboard()


def test_json_is_generated_from_its_source() -> None:
    generated = subprocess.run(
        [sys.executable, str(DASHBOARD_SOURCE)], capture_output=True, text=True, check=True
    ).stdout
    assert generated == DASHBOARD.read_text(), (
        "dashboards/ometer.json is stale: python3 dashboards/generate.py > dashboards/ometer.json"
    )


def test_importable_and_provisionable(dashboard: Json) -> None:
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    assert dashboard["id"] is None
    # No import-time inputs (${DS_…}): provisioning does not fill them in.
    assert "__inputs" not in dashboard
    assert "${DS_" not in DASHBOARD.read_text()


def test_datasource_is_a_variable_everywhere(dashboard: Json) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"

    def datasources(node: object) -> list[object]:
        """Every `datasource` value anywhere in the JSON."""
        if isinstance(node, dict):
            found = [node["datasource"]] if "datasource" in node else []
            return found + [d for value in node.values() for d in datasources(value)]
        if isinstance(node, list):
            return [d for value in node for d in datasources(value)]
        return []

    assert all(ds == DATASOURCE for ds in datasources(dashboard))
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel.get("datasource") == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource") == DATASOURCE, panel["title"]
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
    for annotation in dashboard["annotations"]["list"]:
        assert annotation["datasource"] == DATASOURCE, annotation["name"]


def test_template_variables(dashboard: Json) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in ("target", "model"):
        assert variables[name]["type"] == "query"
        assert variables[name]["multi"] and variables[name]["includeAll"]
        assert "label_values(" in variables[name]["definition"]
    # Every variable is used outside its own definition, and every use is defined.
    for name, variable in variables.items():
        rest = [v for v in dashboard["templating"]["list"] if v is not variable]
        elsewhere = json.dumps({**dashboard, "templating": {"list": rest}})
        assert name in variables_in(elsewhere), f"${name} is never used"
    used = variables_in(json.dumps(dashboard))
    assert used - variables.keys() - GRAFANA_BUILTINS == set()


def test_panels_have_unique_ids_and_a_place_on_the_grid(dashboard: Json) -> None:
    panels = list(all_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= grid.keys(), panel["title"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]

    def overlapping(group: list[Json]) -> list[tuple[str, str]]:
        cells: dict[tuple[int, int], str] = {}
        clashes = []
        for p in group:
            g = p["gridPos"]
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in cells:
                        clashes.append((cells[(x, y)], p["title"]))
                    cells[(x, y)] = p["title"]
        return clashes

    top = dashboard["panels"]
    assert overlapping(top) == []
    for row in (p for p in top if p["type"] == "row" and p.get("collapsed")):
        assert overlapping(row["panels"]) == []


def test_organised_in_rows(dashboard: Json) -> None:
    top = dashboard["panels"]
    assert top[0]["type"] == "row"
    rows = [p["title"] for p in top if p["type"] == "row"]
    assert rows == [
        "Overview",
        "Time to first token",
        "Prompt length",
        "Throughput",
        "Loading and queueing",
        "Capacity",
        "Reliability",
        "Targets",
        "Exporter",
    ]
    for row in (p for p in top if p["type"] == "row"):
        # An open row's panels follow it at the top level; a collapsed one carries them.
        assert bool(row["panels"]) == row["collapsed"], row["title"]


def panel_by_title(dashboard: Json, title: str) -> Json:
    return next(p for p in all_panels(dashboard) if p["title"] == title)


def exprs(panel: Json) -> list[str]:
    return [t["expr"] for t in panel["targets"]]


def test_histogram_quantiles_use_rate_interval(dashboard: Json) -> None:
    for title, metric in (
        ("Time to first token p50 / p95", "ometer_benchmark_time_to_first_token_seconds"),
        ("Decode time per token p50 / p95", "ometer_benchmark_time_per_output_token_seconds"),
    ):
        panel = panel_by_title(dashboard, title)
        quantiles = exprs(panel)
        assert [q.split(",")[0] for q in quantiles] == [
            "histogram_quantile(0.5",
            "histogram_quantile(0.95",
        ]
        for q in quantiles:
            assert f"rate({metric}_bucket{{" in q and "[$__rate_interval]" in q
            assert "sum by (le, " in q


def test_model_table_is_instant_queries_merged(dashboard: Json) -> None:
    table = panel_by_title(dashboard, "Models")
    assert table["type"] == "table"
    assert all(t["instant"] and t["format"] == "table" for t in table["targets"])
    assert [t["id"] for t in table["transformations"]] == ["merge", "organize"]
    columns = set(table["transformations"][1]["options"]["renameByName"].values())
    assert {
        "Model", "Target", "Parameters", "Context", "Quantization", "Size", "Tools", "Thinking",
        "Vision", "Embedding", "Loaded", "VRAM", "Last success", "TTFT", "Tokens/s",
    } <= columns  # fmt: skip
    coloured = {
        o["matcher"]["options"]: o
        for o in table["fieldConfig"]["overrides"]
        if any(p["id"] == "thresholds" for p in o["properties"])
    }
    assert {"TTFT", "Tokens/s", "Last success"} <= coloured.keys()
    # Merge joins rows on their common labels: every query keeps the same identifying labels.
    for expr in exprs(table):
        assert 'model=~"$model"' in expr
        assert " by (" not in expr  # `without` aggregations keep job, instance, target, model


def test_every_metric_of_the_contract_is_on_the_dashboard(dashboard: Json) -> None:
    readme = (REPO / "README.md").read_text()
    metrics = set(re.findall(r"^\| `(ometer_\w+)`", readme, re.M))
    assert len(metrics) > 30
    text = " ".join(q.expr for q in dashboard_queries(dashboard))
    shown = {m for m in metrics if re.search(rf"\b{m}(_bucket)?\b", text)}
    # Alerts use them (staleness); the table shows the age of the last *success* instead.
    not_shown = {"ometer_benchmark_last_run_timestamp_seconds", "ometer_model_selected"}
    assert metrics - shown == not_shown


#: The capacity series of the metric contract (README, Metrics): each is on the Capacity row.
CAPACITY_METRICS = (
    "ometer_capacity_max_concurrency",
    "ometer_capacity_output_tokens_per_second",
    "ometer_capacity_goodput_requests_per_second",
    "ometer_capacity_slo_attainment_ratio",
    "ometer_capacity_time_to_first_token_seconds",
    "ometer_capacity_time_per_output_token_seconds",
    "ometer_capacity_request_duration_seconds",
    "ometer_capacity_server_parallel_slots",
    "ometer_capacity_last_run_timestamp_seconds",
    "ometer_capacity_slo_seconds",
    "ometer_capacity_config_info",
    "ometer_capacity_sweeps_aborted_total",
)


def row_panels(dashboard: Json, title: str) -> list[Json]:
    """The panels of an open row: those after it, up to the next row."""
    top = dashboard["panels"]
    start = next(i for i, p in enumerate(top) if p["type"] == "row" and p["title"] == title)
    end = next((i for i in range(start + 1, len(top)) if top[i]["type"] == "row"), len(top))
    return top[start + 1 : end]


def test_capacity_row_shows_every_capacity_series(dashboard: Json) -> None:
    panels = row_panels(dashboard, "Capacity")
    text = " ".join(expr for p in panels for expr in exprs(p))
    assert [m for m in CAPACITY_METRICS if not re.search(rf"\b{m}\b", text)] == []
    # No capacity series anywhere else: the row is where an operator looks for them.
    elsewhere = [
        q.where for q in dashboard_queries(dashboard)
        if "ometer_capacity_" in q.expr and not any(q.where.startswith(f"panel {p['id']} ")
                                                  for p in panels)
    ]  # fmt: skip
    assert elsewhere == []
    gauge = panel_by_title(dashboard, "Users within SLO")
    assert exprs(gauge) == ['ometer_capacity_max_concurrency{instance=~"$instance", '
                            'target=~"$target", model=~"$model"}']  # fmt: skip
    # 0 users (a sweep ran, not even the first level met the SLO) is red; 1 and more green.
    steps = gauge["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [(s["value"], s["color"]) for s in steps] == [(None, "red"), (1, "green")]


def value_column(panel: Json, ref: str) -> str:
    """The name Grafana gives the value of an instant table query: "Value" when the panel has
    one query, "Value #<refId>" when it has several."""
    return "Value" if len(panel["targets"]) == 1 else f"Value #{ref}"


@pytest.mark.parametrize(
    ("title", "metric"),
    [
        ("Output tokens/s by concurrency (latest sweep)",
         "ometer_capacity_output_tokens_per_second"),
        ("Time to first token p95 by concurrency (latest sweep)",
         "ometer_capacity_time_to_first_token_seconds"),
    ],
)  # fmt: skip
def test_capacity_bar_charts_have_a_group_of_bars_per_level(
    dashboard: Json, title: str, metric: str
) -> None:
    chart = panel_by_title(dashboard, title)
    assert chart["type"] == "barchart"
    levels = next(t for t in chart["targets"] if t["refId"] == "A")
    assert levels["instant"] and levels["format"] == "table"
    assert f"{metric}{{" in levels["expr"] and 'model=~"$model"' in levels["expr"]
    # One label names model, target and exporter: two exporters' "llama3.2" stay two bars.
    join = re.search(r'label_join\(.*, "(\w+)", " · ", "model", "target", "instance"\)$',
                     levels["expr"])  # fmt: skip
    assert join, levels["expr"]
    steps = [t["id"] for t in chart["transformations"]]
    grouping = chart["transformations"][-1]
    # Levels are label values (text): made numbers and sorted before they become the
    # categories, so that 16 comes after 8, not after 1.
    assert steps[-3:] == ["convertFieldType", "sortBy", "groupingToMatrix"]
    convert, sort = chart["transformations"][-3:-1]
    assert convert["options"]["conversions"] == [
        {"targetField": "concurrency", "destinationType": "number"}
    ]
    assert sort["options"]["sort"] == [{"field": "concurrency"}]
    assert grouping["options"] == {
        "rowField": "concurrency",
        "columnField": join[1],
        "valueField": value_column(chart, "A"),
        "emptyValue": "null",
    }
    # The category axis is named on the field grouping makes: "row\\column".
    (axis,) = chart["fieldConfig"]["overrides"]
    assert axis["matcher"]["options"] == f"concurrency\\{join[1]}"


def test_ttft_by_concurrency_is_the_p95_against_the_slo(dashboard: Json) -> None:
    chart = panel_by_title(dashboard, "Time to first token p95 by concurrency (latest sweep)")
    levels, slo = chart["targets"]
    assert 'quantile="0.95"' in levels["expr"] and "without (quantile)" in levels["expr"]
    assert slo["refId"] == "B" and slo["instant"] and slo["format"] == "table"
    assert "ometer_capacity_slo_seconds{" in slo["expr"] and 'slo="ttft"' in slo["expr"]
    config = chart["transformations"][0]
    assert config["id"] == "configFromData"  # before grouping, which drops the SLO's frame
    assert config["options"]["configRefId"] == "B"
    base, line = config["options"]["mappings"]
    # Grafana takes the first threshold step as the base (from -inf): the SLO must be the
    # second, after a step below every TTFT, to be drawn as a line.
    assert (base["handlerKey"], line["handlerKey"]) == ("threshold1", "threshold1")
    assert line["fieldName"] == value_column(chart, "B")
    assert re.search(rf'label_replace\(.*, "{base["fieldName"]}", "0", "", ""\)$', slo["expr"])
    assert chart["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"


def test_capacity_tables_merge_one_row_per_level_or_sweep(dashboard: Json) -> None:
    levels = panel_by_title(dashboard, "Latest sweep by level")
    sweeps = panel_by_title(dashboard, "Sweeps")
    for table in (levels, sweeps):
        assert all(t["instant"] and t["format"] == "table" for t in table["targets"])
        for expr in exprs(table):
            assert " by (" not in expr  # `without` keeps every label the merge joins on
    # A quantile column per query: each selects one quantile and drops the label, so the
    # quantiles of a level merge into its row.
    for expr in exprs(levels):
        if "quantile" in expr:
            assert re.fullmatch(r'max without \(quantile\) \(\w+\{.*, quantile="0\.\d+"\}\)',
                                expr), expr  # fmt: skip
    steps = [t["id"] for t in levels["transformations"]]
    assert steps == ["merge", "convertFieldType", "organize"]
    assert levels["options"]["sortBy"] == [{"displayName": "Users", "desc": False}]
    assert levels["transformations"][2]["options"]["renameByName"]["concurrency"] == "Users"


def test_every_query_is_complete_after_substitution(dashboard: Json) -> None:
    values = dict.fromkeys(["instance", "target", "model"], ".*") | dict.fromkeys(
        GRAFANA_BUILTINS, "1m"
    )
    for query in dashboard_queries(dashboard):
        expr = substitute(query.expr, values)
        assert "$" not in expr, query.where
        assert expr.count("(") == expr.count(")"), query.where


def test_provisioning_files() -> None:
    provisioning = REPO / "dashboards" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    assert datasources["apiVersion"] == 1
    (prometheus,) = datasources["datasources"]
    assert prometheus["type"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "ometer.yaml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
