"""``ometer-exporter bench`` against the emulator: OMeter's flags, table, exports and history.

``cli.main`` runs in a worker thread (``asyncio.to_thread``): bench has its own ``asyncio.run``
while the emulator keeps serving in the test's event loop.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import sys
from pathlib import Path

import pytest
from ollama_emulator import (
    USAGE_LIMIT_MESSAGE,
    Fault,
    chat_model,
    cloud_stub_model,
    embedding_model,
    thinking_model,
)

from ometer_exporter.cli import environment
from ometer_exporter.cli.main import main
from ometer_exporter.cli.oneshot import options as bench
from ometer_exporter.views import grades, table
from ometer_exporter.views import rows as export

LLAMA, LLAMA_1B, QWEN, NOMIC = (
    "llama3.2:latest",
    "llama3.2:1b",
    "qwen3:8b",
    "nomic-embed-text:latest",
)
HEADER = ("Model", "Size", "Context", "Quant", "Capabilities")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def local_models():
    return [
        chat_model(LLAMA, decode_tokens_per_second=200.0, output_tokens=24),
        chat_model(LLAMA_1B, decode_tokens_per_second=320.0, output_tokens=24,
                   size=1_321_098_329),
        thinking_model(QWEN, thinking_tokens=4, output_tokens=24),
        embedding_model(NOMIC),
        cloud_stub_model("gpt-oss:120b-cloud"),  # a pass-through stub: never benchmarked
    ]  # fmt: skip


@pytest.fixture
async def emu(emulator_factory):
    return await emulator_factory(local_models(), time_scale=0.01)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty HOME and working directory: no stray .env file."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def environ(home: Path, url: str, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), "OLLAMA_HOST": url, "OMETER_STORAGE_PATH": str(home / "data"),
            **extra}  # fmt: skip


async def run(args: list[str], env: dict[str, str]) -> int:
    return await asyncio.to_thread(main, ["bench", *args], env)


def table_models(out: str) -> list[str]:
    """Model names of the table's rows, in order (chat rows, then embedding rows)."""
    lines = out.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("Model")) + 2
    return [line.split()[0] for line in lines[start:] if line.strip() and line[0] != " "
            and not line.startswith(("Errors:", table.EMBEDDING_HEADING))]  # fmt: skip


def chats(emu) -> list:
    """Measured chat runs (warmups are one-token requests)."""
    return [r for r in emu.records_for("/api/chat")
            if r.body.get("messages") and r.body["options"]["num_predict"] != 1]  # fmt: skip


# -- listing, measuring, the table -------------------------------------------------------------


async def test_without_ttft_or_tps_it_lists_and_measures_nothing(emu, home, capsys) -> None:
    assert await run([], environ(home, emu.url)) == 0
    out = capsys.readouterr().out
    assert out.split("\n")[0].split() == list(HEADER)
    assert sorted(table_models(out)) == sorted([LLAMA, LLAMA_1B, QWEN, NOMIC])
    assert "TTFT" not in out and "TPS" not in out and "\x1b" not in out  # not a TTY
    assert chats(emu) == [] and emu.records_for("/api/embed") == []
    assert not (home / "data").exists()  # a listing stores nothing


async def test_measures_stores_and_shows_trends(emu, home, capsys) -> None:
    env = environ(home, emu.url)
    assert await run(["--ttft", "--tps", "--runs", "1", "--num-predict", "16"], env) == 0
    out = capsys.readouterr().out
    header = out.split("\n")[0].split()
    assert header == [*HEADER, "TTFT", "TPS", "Load"]
    assert "↑" not in out and "→" not in out  # nothing to compare with yet
    assert len(chats(emu)) == 3  # llama, llama 1b, qwen: one measured run each
    with sqlite3.connect(home / "data" / "ometer.sqlite3") as db:
        stored = sorted(db.execute("SELECT target, model FROM results").fetchall())
    assert stored == sorted(("local", m) for m in (LLAMA, LLAMA_1B, QWEN, NOMIC))
    assert sum(1 for r in chats(emu) if r.body.get("keep_alive") == 0) == 3  # left as found

    assert await run(["--ttft", "--tps", "--runs", "1", "--num-predict", "16"], env) == 0
    rows = [line for line in capsys.readouterr().out.split("\n") if line.startswith(LLAMA + " ")]
    assert any(arrow in rows[0] for arrow in "↑↓→")  # compared with the first run


