"""The running exporter against the emulator: metric contract, lifecycle, reload, export."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import statistics

import httpx
import pytest
from ollama_emulator import chat_model, cloud_stub_model, embedding_model, thinking_model
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families
from service import sample, until

LLAMA = "llama3.2:latest"
QWEN = "qwen3:8b"
NOMIC = "nomic-embed-text:latest"


def config(url: str, *, interval: str = "1h", select: str = "all", extra: str = "",
           idle_before: str = "0s") -> str:  # fmt: skip
    """A loaded model is measured at once unless ``idle_before`` says otherwise."""
    return f"""
benchmark:
  interval: {interval}
  jitter: 0%
  idle_before: {idle_before}
  runs: 3
  num_predict: 32
targets:
  - name: local
    url: {url}
    select: {select}
{extra}"""


def models():
    return [
        chat_model(LLAMA, parameter_count=3_212_749_888, context_length=131072,
                   decode_tokens_per_second=200.0, output_tokens=40),
        thinking_model(QWEN, load_seconds=30.0, parameter_count=8_190_735_360,
                       context_length=40960),
        embedding_model(NOMIC),
        cloud_stub_model("gpt-oss:120b-cloud"),
    ]  # fmt: skip


async def test_metric_contract(emulator_factory, start_exporter) -> None:
    emu = await emulator_factory(models(), time_scale=0.01, version="0.33.0")
    emu.preload(LLAMA)
    emu.preload(NOMIC)
    running = await start_exporter(config(emu.url))
    await running.cycles("local", 1)
    m = await running.metrics()

    def get(name: str, model: str | None = None, **labels: str) -> float | None:
        if model is not None:
            labels = {"target": "local", "model": model, **labels}
        return sample(m, name, **labels)

    # Inventory: every listed model, cloud pass-through stub skipped.
    assert get("ometer_model_parameters", LLAMA) == 3_212_749_888
    assert get("ometer_model_parameters", QWEN) == 8_190_735_360
    assert get("ometer_model_context_length_tokens", QWEN) == 40960
    assert get("ometer_model_info", LLAMA, family="llama", parameter_size="3.2B",
               quantization_level="Q4_K_M", format="gguf") == 1  # fmt: skip
    assert get("ometer_model_capability", QWEN, capability="thinking") == 1
    assert get("ometer_model_loaded", LLAMA) == 1
    assert get("ometer_model_loaded", QWEN) == 0  # we loaded it, then unloaded it
    assert not any(dict(labels).get("model") == "gpt-oss:120b-cloud" for _, labels in m)

    # TTFT against the emulator's ground truth (median of the measured runs).
    runs = [r for r in emu.records_for("/api/chat", LLAMA) if r.body.get("messages")]
    truth = statistics.median(r.first_chunk - r.arrived for r in runs)
    assert get("ometer_time_to_first_token_seconds", LLAMA) == pytest.approx(truth, abs=0.005)
    # Σ eval_count / Σ eval_duration of exactly what the server sent.
    wire = sum(r.metrics["eval_count"] for r in runs) / sum(r.metrics["eval_duration"]
                                                            for r in runs) * 1e9  # fmt: skip
    assert get("ometer_output_tokens_per_second", LLAMA) == pytest.approx(wire, rel=1e-9)
    assert get("ometer_benchmark_success", LLAMA) == 1
    assert get("ometer_benchmark_runs_total", LLAMA) == 3
    assert get("ometer_benchmark_output_tokens_total", LLAMA) == 96
    assert get("ometer_benchmark_time_to_first_token_seconds_count", LLAMA) == 3
    assert get("ometer_model_load_duration_seconds", LLAMA) is None  # it was loaded already

    # A cold model: load reported (emulated 30 s), not in TTFT; 1 warmup + 3 runs.
    assert get("ometer_model_load_duration_seconds", QWEN) == pytest.approx(30.0, rel=0.05)
    qwen_ttft = get("ometer_time_to_first_token_seconds", QWEN)
    assert qwen_ttft is not None and qwen_ttft < 0.2
    assert get("ometer_benchmark_runs_total", QWEN) == 4

    # Embeddings: request time and input rate, never a TTFT.
    assert get("ometer_time_to_first_token_seconds", NOMIC) is None
    assert get("ometer_request_duration_seconds", NOMIC) is not None
    assert get("ometer_prompt_tokens_per_second", NOMIC) is not None
    assert get("ometer_benchmark_success", NOMIC) == 1

    # Targets and the exporter itself.
    assert get("ometer_target_up", target="local") == 1
    assert get("ometer_target_info", target="local", api="ollama", engine="ollama",
               version="0.33.0") == 1  # fmt: skip
    assert get("ometer_benchmark_interval_seconds", target="local") == 3600
    assert get("ometer_benchmark_config_info", target="local", prompt_set="default",
               num_predict="32", think="auto") == 1  # fmt: skip
    assert get("ometer_config_last_reload_successful") == 1
    assert get("ometer_event_loop_lag_seconds") is not None
    assert (get("ometer_cycle_duration_seconds", target="local") or 0) > 0


async def test_metric_types(emulator_factory, start_exporter) -> None:
    emu = await emulator_factory(models(), time_scale=0.01)
    emu.preload(LLAMA)
    running = await start_exporter(config(emu.url))
    await running.cycles("local", 1)
    text = (await running.http.get("/metrics")).text
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["ometer_time_to_first_token_seconds"] == "gauge"
    assert types["ometer_benchmark_time_to_first_token_seconds"] == "histogram"
    assert types["ometer_benchmark_runs"] == "counter"
    for line in text.splitlines():
        if line.startswith("ometer_") and "{" in line:
            assert "http://" not in line  # no URLs (or prompts) as label values


async def test_select_loaded_never_loads(emulator_factory, start_exporter) -> None:
    emu = await emulator_factory(models(), time_scale=0.01)
    running = await start_exporter(config(emu.url, select="loaded"))
    await running.cycles("local", 1)
    assert emu.records_for("/api/chat") == []
    assert emu.records_for("/api/embed") == []
    assert emu.loaded() == {}
    m = await running.metrics()
    assert sample(m, "ometer_model_loaded", target="local", model=LLAMA) == 0
    assert sample(m, "ometer_benchmark_success", target="local", model=LLAMA) is None


async def test_removed_model_disappears(emulator_factory, start_exporter) -> None:
    emu = await emulator_factory(models(), time_scale=0.01)
    emu.preload(LLAMA)
    running = await start_exporter(config(emu.url, interval="100ms", select="loaded"))
    await running.cycles("local", 1)
    assert sample(await running.metrics(), "ometer_benchmark_success", target="local",
                  model=LLAMA) == 1  # fmt: skip
    emu.remove_model(LLAMA)
    done = running.exporter.scheduler.workers["local"].cycles
    await running.cycles("local", done + 1)
    m = await running.metrics()
    assert not any(dict(labels).get("model") == LLAMA for _, labels in m)
    rows = (await running.http.get("/export")).json()
    assert LLAMA not in [r["model"] for r in rows]


async def test_target_down_and_back(emulator_factory, start_exporter) -> None:
    emu = await emulator_factory(models(), time_scale=0.01)
    emu.preload(LLAMA)
    port = int(emu.url.rsplit(":", 1)[1])
    running = await start_exporter(config(emu.url, interval="100ms", select="loaded"))
    await running.cycles("local", 1)
    before = await running.metrics()
    ttft = sample(before, "ometer_time_to_first_token_seconds", target="local", model=LLAMA)
    await emu.close()

    await until(lambda: running.exporter.store.snapshot.targets["local"].up is False,
                what="the target marked down")  # fmt: skip
    m = await running.metrics()
    assert sample(m, "ometer_target_up", target="local") == 0
    # Last values kept, success 0, the reason in /export.
    assert sample(m, "ometer_time_to_first_token_seconds", target="local", model=LLAMA) == ttft
    assert sample(m, "ometer_benchmark_success", target="local", model=LLAMA) == 0
    row = next(r for r in (await running.http.get("/export")).json() if r["model"] == LLAMA)
    assert row["error_type"] == "connect" and "cannot connect" in row["error"]

    back = await emulator_factory(models(), time_scale=0.01, port=port)
    back.preload(LLAMA)
    deadline_cycles = running.exporter.scheduler.workers["local"].cycles + 1
    await running.cycles("local", deadline_cycles)
    m = await running.metrics()
    assert sample(m, "ometer_target_up", target="local") == 1
    assert sample(m, "ometer_benchmark_success", target="local", model=LLAMA) == 1


async def test_restart_restores_and_skips_the_immediate_cycle(
    emulator_factory, start_exporter, tmp_path
) -> None:
    emu = await emulator_factory(models(), time_scale=0.01)
    emu.preload(LLAMA)
    storage = tmp_path / "kept"
    first = await start_exporter(config(emu.url, select="loaded"), storage=storage)
    await first.cycles("local", 1)
    before = (await first.http.get("/export?model=llama3.2")).json()[0]
    await first.stop()
    chats = len(emu.records_for("/api/chat"))

    second = await start_exporter(config(emu.url, select="loaded"), storage=storage)
    assert (await second.http.get("/-/ready")).status_code == 200
    after = (await second.http.get("/export?model=llama3.2")).json()[0]
    assert after["ttft"] == before["ttft"] and after["benchmarked_at"] == before["benchmarked_at"]
    # Discovery runs (inventory refreshed), the benchmark waits for the interval.
    await until(lambda: second.exporter.store.snapshot.targets["local"].up is True,
                what="discovery")  # fmt: skip
    assert len(emu.records_for("/api/chat")) == chats
    assert second.exporter.scheduler.workers["local"].cycles == 0


async def test_reload_good_and_bad(emulator_factory, start_exporter, caplog) -> None:
    caplog.set_level("INFO", logger="ometer_exporter")
    emu = await emulator_factory(models(), time_scale=0.01)
    running = await start_exporter(config(emu.url, select="loaded"), enable_lifecycle=True)
    text = config(emu.url, select="loaded").replace("num_predict: 32", "num_predict: 64")
    running.config.write_text(text + "  - name: other\n    url: http://127.0.0.1:9\n")
    response = await running.http.post("/-/reload")
    assert response.status_code == 200
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reload: ")]
    assert "reload: target local changed: num_predict 32 → 64" in said
    assert any(line.startswith("reload: target added: other: http://127.0.0.1:9") for line in said)
    m = await running.metrics()
    assert sample(m, "ometer_benchmark_config_info", target="local", prompt_set="default",
                  num_predict="64", think="auto") == 1  # fmt: skip
    assert sample(m, "ometer_config_last_reload_successful") == 1

    running.config.write_text("targets:\n  - name: local\n    url: ftp://nowhere\n    colour: 1\n")
    response = await running.http.post("/-/reload")
    assert response.status_code == 500
    assert "targets[0].url" in response.text and "targets[0].colour" in response.text
    m = await running.metrics()
    assert sample(m, "ometer_config_last_reload_successful") == 0
    assert sample(m, "ometer_benchmark_config_info", target="local", prompt_set="default",
                  num_predict="64", think="auto") == 1  # fmt: skip
    assert (await running.http.get("/-/reload")).status_code == 405


async def test_export_over_http(emulator_factory, start_exporter) -> None:
    emu = await emulator_factory(models(), time_scale=0.01)
    emu.preload(LLAMA)
    running = await start_exporter(config(emu.url))
    await running.cycles("local", 1)
    rows = (await running.http.get("/export?sort=ttft")).json()
    assert [r["model"] for r in rows if r["ttft"] is not None][:1] in ([LLAMA], [QWEN], [NOMIC])
    ttfts = [r["ttft"] for r in rows if r["ttft"] is not None]
    assert ttfts == sorted(ttfts)
    assert {r["model"] for r in rows} == {LLAMA, QWEN, NOMIC}
    nomic = next(r for r in rows if r["model"] == NOMIC)
    assert nomic["kind"] == "embedding" and nomic["time_to_first_token_seconds"] is None
    response = await running.http.get("/export?format=csv&model=qwen3&verbose=1")
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment; filename=" in response.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["model"] for r in table] == [QWEN]
    assert float(table[0]["ttft_run_3"]) > 0
    bad = await running.http.get("/export?reverse=1")
    assert bad.status_code == 400 and "reverse=1 needs sort=" in bad.text


async def test_gzip_and_openmetrics(emulator_factory, start_exporter) -> None:
    emu = await emulator_factory(models(), time_scale=0.01)
    emu.preload(LLAMA)
    running = await start_exporter(config(emu.url, select="loaded"))
    await running.cycles("local", 1)
    raw = await running.http.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert b"ometer_time_to_first_token_seconds" in raw.content  # httpx decoded it
    om = await running.http.get(
        "/metrics",
        headers={"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
                 "Accept-Encoding": "identity"},
    )  # fmt: skip
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in parse_openmetrics(om.text)}
    assert families["ometer_benchmark_runs"].type == "counter"
    assert families["ometer_model"].type == "info"
    plain = await running.http.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    async with (
        httpx.AsyncClient() as raw_client,
        raw_client.stream("GET", running.url + "/metrics",
                          headers={"Accept-Encoding": "gzip"}) as response,
    ):  # fmt: skip
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    assert gzip.decompress(body).startswith(b"# HELP")


async def test_not_ready_before_start(emulator_factory, tmp_path, monkeypatch) -> None:
    from aiohttp import web

    from ometer_exporter.config.load import load_settings
    from ometer_exporter.config.settings import Overrides
    from ometer_exporter.store.store import Store
    from ometer_exporter.web.app import EXPORTER, create_app

    emu = await emulator_factory(models())
    path = tmp_path / "c.yaml"
    path.write_text(config(emu.url))
    overrides = Overrides(config_file=str(path), storage_path=str(tmp_path / "d"))
    restored = asyncio.Event()  # start-up (the restore) is held until the test lets it go
    restore = Store.restore

    async def held_restore(store: Store) -> None:
        await restored.wait()
        await restore(store)

    monkeypatch.setattr(Store, "restore", held_restore)
    app = create_app(load_settings(overrides, {}), overrides=overrides, env={})
    exporter = app[EXPORTER]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/-/ready")).status_code == 503
            assert (await http.get("/-/healthy")).status_code == 200
            assert (await http.get("/metrics")).status_code == 200  # serves before results
            restored.set()
            await exporter.wait_ready()
            assert (await http.get("/-/ready")).status_code == 200
    finally:
        restored.set()
        await runner.cleanup()


async def test_the_poll_keeps_loaded_current_and_measures_new_loads(
    emulator_factory, start_exporter, monkeypatch
) -> None:
    import ometer_exporter.loop.worker as scheduler

    monkeypatch.setattr(scheduler, "PS_POLL_INTERVAL", 0.05)
    emu = await emulator_factory(models(), time_scale=0.01)
    emu.preload(LLAMA)
    running = await start_exporter(config(emu.url, interval="1h", select="loaded"))
    await running.cycles("local", 1)
    key = ("local", LLAMA)

    def loaded() -> bool | None:
        inventory = running.exporter.store.snapshot.models[key].inventory
        return inventory.loaded if inventory else None

    assert loaded() is True
    emu.unload(LLAMA)
    await until(lambda: loaded() is False, what="the ps poll to see the unload")
    emu.preload(QWEN)
    await until(
        lambda: (
            (e := running.exporter.store.snapshot.models[("local", QWEN)]).inventory
            and e.inventory.loaded
            and e.inventory.vram_bytes
        ),
        what="the ps poll to see a new load",
    )
    # A model loaded between cycles is due: the poll measures it now, not an hour later, and
    # sends it no keep_alive (it was not ours to keep).
    await until(
        lambda: len(emu.records_for("/api/chat", QWEN)) == 3, what="the poll to measure QWEN"
    )
    assert all("keep_alive" not in r.body for r in emu.records_for("/api/chat", QWEN))
    assert len(emu.records_for("/api/chat", LLAMA)) == 3  # measured once: not due again


async def test_the_loop_survives_a_bug(emulator_factory, start_exporter, monkeypatch) -> None:
    from ometer_exporter.measure.model import measure_model as real

    calls = {"n": 0}

    async def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in the measurement")
        return await real(*args, **kwargs)

    monkeypatch.setattr("ometer_exporter.loop.worker.measure_model", flaky)
    emu = await emulator_factory(models(), time_scale=0.01)
    emu.preload(LLAMA)
    running = await start_exporter(config(emu.url, interval="100ms", select="loaded"))
    await running.cycles("local", 1)
    m = await running.metrics()
    assert sample(m, "ometer_benchmark_loop_errors_total", target="local") == 1
    assert sample(m, "ometer_benchmark_success", target="local", model=LLAMA) == 1


async def test_usage_limit_waits_for_the_window(emulator_factory, start_exporter) -> None:
    from ollama_emulator import Fault

    emu = await emulator_factory(
        [chat_model("gpt-oss:120b"), chat_model("gemma4:31b")], cloud=True, api_key="sk-test"
    )
    emu.add_fault("gpt-oss:120b", Fault(kind="status", status=429, times=-1))
    emu.add_fault("gemma4:31b", Fault(kind="status", status=429, times=-1))
    yaml_text = f"""
