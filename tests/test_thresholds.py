"""One definition of the colours: the configuration's thresholds, the landing page, the terminal
table and the generated Grafana dashboard agree on every figure, graded as it is shown."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from factories import entry, snapshot

from ometer_exporter import __version__
from ometer_exporter.config.settings import DEFAULT_DISPLAY, DisplaySettings
from ometer_exporter.views import grades, page, table
from ometer_exporter.views import rows as export
from ometer_exporter.views.query import Query

DASHBOARD = Path(__file__).parent.parent / "dashboards" / "ometer.json"
ANSI = {"\x1b[32m": "good", "\x1b[38;5;208m": "fair", "\x1b[31m": "poor"}
GRAFANA = {"green": "good", "orange": "fair", "red": "poor"}

# Around each default threshold, and figures that round onto one (19.96 shows as 20.0).
TTFT = [0.12, 0.4994, 0.4996, 0.5, 0.75, 1.9994, 1.9996, 2.0, 3.5]
TPS = [120.0, 50.04, 49.96, 49.94, 35.0, 20.04, 19.96, 19.94, 5.0]


def _overrides(node: Any) -> list[dict[str, Any]]:
    """Every field override of the dashboard (panels nest them)."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if "matcher" in node and "properties" in node:
            found.append(node)
        for value in node.values():
            found += _overrides(value)
    elif isinstance(node, list):
        for item in node:
            found += _overrides(item)
    return found


def grafana_steps(name: str) -> list[tuple[float | None, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    [override] = [  # the graded column of that name (other tables show it ungraded)
        o for o in _overrides(dashboard)
        if o["matcher"]["options"] == name and any(p["id"] == "thresholds" for p in o["properties"])
    ]  # fmt: skip
    [steps] = [p["value"]["steps"] for p in override["properties"] if p["id"] == "thresholds"]
    return [(s["value"], s["color"]) for s in steps]


def grafana_grade(steps: list[tuple[float | None, str]], value: float) -> str:
    """Grafana's rule: the last step whose value the figure reaches."""
    colour = steps[0][1]
    for at, step_colour in steps[1:]:
        assert at is not None
        if value >= at:
            colour = step_colour
    return GRAFANA[colour]


@pytest.mark.parametrize("column", ["ttft", "tps"])
def test_page_table_and_dashboard_agree(column: str) -> None:
    values = TTFT if column == "ttft" else TPS
    entries = [
        entry("local", f"m{i}:latest", ttft=v if column == "ttft" else 0.2,
              tps=v if column == "tps" else 80.0)
        for i, v in enumerate(values)
    ]  # fmt: skip
    snap = snapshot(entries)
    # The page, the terminal table and the dashboard (generated from the defaults).
    text = page.render(snap, version=__version__)
    on_page = {m: g for m, g in re.findall(
        rf'data-model="([^"]+)"(?:(?!</tr>).)*?class="num metric (\w*)" data-col="{column}"',
        text, re.S)}  # fmt: skip
    rows = export.rows(snap, Query())
    lines = table.render(rows, table.Layout(inventory=False), color=True).split("\n")[2:]
    in_table = {}
    for line in lines:
        model = line.split(" ", 1)[0]
        codes = re.findall(r"(\x1b\[[0-9;]+m)[^\x1b]+\x1b\[0m", line)
        in_table[model] = ANSI[codes[0 if column == "ttft" else 1]]
    steps = grafana_steps("TTFT" if column == "ttft" else "Tokens/s")
    for i, value in enumerate(values):
        model = f"m{i}:latest"
        shown = grades.displayed(column, value)
        expected = grades.absolute(column, value, DEFAULT_DISPLAY)
        assert on_page[model] == in_table[model] == expected, (value, shown)
        assert grafana_grade(steps, shown) == expected, (value, shown)
    # The figures on either side of each threshold really fall into different colours.
    assert {on_page[f"m{i}:latest"] for i in range(len(values))} == {"good", "fair", "poor"}


def test_grading_the_shown_figure() -> None:
    # 60.945 and 60.927 both read 60.9: one colour, whichever grading.
    rows = [export.row(entry("local", f"m{i}:latest", tps=v))
            for i, v in enumerate((60.945, 60.927, 10.0))]  # fmt: skip
    relative = DisplaySettings(grading="relative")
    assert grades.grades(rows, "tps", relative) == ["good", "good", "poor"]
    assert grades.grades(rows, "tps") == ["good", "good", "poor"]
    assert grades.absolute("tps", 19.96) == "fair"  # shown as 20.0: at the threshold
    assert grades.absolute("ttft", 0.4996) == "fair"  # shown as 0.500 s
    # Two chat models no longer make one of them red: 0.018 s is a good TTFT.
    pair = [export.row(entry("local", "a:latest", ttft=0.018)),
            export.row(entry("local", "b:latest", ttft=0.012))]  # fmt: skip
    assert grades.grades(pair, "ttft") == ["good", "good"]
    assert grades.grades(pair, "ttft", relative) == ["poor", "good"]


def test_configured_thresholds_reach_page_and_table() -> None:
    display = DisplaySettings(ttft=(0.05, 0.1), tokens_per_second=(200.0, 100.0))
    snap = snapshot([entry("local", "a:latest", ttft=0.2, tps=150.0)])
    text = page.render(snap, version=__version__, display=display)
    assert 'class="num metric poor" data-col="ttft"' in text
    assert 'class="num metric fair" data-col="tps"' in text
    assert 'data-ttft-limits="0.05,0.1" data-tps-limits="200,100"' in text
    assert "TTFT under 0.050 s, tokens/s 200 or more" in text
    rows = export.rows(snap, Query())
    coloured = table.render(rows, table.Layout(inventory=False), color=True, display=display)
    assert "\x1b[31m0.200 s\x1b[0m" in coloured and "\x1b[38;5;208m150.0\x1b[0m" in coloured
    relative = page.render(snap, version=__version__, display=DisplaySettings(grading="relative"))
    assert "display.grading: relative" in relative and "best third" in relative