async def test_only_ttft_or_only_tps(emu, home, capsys) -> None:
    env = environ(home, emu.url)
    assert await run(["--ttft", "--runs", "1", "--model", LLAMA], env) == 0
    assert capsys.readouterr().out.split("\n")[0].split() == [*HEADER, "TTFT", "Load"]
    assert await run(["--tps", "--runs", "1", "--model", LLAMA], env) == 0
    assert capsys.readouterr().out.split("\n")[0].split() == [*HEADER, "TPS", "Load"]


async def test_verbose_shows_every_run(emu, home, capsys) -> None:
    env = environ(home, emu.url)
    assert await run(["--ttft", "--tps", "--runs", "2", "-v", "--model", LLAMA], env) == 0
    header = capsys.readouterr().out.split("\n")[0]
    assert header.split()[len(HEADER):] == ["TTFT", "#1", "TTFT", "#2", "TTFT",
                                            "TPS", "#1", "TPS", "#2", "TPS", "Load"]  # fmt: skip
    assert await run(["--ttft", "--tps", "--runs", "2", "-v", "--model", LLAMA, "--json"],
                     env) == 0  # fmt: skip
    row = json.loads(capsys.readouterr().out)[0]
    assert row["ttft_run_1"] > 0 and row["ttft_run_2"] > 0 and row["tps_run_2"] > 0


# -- matching and sorting -----------------------------------------------------------------------


async def test_model_exact_or_family(emu, home, capsys) -> None:
    env = environ(home, emu.url)
    assert await run(["--model", "llama3.2"], env) == 0
    assert table_models(capsys.readouterr().out) == [LLAMA_1B, LLAMA]
    assert await run(["--model", "llama3.2:1b", "--ttft", "--runs", "1"], env) == 0
    assert table_models(capsys.readouterr().out) == [LLAMA_1B]
    assert {r.body["model"] for r in chats(emu)} == {LLAMA_1B}
    # A pass-through stub is benchmarked only when named exactly (it bills the cloud).
    assert await run(["--model", "gpt-oss:120b-cloud"], env) == 0
    assert table_models(capsys.readouterr().out) == ["gpt-oss:120b-cloud"]


async def test_nothing_matches_is_exit_1(emu, home, capsys) -> None:
    env = environ(home, emu.url)
    assert await run(["--model", "mistral", "--ttft"], env) == 1
    err = capsys.readouterr().err
    assert "no model matches 'mistral'" in err
    assert chats(emu) == []
    # Some names match, some do not: a warning, and the others are measured.
    assert await run(["--model", "mistral", "qwen3", "--runs", "1", "--tps"], env) == 0
    captured = capsys.readouterr()
    assert "warning: no model matches 'mistral'" in captured.err
    assert table_models(captured.out) == [QWEN]


async def test_sort_reverse_and_json_to_stdout(emu, home, capsys) -> None:
    env = environ(home, emu.url)
    args = ["--ttft", "--tps", "--runs", "1", "--model", "llama3.2", "qwen3"]
    assert await run([*args, "--sort", "tps", "--json"], env) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert [r["model"] for r in rows] == [LLAMA_1B, LLAMA, QWEN]  # 320, 200, 60 tokens/s
    assert list(rows[0])[: len(export.COLUMNS)] == list(export.COLUMNS)
    assert rows[0]["tps"] > rows[1]["tps"] > rows[2]["tps"]
    assert "[3/3]" in captured.err  # progress on stderr while stdout carries the export
    assert await run(["--history", "--sort", "tps", "--reverse", "--json"], env) == 0
    assert [r["model"] for r in json.loads(capsys.readouterr().out)] == [QWEN, LLAMA, LLAMA_1B]
    assert await run(["--sort", "size"], env) == 0  # listing: biggest first
    assert table_models(capsys.readouterr().out) == [QWEN, LLAMA, LLAMA_1B, NOMIC]


async def test_reverse_needs_sort(emu, home, capsys) -> None:
    assert await run(["--reverse"], environ(home, emu.url)) == 2
    assert "--reverse needs --sort" in capsys.readouterr().err


async def test_csv_to_a_file_and_table_still_shown(emu, home, capsys) -> None:
    path = home / "out" / "results.csv"
    path.parent.mkdir()
    env = environ(home, emu.url)
    assert await run(["--tps", "--runs", "1", "--model", QWEN, "--csv", str(path)], env) == 0
    captured = capsys.readouterr()
    assert table_models(captured.out) == [QWEN]
    assert f"wrote 1 row to {path}" in captured.err
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["model"] for r in rows] == [QWEN] and float(rows[0]["tps"]) > 0
    missing = home / "nope" / "x.json"
    assert await run(["--json", str(missing)], env) == 2
    assert "does not exist" in capsys.readouterr().err
    assert await run(["--json", "--csv"], env) == 2


