"""A recognisable API key never appears in any output: logs, endpoints, exports, files."""

from __future__ import annotations

import logging

import pytest
from ollama_emulator import Fault, chat_model

from ometer_exporter.cli.main import main

SECRET = "sk-ometer-canary-5b2f9e1d"


@pytest.mark.parametrize("source", ["env", "file"])
async def test_the_key_never_leaks(emulator_factory, start_exporter, tmp_path, caplog, capsys,
                                   source) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    emu = await emulator_factory(
        [chat_model("gpt-oss:120b"), chat_model("echo:latest")], cloud=True, api_key=SECRET
    )
    # A server that echoes what it received, in an error and in a mid-stream error line.
    emu.add_fault("echo:latest", Fault(kind="status", status=500, times=2,
                                       message=f"upstream rejected key {SECRET}"))  # fmt: skip
    emu.add_fault("echo:latest", Fault(kind="error_line", after_chunks=2,
                                       message=f"bad auth Bearer {SECRET}"))  # fmt: skip
    key_file = tmp_path / "key"
    key_file.write_text(SECRET + "\n")
    key_line = "api_key_env: KEY" if source == "env" else f"api_key_file: {key_file}"
    yaml_text = f"""
benchmark: {{interval: 1h, idle_before: 0s, runs: 3, num_predict: 16}}
targets:
  - name: cloud
    url: {emu.url}
    cloud: true
    select: all
    {key_line}
"""
    env = {"KEY": SECRET}
    running = await start_exporter(yaml_text, env=env, storage=tmp_path / "store")
    await running.cycles("cloud", 1)
    http = running.http
    outputs = {
        "/metrics": (await http.get("/metrics")).text,
        "/metrics openmetrics": (await http.get(
            "/metrics", headers={"Accept": "application/openmetrics-text"})).text,
        "/export json": (await http.get("/export?verbose=1")).text,
        "/export csv": (await http.get("/export?format=csv&verbose=1")).text,
        "/": (await http.get("/")).text,
        "/-/ready": (await http.get("/-/ready")).text,
        "repr(settings)": repr(running.exporter.settings) + str(running.exporter.settings),
    }  # fmt: skip
    assert main(["--config.check", "--config.file", str(running.config)], env=env) == 0
    printed = capsys.readouterr()
    outputs["--config.check"] = printed.out + printed.err
    await running.stop()
    outputs["logs"] = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    outputs["sqlite"] = (tmp_path / "store" / "ometer.sqlite3").read_bytes().decode("latin-1")

    # The cycle really exercised the echoing server, and the key really went out as Bearer.
    assert "upstream rejected key <redacted>" in outputs["/export json"] or \
        "bad auth Bearer <redacted>" in outputs["/export json"]  # fmt: skip
    assert emu.records_for("/api/chat")[0].headers["authorization"] == f"Bearer {SECRET}"
    leaks = [name for name, text in outputs.items() if SECRET in text]
    assert leaks == []
