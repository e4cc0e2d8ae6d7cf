"""A real Prometheus scrapes the exporter, which benchmarks the emulator: the exposition passes
promtool, every PromQL expression of the bundled dashboard returns data, and every alert rule
evaluates cleanly against real series, its thresholds aside.

Everything runs on the test's event loop except Prometheus and promtool (subprocesses): the
emulator and the exporter must keep answering while Prometheus scrapes, so all waiting here is
``await``-ed (asyncio subprocesses, httpx.AsyncClient, polling with deadlines).

A day of history for the regression rules' baselines (``[1d] offset 1h``) cannot be waited for:
it is backfilled with ``promtool tsdb create-blocks-from openmetrics`` from the exporter's own
series (same job and instance labels as the live scrape) before Prometheus starts.

An alert expression is empty while nothing is wrong, so "returns data" is asked of its *data
forms* (prometheus_tools.data_forms), derived from the rule text rather than kept beside it:
the main expression and each ``unless`` suppression, every comparison turned into its ``bool``
form (``a > 1.5`` → ``a > bool 1.5``). A bool comparison keeps every pair of series that
join, so a form has data exactly when its metrics exist and its label matching works.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from datetime import datetime
from typing import Any

from ollama_emulator import Fault, chat_model, embedding_model, thinking_model
from prometheus_client.parser import text_string_to_metric_families
from prometheus_tools import (
    ALERTS,
    Prometheus,
    alert_rules,
    dashboard_queries,
    data_forms,
    eventually,
    grafana_regex,
    load_dashboard,
    promtool,
    run_prometheus,
    substitute,
)
from service import until

JOB = "ometer-exporter"
LLAMA = "llama3.2:latest"

EXPORTER_CONFIG = """
benchmark:
  interval: 500ms
  jitter: 0%
  idle_before: 0s
  prompt_tokens: [128, 512]  # the prompt-length panels need data too
  runs: 2
  num_predict: 16
  capacity:  # the capacity panels and alert need a sweep; one slot, so level 2 queues
    enabled: true
    concurrency: [1, 2]
    requests_per_level: 2
    num_predict: 16
targets:
  - name: local
    url: {url}
    select: all
  - name: llamacpp  # an OpenAI-compatible engine beside it (its parallel slots, its curve)
    url: {llama_url}/v1
    api: openai
"""

PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: {job}
    static_configs:
      - targets: ["{instance}"]
"""

#: Grafana's macros for 1 s scrapes and 1 s steps. Grafana makes $__rate_interval
#: max(4 × scrape interval, $__interval + scrape interval) = 4 s; 5 s keeps a margin.
GRAFANA_MACROS = {
    "__rate_interval": "5s",
    "__interval": "1s",
    "__range": "1m",
    "__range_s": "60",
}

#: Gauges the regression rules compare with their own past, and the factor the backfilled
#: history is scaled by: output tokens/s was 10× faster "yesterday", so that rule must go
#: pending for every chat model (proof that the rule joins real series end to end).
BASELINES = {
    "ometer_time_to_first_token_seconds": 1.0,
    "ometer_output_tokens_per_second": 10.0,
    "ometer_client_output_tokens_per_second": 1.0,
}


def models():
    return [
        chat_model(LLAMA),
        thinking_model(),
        embedding_model(),
        chat_model("llava:7b", family="llava", parameter_size="7.2B",
                   parameter_count=7_241_732_096, capabilities=["completion", "vision"]),
    ]  # fmt: skip


def escape(label_value: str) -> str:
    return label_value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def history(exposition: str, labels: dict[str, str], now: float) -> str:
    """OpenMetrics text: the baseline gauges at their current values (scaled), every 10
    minutes from 24 h to 2 h ago."""
    lines: list[str] = []
    times = range(int(now) - 24 * 3600, int(now) - 2 * 3600, 600)
    for family in text_string_to_metric_families(exposition):
        if family.name not in BASELINES:
            continue
        lines.append(f"# TYPE {family.name} gauge")
        for sample in family.samples:
            all_labels = {**sample.labels, **labels}
            rendered = ",".join(f'{k}="{escape(v)}"' for k, v in all_labels.items())
            value = sample.value * BASELINES[family.name]
            lines += [f"{family.name}{{{rendered}}} {value!r} {t}" for t in times]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def has_data(result: list[dict[str, Any]]) -> bool:
    """At least one sample with a number (not NaN): the query found and joined real series."""
    values = [float(r["value"][1]) for r in result]
    return any(not math.isnan(v) for v in values)


async def scraped_enough(prom: Prometheus) -> bool:
    """The target is up and has been scraped for long enough for the 5 s rate windows."""
    targets = (await prom.api("/api/v1/targets"))["activeTargets"]
    ours = [t for t in targets if t["labels"]["job"] == JOB]
    if not ours or ours[0]["health"] != "up":
        return False
    return bool(await prom.query(f'count_over_time(up{{job="{JOB}"}}[1m]) >= 6'))


