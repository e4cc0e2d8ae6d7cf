"""The terminal table: OMeter's colour thresholds (exact ANSI codes), states, trends, safety."""

from __future__ import annotations

import dataclasses

import pytest
from factories import entry

from ometer_exporter.config.settings import DisplaySettings
from ometer_exporter.store.records import ModelEntry, Record
from ometer_exporter.views import grades, table
from ometer_exporter.views import rows as export

RELATIVE = DisplaySettings(grading="relative")  # OMeter's thirds of the table
GREEN, ORANGE, RED, DIM, BOLD, RESET = (
    "\x1b[32m", "\x1b[38;5;208m", "\x1b[31m", "\x1b[2m", "\x1b[1m", "\x1b[0m",
)  # fmt: skip


def three(*, verbose: bool = False) -> list[export.Row]:
    return [
        export.row(entry("local", "llama3.2:1b", ttft=0.1, tps=150.0, size=1_300_000_000,
                         runs=2), verbose=verbose),
        export.row(entry("local", "llama3.2:latest", ttft=0.2, tps=100.0, runs=2),
                   verbose=verbose),
        export.row(entry("local", "qwen3:8b", ttft=0.3, tps=50.0, size=5_200_000_000, runs=2),
                   verbose=verbose),
    ]  # fmt: skip


def test_colours_for_known_values_exact_ansi() -> None:
    # TTFT 0.1/0.2/0.3: p33 = 0.166, p66 = 0.232, lower is better.
    # TPS 150/100/50: p33 = 83, p66 = 116, higher is better.
    text = table.render(three(), table.Layout(), color=True, display=RELATIVE)
    assert text.split("\n") == [
        f"{BOLD}Model{RESET}              {BOLD}Size{RESET}  {BOLD}Context{RESET}  "
        f"{BOLD}Quant{RESET}   {BOLD}Capabilities{RESET}          {BOLD}TTFT{RESET}    "
        f"{BOLD}TPS{RESET}",
        "───────────────  ──────  ───────  ──────  ─────────────────  ───────  ─────",
        f"llama3.2:1b      1.3 GB   131072  Q4_K_M  completion, tools  "
        f"{GREEN}0.100 s{RESET}  {GREEN}150.0{RESET}",
        f"llama3.2:latest  2.0 GB   131072  Q4_K_M  completion, tools  "
        f"{ORANGE}0.200 s{RESET}  {ORANGE}100.0{RESET}",
        f"qwen3:8b         5.2 GB   131072  Q4_K_M  completion, tools  "
        f"{RED}0.300 s{RESET}   {RED}50.0{RESET}",
    ]


def test_no_colour_gives_plain_aligned_text() -> None:
    text = table.render(three(), table.Layout(), color=False)
    assert "\x1b" not in text
    assert text.split("\n")[2] == (
        "llama3.2:1b      1.3 GB   131072  Q4_K_M  completion, tools  0.100 s  150.0"
    )


def test_percentiles_and_grades() -> None:
    assert grades.percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.33) == pytest.approx(3.97)
    assert grades.thresholds([10.0, 1.0, 4.0, 7.0]) == pytest.approx((3.97, 6.94))
    assert grades.thresholds([]) is None
    cuts = (2.0, 4.0)
    assert [grades.grade(v, cuts, higher_is_better=False) for v in (1, 2, 3, 4, 5)] == [
        "good", "good", "fair", "fair", "poor",
    ]  # fmt: skip
    assert [grades.grade(v, cuts, higher_is_better=True) for v in (1, 2, 3, 4, 5)] == [
        "poor", "fair", "fair", "good", "good",
    ]  # fmt: skip
    # One value is the best of its table.
    assert grades.grades([export.row(entry("local", "solo:latest"))], "tps") == ["good"]


def test_failures_are_red_and_listed_embeddings_graded_apart() -> None:
    rows = three()
    broken = entry("local", "gemma3:4b")
    assert broken.benchmark is not None
    failed_bench = dataclasses.replace(
        broken.benchmark, success=False, ttft=None, tokens_per_second=None,
        error="HTTP 500: model runner crashed", error_type="http_5xx",
    )  # fmt: skip
    rows.append(export.row(dataclasses.replace(broken, benchmark=failed_bench)))
    # A fast embedding model must not push the chat models' grades around.
    rows.append(export.row(entry("local", "nomic-embed-text:latest", ttft=0.01, tps=9000.0,
                                 kind="embedding")))  # fmt: skip
    assert grades.grades(rows, "tps", RELATIVE) == ["good", "fair", "poor", "poor", "good"]
    # By the default thresholds (good from 50 tokens/s), the three chat models are all good.
    assert grades.grades(rows, "tps") == ["good", "good", "good", "poor", "good"]
    text = table.render(rows, table.Layout(ttft=False), color=True, display=RELATIVE)
    gemma = next(line for line in text.split("\n") if line.startswith("gemma3:4b"))
    assert gemma.endswith(f"{RED}error{RESET}")
    assert text.endswith(
        f"{RED}Errors:{RESET}\n  gemma3:4b (local): HTTP 500: model runner crashed"
    )
    assert "TTFT" not in text  # not even in the embedding heading's note
    assert f"{BOLD}Embedding models{RESET}{DIM} (TPS is the input tokens/s){RESET}" in text


