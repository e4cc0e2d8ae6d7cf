"""Measurement against the emulator's ground truth (the rules in ``measure.model``)."""

from __future__ import annotations

import itertools
import json

import pytest
from ollama_emulator import Fault, RequestRecord, chat_model, embedding_model, thinking_model
from service import until

from ometer_exporter.client.errors import ErrorType
from ometer_exporter.client.ollama import OllamaClient
from ometer_exporter.config.settings import BenchmarkSettings
from ometer_exporter.measure.model import measure_model

# Timing bounds: the emulator shares the test's event loop, so client and ground truth read the
# same perf_counter; 5 ms is generous for loopback on an idle machine.
TTFT_TOLERANCE = 0.005

SETTINGS = BenchmarkSettings(runs=3, num_predict=64)


def chat_records(emu, model: str):
    return [r for r in emu.records_for("/api/chat", model) if r.body and r.body.get("messages")]


async def test_ttft_matches_ground_truth_per_run(emulator_factory) -> None:
    model = chat_model("llama3.2:latest", decode_tokens_per_second=200.0, output_tokens=40)
    emu = await emulator_factory([model])
    emu.preload("llama3.2:latest")
    async with OllamaClient(emu.url) as client:
        result = await measure_model(client, "llama3.2:latest", model.capabilities, SETTINGS)
    assert result is not None and result.success and result.warmup is None
    records = chat_records(emu, "llama3.2:latest")
    assert len(records) == len(result.runs) == 3
    for run, rec in zip(result.runs, records, strict=True):
        assert rec.first_chunk is not None and run.first_token_at is not None
        assert run.sent_at is not None and run.sent_at <= rec.arrived
        assert abs(run.first_token_at - rec.first_chunk) <= TTFT_TOLERANCE
        true_ttft = rec.first_chunk - rec.arrived
        assert run.ttft == pytest.approx(true_ttft, abs=TTFT_TOLERANCE)
    assert result.ttft == pytest.approx(
        sorted(r.first_chunk - r.arrived for r in records)[1], abs=TTFT_TOLERANCE
    )


async def test_client_decode_rate_matches_wire_rate(emulator_factory) -> None:
    # 120 tokens over ~1.2 s: a few ms of scheduling noise stays well inside 2 %.
    model = chat_model("llama3.2:latest", decode_tokens_per_second=100.0, output_tokens=120)
    emu = await emulator_factory([model])
    emu.preload("llama3.2:latest")
    settings = BenchmarkSettings(runs=2, num_predict=120)
    async with OllamaClient(emu.url) as client:
        result = await measure_model(client, "llama3.2:latest", model.capabilities, settings)
    assert result is not None
    for run, rec in zip(result.runs, chat_records(emu, "llama3.2:latest"), strict=True):
        assert rec.last_token_chunk is not None and rec.first_chunk is not None
        wire = (rec.eval_count - 1) / (rec.last_token_chunk - rec.first_chunk)
        assert run.client_tokens_per_second == pytest.approx(wire, rel=0.02)
        assert run.client_tokens_per_second == pytest.approx(100.0, rel=0.03)
    # The server's own figure: eval_count / eval_duration, as Ollama computes it.
    assert result.tokens_per_second == pytest.approx(100.0 * 120 / 119, rel=0.03)
    assert result.client_tokens_per_second == pytest.approx(100.0, rel=0.03)


async def test_cold_load_is_load_not_ttft(emulator_factory) -> None:
    model = chat_model("llama3.2:latest", load_seconds=40.0)
    emu = await emulator_factory([model], time_scale=0.01)  # 40 s load in 0.4 s
    async with OllamaClient(emu.url) as client:
        result = await measure_model(client, "llama3.2:latest", model.capabilities, SETTINGS)
    assert result is not None and result.success
    assert result.warmup is not None and result.loaded_by_us
    warmup_rec = emu.records_for("/api/chat", "llama3.2:latest")[0]
    assert warmup_rec.cold_load and warmup_rec.body["options"]["num_predict"] == 1
    assert result.load_duration == pytest.approx(40.0, rel=0.05)  # emulated seconds
    assert result.ttft is not None and result.ttft < 0.2  # warm runs paid no load
    assert all(not r.discarded for r in result.runs)