async def test_prometheus_scrapes_the_exporter(
    emulator_factory, start_exporter, tmp_path, monkeypatch
) -> None:
    started = time.monotonic()
    # This test is about the series reaching Prometheus, not about accuracy: on a busy machine
    # the loop that runs the emulator, the exporter and this test stalls, and every run would be
    # discarded for loop lag (leaving the benchmark gauges empty).
    monkeypatch.setattr("ometer_exporter.measure.model.LOOP_LAG_LIMIT", 5.0)
    monkeypatch.setattr("ometer_exporter.loop.worker.SWEEP_PAUSE", 0.05)
    emu = await emulator_factory(models(), time_scale=0.05, version="0.33.0")
    emu.preload(LLAMA)
    # An error and a discarded run, so the error and discard series exist.
    emu.add_fault(LLAMA, Fault("status", status=500))
    emu.add_fault(LLAMA, Fault("force_reload"))
    llama = await emulator_factory([chat_model("gemma3:270m")], time_scale=0.05,
                                   engine="llama.cpp", num_parallel=4)  # fmt: skip
    running = await start_exporter(EXPORTER_CONFIG.format(url=emu.url, llama_url=llama.url))
    await running.cycles("local", 2)
    store = running.exporter.store
    await until(lambda: (e := store.snapshot.models.get(("local", LLAMA))) and e.capacity,
                what="a load sweep of " + LLAMA)  # fmt: skip
    instance = running.url.removeprefix("http://")
    exposition = (await running.http.get("/metrics")).text

    code, problems = await promtool("check", "metrics", stdin=exposition.encode())
    assert (code, problems) == (0, ""), problems

    code, output = await promtool("check", "rules", str(ALERTS))
    assert code == 0, output

    storage = tmp_path / "tsdb"
    backfill = tmp_path / "history.om"
    text = history(exposition, {"job": JOB, "instance": instance}, time.time())
    await asyncio.to_thread(backfill.write_text, text)
    code, output = await promtool(
        "tsdb", "create-blocks-from", "openmetrics", str(backfill), str(storage)
    )
    assert code == 0, output

    config = PROMETHEUS_CONFIG.format(rules=ALERTS, job=JOB, instance=instance)
    async with run_prometheus(config, tmp_path / "prometheus", storage) as prom:
        prometheus_started = time.time()
        await eventually(lambda: scraped_enough(prom), within=30, what="6 scrapes, target up")

        # Grafana with every model, the target and the exporter selected.
        names = sorted({m.name for m in models()})
        values = GRAFANA_MACROS | {
            "instance": grafana_regex([instance]),
            "target": grafana_regex(["local", "llamacpp"]),
            "model": grafana_regex([*names, "gemma3:270m"]),
        }
        empty = []
        for query in dashboard_queries(load_dashboard()):
            expr = substitute(query.expr, values)
            if query.kind == "annotation":
                # An event where a label set appears: the first scrapes are one.
                result = await prom.query_range(expr, prometheus_started - 5, time.time(), 1)
                found = bool(result)
            else:
                found = has_data(await prom.query(expr))
            if not found:
                empty.append(f"{query.where}: {expr}")
        assert empty == [], "dashboard queries without data:\n" + "\n".join(empty)

        # Alert rules: the whole expression evaluates; the main expression and each
        # suppression return data once their thresholds are taken away.
        loaded = await eventually(
            lambda: rules_evaluated(prom, after=prometheus_started + 6),
            within=20,
            what="every rule group evaluated on scraped data",
        )
        assert {r["name"] for r in loaded} == {r["alert"] for r in alert_rules()}
        bad = {r["name"]: r.get("lastError") for r in loaded if r["health"] != "ok"}
        assert bad == {}
        empty = []
        for rule in alert_rules():
            await prom.query(rule["expr"])  # raises on an evaluation error
            for form in data_forms(rule["expr"]):
                if not has_data(await prom.query(form)):
                    empty.append(f"{rule['alert']}: {' '.join(form.split())}")
        assert empty == [], "alert expressions without data:\n" + "\n".join(empty)

        # The backfilled day was 10× faster: the regression rule sees it, on the live series.
        async def tps_regression_pending() -> dict[str, Any] | None:
            alerts = (await prom.api("/api/v1/alerts"))["alerts"]
            return next(
                (
                    a
                    for a in alerts
                    if a["labels"]["alertname"] == "OmeterTokensPerSecondRegressed"
                    and a["labels"].get("model") == LLAMA
                ),
                None,
            )

        alert = await eventually(
            tps_regression_pending, within=20, what="OmeterTokensPerSecondRegressed pending"
        )
        assert alert["state"] == "pending"  # for: 30m
        labels = alert["labels"]
        assert (labels["target"], labels["job"], labels["instance"]) == ("local", JOB, instance)
        assert 0.05 < float(alert["value"]) < 0.2
        assert LLAMA in alert["annotations"]["summary"]

    assert time.monotonic() - started < 60


async def rules_evaluated(prom: Prometheus, *, after: float) -> list[dict[str, Any]] | None:
    """The alerting rules, once every group has been evaluated after ``after`` (unix time)."""
    groups = (await prom.api("/api/v1/rules"))["groups"]
    if not groups:
        return None
    for group in groups:
        last = group.get("lastEvaluation", "")
        if not last or last.startswith("0001") or _unix(last) < after:
            return None
    return [rule for group in groups for rule in group["rules"] if rule["type"] == "alerting"]


def _unix(rfc3339: str) -> float:
    """Go's RFC 3339 with nanoseconds → unix seconds (Python parses microseconds)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()