def test_live_states_trends_and_per_run_columns() -> None:
    rows = three(verbose=True)
    previous = {
        ("local", "llama3.2:1b"): {"ttft": 0.2, "tps": 150.0},  # TTFT halved: better
        ("local", "llama3.2:latest"): {"ttft": 0.195, "tps": 120.0},  # within 5 %; TPS worse
    }
    queued = frozenset({("local", "qwen3:8b")})
    layout = table.Layout(runs=2, target=True)
    text = table.render(rows, layout, queued=queued, previous=previous)
    header, _, first, second, third = text.split("\n")
    assert header.split() == ["Model", "Target", "Size", "Context", "Quant", "Capabilities",
                              "TTFT", "#1", "TTFT", "#2", "TTFT", "TPS", "#1", "TPS", "#2",
                              "TPS"]  # fmt: skip
    # Arrows on the aggregate columns only (against the previous stored result).
    assert first.endswith("0.100 s  0.100 s  0.100 s ↑   150.0   150.0  150.0 →")
    assert second.endswith("0.200 s  0.200 s  0.200 s →   100.0   100.0  100.0 ↓")
    assert third.split()[-6:] == ["queued"] * 6
    running = table.render(rows, layout, running=queued, color=True)
    assert f"{DIM}running…{RESET}" in running


def test_untrusted_text_cannot_drive_the_terminal() -> None:
    evil = ModelEntry("local", "evil\x1b[2J\x07:latest")
    text = table.render([export.row(evil)], table.Layout(ttft=False, tps=False))
    assert "\x1b" not in text and "\x07" not in text
    assert "evil?[2J?:latest" in text


def test_trend() -> None:
    assert grades.trend(0.10, 0.20, "ttft") == "↑"
    assert grades.trend(0.30, 0.20, "ttft") == "↓"
    assert grades.trend(0.204, 0.20, "ttft") == "→"
    assert grades.trend(110.0, 100.0, "tps") == "↑"
    assert grades.trend(96.0, 100.0, "tps") == "→"
    assert grades.trend(None, 100.0, "tps") == ""
    assert grades.trend(1.0, None, "tps") == ""


def test_embedding_rows_come_apart_under_their_heading() -> None:
    embed = export.row(entry("local", "nomic-embed-text:latest", ttft=0.02, tps=9000.0,
                             kind="embedding"))  # fmt: skip
    rows = [embed, *three()]  # sorted by tps over every kind, the embedding would lead
    assert [r["model"] for r in table.by_kind(rows)] == [
        "llama3.2:1b", "llama3.2:latest", "qwen3:8b", "nomic-embed-text:latest",
    ]  # fmt: skip
    text = table.render(rows, table.Layout(), color=True)
    lines = text.split("\n")
    assert lines[5:] == [
        "",
        f"{BOLD}Embedding models{RESET}{DIM} (TTFT is the request time, TPS the input "
        f"tokens/s){RESET}",
        f"nomic-embed-text:latest  2.0 GB   131072  Q4_K_M  completion, tools  "
        f"{GREEN}1.500 s{RESET}  {GREEN}2000.0{RESET}",  # request time, input tokens/s
    ]
    # The chat rows keep the colours they have without the embedding model.
    alone = table.render(three(), table.Layout(), color=True).split("\n")[2:5]
    assert [line.split() for line in lines[2:5]] == [line.split() for line in alone]
    listing = table.render(rows, table.Layout(ttft=False, tps=False))
    assert "\nEmbedding models\nnomic-embed-text:latest " in listing  # no TTFT/TPS to explain


def test_load_column() -> None:
    rows = three()
    rows[1]["load_duration_seconds"] = None  # loaded before the run: no cold load measured
    rows[2]["load_duration_seconds"] = 12.5
    text = table.render(rows, table.Layout(load=True))
    header, rule, *body = text.split("\n")
    assert header.split()[-3:] == ["TTFT", "TPS", "Load"]
    assert [line.rsplit("  ", 1)[1].strip() for line in body] == ["1.250 s", "—", "12.5 s"]
    assert all(len(line) == len(rule) for line in body)  # right-aligned to the rule
    assert "Load" not in table.render(rows, table.Layout())


def test_only_like_results_are_comparable() -> None:
    old = entry("gpu", "llama3.2:latest").benchmark
    assert old is not None
    old = dataclasses.replace(old, url="http://gpu:11434", prompt_set="default",
                              num_predict=128, think="auto")  # fmt: skip
    same = dataclasses.replace(old, ttft=0.1)

    def comparable(new: Record, before: Record = old, target: str = "gpu") -> bool:
        return grades.comparable(new, before, new_target="gpu", old_target=target)

    assert comparable(same)
    assert not comparable(dataclasses.replace(same, url="http://other:11434"))
    assert not comparable(dataclasses.replace(same, num_predict=16))
    assert not comparable(dataclasses.replace(same, prompt_set="custom-1a2b3c4d"))
    assert not comparable(dataclasses.replace(same, think="false"))
    unknown = dataclasses.replace(old, url="")
    assert not comparable(same, unknown) and not comparable(unknown)  # "" is no known URL
    assert comparable(dataclasses.replace(same, url=""), unknown)  # both "", same target
    assert not comparable(dataclasses.replace(same, url=""), unknown, target="cpu")