# -- history, prompts, parallel -----------------------------------------------------------------


async def test_history_latest_and_all(emu, home, capsys) -> None:
    env = environ(home, emu.url)
    assert await run(["--history"], env) == 0
    assert "no stored results" in capsys.readouterr().err
    assert not (home / "data").exists()
    for _ in range(2):
        assert await run(["--ttft", "--tps", "--runs", "1", "--model", "llama3.2"], env) == 0
    capsys.readouterr()
    assert await run(["--history"], env) == 0
    out = capsys.readouterr().out
    assert out.split("\n")[0].split() == ["Model", "Size", "Context", "Quant", "Capabilities",
                                          "TTFT", "TPS", "Load", "Benchmarked"]  # fmt: skip
    assert table_models(out) == [LLAMA_1B, LLAMA]  # the latest result of each
    assert await run(["--history", "-v", "--json"], env) == 0
    every = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in every] == [LLAMA_1B, LLAMA_1B, LLAMA, LLAMA]
    # The inventory is stored with each result, so history shows it too.
    assert every[-1]["size_bytes"] and every[-1]["context_length_tokens"]
    assert every[-1]["capabilities"]
    assert every[0]["benchmarked_at"] < every[1]["benchmarked_at"]
    assert await run(["--history", "--model", "qwen3"], env) == 1
    emu_calls = len(emu.records)
    assert await run(["--history", "--local"], env) == 0  # reads the store, never the server
    assert len(emu.records) == emu_calls


async def test_prompts_file(emu, home, capsys) -> None:
    prompts = home / "prompts.txt"
    prompts.write_text("Describe a lighthouse in five sentences.\n\n   \n"
                       "Explain tides in five sentences.\n")  # fmt: skip
    env = environ(home, emu.url)
    assert await run(["--tps", "--runs", "3", "--model", LLAMA, "--prompts", str(prompts)],
                     env) == 0  # fmt: skip
    sent = [r.body["messages"][0]["content"] for r in chats(emu)]
    assert [s.split("] ", 1)[1] for s in sent] == [
        "Describe a lighthouse in five sentences.",
        "Explain tides in five sentences.",
        "Describe a lighthouse in five sentences.",
    ]
    assert await run(["--tps", "--prompts", "Say hi in ten words.", "--model", LLAMA,
                      "--runs", "1"], env) == 0  # fmt: skip
    assert chats(emu)[-1].body["messages"][0]["content"].endswith("] Say hi in ten words.")


async def test_parallel_warns_and_measures_everything(emu, home, capsys) -> None:
    env = environ(home, emu.url, OMETER_PARALLEL="3", OMETER_RUNS="1")
    assert await run(["--tps"], env) == 0
    captured = capsys.readouterr()
    assert "--parallel 3" in captured.err and "queueing" in captured.err
    assert len(chats(emu)) == 3
    assert await run([], environ(home, emu.url, OMETER_RUNS="9")) == 2
    assert "OMETER_RUNS" in capsys.readouterr().err


# -- targets: local, cloud, config file, menu, .env ---------------------------------------------


@pytest.fixture
async def cloud(emulator_factory):
    return await emulator_factory(
        [chat_model("gpt-oss:120b", family="gptoss", output_tokens=24)],
        cloud=True, api_key="sk-test", time_scale=0.01,
    )  # fmt: skip


async def test_cloud_target_only_with_a_key(emu, cloud, home, capsys) -> None:
    env = environ(home, emu.url, OLLAMA_CLOUD_BASE_URL=cloud.url)
    assert await run(["--cloud"], env) == 2
    assert "OLLAMA_CLOUD_API_KEY" in capsys.readouterr().err
    env["OLLAMA_CLOUD_API_KEY"] = "sk-test"
    assert await run([], env) == 0  # neither flag: both targets, with a Target column
    out = capsys.readouterr().out
    assert out.split("\n")[0].split()[:2] == ["Model", "Target"]
    assert "gpt-oss:120b" in table_models(out) and LLAMA in table_models(out)
    assert await run(["--cloud", "--tps", "--runs", "1"], env) == 0
    out = capsys.readouterr().out
    assert table_models(out) == ["gpt-oss:120b"] and "Target" not in out
    assert cloud.records_for("/api/chat")[0].headers["authorization"] == "Bearer sk-test"
    assert "sk-test" not in out


