#!/usr/bin/env python3
"""Writes the Grafana dashboard of ometer-exporter: ``dashboards/ometer.json``.

    python3 dashboards/generate.py > dashboards/ometer.json

The JSON is what users import or provision; this script is its source, so that thirty-odd
panels share one selector, one legend and one layout instead of thirty hand-edited copies
(``tests/test_dashboard.py`` fails when the two disagree). Grafana 10+ (schemaVersion 39).
TTFT and tokens/s colours are ``display.thresholds``' defaults (``config.settings``), read when
this script runs at build time: the dashboard agrees with the page and the terminal table as
long as those are not changed in a site's config.

Conventions:
* every query goes through the ``${datasource}`` variable, never a datasource uid;
* every per-model query filters on ``$instance`` (the exporter), ``$target`` and ``$model``;
* benchmark gauges change once per cycle: they are drawn as steps;
* panels that take a rate or increase of benchmark counters or histograms set a minimum
  interval of 10m (the default benchmark interval), so each window holds a cycle's runs;
* table joins use ``without (...)`` aggregations, which keep every label a scrape attaches.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The thresholds come from this checkout's package, not whichever copy is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ometer_exporter.config.settings import DEFAULT_DISPLAY, DisplaySettings

Json = dict[str, Any]

DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}

# Label selectors.
EXPORTER = 'instance=~"$instance"'
TARGET = f'{EXPORTER}, target=~"$target"'
MODEL = f'{TARGET}, model=~"$model"'

LEGEND = "{{model}} · {{target}} · {{instance}}"
TARGET_LEGEND = "{{target}} · {{instance}}"


def grade_steps(display: DisplaySettings) -> tuple[list[tuple[float | None, str]], ...]:
    """TTFT and tokens/s steps of ``display.thresholds``: the colours of the landing page and
    the terminal table (``views.grades.absolute``: a value at a threshold takes the next step,
    as Grafana steps). Built from the defaults when this script runs; a site that changes
    ``display.thresholds`` regenerates the dashboard or edits these two overrides."""
    (t_good, t_poor), (r_good, r_poor) = display.ttft, display.tokens_per_second
    ttft = [(None, "green"), (t_good, "orange"), (t_poor, "red")]
    tps = [(None, "red"), (r_poor, "orange"), (r_good, "green")]
    return ttft, tps


# Colour thresholds shared by the model table and the bar gauges (seconds; tokens/s).
TTFT_STEPS, TPS_STEPS = grade_steps(DEFAULT_DISPLAY)
AGE_STEPS = [(None, "green"), (3600.0, "yellow"), (10800.0, "red")]

COUNTER_WINDOW = "10m"  # minimum interval of panels over benchmark counters and histograms


def thresholds(steps: list[tuple[float | None, str]]) -> Json:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for value, color in steps],
    }


def value_map(mapping: dict[str, tuple[str, str | None]]) -> list[Json]:
    """``{"1": ("OK", "green")}`` -> a Grafana value mapping."""
    options: Json = {}
    for index, (value, (text, color)) in enumerate(mapping.items()):
        options[value] = {"index": index, "text": text, **({"color": color} if color else {})}
    return [{"type": "value", "options": options}]


def query(
    expr: str,
    legend: str = "",
    *,
    ref: str = "A",
    instant: bool = False,
    table: bool = False,
) -> Json:
    target: Json = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }
    if table:
        target["format"] = "table"
    return target


def override(name: str, **properties: Any) -> Json:
    """A field override by (display) name; ``cell`` sets the table cell type."""
    props: list[Json] = []
    for key, value in properties.items():
        if key == "cell":
            props.append({"id": "custom.cellOptions", "value": {"type": value}})
        elif key == "steps":
            props.append({"id": "thresholds", "value": thresholds(value)})
            props.append({"id": "color", "value": {"mode": "thresholds"}})
        else:
            props.append({"id": key, "value": value})
    return {"matcher": {"id": "byName", "options": name}, "properties": props}


def panel(kind: str, title: str, description: str, targets: list[Json], **extra: Any) -> Json:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        **extra,
    }


def timeseries(
    title: str,
    description: str,
    targets: list[Json],
    *,
    unit: str,
    steps: bool = True,
    stack: bool = False,
    bars: bool = False,
    min_interval: str | None = None,
    overrides: list[Json] | None = None,
    threshold_steps: list[tuple[float | None, str]] | None = None,
    width: int = 12,
    height: int = 8,
) -> Json:
    custom: Json = {
        "drawStyle": "bars" if bars else "line",
        "lineInterpolation": "stepAfter" if steps else "linear",
        "lineWidth": 1,
        "fillOpacity": 80 if bars else (20 if stack else 0),
        "showPoints": "never",
        "spanNulls": False,
        "axisSoftMin": 0,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    defaults: Json = {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"}}
    if threshold_steps:
        defaults["thresholds"] = thresholds(threshold_steps)
        custom["thresholdsStyle"] = {"mode": "line+area"}
    extra: Json = {}
    if min_interval:
        extra["interval"] = min_interval
    return panel(
        "timeseries",
        title,
        description,
        targets,
        fieldConfig={"defaults": defaults, "overrides": overrides or []},
        options={
            "legend": {
                "showLegend": True,
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["lastNotNull", "mean", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        size=(width, height),
        **extra,
    )


def stat(
    title: str,
    description: str,
    expr: str,
    *,
    unit: str = "none",
    steps: list[tuple[float | None, str]] | None = None,
) -> Json:
    defaults: Json = {"unit": unit, "color": {"mode": "thresholds"}}
    defaults["thresholds"] = thresholds(steps or [(None, "blue")])
    return panel(
        "stat",
        title,
        description,
        [query(expr, instant=True)],
        fieldConfig={"defaults": defaults, "overrides": []},
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "value",
        },
        size=(4, 4),
    )


def to_numbers(*labels: str) -> Json:
    """A transformation: the values of these labels (text in a table frame) as numbers."""
    return {
        "id": "convertFieldType",
        "options": {
            "fields": {},
            "conversions": [
                {"targetField": label, "destinationType": "number"} for label in labels
            ],
        },
    }


def table(
    title: str,
    description: str,
    queries: dict[str, str],
    *,
    rename: dict[str, str],
    exclude: list[str],
    overrides: list[Json],
    sort_by: str | None = None,
    sort_desc: bool = False,
    numbers: tuple[str, ...] = (),
    width: int = 24,
    height: int = 10,
) -> Json:
    """Instant queries, one row per series, merged on their common labels. ``numbers``: labels
    whose values are numbers (sorted as numbers, not as text)."""
    order = list(rename.values())
    options: Json = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    if sort_by:
        options["sortBy"] = [{"displayName": sort_by, "desc": sort_desc}]
    return panel(
        "table",
        title,
        description,
        [query(expr, ref=ref, instant=True, table=True) for ref, expr in queries.items()],
        fieldConfig={
            "defaults": {
                "custom": {"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True},
            },
            "overrides": overrides,
        },
        options=options,
        transformations=[
            {"id": "merge", "options": {}},
            *([to_numbers(*numbers)] if numbers else []),
            {
                "id": "organize",
                "options": {
                    "excludeByName": {name: True for name in exclude},
                    "renameByName": rename,
                    "indexByName": {old: order.index(new) for old, new in rename.items()},
                },
            },
        ],
        size=(width, height),
    )


def state_timeline(
    title: str,
    description: str,
    targets: list[Json],
    mappings: list[Json],
    *,
    width: int = 12,
    height: int = 8,
) -> Json:
    return panel(
        "state-timeline",
        title,
        description,
        targets,
        fieldConfig={
            "defaults": {
                "mappings": mappings,
                "color": {"mode": "fixed", "fixedColor": "blue"},
                "custom": {"fillOpacity": 80, "lineWidth": 0},
            },
            "overrides": [],
        },
        options={
            "mergeValues": True,
            "showValue": "never",
            "alignValue": "left",
            "rowHeight": 0.8,
            "legend": {"showLegend": False},
            "tooltip": {"mode": "single", "sort": "none"},
        },
        size=(width, height),
    )


def bargauge(
    title: str,
    description: str,
    expr: str,
    *,
    unit: str,
    steps: list[tuple[float | None, str]],
    min_interval: str | None = None,
) -> Json:
    return panel(
        "bargauge",
        title,
        description,
        [query(expr, LEGEND, instant=True)],
        fieldConfig={
            "defaults": {
                "unit": unit,
                "thresholds": thresholds(steps),
                "color": {"mode": "thresholds"},
                "min": 0,
            },
            "overrides": [],
        },
        options={
            "orientation": "horizontal",
            "displayMode": "gradient",
            "showUnfilled": True,
            "valueMode": "color",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        },
        size=(12, 8),
    )


def histogram_quantiles(metric: str) -> list[Json]:
    """p50 and p95 of a benchmark histogram per model, over each window of the graph."""
    return [
        query(
            f"histogram_quantile({q}, sum by (le, instance, target, model) "
            f"(rate({metric}_bucket{{{MODEL}}}[$__rate_interval])))",
            f"p{round(q * 100)} · {LEGEND}",
            ref=ref,
        )
        for ref, q in (("A", 0.5), ("B", 0.95))
    ]


def gauge_panel(
    title: str, description: str, metric: str, *, unit: str, stack: bool = False
) -> Json:
    return timeseries(
        title, description, [query(f"{metric}{{{MODEL}}}", LEGEND)], unit=unit, stack=stack
    )


def counts_by(label: str, title: str, description: str, counter: str) -> Json:
    """Bars of a counter's increase in each window, per model and value of ``label``."""
    return timeseries(
        title,
        description,
        [
            query(
                f"sum by (instance, target, model, {label}) "
                f"(increase({counter}{{{MODEL}}}[$__rate_interval]))",
                f"{{{{{label}}}}} · {LEGEND}",
            )
        ],
        unit="short",
        bars=True,
        stack=True,
        min_interval=COUNTER_WINDOW,
    )