async def test_reload_mid_cycle_is_detected_and_excluded(emulator_factory) -> None:
    model = chat_model("llama3.2:latest", load_seconds=0.5)
    emu = await emulator_factory([model])
    emu.preload("llama3.2:latest")
    emu.add_fault("llama3.2:latest", Fault(kind="stall", seconds=0.0))  # run 1: untouched
    emu.add_fault("llama3.2:latest", Fault(kind="force_reload"))  # run 2 pays a load
    async with OllamaClient(emu.url) as client:
        result = await measure_model(client, "llama3.2:latest", model.capabilities, SETTINGS)
    assert result is not None
    assert [r.discarded for r in result.runs] == [(), ("reloaded",), ()]
    assert result.discarded == {"reloaded": 1}
    assert len(result.good_runs) == 2
    assert result.ttft is not None and result.ttft < 0.3  # the reloaded run is not in it
    assert result.load_duration is None  # no warmup: the model was loaded


async def test_thinking_model_ttft_before_first_content(emulator_factory) -> None:
    model = thinking_model("qwen3:8b", thinking_tokens=30, decode_tokens_per_second=200.0)
    emu = await emulator_factory([model])
    emu.preload("qwen3:8b")
    async with OllamaClient(emu.url) as client:
        result = await measure_model(client, "qwen3:8b", model.capabilities, SETTINGS)
    assert result is not None and result.success
    assert result.ttft is not None and result.time_to_first_content is not None
    # 30 thinking tokens at 200 tok/s come between the first chunk and the first content.
    assert result.time_to_first_content - result.ttft == pytest.approx(30 / 200, abs=0.01)
    for rec in chat_records(emu, "qwen3:8b"):
        assert "think" not in rec.body  # think: auto leaves the server default alone


async def test_think_setting_only_sent_to_thinking_models(emulator_factory) -> None:
    chat, thinker = chat_model("llama3.2:latest"), thinking_model("qwen3:8b")
    emu = await emulator_factory([chat, thinker])
    emu.preload("llama3.2:latest")
    emu.preload("qwen3:8b")
    settings = BenchmarkSettings(runs=1, think="false")
    async with OllamaClient(emu.url) as client:
        a = await measure_model(client, "llama3.2:latest", chat.capabilities, settings)
        b = await measure_model(client, "qwen3:8b", thinker.capabilities, settings)
    assert a is not None and a.success and b is not None and b.success
    assert "think" not in chat_records(emu, "llama3.2:latest")[0].body
    assert chat_records(emu, "qwen3:8b")[0].body["think"] is False
    assert b.ttft == pytest.approx(b.time_to_first_content)


async def test_request_shape_options_and_nonce(emulator_factory) -> None:
    model = chat_model("llama3.2:latest")
    emu = await emulator_factory([model])
    emu.preload("llama3.2:latest")
    async with OllamaClient(emu.url) as client:
        await measure_model(client, "llama3.2:latest", model.capabilities, SETTINGS)
    bodies = [r.body for r in chat_records(emu, "llama3.2:latest")]
    prompts = [b["messages"][0]["content"] for b in bodies]
    for body in bodies:
        assert body["options"] == {"temperature": 0.0, "seed": 42, "num_predict": 64}
        assert "keep_alive" not in body
    assert len({p.split(" ", 1)[0] for p in prompts}) == 3  # a fresh nonce leads each prompt
    assert all(p.startswith("[") for p in prompts)
    # The nonce defeats the prefix cache: at most the template's role header is reused.
    assert all(r.prompt_cached_tokens <= 1 for r in chat_records(emu, "llama3.2:latest"))


async def test_pinned_model_keeps_its_expiry(emulator_factory) -> None:
    model = chat_model("llama3.2:latest")
    emu = await emulator_factory([model])
    emu.preload("llama3.2:latest", keep_alive=-1)
    async with OllamaClient(emu.url) as client:
        result = await measure_model(client, "llama3.2:latest", model.capabilities, SETTINGS)
    assert result is not None and result.success
    state = emu.loaded()["llama3.2:latest"]
    assert state.keep_alive < 0 and state.expires_at is None
    assert all("keep_alive" not in r.body for r in emu.records_for("/api/chat"))