async def test_cloud_usage_limit_stops_the_target(emulator_factory, home, capsys) -> None:
    cloud = await emulator_factory(
        [chat_model("gpt-oss:120b", family="gptoss"), chat_model("qwen3-coder:480b")],
        cloud=True, api_key="sk-test", time_scale=0.01,
    )  # fmt: skip
    for name in ("gpt-oss:120b", "qwen3-coder:480b"):
        cloud.add_fault(name, Fault("status", status=429, message=USAGE_LIMIT_MESSAGE, times=-1))
    env = environ(home, "http://127.0.0.1:9", OLLAMA_CLOUD_BASE_URL=cloud.url,
                  OLLAMA_CLOUD_API_KEY="sk-test")  # fmt: skip
    assert await run(["--cloud", "--tps", "--runs", "3"], env) == 3  # some models failed
    captured = capsys.readouterr()
    assert len(cloud.records_for("/api/chat")) == 1  # no retry, no second run, no next model
    assert "usage limit reached" in captured.err
    assert ("2 of 2 models not measured: gpt-oss:120b (cloud), qwen3-coder:480b (cloud) "
            "(exit 3)") in captured.err  # fmt: skip
    assert "session usage limit" in captured.out  # the model's error under the table


async def test_menu_on_a_terminal(emu, cloud, home, capsys, monkeypatch) -> None:
    env = environ(home, emu.url, OLLAMA_CLOUD_BASE_URL=cloud.url, OLLAMA_CLOUD_API_KEY="sk-test")
    monkeypatch.setattr(sys, "stdin", FakeTTY("3\n"))
    assert await run([], env) == 0
    captured = capsys.readouterr()
    assert "1) Both local and cloud" in captured.err and "4) Cancel" in captured.err
    assert table_models(captured.out) == ["gpt-oss:120b"]
    monkeypatch.setattr(sys, "stdin", FakeTTY("x\nlocal\n"))  # asks again, takes a word too
    assert await run([], env) == 0
    captured = capsys.readouterr()
    assert "Please answer 1-4." in captured.err and LLAMA in table_models(captured.out)
    monkeypatch.setattr(sys, "stdin", FakeTTY("4\n"))
    assert await run(["--ttft"], env) == 0
    assert "Cancelled." in capsys.readouterr().err
    assert chats(emu) == [] and cloud.records_for("/api/chat") == []
    monkeypatch.setattr(sys, "stdin", FakeTTY(""))  # --model: no question asked
    assert await run(["--model", LLAMA], env) == 0
    assert "Record which models?" not in capsys.readouterr().err


async def test_config_file_targets(emu, emulator_factory, home, capsys) -> None:
    other = await emulator_factory([chat_model("mistral:7b", family="mistral")], time_scale=0.01)
    config = home / "ometer.yaml"
    config.write_text(f"targets:\n  - {{name: box1, url: '{emu.url}'}}\n"
                      f"  - {{name: box2, url: '{other.url}', exclude: [mistral]}}\n")  # fmt: skip
    env = {"HOME": str(home), "OMETER_STORAGE_PATH": str(home / "data")}
    assert await run(["--config.file", str(config), "--local", "--tps", "--runs", "1",
                      "--model", "mistral", LLAMA], env) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert [line.split()[:2] for line in out.split("\n")[2:4]] == [
        [LLAMA, "box1"], ["mistral:7b", "box2"],  # --model wins over the file's exclude
    ]  # fmt: skip
    assert await run(["--config.file", str(config), "--cloud"], env) == 2
    assert "has no cloud target" in capsys.readouterr().err
    config.write_text("targets: [oops")
    assert await run(["--config.file", str(config)], env) == 2


async def test_dotenv_files(emu, home, capsys) -> None:
    (home / ".config" / "ometer").mkdir(parents=True)
    (home / ".config" / "ometer" / ".env").write_text(
        f'# the local server\nexport OLLAMA_HOST="{emu.url}"\nOMETER_RUNS=1  # one run\n'
    )
    (home / ".env").write_text("OMETER_RUNS='2'\n")  # ~/.env beats ~/.config/ometer/.env
    env = {"HOME": str(home), "OMETER_STORAGE_PATH": str(home / "data")}
    assert await run(["--tps", "--model", LLAMA, "--json"], env) == 0
    assert len(json.loads(capsys.readouterr().out)[0]) > 0
    assert len(chats(emu)) == 2
    (home / ".env").write_text("OLLAMA_HOST=http://127.0.0.1:9\n")  # ./.env (cwd is home)
    env["OLLAMA_HOST"] = emu.url  # the real environment wins
    assert await run(["--model", LLAMA], env) == 0
    assert environment.parse_dotenv("A=1\n#B=2\nC = 'x # y'\nD=plain # note\nbad line\n") == {
        "A": "1", "C": "x # y", "D": "plain",
    }  # fmt: skip