#: The label ``by_level`` adds: which model, target and exporter a capacity series is of.
SWEEP_LABEL = "sweep"
#: The field ``groupingToMatrix`` makes of the levels: Grafana names it row\\column.
LEVEL_FIELD = f"concurrency\\{SWEEP_LABEL}"


def by_level(selector: str) -> str:
    """A capacity series per level, with one label naming its model, target and exporter: a
    bar chart's bars are grouped by level and coloured by that label."""
    return f'label_join({selector}, "{SWEEP_LABEL}", " · ", "model", "target", "instance")'


def level_barchart(
    title: str, description: str, selector: str, *, unit: str, slo: str | None = None
) -> Json:
    """One group of bars per concurrency level of the latest sweep, one bar per model, levels
    in numeric order. ``slo``: a query whose value is drawn as a dashed threshold line."""
    targets = [query(by_level(selector), ref="A", instant=True, table=True)]
    transformations: list[Json] = []
    custom: Json = {"fillOpacity": 80, "lineWidth": 1, "gradientMode": "none", "axisSoftMin": 0}
    if slo is not None:
        # Grafana makes the first threshold step the base (from -inf): a step at 0 (the
        # constant label "base") comes first, so the SLO stays a step of its own: a line.
        targets.append(
            query(f'label_replace({slo}, "base", "0", "", "")', ref="B", instant=True, table=True)
        )
        transformations.append(
            {
                "id": "configFromData",
                "options": {
                    "configRefId": "B",
                    "mappings": [
                        {
                            "fieldName": "base",
                            "handlerKey": "threshold1",
                            "handlerArguments": {"threshold": {"color": "transparent"}},
                        },
                        {
                            "fieldName": "Value #B",
                            "handlerKey": "threshold1",
                            "handlerArguments": {"threshold": {"color": "red"}},
                            "reducerId": "max",
                        },
                    ],
                },
            }
        )
        custom["thresholdsStyle"] = {"mode": "dashed"}
    transformations += [
        to_numbers("concurrency"),
        {"id": "sortBy", "options": {"fields": {}, "sort": [{"field": "concurrency"}]}},
        {
            "id": "groupingToMatrix",
            "options": {
                "rowField": "concurrency",
                "columnField": SWEEP_LABEL,
                "valueField": "Value" if slo is None else "Value #A",
                "emptyValue": "null",
            },
        },
    ]
    return panel(
        "barchart",
        title,
        description,
        targets,
        fieldConfig={
            "defaults": {"unit": unit, "color": {"mode": "palette-classic"}, "custom": custom},
            "overrides": [override(LEVEL_FIELD, **{"custom.axisLabel": "concurrent users"})],
        },
        options={
            "orientation": "vertical",
            "xTickLabelRotation": 0,
            "showValue": "never",
            "stacking": "none",
            "groupWidth": 0.7,
            "barWidth": 0.97,
            "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        transformations=transformations,
        size=(12, 9),
    )


# --------------------------------------------------------------------------------------------
# rows


def overview() -> list[Json]:
    capability = "sum without (capability) (ometer_model_capability{%s, capability=%s})"
    models = table(
        "Models",
        "Every model the targets list, with the latest benchmark results. TTFT and tokens/s are "
        "the last completed cycle (median TTFT of its warm runs; Σ eval_count / Σ eval_duration). "
        "Colours: TTFT green below 0.5 s, red from 2 s; tokens/s red below 10, green from 30. "
        "Last success: how long ago the model's last good cycle finished. Empty results: the "
        "model was never benchmarked (a `select: loaded` target benchmarks loaded models only). "
        "Modified: when the model was last pulled.",
        {
            "A": f"ometer_model_info{{{MODEL}}}",
            "B": f"ometer_model_parameters{{{MODEL}}}",
            "C": f"ometer_model_context_length_tokens{{{MODEL}}}",
            "D": f"ometer_model_size_bytes{{{MODEL}}}",
            "E": f"ometer_model_loaded{{{MODEL}}}",
            "F": f"ometer_model_vram_bytes{{{MODEL}}}",
            "G": f"time() - ometer_benchmark_last_success_timestamp_seconds{{{MODEL}}}",
            "H": f"ometer_time_to_first_token_seconds{{{MODEL}}}",
            "I": f"ometer_output_tokens_per_second{{{MODEL}}}",
            "J": f"ometer_benchmark_success{{{MODEL}}}",
            "K": capability % (MODEL, '"tools"'),
            "L": capability % (MODEL, '"thinking"'),
            "M": capability % (MODEL, '"vision"'),
            "N": capability % (MODEL, '"embedding"'),
            "O": f"ometer_model_modified_timestamp_seconds{{{MODEL}}} * 1000",
        },
        rename={
            "model": "Model",
            "target": "Target",
            "instance": "Exporter",
            "family": "Family",
            "Value #B": "Parameters",
            "quantization_level": "Quantization",
            "Value #C": "Context",
            "Value #D": "Size",
            "Value #O": "Modified",
            "Value #K": "Tools",
            "Value #L": "Thinking",
            "Value #M": "Vision",
            "Value #N": "Embedding",
            "Value #E": "Loaded",
            "Value #F": "VRAM",
            "Value #J": "Last cycle",
            "Value #G": "Last success",
            "Value #H": "TTFT",
            "Value #I": "Tokens/s",
        },
        exclude=["Time", "job", "Value #A", "parameter_size", "format"],
        overrides=[
            override("Parameters", unit="short", decimals=1),
            override("Context", unit="locale"),
            override("Size", unit="decbytes"),
            override("Modified", unit="dateTimeFromNow"),
            override("VRAM", unit="decbytes"),
            *(
                override(name, mappings=value_map({"1": ("✓", None)}))
                for name in ("Tools", "Thinking", "Vision", "Embedding")
            ),
            override(
                "Loaded",
                mappings=value_map({"1": ("loaded", "green"), "0": ("—", None)}),
                cell="color-text",
            ),
            override(
                "Last cycle",
                mappings=value_map({"1": ("OK", "green"), "0": ("failed", "red")}),
                cell="color-text",
            ),
            override("Last success", unit="s", decimals=0, steps=AGE_STEPS, cell="color-text"),
            override("TTFT", unit="s", steps=TTFT_STEPS, cell="color-background"),
            override(
                "Tokens/s",
                unit="suffix: tok/s",
                decimals=1,
                steps=TPS_STEPS,
                cell="color-background",
            ),
        ],
        sort_by="Tokens/s",
        sort_desc=True,
        height=12,
    )
    red_from_one: list[tuple[float | None, str]] = [(None, "green"), (1, "red")]
    return [
        stat(
            "Models listed",
            "Models listed by the selected targets.",
            f"count(ometer_model_info{{{MODEL}}})",
        ),
        stat(
            "Benchmarked",
            "Models with benchmark results.",
            f"count(ometer_benchmark_success{{{MODEL}}})",
        ),
        stat(
            "Failing",
            "Benchmarked models whose last cycle had no good run.",
            f"count(ometer_benchmark_success{{{MODEL}}} == 0) or vector(0)",
            steps=red_from_one,
        ),
        stat(
            "Targets down",
            "Targets whose Ollama server did not answer the last discovery.",
            f"count(ometer_target_up{{{TARGET}}} == 0) or vector(0)",
            steps=red_from_one,
        ),
        stat(
            "Loaded",
            "Models loaded now (/api/ps of local targets).",
            f"count(ometer_model_loaded{{{MODEL}}} == 1) or vector(0)",
        ),
        stat(
            "VRAM in use",
            "GPU memory held by the loaded models.",
            f"sum(ometer_model_vram_bytes{{{MODEL}}}) or vector(0)",
            unit="decbytes",
        ),
        models,
    ]


def latency() -> list[Json]:
    return [
        gauge_panel(
            "Time to first token",
            "Client-measured time from sending the request to the first streamed chunk with "
            "thinking or content: median of each cycle's warm runs (cold loads excluded). "
            "Includes any time spent waiting for a busy server (see Queue wait).",
            "ometer_time_to_first_token_seconds",
            unit="s",
        ),
        timeseries(
            "Time to first token p50 / p95",
            "Percentiles over every warm run in each window, from the "
            "ometer_benchmark_time_to_first_token_seconds histogram. Windows are at least 10 "
            "minutes (the default benchmark interval); with a longer benchmark interval some "
            "windows hold no run and stay empty.",
            histogram_quantiles("ometer_benchmark_time_to_first_token_seconds"),
            unit="s",
            steps=False,
            min_interval=COUNTER_WINDOW,
        ),
        gauge_panel(
            "Time to first content",
            "Time to the first chunk carrying content, after any thinking: differs from the "
            "time to first token for thinking models only.",
            "ometer_time_to_first_content_seconds",
            unit="s",
        ),
        bargauge(
            "Time to first token p95 over the time range",
            "95th percentile of every warm run's TTFT within the dashboard's time range.",
            "histogram_quantile(0.95, sum by (le, instance, target, model) "
            f"(increase(ometer_benchmark_time_to_first_token_seconds_bucket{{{MODEL}}}"
            "[$__range])))",
            unit="s",
            steps=TTFT_STEPS,
        ),
    ]


def throughput() -> list[Json]:
    return [
        gauge_panel(
            "Decode tokens/s (server)",
            "Σ eval_count / Σ eval_duration of each cycle's warm runs, from Ollama's own timing "
            "(N tokens over N−1 intervals, as `ollama run --verbose` shows). Absent for models "
            "whose server gives no timing.",
            "ometer_output_tokens_per_second",
            unit="suffix: tok/s",
        ),
        gauge_panel(
            "Decode tokens/s (client-side)",
            "(eval_count − 1) / (last token chunk − first token chunk), measured by the "
            "exporter: what a streaming client sees, network included.",
            "ometer_client_output_tokens_per_second",
            unit="suffix: tok/s",
        ),
        gauge_panel(
            "Prefill tokens/s",
            "prompt_eval_count / prompt_eval_duration (embedding models: input tokens per "
            "second). Each prompt starts with a nonce, so the prompt cache cannot inflate it.",
            "ometer_prompt_tokens_per_second",
            unit="suffix: tok/s",
        ),
        timeseries(
            "Decode time per token p50 / p95",
            "Percentiles of the server's time per output token over every warm run in each "
            "window (ometer_benchmark_time_per_output_token_seconds). Windows are at least 10 "
            "minutes.",
            histogram_quantiles("ometer_benchmark_time_per_output_token_seconds"),
            unit="s",
            steps=False,
            min_interval=COUNTER_WINDOW,
        ),
    ]


def loading() -> list[Json]:
    return [
        gauge_panel(
            "Cold load time",
            "load_duration of the last cold (warmup) request: how long the model takes to load "
            "when it is not in memory. Models that stay loaded keep their last value; cloud "
            "targets have none.",
            "ometer_model_load_duration_seconds",
            unit="s",
        ),
        gauge_panel(
            "Queue wait",
            "Server-side time a request waited for a slot (total − load − prompt_eval − eval). "
            "High values mean other clients were using the server: a slower TTFT then is a "
            "noisy neighbour, not a model regression.",
            "ometer_queue_wait_seconds",
            unit="s",
        ),
        gauge_panel(
            "Request duration",
            "Median end-to-end time of a benchmark request (chat and embed).",
            "ometer_request_duration_seconds",
            unit="s",
        ),
        gauge_panel(
            "VRAM by model",
            "GPU memory of each loaded model (/api/ps), stacked.",
            "ometer_model_vram_bytes",
            unit="decbytes",
            stack=True,
        ),
    ]


LEVEL_LEGEND = "{{model}} · {{concurrency}} users · {{target}}"


def quantile(metric: str, q: str) -> str:
    """One quantile of a capacity gauge per level, without its ``quantile`` label (so that
    tables merge quantiles of one level into one row)."""
    return f'max without (quantile) ({metric}{{{MODEL}, quantile="{q}"}})'


def slo(name: str) -> str:
    """The SLO a sweep used (``ttft`` or ``tpot``), without its ``slo`` label."""
    return f'max without (slo) (ometer_capacity_slo_seconds{{{MODEL}, slo="{name}"}})'


def capacity() -> list[Json]:
    """The load sweeps (``benchmark.capacity``, opt-in): series exist only for models swept."""
    levels = "Each level of the latest sweep (benchmark.capacity.concurrency)"
    return [
        bargauge(
            "Users within SLO",
            "Max concurrency of each model's latest sweep: the largest level (concurrent "
            "users, each sending its next request when the last one ends) at which the "
            "attainment SLO's share of requests met both the TTFT and the TPOT SLO. 0: not "
            "even one user. No bar: the model was never swept (sweeps are opt-in: "
            "benchmark.capacity.enabled).",
            f"ometer_capacity_max_concurrency{{{MODEL}}}",
            unit="none",
            steps=[(None, "red"), (1, "green")],
        ),
        timeseries(
            "Users within SLO over time",
            "Max concurrency of each sweep as it was published: a step down is a capacity "
            "regression (alert OmeterCapacityRegressed) unless the method changed "
            "(ometer_capacity_config_info).",
            [query(f"ometer_capacity_max_concurrency{{{MODEL}}}", LEGEND)],
            unit="none",
        ),
        level_barchart(
            "Output tokens/s by concurrency (latest sweep)",
            f"{levels}: output tokens per second of all its requests together, over the "
            "level's window. It grows while the server batches more users and flattens once "
            "requests queue.",
            f"ometer_capacity_output_tokens_per_second{{{MODEL}}}",
            unit="suffix: tok/s",
        ),
        level_barchart(
            "Time to first token p95 by concurrency (latest sweep)",
            f"{levels}: 95th percentile of its requests' TTFT. Dashed: the TTFT SLO of the "
            "sweeps shown (the largest, when the selected targets have different SLOs). TTFT "
            "that jumps from one level on is queueing: the server has fewer parallel slots "
            "than users.",
            quantile("ometer_capacity_time_to_first_token_seconds", "0.95"),
            unit="s",
            slo=slo("ttft"),
        ),
        table(
            "Sweeps",
            "Each model's latest sweep: users within SLO, the server's parallel slots inferred "
            "from where queueing starts (empty: the server reports no queue wait, or nothing "
            "queued), the SLO and method it ran with, when it finished, and sweeps aborted in "
            "the time range (see Sweeps aborted by reason). Every figure of every level: "
            "/export?view=capacity on the exporter.",
            {
                "A": f"ometer_capacity_max_concurrency{{{MODEL}}}",
                "B": f"ometer_capacity_server_parallel_slots{{{MODEL}}}",
                "C": slo("ttft"),
                "D": slo("tpot"),
                "E": f"ometer_capacity_config_info{{{MODEL}}}",
                "F": f"ometer_capacity_last_run_timestamp_seconds{{{MODEL}}} * 1000",
                "G": "sum without (reason) "
                f"(increase(ometer_capacity_sweeps_aborted_total{{{MODEL}}}[$__range]))",
            },
            rename={
                "model": "Model",
                "target": "Target",
                "instance": "Exporter",
                "Value #A": "Users within SLO",
                "Value #B": "Parallel slots",
                "Value #C": "TTFT SLO",
                "Value #D": "TPOT SLO",
                "slo_attainment": "Attainment SLO",
                "requests_per_level": "Requests per level",
                "num_predict": "num_predict",
                "Value #F": "Finished",
                "Value #G": "Aborted",
            },
            exclude=["Time", "job", "Value #E", "slo_ttft", "slo_tpot"],
            overrides=[
                override("TTFT SLO", unit="s"),
                override("TPOT SLO", unit="s"),
                override("Finished", unit="dateTimeFromNow"),
                override("Aborted", decimals=0),
            ],
            height=6,
        ),
        table(
            "Latest sweep by level",
            f"{levels}. Tokens/s: output tokens per second of all requests together. Goodput: "
            "requests per second that met every SLO. Attainment: the share that did. TPOT: "
            "time per output token after the first, (e2e − TTFT) / (tokens − 1). Request: "
            "end to end.",
            {
                "A": f"ometer_capacity_output_tokens_per_second{{{MODEL}}}",
                "B": f"ometer_capacity_goodput_requests_per_second{{{MODEL}}}",
                "C": f"ometer_capacity_slo_attainment_ratio{{{MODEL}}}",
                "D": quantile("ometer_capacity_time_to_first_token_seconds", "0.5"),
                "E": quantile("ometer_capacity_time_to_first_token_seconds", "0.95"),
                "F": quantile("ometer_capacity_time_to_first_token_seconds", "0.99"),
                "G": quantile("ometer_capacity_time_per_output_token_seconds", "0.95"),
                "H": quantile("ometer_capacity_request_duration_seconds", "0.95"),
            },
            rename={
                "model": "Model",
                "target": "Target",
                "instance": "Exporter",
                "concurrency": "Users",
                "Value #A": "Tokens/s",
                "Value #B": "Goodput",
                "Value #C": "Attainment",
                "Value #D": "TTFT p50",
                "Value #E": "TTFT p95",
                "Value #F": "TTFT p99",
                "Value #G": "TPOT p95",
                "Value #H": "Request p95",
            },
            exclude=["Time", "job"],
            overrides=[
                override("Tokens/s", unit="suffix: tok/s", decimals=1),
                override("Goodput", unit="reqps"),
                override("Attainment", unit="percentunit", decimals=0),
                *(
                    override(name, unit="s")
                    for name in ("TTFT p50", "TTFT p95", "TTFT p99", "TPOT p95", "Request p95")
                ),
            ],
            sort_by="Users",
            numbers=("concurrency",),
        ),
        timeseries(
            "SLO attainment over time",
            "Share of each level's requests that met every SLO, sweep after sweep, one line "
            "per level. A level passes when this reaches the attainment SLO (Sweeps table).",
            [query(f"ometer_capacity_slo_attainment_ratio{{{MODEL}}}", LEVEL_LEGEND)],
            unit="percentunit",
        ),
        counts_by(
            "reason",
            "Sweeps aborted by reason",
            "Sweeps that ended early, by reason: contended (someone else's requests shared "
            "the model: the previous sweep stays published), refused (the server refused a "
            "request: the levels before it are published), load_failed (the model could not "
            "be loaded: the previous sweep stays). Each bar counts one window (at least 10 "
            "minutes).",
            "ometer_capacity_sweeps_aborted_total",
        ),
    ]


def reliability() -> list[Json]:
    per_window = "Each bar counts one window (at least 10 minutes)."
    return [
        state_timeline(
            "Benchmark success",
            "Whether each model's last cycle produced at least one good measured run.",
            [query(f"ometer_benchmark_success{{{MODEL}}}", LEGEND)],
            value_map({"1": ("OK", "green"), "0": ("failed", "red")}),
            width=24,
        ),
        timeseries(
            "Error rate by type",
            "Share of benchmark requests (warmups included) that failed, by error type.",
            [
                query(
                    f"sum by (error_type) (rate(ometer_benchmark_errors_total{{{MODEL}}}"
                    "[$__rate_interval]))\n  / ignoring (error_type) group_left\n"
                    f"sum(rate(ometer_benchmark_runs_total{{{MODEL}}}[$__rate_interval]))",
                    "{{error_type}}",
                )
            ],
            unit="percentunit",
            steps=False,
            min_interval=COUNTER_WINDOW,
        ),
        counts_by(
            "error_type",
            "Errors by model",
            f"Failed benchmark requests by model and error type. {per_window}",
            "ometer_benchmark_errors_total",
        ),
        counts_by(
            "reason",
            "Discarded runs by reason",
            "Completed runs left out of the gauges: reloaded (the model was reloaded mid-cycle), "
            "short (too few output tokens for tokens/s; still counted for TTFT), loop_lag (the "
            f"exporter's event loop was late, so its clocks were). {per_window}",
            "ometer_benchmark_discarded_runs_total",
        ),
        timeseries(
            "Benchmark load on the servers",
            "What the benchmarks cost each target: requests per second (left) and tokens "
            "processed per second, prompt and output (right).",
            [
                query(
                    "sum by (instance, target) "
                    f"(rate(ometer_benchmark_runs_total{{{MODEL}}}[$__rate_interval]))",
                    "requests · " + TARGET_LEGEND,
                    ref="A",
                ),
                query(
                    "sum by (instance, target) "
                    f"(rate(ometer_benchmark_output_tokens_total{{{MODEL}}}[$__rate_interval]) "
                    f"+ rate(ometer_benchmark_prompt_tokens_total{{{MODEL}}}[$__rate_interval]))",
                    "tokens · " + TARGET_LEGEND,
                    ref="B",
                ),
            ],
            unit="reqps",
            steps=False,
            min_interval=COUNTER_WINDOW,
            overrides=[
                {
                    "matcher": {"id": "byFrameRefID", "options": "B"},
                    "properties": [
                        {"id": "unit", "value": "suffix: tok/s"},
                        {"id": "custom.axisPlacement", "value": "right"},
                    ],
                }
            ],
        ),
    ]


def targets() -> list[Json]:
    return [
        table(
            "Targets",
            "Each configured server: reachable or not, its version, the parallel slots it "
            "reports (llama.cpp), the benchmark method and interval, and how long the last "
            "cycle took.",
            {
                "A": f"ometer_target_up{{{TARGET}}}",
                "B": f"ometer_target_info{{{TARGET}}}",
                "C": f"ometer_benchmark_config_info{{{TARGET}}}",
                "D": f"ometer_benchmark_interval_seconds{{{TARGET}}}",
                "E": f"ometer_cycle_duration_seconds{{{TARGET}}}",
                "F": "count without (model, family, parameter_size, quantization_level, format) "
                f"(ometer_model_info{{{TARGET}}})",
                "G": f"sum without (model) (ometer_benchmark_success{{{TARGET}}})",
                "H": f"count without (model) (ometer_benchmark_success{{{TARGET}}})",
                "I": f"ometer_target_parallel_slots{{{TARGET}}}",
            },
            rename={
                "target": "Target",
                "instance": "Exporter",
                "Value #A": "Up",
                "version": "Ollama",
                "Value #F": "Models",
                "Value #H": "Benchmarked",
                "Value #G": "OK",
                "prompt_set": "Prompt set",
                "num_predict": "num_predict",
                "think": "think",
                "Value #D": "Interval",
                "Value #E": "Last cycle",
                "Value #I": "Slots",
            },
            exclude=["Time", "job", "Value #B", "Value #C"],
            overrides=[
                override(
                    "Up",
                    mappings=value_map({"1": ("up", "green"), "0": ("down", "red")}),
                    cell="color-background",
                ),
                override("Interval", unit="s"),
                override("Last cycle", unit="s"),
            ],
            height=6,
        ),
        state_timeline(
            "Target up",
            "Whether each target answered its discovery (version, tags, ps).",
            [query(f"ometer_target_up{{{TARGET}}}", TARGET_LEGEND)],
            value_map({"1": ("up", "green"), "0": ("down", "red")}),
        ),
        state_timeline(
            "Ollama version",
            "The Ollama version each target reported, over time: an upgrade starts a new row.",
            [query(f"ometer_target_info{{{TARGET}}}", "{{target}} · Ollama {{version}}")],
            value_map({"1": ("running", "blue")}),
        ),
        timeseries(
            "Models left out (max_models)",
            "Models a target listed beyond benchmark.max_models at its last discovery: they "
            "are not reported on (the log names the first).",
            [query(f"ometer_target_models_left_out{{{TARGET}}}", TARGET_LEGEND)],
            unit="short",
            width=24,
            height=6,
        ),
    ]


LENGTH_LEGEND = "{{model}} · {{prompt_tokens}} tokens · {{target}}"


def prompt_length() -> list[Json]:
    return [
        timeseries(
            "TTFT by prompt length",
            "Time to first token with a prompt of each configured length "
            "(benchmark.prompt_tokens; opt-in): the TTFT agents and long-context apps get.",
            [query(f"ometer_prompt_length_time_to_first_token_seconds{{{MODEL}}}", LENGTH_LEGEND)],
            unit="s",
        ),
        timeseries(
            "Prefill rate by prompt length",
            "prompt_eval_count / prompt_eval_duration at each length: attention makes it fall "
            "as prompts grow.",
            [query(f"ometer_prompt_length_prefill_tokens_per_second{{{MODEL}}}", LENGTH_LEGEND)],
            unit="suffix: tok/s",
        ),
        timeseries(
            "TTFT per 1k prompt tokens",
            "Slope of TTFT against prompt length over the measured lengths: the figure to "
            "compare models and servers by.",
            [query(f"ometer_prompt_ttft_seconds_per_1k_tokens{{{MODEL}}}", LEGEND)],
            unit="s",
        ),
        timeseries(
            "Prompt tokens measured",
            "The prompt tokens the server counted for each configured length (a capped length "
            "is smaller than configured).",
            [query(f"ometer_prompt_length_prompt_tokens{{{MODEL}}}", LENGTH_LEGEND)],
            unit="short",
        ),
    ]


def exporter() -> list[Json]:
    own = "and on (job, instance) ometer_build_info"
    return [
        timeseries(
            "Cycle duration and interval",
            "How long each target's last benchmark cycle took, against its configured interval. "
            "A cycle longer than the interval means cycles run back to back.",
            [
                query(f"ometer_cycle_duration_seconds{{{TARGET}}}", "cycle · " + TARGET_LEGEND),
                query(
                    f"ometer_benchmark_interval_seconds{{{TARGET}}}",
                    "interval · " + TARGET_LEGEND,
                    ref="B",
                ),
            ],
            unit="s",
            overrides=[
                {
                    "matcher": {"id": "byFrameRefID", "options": "B"},
                    "properties": [
                        {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}
                    ],
                }
            ],
        ),
        timeseries(
            "Event loop lag",
            "Worst delay of the exporter's event loop over the last minute. Every timestamp "
            "of a measurement passes through it; runs that saw more than a few milliseconds "
            "are discarded (reason loop_lag).",
            [query(f"ometer_event_loop_lag_seconds{{{EXPORTER}}}", "{{instance}}")],
            unit="s",
            steps=False,
            threshold_steps=[(None, "transparent"), (0.005, "yellow"), (0.05, "red")],
        ),
        table(
            "Exporters",
            "Each ometer-exporter: version, whether its last configuration reload succeeded, "
            "uptime and memory.",
            {
                "A": f"ometer_build_info{{{EXPORTER}}}",
                "B": f"ometer_config_last_reload_successful{{{EXPORTER}}}",
                "C": f"time() - process_start_time_seconds{{{EXPORTER}}} {own}",
                "D": f"process_resident_memory_bytes{{{EXPORTER}}} {own}",
            },
            rename={
                "instance": "Exporter",
                "version": "Version",
                "Value #B": "Config reload",
                "Value #C": "Uptime",
                "Value #D": "Memory",
            },
            exclude=["Time", "job", "Value #A"],
            overrides=[
                override(
                    "Config reload",
                    mappings=value_map({"1": ("OK", "green"), "0": ("failed", "red")}),
                    cell="color-text",
                ),
                override("Uptime", unit="s", decimals=0),
                override("Memory", unit="bytes"),
            ],
            width=12,
            height=8,
        ),
        timeseries(
            "Exporter CPU and memory",
            "CPU used by each exporter process (left) and its resident memory (right).",
            [
                query(
                    f"rate(process_cpu_seconds_total{{{EXPORTER}}}[$__rate_interval]) {own}",
                    "CPU · {{instance}}",
                ),
                query(
                    f"process_resident_memory_bytes{{{EXPORTER}}} {own}",
                    "memory · {{instance}}",
                    ref="B",
                ),
            ],
            unit="percentunit",
            steps=False,
            overrides=[
                {
                    "matcher": {"id": "byFrameRefID", "options": "B"},
                    "properties": [
                        {"id": "unit", "value": "bytes"},
                        {"id": "custom.axisPlacement", "value": "right"},
                    ],
                }
            ],
        ),
        timeseries(
            "Benchmark loop errors, reconnects",
            "Unexpected errors a target's benchmark loop survived: each is a bug, with a "
            "traceback in the exporter's log. Reconnects: requests sent again on a fresh "
            "connection after the server closed their kept-alive one (llama.cpp's server does "
            "after each streamed response); harmless, never in a TTFT.",
            [
                query(
                    f"increase(ometer_benchmark_loop_errors_total{{{TARGET}}}[$__rate_interval])",
                    TARGET_LEGEND,
                ),
                query(
                    f"increase(ometer_target_reconnects_total{{{TARGET}}}[$__rate_interval])",
                    f"{TARGET_LEGEND} · reconnects",
                ),
            ],
            unit="short",
            bars=True,
            min_interval=COUNTER_WINDOW,
            width=12,
        ),
        timeseries(
            "Left out of a view, skipped on restore",
            "Models (or single samples) a view could not render or encode, by view, and stored "
            "rows refused on restore: each is logged with its reason; everything else is served.",
            [
                query(
                    f"increase(ometer_render_errors_total{{{EXPORTER}}}[$__rate_interval])",
                    "{{view}} · {{instance}}",
                ),
                query(
                    f"ometer_store_rows_skipped_total{{{EXPORTER}}}",
                    "restore skipped · {{instance}}",
                    ref="B",
                ),
            ],
            unit="short",
            bars=True,
            min_interval=COUNTER_WINDOW,
            width=12,
        ),
    ]


Row = tuple[str, bool, Callable[[], list[Json]]]  # title, collapsed, panels

ROWS: list[Row] = [
    ("Overview", False, overview),
    ("Time to first token", False, latency),
    ("Prompt length", False, prompt_length),
    ("Throughput", False, throughput),
    ("Loading and queueing", False, loading),
    ("Capacity", False, capacity),
    ("Reliability", False, reliability),
    ("Targets", False, targets),
    ("Exporter", True, exporter),
]


def layout(rows: list[Row]) -> list[Json]:
    """Rows and their panels on Grafana's 24-column grid, ids and gridPos assigned in order.

    An open row is followed by its panels; a collapsed row carries them in ``panels`` (with
    the positions they take when the row is opened)."""
    out: list[Json] = []
    next_id = 1
    y = 0
    for title, collapsed, build in rows:
        row: Json = {
            "type": "row",
            "title": title,
            "id": next_id,
            "collapsed": collapsed,
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
            "panels": [],
        }
        next_id += 1
        y += 1
        out.append(row)
        x = 0
        line_height = 0
        for item in build():
            width, height = item.pop("size")
            if x + width > 24:
                x, y, line_height = 0, y + line_height, 0
            placed = {"id": next_id, "gridPos": {"x": x, "y": y, "w": width, "h": height}, **item}
            next_id += 1
            x += width
            line_height = max(line_height, height)
            (row["panels"] if collapsed else out).append(placed)
        # A collapsed row takes one grid line, whatever it holds.
        y = row["gridPos"]["y"] + 1 if collapsed else y + line_height
    return out


def variable(name: str, label: str, definition: str) -> Json:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "definition": definition,
        "query": {"query": definition, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,  # on time range change: models come and go
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "regex": "",
        "sort": 1,
        "hide": 0,
    }


def change_annotation(name: str, metric: str, title: str, text: str, color: str) -> Json:
    """An event where a new label set of an info metric appears (not seen the day before)."""
    return {
        "name": name,
        "datasource": DATASOURCE,
        "enable": True,
        "iconColor": color,
        "expr": f"{metric}{{{TARGET}}}\n"
        f"  unless last_over_time({metric}{{{TARGET}}}[1d] offset 1m)",
        "step": "1m",
        "titleFormat": title,
        "textFormat": text,
        "tagKeys": "target,instance",
        "useValueForTime": False,
    }


def dashboard() -> Json:
    return {
        "title": "Ollama model benchmarks (ometer-exporter)",
        "uid": "ometer-exporter",
        "description": "Time to first token, tokens/s, prefill, load time and health of every "
        "Ollama model benchmarked by ometer-exporter.",
        "tags": ["ollama", "llm", "ometer-exporter"],
        "id": None,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": [],
        "liveNow": False,
        "refresh": "1m",
        "schemaVersion": 39,
        "time": {"from": "now-24h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "version": 1,
        "weekStart": "",
        "annotations": {
            "list": [
                change_annotation(
                    "Ollama version changes",
                    "ometer_target_info",
                    "Ollama {{version}}",
                    "{{target}} on {{instance}}",
                    "orange",
                ),
                change_annotation(
                    "Benchmark method changes",
                    "ometer_benchmark_config_info",
                    "Benchmark method changed",
                    "{{target}}: prompt_set={{prompt_set}} num_predict={{num_predict}} "
                    "think={{think}}",
                    "purple",
                ),
            ]
        },
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Data source",
                    "query": "prometheus",
                    "current": {},
                    "options": [],
                    "refresh": 1,
                    "regex": "",
                    "hide": 0,
                    "includeAll": False,
                    "multi": False,
                },
                variable("instance", "Exporter", "label_values(ometer_build_info, instance)"),
                variable(
                    "target",
                    "Target",
                    f"label_values(ometer_target_up{{{EXPORTER}}}, target)",
                ),
                variable(
                    "model",
                    "Model",
                    f"label_values(ometer_model_info{{{TARGET}}}, model)",
                ),
            ]
        },
        "panels": layout(ROWS),
    }


def main() -> None:
    json.dump(dashboard(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
