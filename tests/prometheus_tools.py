"""Real Prometheus in the tests: promtool, a Prometheus server on loopback, and the PromQL of
the bundled dashboard (dashboards/ometer.json) and alert rules (prometheus/alerts.yml)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "dashboards" / "ometer.json"
DASHBOARD_SOURCE = REPO / "dashboards" / "generate.py"
ALERTS = REPO / "prometheus" / "alerts.yml"
#: promtool's unit tests of the rules: evaluated every minute, and over more than a week (every
#: 10 minutes: a week of one-minute steps is slow).
ALERT_TESTS = (
    REPO / "prometheus" / "alerts_test.yml",
    REPO / "prometheus" / "alerts_week_test.yml",
)
SCRAPE_CONFIG = REPO / "prometheus" / "prometheus.yml"

Json = dict[str, Any]
T = TypeVar("T")


def load_dashboard() -> Json:
    dashboard: Json = json.loads(DASHBOARD.read_text())
    return dashboard


def alert_rules() -> list[Json]:
    """Every rule of prometheus/alerts.yml, across groups."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's `prometheus` package (scripts/test does)")
    return path


def promtool_sync(*args: str) -> subprocess.CompletedProcess[str]:
    """promtool from a synchronous test (no event loop to keep free)."""
    return subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


async def promtool(*args: str, stdin: bytes | None = None) -> tuple[int, str]:
    """promtool from an async test, without blocking the loop: (exit code, stdout + stderr)."""
    process = await asyncio.create_subprocess_exec(
        binary("promtool"),
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(stdin), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode()


# --------------------------------------------------------------------------------------------
# PromQL text: where the operators are, and the "data form" of an alert expression


def _skip_string(text: str, i: int) -> int:
    quote = text[i]
    j = i + 1
    while j < len(text):
        if text[j] == "\\" and quote != "`":
            j += 2
            continue
        if text[j] == quote:
            return j + 1
        j += 1
    raise ValueError(f"unterminated string at {i} in {text!r}")


def _skip_group(text: str, i: int) -> int:
    close = "}" if text[i] == "{" else "]"
    j = i + 1
    while j < len(text):
        if text[j] in "\"'`":
            j = _skip_string(text, j)
            continue
        if text[j] == close:
            return j + 1
        j += 1
    raise ValueError(f"unclosed {text[i]!r} at {i} in {text!r}")


def _operator_positions(expr: str) -> Iterator[tuple[int, int]]:
    """(index, parenthesis depth) of every character where a PromQL operator may stand: not in
    a string, a comment, a label matcher ``{…}`` (whose ``!=`` is no comparison) or a range
    ``[…]``."""
    depth = 0
    i = 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            i = _skip_string(expr, i)
            continue
        if c == "#":
            end = expr.find("\n", i)
            i = len(expr) if end < 0 else end
            continue
        if c in "{[":
            i = _skip_group(expr, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        yield i, depth
        i += 1


def _is_word_at(expr: str, i: int, word: str) -> bool:
    end = i + len(word)
    return (
        expr.startswith(word, i)
        and (i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] == "_"))
        and (end == len(expr) or not (expr[end].isalnum() or expr[end] == "_"))
    )


_MATCHING = re.compile(r"\s*(?:on|ignoring)\s*\([^)]*\)\s*")
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")


def with_bool(expr: str) -> str:
    """Every comparison turned into its ``bool`` form: ``a > 1.5`` → ``a > bool 1.5``.

    A filter becomes a 0/1 value for every pair of series that match, so the result is
    non-empty exactly when both sides have data and their labels join, whatever the
    threshold."""
    code = {i for i, _ in _operator_positions(expr)}
    out: list[str] = []
    i = 0
    while i < len(expr):
        op = next(
            (
                o
                for o in _COMPARISONS
                if expr.startswith(o, i) and all(i + k in code for k in range(len(o)))
            ),
            None,
        )
        if op is None:
            out.append(expr[i])
            i += 1
            continue
        out.append(op)
        i += len(op)
        rest = expr[i:].lstrip()
        if not _is_word_at(rest, 0, "bool"):
            out.append(" bool")
    return "".join(out)


def split_unless(expr: str) -> list[str]:
    """``a unless on(x) b unless c`` → ``["a", "b", "c"]``: the main expression and each
    suppression (top-level ``unless`` operands, their matching modifiers dropped)."""
    cuts = [
        i for i, depth in _operator_positions(expr) if depth == 0 and _is_word_at(expr, i, "unless")
    ]
    bounds = [0, *cuts, len(expr)]
    parts = []
    for n, (start, end) in enumerate(itertools.pairwise(bounds)):
        part = expr[start + (len("unless") if n else 0) : end]
        if n:
            part = _MATCHING.sub("", part, count=1) if _MATCHING.match(part) else part
        parts.append(part.strip())
    return parts


