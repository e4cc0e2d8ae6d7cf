"""The alert rules (prometheus/alerts.yml): promtool's checks and unit tests, and what every rule
must carry. Their PromQL runs against real exporter series in test_prometheus_e2e.py."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from prometheus_tools import (
    ALERT_TESTS,
    ALERTS,
    SCRAPE_CONFIG,
    alert_rules,
    data_forms,
    promtool_sync,
    split_unless,
    with_bool,
)


def test_promtool_check_alert_rules() -> None:
    result = promtool_sync("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_test_alert_rules() -> None:
    result = promtool_sync("test", "rules", *map(str, ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(ALERT_TESTS)


def test_example_scrape_config_is_valid_and_loads_the_alert_rules() -> None:
    result = promtool_sync("check", "config", str(SCRAPE_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "ometer-exporter")
    assert job["static_configs"][0]["targets"] == ["ometer-exporter:9877"]
    # OmeterExporterDown watches this job.
    assert 'up{job="ometer-exporter"}' in next(
        r["expr"] for r in alert_rules() if r["alert"] == "OmeterExporterDown"
    )


def test_every_rule_is_tested_firing_and_not_firing() -> None:
    tests = [test for file in ALERT_TESTS for test in yaml.safe_load(file.read_text())["tests"]]
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in tests:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "rules never shown firing"
    assert names - quiet == set(), "rules never shown quiet"


#: The labels an alert's summary and description name; per-model rules name target and model.
SUBJECT = {
    "OmeterExporterDown": ("instance",),
    "OmeterConfigReloadFailed": ("instance",),
    "OmeterTargetDown": ("target",),
    "OmeterBenchmarkLoopErrors": ("target",),
}


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_rule_carries_severity_and_names_what_it_is_about(rule: dict[str, Any]) -> None:
    assert rule["alert"].startswith("Ometer")
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    for label in SUBJECT.get(rule["alert"], ("target", "model")):
        assert f"$labels.{label}" in rule["annotations"]["summary"]
        assert f"$labels.{label}" in rule["annotations"]["description"]


def test_with_bool_turns_filters_into_values() -> None:
    assert with_bool("a > 1.5") == "a > bool 1.5"
    assert with_bool("a > bool 1.5") == "a > bool 1.5"
    assert with_bool("a >= ignoring(m) group_left b") == "a >= bool ignoring(m) group_left b"
    # Label matchers, strings and ranges are not operators.
    assert with_bool('x{a!="1", b=~"<>"} != 0') == 'x{a!="1", b=~"<>"} != bool 0'
    assert with_bool("max_over_time(x[5m]) < 2") == "max_over_time(x[5m]) < bool 2"
    assert with_bool("x < max_over_time(x[7d])") == "x < bool max_over_time(x[7d])"


def test_split_unless_separates_suppressions() -> None:
    assert split_unless("a > 1 unless ignoring(model) (b == 0) unless c") == [
        "a > 1",
        "(b == 0)",
        "c",
    ]
    # Nested unless stays in its operand; "unless" inside a name or a string is no keyword.
    assert split_unless('(a unless b) > 1 unless x{l="unless"}') == [
        "(a unless b) > 1",
        'x{l="unless"}',
    ]
    assert split_unless("unlessness_total > 0") == ["unlessness_total > 0"]


def test_data_forms_of_a_rule() -> None:
    rule = next(r for r in alert_rules() if r["alert"] == "OmeterResultsStale")
    main, target_down, unloaded = (" ".join(f.split()) for f in data_forms(rule["expr"]))
    assert main == (
        "(time() - ometer_benchmark_last_success_timestamp_seconds) > bool ignoring(model) "
        "group_left 3 * ometer_benchmark_interval_seconds"
    )
    assert target_down == "(ometer_target_up == bool 0)"
    assert unloaded == "(ometer_model_selected == bool 0)"


def test_data_forms_of_a_rule_against_its_own_maximum() -> None:
    """A comparison with a range function on its right, and a suppression in parentheses."""
    rule = next(r for r in alert_rules() if r["alert"] == "OmeterCapacityRegressed")
    main, method_changed, target_down = (" ".join(f.split()) for f in data_forms(rule["expr"]))
    assert main == (
        "ometer_capacity_max_concurrency < bool max_over_time(ometer_capacity_max_concurrency[7d])"
    )
    assert method_changed == (
        "( count without (slo_ttft, slo_tpot, slo_attainment, num_predict, requests_per_level) "
        "( last_over_time(ometer_capacity_config_info[7d]) ) > bool 1 )"
    )
    assert target_down == "(ometer_target_up == bool 0)"