benchmark: {{interval: 100ms, jitter: 0%, runs: 2}}
targets:
  - name: cloud
    url: {emu.url}
    cloud: true
    api_key_env: KEY
    select: all
"""
    running = await start_exporter(yaml_text, env={"KEY": "sk-test"})
    await running.cycles("cloud", 1)
    state = running.exporter.store.snapshot.targets["cloud"]
    started = state.last_cycle_started
    assert started is not None and state.next_cycle_at is not None
    assert state.next_cycle_at >= started + 3600  # the window, not the 100 ms interval
    assert len(emu.records_for("/api/chat")) == 1  # the cycle stopped at the first 429
    held = running.exporter.store.snapshot.models[("cloud", "gemma4:31b")]
    assert held.status == "held" and held.due_at == state.next_cycle_at
    rows = (await running.http.get("/export")).json()
    limited = [r for r in rows if r["error_type"] == "rate_limited"]
    assert len(limited) == 1 and "usage limit" in limited[0]["error"]


async def test_a_failed_cycle_keeps_the_last_good_values(emulator_factory,
                                                         start_exporter) -> None:  # fmt: skip
    from ollama_emulator import Fault

    emu = await emulator_factory(models(), time_scale=0.01)
    emu.preload(LLAMA)
    running = await start_exporter(config(emu.url, interval="100ms", select="loaded"))
    await running.cycles("local", 1)
    good = sample(await running.metrics(), "ometer_time_to_first_token_seconds",
                  target="local", model=LLAMA)  # fmt: skip
    assert good is not None
    emu.add_fault(LLAMA, Fault(kind="status", status=500, message="runner died", times=-1))
    await until(
        lambda: (
            (e := running.exporter.store.snapshot.models[("local", LLAMA)]).benchmark is not None
            and not e.benchmark.success
        ),
        what="a failed cycle",
    )
    m = await running.metrics()
    assert sample(m, "ometer_benchmark_success", target="local", model=LLAMA) == 0
    assert sample(m, "ometer_time_to_first_token_seconds", target="local", model=LLAMA) == good
    row = next(r for r in (await running.http.get("/export")).json() if r["model"] == LLAMA)
    assert row["ttft"] == good and row["error_type"] == "http_5xx"
    assert "runner died" in row["error"]


async def test_selected_says_which_models_are_due(emulator_factory, start_exporter,
                                                  tmp_path) -> None:  # fmt: skip
    emu = await emulator_factory(models(), time_scale=0.01)
    emu.preload(LLAMA)
    loaded_only = await start_exporter(
        config(emu.url, select="loaded", extra="    exclude: [nomic-embed-text]\n")
    )
    await loaded_only.cycles("local", 1)
    m = await loaded_only.metrics()

    def selected(model: str) -> float | None:
        return sample(m, "ometer_model_selected", target="local", model=model)

    assert selected(LLAMA) == 1  # loaded
    assert selected(QWEN) == 0  # not loaded on a select: loaded target
    assert selected(NOMIC) == 0  # excluded
    await loaded_only.stop()
    every = await start_exporter(config(emu.url, select="all"), storage=tmp_path / "other")
    await every.cycles("local", 1)
    m = await every.metrics()
    assert sample(m, "ometer_model_selected", target="local", model=QWEN) == 1
    assert sample(m, "ometer_model_loaded", target="local", model=QWEN) == 0  # unloaded again