async def test_model_we_loaded_is_unloaded(emulator_factory) -> None:
    model = chat_model("llama3.2:latest", load_seconds=0.05)
    emu = await emulator_factory([model])
    async with OllamaClient(emu.url) as client:
        result = await measure_model(client, "llama3.2:latest", model.capabilities, SETTINGS)
        assert result is not None and result.success
        assert "llama3.2:latest" not in emu.loaded()
        last = chat_records(emu, "llama3.2:latest")[-1]
        assert last.body["keep_alive"] == 0
        # unload_after: false leaves it loaded, and never sends keep_alive.
        keep = BenchmarkSettings(runs=2, unload_after=False)
        await measure_model(client, "llama3.2:latest", model.capabilities, keep)
    assert "llama3.2:latest" in emu.loaded()
    assert all("keep_alive" not in r.body for r in chat_records(emu, "llama3.2:latest")[-2:])


async def test_select_loaded_never_loads(emulator_factory) -> None:
    model = chat_model("llama3.2:latest")
    emu = await emulator_factory([model])
    async with OllamaClient(emu.url) as client:
        result = await measure_model(
            client, "llama3.2:latest", model.capabilities, SETTINGS, allow_load=False
        )
    assert result is None
    assert emu.records_for("/api/chat") == []
    assert emu.loaded() == {}


async def test_embedding_model_through_embed(emulator_factory) -> None:
    model = embedding_model("nomic-embed-text:latest", prefill_tokens_per_second=1000.0)
    emu = await emulator_factory([model])
    emu.preload("nomic-embed-text:latest")
    async with OllamaClient(emu.url) as client:
        result = await measure_model(
            client, "nomic-embed-text:latest", model.capabilities, SETTINGS
        )
    assert result is not None and result.success and result.kind == "embedding"
    assert emu.records_for("/api/chat") == []
    assert len(emu.records_for("/api/embed")) == 3
    assert result.ttft is None
    assert result.request_duration is not None and result.request_duration > 0
    sent = [r.metrics for r in emu.records_for("/api/embed")]
    wire = sum(m["prompt_eval_count"] for m in sent) / sum(
        m["total_duration"] - m.get("load_duration", 0) for m in sent
    )
    assert result.prompt_tokens_per_second == pytest.approx(wire * 1e9, rel=1e-9)
    assert (result.prompt_tokens_per_second or 0) < 1000.0 * 1.05  # never beats the model
    assert result.tokens_per_second is None


async def test_short_runs_count_for_ttft_not_tokens_per_second(emulator_factory) -> None:
    model = chat_model("llama3.2:latest", output_tokens=5)
    emu = await emulator_factory([model])
    emu.preload("llama3.2:latest")
    async with OllamaClient(emu.url) as client:
        result = await measure_model(client, "llama3.2:latest", model.capabilities, SETTINGS)
    assert result is not None and result.success
    assert result.discarded == {"short": 3}
    assert result.ttft is not None
    assert result.tokens_per_second is None and result.client_tokens_per_second is None