async def test_a_model_without_any_counted_run_is_explained(emu, home, capsys) -> None:
    emu.add_fault(LLAMA, Fault("force_reload", times=-1))  # every run pays a load: left out
    assert await run(["--tps", "--runs", "2", "--model", LLAMA], environ(home, emu.url)) == 3
    captured = capsys.readouterr()
    assert captured.out.split("\n")[2].split()[-4:-2] == ["no", "run"]  # then Load: "… s"
    assert (f"warning: {LLAMA} (local): no run was counted (2 runs: the model was reloaded "
            "during the run)") in captured.err  # fmt: skip


async def test_unreachable_target_is_exit_1(home, capsys) -> None:
    assert await run(["--ttft"], environ(home, "http://127.0.0.1:9")) == 1
    assert "cannot reach local (http://127.0.0.1:9)" in capsys.readouterr().err


def test_parser() -> None:
    args = bench.build_parser().parse_args(
        ["--model", "llama3.2", "qwen3:8b", "--model", "phi3", "--json", "--csv", "out.csv",
         "--runs", "2", "--sort", "ctx", "--reverse", "-v"]
    )  # fmt: skip
    assert args.model == ["llama3.2", "qwen3:8b", "phi3"]
    assert (args.json, args.csv) == ("-", "out.csv")  # no PATH: stdout
    assert (args.runs, args.sort, args.reverse, args.verbose) == (2, "ctx", True, True)
    defaults = bench.build_parser().parse_args([])
    assert (defaults.local, defaults.cloud, defaults.ttft, defaults.tps) == (False,) * 4
    assert defaults.runs is defaults.parallel is defaults.json is None
    for bad in (["--runs", "4"], ["--runs", "x"], ["--parallel", "0"], ["--num-predict", "4"],
                ["--sort", "speed"]):  # fmt: skip
        with pytest.raises(SystemExit):
            bench.build_parser().parse_args(bad)


def test_bench_must_come_first(capsys) -> None:
    for argv in (["--storage.path", "/tmp/x", "bench"], ["--log.level", "info", "bench", "--ttft"]):
        with pytest.raises(SystemExit) as info:
            main(argv, env={})
        assert info.value.code == 2
        assert "give bench first" in capsys.readouterr().err


# -- the terminal: live redraw, colours ---------------------------------------------------------