def data_forms(expr: str) -> list[str]:
    """The expressions that must return data for an alert rule to be able to fire and be
    suppressed: its main expression and each ``unless`` suppression, with every threshold
    comparison in ``bool`` form (see :func:`with_bool`).

    An alert expression is normally empty (nothing is wrong), so "it returns data" cannot be
    asked of it directly; these forms can, and they fail when a metric or label name is
    wrong or a join matches nothing, which is what an alert that can never fire looks like."""
    return [with_bool(part) for part in split_unless(expr)]


# --------------------------------------------------------------------------------------------
# the dashboard's PromQL


@dataclass(frozen=True)
class DashboardQuery:
    where: str  # a readable location, for failure messages
    expr: str
    kind: str  # "panel" | "variable" | "annotation"


def all_panels(dashboard: Json) -> Iterator[Json]:
    """Every panel, rows and the panels of collapsed rows included."""
    for item in dashboard.get("panels", []):
        yield item
        yield from item.get("panels", [])


_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?:(?P<selector>.+),\s*)?(?P<label>\w+)\s*\)\s*$", re.S
)


def variable_promql(definition: str) -> str:
    """A Grafana variable query as plain PromQL: ``label_values(sel, l)`` → ``count by (l)
    (sel)``, which is non-empty exactly when the variable would have values."""
    match = _LABEL_VALUES.match(definition)
    if match:
        selector = match["selector"] or f'{{{match["label"]}!=""}}'
        return f"count by ({match['label']}) ({selector})"
    wrapped = re.match(r"^\s*query_result\((.*)\)\s*$", definition, re.S)
    if wrapped:
        return wrapped[1]
    raise ValueError(f"unsupported variable query {definition!r}")


def dashboard_queries(dashboard: Json) -> list[DashboardQuery]:
    found: list[DashboardQuery] = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            where = f"panel {panel['id']} {panel['title']!r} query {target.get('refId')}"
            found.append(DashboardQuery(where, target["expr"], "panel"))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            definition = variable["query"]
            if isinstance(definition, dict):
                definition = definition["query"]
            where = f"variable {variable['name']}"
            found.append(DashboardQuery(where, variable_promql(definition), "variable"))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            found.append(
                DashboardQuery(
                    f"annotation {annotation['name']!r}", annotation["expr"], "annotation"
                )
            )
    return found


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")

#: Grafana's global variables that a dashboard may use without defining them.
GRAFANA_BUILTINS = frozenset(
    {
        "__interval",
        "__interval_ms",
        "__rate_interval",
        "__rate_interval_ms",
        "__range",
        "__range_s",
        "__range_ms",
        "__from",
        "__to",
        "__dashboard",
        "__name",
        "__all",  # the value of "All" in a variable's saved selection
    }
)


def variables_in(text: str) -> set[str]:
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(text)}


def substitute(expr: str, values: dict[str, str]) -> str:
    """Template variables replaced as Grafana would: ``$x``, ``${x}``, ``${x:regex}``, ``[[x]]``."""

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in values:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(value, expr)


def grafana_regex(values: list[str]) -> str:
    """What Grafana puts in ``label=~"$var"`` for selected values: a regex alternation with
    regex characters escaped, the backslashes escaped again for the PromQL string."""
    escaped = (re.escape(v).replace("\\", "\\\\") for v in values)
    return "(" + "|".join(escaped) + ")"


# --------------------------------------------------------------------------------------------
# a Prometheus server


class PromQLError(AssertionError):
    pass


@dataclass
class Prometheus:
    url: str
    http: httpx.AsyncClient
    process: asyncio.subprocess.Process
    log: Path

    async def api(self, path: str, **params: str | float) -> Any:
        response = await self.http.get(path, params=params)
        body = response.json()
        if body.get("status") != "success":
            raise PromQLError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def query(self, expr: str) -> list[Json]:
        data = await self.api("/api/v1/query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), data
        result: list[Json] = data["result"] if data["resultType"] == "vector" else [data]
        return result

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[Json]:
        data = await self.api("/api/v1/query_range", query=expr, start=start, end=end, step=step)
        result: list[Json] = data["result"]
        return result

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, within: float, what: str, every: float = 0.25
) -> T:
    """Poll an async check (state, not time) until it returns something other than None/False."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(every)


async def _stop(process: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        process.kill()
        await process.wait()


@contextlib.asynccontextmanager
async def run_prometheus(config: str, workdir: Path, storage: Path) -> AsyncIterator[Prometheus]:
    """A Prometheus server on a free loopback port with ``config``; terminated (then killed)
    on exit. ``storage`` may already hold blocks (backfilled history)."""
    config_file = workdir / "prometheus.yml"
    log = workdir / "prometheus.log"
    await asyncio.to_thread(_write, config_file, config)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            binary("prometheus"),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
        try:
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                prometheus = Prometheus(url, http, process, log)

                async def ready() -> bool:
                    if process.returncode is not None:
                        raise AssertionError(f"prometheus exited:\n{prometheus.log_tail()}")
                    with contextlib.suppress(httpx.TransportError):
                        return (await http.get("/-/ready")).status_code == 200
                    return False

                await eventually(ready, within=30, what="prometheus to be ready")
                yield prometheus
        finally:
            await _stop(process)