async def test_a_run_queued_behind_a_neighbour_is_contended(emulator_factory) -> None:
    model = chat_model("llama3.2:latest", decode_tokens_per_second=100.0, output_tokens=30)
    emu = await emulator_factory([model])
    emu.preload("llama3.2:latest")
    import asyncio

    import httpx

    async def neighbour() -> None:
        async with httpx.AsyncClient(base_url=emu.url, timeout=10) as http:
            body = {"model": "llama3.2:latest", "stream": False,
                    "messages": [{"role": "user", "content": "hello there"}]}  # fmt: skip
            await http.post("/api/chat", content=json.dumps(body))

    busy = asyncio.create_task(neighbour())
    await asyncio.sleep(0.02)  # the neighbour holds the only slot for ~0.3 s
    async with OllamaClient(emu.url) as client:
        result = await measure_model(
            client, "llama3.2:latest", model.capabilities, BenchmarkSettings(runs=1)
        )
    await busy
    assert result is not None and len(result.runs) == 1
    run = result.runs[0]
    assert run.queue_wait is not None and run.queue_wait > 0.15
    # Its numbers are the neighbour's load, not the model's: left out, and the attempt ends.
    assert run.discarded == ("contended",)
    assert result.contended and not result.success and result.ttft is None


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (Fault(kind="status", status=404, message="model 'x' not found"), ErrorType.NOT_FOUND),
        (Fault(kind="status", status=400), ErrorType.HTTP_4XX),
        (Fault(kind="status", status=401, message="unauthorized"), ErrorType.AUTH),
        (Fault(kind="status", status=403), ErrorType.AUTH),
        (Fault(kind="status", status=410), ErrorType.NOT_FOUND),
        (Fault(kind="status", status=429, message="slow down"), ErrorType.RATE_LIMITED),
        (Fault(kind="status", status=500), ErrorType.HTTP_5XX),
        (Fault(kind="status", status=502, message="dial tcp: i/o timeout"), ErrorType.HTTP_5XX),
        (Fault(kind="malformed_line", after_chunks=3), ErrorType.BAD_RESPONSE),
        (Fault(kind="truncate", after_chunks=3), ErrorType.STREAM_INCOMPLETE),
        (Fault(kind="error_line", after_chunks=3), ErrorType.STREAM_ERROR),
        (Fault(kind="huge_line", after_chunks=3, size=2 << 20), ErrorType.BAD_RESPONSE),
        (Fault(kind="reset", after_chunks=3), ErrorType.STREAM_INCOMPLETE),
    ],
    ids=lambda v: v.kind + str(v.status) if isinstance(v, Fault) else str(v),
)
async def test_every_error_kind_maps_to_its_type(emulator_factory, fault, error_type) -> None:
    model = chat_model("llama3.2:latest")
    emu = await emulator_factory([model])
    emu.preload("llama3.2:latest")
    emu.add_fault("llama3.2:latest", fault)
    async with OllamaClient(emu.url) as client:
        result = await measure_model(client, "llama3.2:latest", model.capabilities, SETTINGS)
    assert result is not None
    first = result.first_error
    assert first is not None and first.error_type == error_type, first
    assert result.errors == {error_type: 1}
    assert result.success  # the other runs still measured
    assert len(result.good_runs) == 2
    assert first.error and "/api/chat" in first.error


async def test_connection_refused_is_connect(unused_tcp_port) -> None:
    async with OllamaClient(f"http://127.0.0.1:{unused_tcp_port}") as client:
        result = await measure_model(client, "llama3.2:latest", ["completion"], SETTINGS)
    assert result is not None and not result.success
    assert result.errors == {ErrorType.CONNECT: 1}


async def test_dns_failure_is_connect() -> None:
    async with OllamaClient("http://no-such-host.invalid:11434") as client:
        result = await measure_model(client, "llama3.2:latest", ["completion"], SETTINGS)
    assert result is not None and result.errors == {ErrorType.CONNECT: 1}


async def test_cloud_target_has_no_warmup_and_no_ps(emulator_factory) -> None:
    model = chat_model("gpt-oss:120b", load_seconds=5.0)
    emu = await emulator_factory([model], cloud=True, api_key="sk-cloud")
    async with OllamaClient(emu.url, api_key="sk-cloud") as client:
        result = await measure_model(
            client, "gpt-oss:120b", model.capabilities, SETTINGS, cloud=True
        )
    assert result is not None and result.success
    assert result.warmup is None and result.load_duration is None
    assert emu.records_for("/api/ps") == []
    assert len(emu.records_for("/api/chat")) == 3
    assert all("keep_alive" not in r.body for r in emu.records_for("/api/chat"))


async def test_503_honours_retry_after(emulator_factory) -> None:
    model = chat_model("llama3.2:latest")
    emu = await emulator_factory([model])
    emu.preload("llama3.2:latest")
    emu.add_fault("llama3.2:latest", Fault(kind="status", status=503, retry_after="1"))
    async with OllamaClient(emu.url) as client:
        result = await measure_model(
            client, "llama3.2:latest", model.capabilities, BenchmarkSettings(runs=1)
        )
    assert result is not None and result.success
    assert result.errors == {ErrorType.HTTP_5XX: 1}
    assert result.requests == 2
    first, second = chat_records(emu, "llama3.2:latest")
    assert first.status == 503 and second.status == 200
    assert second.arrived - first.arrived == pytest.approx(1.0, abs=0.1)