async def test_live_table_on_a_terminal(emu, home, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("LINES", "50")
    for env_extra, coloured in (({}, True), ({"NO_COLOR": "1"}, False)):
        screen = FakeTTY()
        monkeypatch.setattr(sys, "stdout", screen)
        code = await run(["--ttft", "--tps", "--runs", "1", "--model", "llama3.2", "qwen3"],
                         environ(home, emu.url, **env_extra))  # fmt: skip
        assert code == 0
        out = screen.getvalue()
        # First drawn queued, redrawn in place (cursor up + clear) as each model finishes.
        assert "queued" in out and "running…" in out
        assert out.count("\x1b[J") >= 6  # 3 models: start and finish of each
        assert "\x1b[5F\x1b[J" in out  # a header, a rule, 3 rows: up 5 lines
        assert ("\x1b[32m" in out) is coloured
        final = out.rsplit("\x1b[J", 1)[1]
        assert "queued" not in final and "running" not in final


async def test_a_table_taller_than_the_terminal_shows_progress_then_the_table(
    emu, home, monkeypatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("LINES", "6")
    screen = FakeTTY()
    monkeypatch.setattr(sys, "stdout", screen)
    assert await run(["--tps", "--runs", "1"], environ(home, emu.url, NO_COLOR="1")) == 0
    out = screen.getvalue()
    assert "benchmarking… 0/4 done" in out and "benchmarking… 3/4 done" in out
    assert "queued" not in out  # the table was never drawn half-done
    final = out.rsplit("\x1b[J", 1)[1]
    assert sorted(table_models(final)) == sorted([LLAMA, LLAMA_1B, QWEN, NOMIC])


# -- the promises: menu, exit codes, sorting, history offline, flags, .env, trends, Load -------


async def test_no_menu_without_both_kinds_of_target(emu, home, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", FakeTTY("2\n"))  # a terminal that would answer "Local"
    assert await run([], environ(home, emu.url)) == 0  # no cloud key: local targets only
    captured = capsys.readouterr()
    assert "Record which models?" not in captured.err
    assert sorted(table_models(captured.out)) == sorted([LLAMA, LLAMA_1B, QWEN, NOMIC])
    assert sys.stdin.read() == "2\n"  # nothing was read from the terminal


async def test_exit_codes(emu, home, capsys) -> None:
    env = environ(home, emu.url)
    args = ["--tps", "--runs", "1", "--model", LLAMA, QWEN]
    assert await run(args, env) == 0  # every model measured
    assert "not measured" not in capsys.readouterr().err
    emu.add_fault(QWEN, Fault("status", status=500, message="model runner crashed", times=-1))
    assert await run(args, env) == 3  # one failed: the other is still shown
    captured = capsys.readouterr()
    assert table_models(captured.out) == [LLAMA, QWEN]
    assert "1 of 2 models not measured: qwen3:8b (local) (exit 3)" in captured.err
    assert "model runner crashed" in captured.out  # under the table
    assert await run(["--model", "mistral"], env) == 1  # nothing matched
    assert await run(["--ttft"], environ(home, "http://127.0.0.1:9")) == 1  # nothing reached
    assert await run(["--runs", "0"], env) == 2  # usage
    capsys.readouterr()


async def test_an_unreachable_target_beside_a_reachable_one_is_exit_3(emu, home, capsys) -> None:
    config = home / "ometer.yaml"
    config.write_text(f"targets:\n  - {{name: box1, url: '{emu.url}'}}\n"
                      "  - {name: box2, url: 'http://127.0.0.1:9'}\n")  # fmt: skip
    env = {"HOME": str(home), "OMETER_STORAGE_PATH": str(home / "data")}
    assert await run(["--config.file", str(config), "--model", LLAMA, "--tps", "--runs", "1"],
                     env) == 3  # fmt: skip
    captured = capsys.readouterr()
    assert table_models(captured.out) == [LLAMA]
    assert "cannot reach box2" in captured.err and "not reached: box2 (exit 3)" in captured.err


async def test_help_lists_the_exit_codes(capsys) -> None:
    assert await run(["--help"], {}) == 0
    out = capsys.readouterr().out
    codes = out[out.index("exit codes:") :].split("\n")[1:5]
    assert [line.split()[0] for line in codes] == ["0", "1", "2", "3"]
    assert "some models failed" in codes[3]


async def test_sort_tps_ranks_chat_models_and_embeddings_apart(emu, home, capsys) -> None:
    env = environ(home, emu.url)
    args = ["--ttft", "--tps", "--runs", "1", "--sort", "tps"]
    assert await run([*args, "--json"], env) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == [LLAMA_1B, LLAMA, QWEN, NOMIC]  # chat, then embedding
    by_model = {r["model"]: r for r in rows}
    # Input tokens/s of an embedding model beat every decode rate: mixed, it would rank first.
    assert by_model[NOMIC]["tps"] > by_model[LLAMA_1B]["tps"] > by_model[LLAMA]["tps"]
    assert await run(args, env) == 0
    out = capsys.readouterr().out
    assert table_models(out) == [LLAMA_1B, LLAMA, QWEN, NOMIC]
    lines = out.split("\n")
    heading = lines.index(table.EMBEDDING_HEADING + table.embedding_note(ttft=True, tps=True))
    assert lines[heading - 1] == "" and lines[heading + 1].startswith(NOMIC + " ")
    assert await run([*args, "--reverse"], env) == 0  # reversed within each group
    assert table_models(capsys.readouterr().out) == [QWEN, LLAMA, LLAMA_1B, NOMIC]


@pytest.fixture
def keyless_config(emu, cloud, home) -> Path:
    config = home / "ometer.yaml"
    config.write_text(f"targets:\n  - {{name: box, url: '{emu.url}'}}\n"
                      f"  - {{name: sky, url: '{cloud.url}', cloud: true,"
                      " api_key_env: SKY_KEY, select: all}\n")  # fmt: skip
    return config


async def test_history_sends_nothing_and_needs_no_key(emu, cloud, keyless_config, home,
                                                      capsys) -> None:  # fmt: skip
    env = {"HOME": str(home), "OMETER_STORAGE_PATH": str(home / "data")}
    config = ["--config.file", str(keyless_config)]
    assert await run([*config, "--tps", "--runs", "1", "--model", LLAMA, "gpt-oss:120b"],
                     {**env, "SKY_KEY": "sk-test"}) == 0  # fmt: skip
    assert await run([*config, "--ttft"], env) == 2  # measuring needs the key ...
    assert "'SKY_KEY' is not set" in capsys.readouterr().err
    emu.records.clear()
    cloud.records.clear()
    for kind, expected in (([], ["gpt-oss:120b", LLAMA]), (["--cloud"], ["gpt-oss:120b"]),
                           (["--local"], [LLAMA])):  # fmt: skip
        assert await run([*config, "--history", *kind], env) == 0  # ... history does not
        assert table_models(capsys.readouterr().out) == expected
    assert emu.records == [] and cloud.records == []  # not one request to either server
    # Without a config file, the environment's cloud target needs no key for history either.
    env_only = environ(home, emu.url)
    assert await run(["--history", "--cloud"], env_only) == 0  # no key, no "cloud" results
    assert "no stored results in" in capsys.readouterr().err
    assert emu.records == []


async def test_abbreviated_or_misplaced_flags_are_errors_with_a_hint(emu, home, capsys) -> None:
    env = environ(home, emu.url)
    assert await run(["--ttf"], env) == 2
    err = capsys.readouterr().err
    assert "unknown flag --ttf (flags are never abbreviated); did you mean --ttft?" in err
    assert "unrecognized arguments" not in err
    assert await run(["--hist"], env) == 2  # a unique prefix is no flag either
    assert "did you mean --history?" in capsys.readouterr().err
    assert await run(["--web.listen-address", ":9000", "--tps"], env) == 2
    err = capsys.readouterr().err
    assert (
        "--web.listen-address is a flag of `ometer-exporter`, not of `ometer-exporter "
        "bench`: give it there, e.g. ometer-exporter --web.listen-address …"
    ) in err
    assert await run(["--log.level=debug"], env) == 2
    assert "--log.level is a flag of `ometer-exporter`" in capsys.readouterr().err
    assert chats(emu) == [] and emu.records == []  # a usage error sends nothing
    for wrong in (["--ttft"], ["--storage.path", "x", "--model", LLAMA]):
        with pytest.raises(SystemExit) as info:
            main(wrong, env={"HOME": str(home)})
        assert info.value.code == 2
        err = capsys.readouterr().err
        flag = next(a for a in wrong if a not in ("--storage.path", "x"))
        assert (f"{flag} is a flag of `ometer-exporter bench`, not of `ometer-exporter`: "
                f"give it there, e.g. ometer-exporter bench {flag} …") in err  # fmt: skip
    with pytest.raises(SystemExit):
        main(["--web.listen", ":9000"], env={"HOME": str(home)})
    assert "did you mean --web.listen-address?" in capsys.readouterr().err


async def test_serve_and_bench_read_dotenv_the_same_way(emu, home, capsys) -> None:
    (home / ".env").write_text(f"OLLAMA_HOST={emu.url}\n")  # ./.env (cwd is home)
    env = {"HOME": str(home), "OMETER_STORAGE_PATH": str(home / "data")}
    assert main(["--config.check"], env=env) == 0  # serve's configuration
    assert f"local  {emu.url}" in capsys.readouterr().out
    assert await run(["--model", LLAMA], env) == 0  # bench lists the same server's models
    assert table_models(capsys.readouterr().out) == [LLAMA]
    env["OLLAMA_HOST"] = "http://gpu-box:11434"  # the real environment wins, for both
    assert main(["--config.check"], env=env) == 0
    out = capsys.readouterr().out
    assert "local  http://gpu-box:11434" in out and emu.url not in out
    calls = len(emu.records)
    assert await run(["--model", LLAMA], env) == 1  # gpu-box is not there: not the emulator
    assert "cannot reach local (http://gpu-box:11434)" in capsys.readouterr().err
    assert len(emu.records) == calls


def llama_line(out: str) -> str:
    return next(line for line in out.split("\n") if line.startswith(LLAMA + " "))


def has_arrow(line: str) -> bool:
    return any(arrow in line for arrow in "↑↓→")


async def test_arrows_compare_only_the_same_url_and_method(emu, emulator_factory, home,
                                                           capsys) -> None:  # fmt: skip
    env = environ(home, emu.url)
    args = ["--ttft", "--tps", "--runs", "1", "--model", LLAMA]
    assert await run(args, env) == 0
    assert not has_arrow(llama_line(capsys.readouterr().out))  # nothing stored before
    assert await run(args, env) == 0
    assert has_arrow(llama_line(capsys.readouterr().out))  # same server, same method
    assert await run([*args, "--num-predict", "16"], env) == 0  # another method
    assert not has_arrow(llama_line(capsys.readouterr().out))
    assert await run([*args, "--prompts", "Count to twenty."], env) == 0  # another prompt set
    assert not has_arrow(llama_line(capsys.readouterr().out))
    other = await emulator_factory(local_models(), time_scale=0.01)
    assert await run(args, environ(home, other.url)) == 0  # target "local", another server
    assert not has_arrow(llama_line(capsys.readouterr().out))
    assert await run(args, environ(home, other.url)) == 0
    assert has_arrow(llama_line(capsys.readouterr().out))
    with sqlite3.connect(home / "data" / "ometer.sqlite3") as db:
        urls = [
            json.loads(b)["url"]
            for (b,) in db.execute(
                "SELECT benchmark FROM results WHERE model = ? ORDER BY finished_at", (LLAMA,)
            )
        ]
    assert urls == [emu.url] * 4 + [other.url] * 2  # fmt: skip
    # --history: the latest against the one before it, by the same rule.
    assert await run(["--history", "--model", LLAMA], env) == 0
    assert has_arrow(llama_line(capsys.readouterr().out))  # other.url twice


async def test_results_stored_without_a_url(emu, home, capsys) -> None:
    """Rows from before the URL was kept (url ""): unknown, so never compared with a known URL;
    two of them compare (same target name, same method)."""
    env = environ(home, emu.url)
    args = ["--ttft", "--tps", "--runs", "1", "--model", LLAMA]
    for _ in range(2):
        assert await run(args, env) == 0
    capsys.readouterr()
    path = home / "data" / "ometer.sqlite3"
    with sqlite3.connect(path) as db:
        for rowid, text in db.execute("SELECT rowid, benchmark FROM results").fetchall():
            old = {k: v for k, v in json.loads(text).items() if k != "url"}
            db.execute("UPDATE results SET benchmark = ? WHERE rowid = ?", (json.dumps(old), rowid))
    assert await run(["--history", "--model", LLAMA], env) == 0
    assert has_arrow(llama_line(capsys.readouterr().out))  # "" and "", target local: compared
    assert await run(args, env) == 0
    assert not has_arrow(llama_line(capsys.readouterr().out))  # a URL against "": no arrow
    assert await run(["--history", "--model", LLAMA], env) == 0
    assert not has_arrow(llama_line(capsys.readouterr().out))


async def test_the_table_shows_the_cold_load_time_as_the_export(emu, home, capsys) -> None:
    env = environ(home, emu.url)
    assert await run(["--tps", "--runs", "1", "--model", LLAMA, "--csv", "out.csv"], env) == 0
    out = capsys.readouterr().out
    with (home / "out.csv").open(newline="") as handle:
        [row] = list(csv.DictReader(handle))
    load = float(row["load_duration_seconds"])
    assert load > 0  # not loaded before: a cold load, measured by the warmup
    header = out.split("\n")[0].split()
    assert header[-1] == "Load"
    assert llama_line(out).split()[-2:] == grades.format_seconds(load).split()
    assert await run(["--history", "--json"], env) == 0  # stored with the result
    assert json.loads(capsys.readouterr().out)[0]["load_duration_seconds"] == load
    assert await run(["--history"], env) == 0
    assert grades.format_seconds(load) in llama_line(capsys.readouterr().out)


async def test_prompt_tokens_measures_the_prompt_length_axis(emulator_factory, home,
                                                             capsys) -> None:  # fmt: skip
    emu = await emulator_factory([chat_model("llama3.2:latest", prefill_tokens_per_second=20000.0)],
                                 default_num_ctx=4096)  # fmt: skip
    code = await run(["--ttft", "--prompt-tokens", "512,2048,8192"], environ(home, emu.url))
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("Prompt length"))
    assert "512" in lines[head + 1] and "2048" in lines[head + 2]
    assert "skipped" in lines[head + 3] and "4096-token context" in lines[head + 3]
    assert "TTFT per 1k prompt tokens" in lines[head + 4]
    sent = [r for r in emu.records_for("/api/chat") if r.body.get("messages")]
    assert not [r for r in sent if "num_ctx" in r.body.get("options", {})]


async def test_prompt_tokens_is_checked(home, capsys) -> None:
    code = await run(["--ttft", "--prompt-tokens", "512,lots,2"], environ(home, "http://x:1"))
    err = capsys.readouterr().err
    assert code == 2
    assert "flag --prompt-tokens[1]" in err and "flag --prompt-tokens[2]" in err
