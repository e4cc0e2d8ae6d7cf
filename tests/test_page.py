"""The landing page's HTML (without a browser): escaping, CSP hashes, ranks from export's sort."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
from html.parser import HTMLParser

import pytest
from factories import capacity, entry, snapshot

from ometer_exporter import __version__
from ometer_exporter.store.capacity import CapacityRecord
from ometer_exporter.store.records import ModelEntry
from ometer_exporter.views import page, page_capacity
from ometer_exporter.views import query as queries
from ometer_exporter.views import rows as export

EVIL = "<img src=x onerror=alert(1)>\"'&:latest"
SWEEP = capacity(finished_at=2_000_000_000.0)  # within the SLO up to 4 users of 1, 2, 4, 8
MISSED = dataclasses.replace(  # not even one user within the SLO; refused part-way
    capacity(levels=(1, 2), slo_ttft=0.001), stopped="<script>alert('stop')</script> busy"
)


def render_snapshot():
    bad = entry("local", "gemma3:4b")
    assert bad.benchmark is not None
    failed = dataclasses.replace(bad.benchmark, success=False,
                                 error="<script>alert('x')</script> runner died")  # fmt: skip
    snap = snapshot(
        [
            dataclasses.replace(
                entry("local", "llama3.2:latest", ttft=0.2, tps=90.0), capacity=SWEEP
            ),
            entry("local", "llama3.2:1b", ttft=0.1, tps=150.0, size=1_300_000_000),
            dataclasses.replace(entry("gpu<b>", EVIL, ttft=0.4, tps=40.0), capacity=MISSED),
            dataclasses.replace(bad, benchmark=failed),
            ModelEntry("local", "unmeasured:latest"),
        ]
    )
    targets = dict(snap.targets)
    targets["gpu<b>"] = dataclasses.replace(targets["gpu<b>"], version="<i>0.1</i>", up=False,
                                            error="<svg onload=alert(2)>")  # fmt: skip
    return dataclasses.replace(snap, targets=targets)


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.rows: list[dict[str, str | None]] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.headings: list[dict[str, str | None]] = []
        self.users: dict[str, dict[str, str | None]] = {}  # model -> its "Users within SLO" cell
        self.users_text: dict[str, str] = {}
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = dict(attrs)
        if tag == "tr" and found.get("data-target") is not None:
            self.rows.append(found)
        elif tag == "th":
            self.headings.append(found)
        elif tag == "td" and found.get("data-col") == "users":
            model = self.rows[-1]["data-model"] or ""
            self.users[model], self.users_text[model] = found, ""
            self._in = "users"
            return
        if self._in != "users":
            self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        if self._in != "users" or tag == "td":
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "script":
            self.scripts.append(data)
        elif self._in == "style":
            self.styles.append(data)
        elif self._in == "users":
            model = self.rows[-1]["data-model"] or ""
            self.users_text[model] += data


def parsed(text: str) -> Elements:
    elements = Elements()
    elements.feed(text)
    return elements


def test_untrusted_text_is_escaped() -> None:
    text = page.render(render_snapshot(), version=__version__)
    elements = parsed(text)
    assert "img" not in elements.tags and "svg" not in elements.tags and "i" not in elements.tags
    assert elements.tags.count("script") == 2  # only the page's own: the board, the history
    assert "&lt;img src=x onerror=alert(1)&gt;&quot;&#x27;&amp;:latest" in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; runner died" in text
    assert "&lt;svg onload=alert(2)&gt;" in text and "&lt;i&gt;0.1&lt;/i&gt;" in text
    assert "&lt;script&gt;alert(&#x27;stop&#x27;)&lt;/script&gt; busy" in text  # a sweep's
    evil_row = next(r for r in elements.rows if r["data-model"] == EVIL)
    assert evil_row["data-target"] == "gpu<b>"  # attributes round-trip exactly


def test_csp_allows_exactly_the_inline_script_and_style() -> None:
    elements = parsed(page.render(render_snapshot(), version=__version__))

    def digest(text: str) -> str:
        return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()

    csp = page.CONTENT_SECURITY_POLICY
    scripts = " ".join(f"'sha256-{digest(script)}'" for script in elements.scripts)
    assert len(elements.scripts) == 2 and f"script-src {scripts};" in csp
    assert f"style-src 'sha256-{digest(elements.styles[0])}'" in csp
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp


def test_row_ranks_are_exports_sort_orders() -> None:
    snap = render_snapshot()
    elements = parsed(page.render(snap, version=__version__))
    rows = [r for r in export.rows(snap, queries.Query()) if r["kind"] == "chat"]
    for key in queries.SORT_KEYS:
        for reverse in (False, True):
            attr = f"data-r-{key}{'-rev' if reverse else ''}"
            by_rank = [
                r["data-model"] for r in sorted(elements.rows, key=lambda r: int(r[attr] or -1))
            ]
            expected = [r["model"] for r in export.sort_rows(rows, key, reverse=reverse)]
            assert by_rank == expected, attr
    # Served in the default order (tokens/s, best first), so it reads right without script.
    shown = [r["data-model"] for r in elements.rows]
    assert shown == [r["model"] for r in export.sort_rows(rows, page.DEFAULT_SORT)]


def test_grades_and_failures_are_classes() -> None:
    text = page.render(render_snapshot(), version=__version__)
    llama_1b = re.search(r'data-model="llama3.2:1b".*?</tr>', text, re.S)
    assert llama_1b is not None
    assert 'class="num metric good" data-col="ttft"><span class="v">0.100 s</span>' in llama_1b[0]
    gemma = re.search(r'data-model="gemma3:4b".*?</tr>', text, re.S)
    assert gemma is not None and 'class="num metric poor"' in gemma[0]


def test_empty_store() -> None:
    text = page.render(snapshot([]), version=__version__)
    assert "No results yet" in text and 'id="no-rows" class="empty">' in text
    assert f"v{__version__}" in text


def test_each_row_and_card_say_where_they_stand() -> None:
    measured = dataclasses.replace(entry("local", "llama3.2:latest"), status="measured",
                                   due_at=2_000_000_000.0)  # fmt: skip
    good = entry("local", "gemma3:4b")
    assert good.benchmark is not None and good.inventory is not None
    failed = dataclasses.replace(
        good,
        status="failed",
        benchmark=dataclasses.replace(good.benchmark, success=False, error="runner died",
                                      finished_at=good.benchmark.finished_at + 600),
        last_success=good.benchmark.finished_at,
        inventory=dataclasses.replace(good.inventory, loaded=False),
    )  # fmt: skip
    snap = snapshot([measured, failed])
    targets = {
        "local": dataclasses.replace(
            snap.targets["local"],
            url="http://gpu-box:11434",
            select="loaded",
            next_cycle_at=2_000_000_100.0,
        )
    }
    html = page.render(dataclasses.replace(snap, targets=targets), version=__version__)  # fmt: skip
    card = html[html.index('<article class="target') : html.index("</article>")]
    card = card.replace("<wbr>", "")  # the URL may break only between host, port and path
    assert "http://gpu-box:11434" in card and "select: loaded" in card
    assert 'data-ts="2000000100.000"' in card  # the next cycle
    llama = html[html.index('data-model="llama3.2:latest"') :]
    llama = llama[: llama.index("</tr>")]
    assert "st-measured" in llama and "in memory" in llama and 'data-ts="2000000000.000"' in llama
    gemma = html[html.index('data-model="gemma3:4b"') :]
    gemma = gemma[: gemma.index("</tr>")]
    assert "st-failed" in gemma and "last success" in gemma and "in memory" not in gemma
    assert 'id="hint"' not in html  # numbers exist: nothing to explain


def test_an_empty_leaderboard_explains_itself() -> None:
    idle = dataclasses.replace(ModelEntry("local", "llama3.2:latest"), status="not_loaded",
                               inventory=entry("local", "x").inventory)  # fmt: skip
    assert idle.inventory is not None
    idle = dataclasses.replace(idle, inventory=dataclasses.replace(idle.inventory, loaded=False))
    snap = snapshot([idle])
    html = page.render(snap, version=__version__)
    hint = html[html.index('id="hint"') :]
    assert "select: loaded" in hint and "ollama run" in hint and "select: all" in hint
    down = {"local": dataclasses.replace(snap.targets["local"], up=False, error="refused")}
    html = page.render(dataclasses.replace(snap, targets=down), version=__version__)
    assert "cannot be reached" in html[html.index('id="hint"') :]


def test_users_within_slo_column() -> None:
    html = page.render(render_snapshot(), version=__version__)
    found = parsed(html)
    heading = next(h for h in found.headings if h.get("data-sort") == "users")
    assert heading["class"] == "num fold"  # folds away on a narrow screen, with the others
    assert "benchmark.capacity.enabled" in (heading["title"] or "")
    board = [h for h in found.headings if h.get("colspan") is None]
    spans = set(re.findall(r'colspan="(\d+)"', html))
    assert spans == {str(len(board))} == {"11"}  # headings and notes span every column
    assert found.users_text["llama3.2:latest"] == "4"
    assert found.users["llama3.2:latest"]["class"] == "num fold users"  # not graded poor
    assert found.users_text[EVIL] == "0"  # a sweep ran and not even one user met the SLO: red
    assert found.users[EVIL]["class"] == "num fold users poor"
    for model in ("llama3.2:1b", "gemma3:4b", "unmeasured:latest"):  # no sweep yet
        assert found.users_text[model] == "—"
        assert found.users[model]["title"] == page_capacity.OPT_IN
        assert "data-capacity" not in found.users[model]
    assert "benchmark.capacity.enabled" in page_capacity.OPT_IN and "opt-in" in page_capacity.OPT_IN
    option = re.search(r'<option value="users" data-desc="1">([^<]*)</option>', html)
    assert option is not None and option[1] == "Users within SLO"  # most users first


def chart_data(record: CapacityRecord) -> dict:
    snap = snapshot([dataclasses.replace(entry("local", "m:latest"), capacity=record)])
    attribute = parsed(page.render(snap, version=__version__)).users["m:latest"]
    return json.loads(attribute["data-capacity"] or "")


def test_the_chart_gets_each_level_and_the_slo() -> None:
    data = chart_data(SWEEP)
    assert data["max"] == SWEEP.max_concurrency == 4 and data["slo_ttft"] == SWEEP.slo_ttft
    assert [level["concurrency"] for level in data["levels"]] == [1, 2, 4, 8]
    assert [level["passed"] for level in data["levels"]] == [True, True, True, False]
    for shown, level in zip(data["levels"], SWEEP.levels, strict=True):
        p95, rate = level.quantile(level.ttft, 0.95), level.output_tokens_per_second
        assert p95 is not None and rate is not None
        assert shown["ttft_p95"] == pytest.approx(p95, rel=5e-4)  # 4 significant digits
        assert shown["tokens_per_second"] == pytest.approx(rate, rel=5e-4)
        assert shown["lagged"] is level.lagged
    assert data["lines"] == page_capacity.lines(SWEEP)
    assert chart_data(MISSED)["max"] == 0  # the same 0 as the column's


def test_the_text_under_the_chart() -> None:
    assert page_capacity.lines(SWEEP) == [
        "4 users within SLO (TTFT ≤ 500 ms, TPOT ≤ 25 ms, 95 % of requests) · swept "
        "2033-05-18 03:33 UTC",
        "from 8 users on, TTFT is queueing: the server decodes 4 requests at a time",
    ]
    assert SWEEP.slots_hint == page_capacity.lines(SWEEP)[1]
    assert page_capacity.lines(SWEEP, 2_000_086_400.0)[0].endswith(
        "· swept 2033-05-18 03:33 UTC · next sweep 2033-05-19 03:33 UTC"
    )
    # No level queued: no hint. One user, the SLO as configured in seconds and per mille.
    one = dataclasses.replace(capacity(levels=(1, 2), slots=8, finished_at=2_000_000_000.0),
                              max_concurrency=1, slo_ttft=1.0, slo_tpot=0.1,
                              slo_attainment=0.999)  # fmt: skip
    assert one.slots_hint is None
    assert page_capacity.lines(one) == [
        "1 user within SLO (TTFT ≤ 1 s, TPOT ≤ 100 ms, 99.9 % of requests) · swept "
        "2033-05-18 03:33 UTC"
    ]
    head, stopped = page_capacity.lines(MISSED)
    assert head.startswith("0 users within SLO (TTFT ≤ 1 ms, TPOT ≤ 25 ms, 95 % of requests)"
                           ": not even one · swept ")  # fmt: skip
    assert stopped == (
        "Stopped part-way: the server refused a request (<script>alert('stop')</script> busy)."
    )
    lagged = dataclasses.replace(
        SWEEP, levels=tuple(dataclasses.replace(level, lagged=level.concurrency >= 4)
                            for level in SWEEP.levels)
    )  # fmt: skip
    assert page_capacity.lines(lagged)[2] == (
        "Lagged at 4, 8 users: the exporter's event loop stalled during the level, so its "
        "times are doubtful."
    )