async def test_503_without_retry_after_backs_off_exponentially(emulator_factory) -> None:
    import ometer_exporter.measure.model as measure

    model = chat_model("llama3.2:latest")
    emu = await emulator_factory([model])
    emu.preload("llama3.2:latest")
    emu.add_fault("llama3.2:latest", Fault(kind="status", status=503, times=-1))
    base = measure.RETRY_BASE
    measure.RETRY_BASE = 0.1  # type: ignore[misc]
    try:
        async with OllamaClient(emu.url) as client:
            result = await measure_model(
                client, "llama3.2:latest", model.capabilities, BenchmarkSettings(runs=1)
            )
    finally:
        measure.RETRY_BASE = base  # type: ignore[misc]
    assert result is not None and not result.success
    assert result.errors == {ErrorType.HTTP_5XX: 3}  # the try and two retries
    arrivals = [r.arrived for r in chat_records(emu, "llama3.2:latest")]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert 0.05 <= gaps[0] <= 0.16  # 0.1 s × jitter 0.5–1.5
    assert 0.1 <= gaps[1] <= 0.31  # doubled


async def test_usage_limit_stops_the_model_without_retrying(emulator_factory) -> None:
    model = chat_model("gpt-oss:120b")
    emu = await emulator_factory([model], cloud=True)
    emu.add_fault("gpt-oss:120b", Fault(kind="status", status=429, times=-1))
    async with OllamaClient(emu.url) as client:
        result = await measure_model(client, "gpt-oss:120b", model.capabilities, SETTINGS,
                                     cloud=True)  # fmt: skip
    assert result is not None and not result.success
    assert len(emu.records_for("/api/chat")) == 1  # no retry, no further runs
    assert result.usage_limited is not None
    assert result.errors == {ErrorType.RATE_LIMITED: 1}


def test_stalled_runs_are_left_out_only_while_clean_ones_exist() -> None:
    from dataclasses import replace

    from ometer_exporter.measure.results import ModelResult, RunResult

    clean = RunResult(warmup=False, sent_at=0.0, first_token_at=0.1, ended_at=1.0)
    stalled = replace(clean, first_token_at=0.5, discarded=("loop_lag",))
    mixed = ModelResult("m:latest", "chat", 0.0, 1.0, (clean, stalled, stalled))
    assert mixed.ttft == pytest.approx(0.1)
    assert mixed.discarded == {"loop_lag": 2}
    starved = ModelResult("m:latest", "chat", 0.0, 1.0, (stalled, stalled))
    assert starved.success and starved.ttft == pytest.approx(0.5)
    assert starved.discarded == {}  # used after all: better a noisy figure than none


async def test_a_cancelled_cycle_still_unloads_what_it_loaded(emulator_factory) -> None:
    import asyncio

    model = chat_model("llama3.2:latest", load_seconds=0.05, decode_tokens_per_second=5.0,
                       output_tokens=200)  # fmt: skip
    emu = await emulator_factory([model])
    async with OllamaClient(emu.url) as client:
        task = asyncio.create_task(
            measure_model(client, "llama3.2:latest", model.capabilities, SETTINGS)
        )
        await until(lambda: [r for r in chat_records(emu, "llama3.2:latest")
                             if r.first_chunk and r.body["options"]["num_predict"] > 1],
                    what="the first measured run (not the warmup) streaming")  # fmt: skip
        assert "llama3.2:latest" in emu.loaded()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        def unloads() -> list[RequestRecord]:
            return [r for r in emu.records_for("/api/chat")
                    if r.body is not None and r.body.get("keep_alive") == 0]  # fmt: skip

        await until(unloads, what="the unload request", within=5)
    assert len(unloads()) == 1 and unloads()[0].body["messages"] == []
    # As with Ollama, keep_alive 0 takes effect once the abandoned request has ended.
    await until(lambda: "llama3.2:latest" not in emu.loaded(), what="the unload", within=5)


async def test_a_cancelled_cycle_leaves_a_model_it_did_not_load(emulator_factory) -> None:
    import asyncio

    model = chat_model("llama3.2:latest", decode_tokens_per_second=5.0, output_tokens=200)
    emu = await emulator_factory([model])
    emu.preload("llama3.2:latest", keep_alive=-1)
    async with OllamaClient(emu.url) as client:
        task = asyncio.create_task(
            measure_model(client, "llama3.2:latest", model.capabilities, SETTINGS)
        )
        await until(lambda: [r for r in chat_records(emu, "llama3.2:latest") if r.first_chunk],
                    what="the first measured run streaming")  # fmt: skip
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert all(r.body is None or "keep_alive" not in r.body for r in emu.records_for("/api/chat"))
    assert emu.loaded()["llama3.2:latest"].keep_alive < 0
