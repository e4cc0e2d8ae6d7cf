"""OpenAI-compatible targets: the emulator's /v1 (conformance, without our client), the OpenAI
client against its ground truth, the same model through both of Ollama's APIs, and a target with
``api: openai`` through the worker to /metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from aiohttp import web
from ollama_emulator import OllamaEmulator, RequestRecord, chat_model, embedding_model
from ollama_emulator import thinking_model as thinking
from service import until

import ometer_exporter.loop.worker as worker_module
from ometer_exporter.client.errors import ErrorType, OllamaError
from ometer_exporter.client.ollama import OllamaClient
from ometer_exporter.client.openai import OpenAIClient
from ometer_exporter.config.settings import BenchmarkSettings, CapacitySettings, Slo, TargetSettings
from ometer_exporter.loop.selection import method_of, target_state
from ometer_exporter.loop.worker import TargetWorker
from ometer_exporter.measure.model import measure_model
from ometer_exporter.store.records import Record
from ometer_exporter.store.store import Store
from ometer_exporter.views.series import target_samples

TTFT_TOLERANCE = 0.005
CHAT = "/v1/chat/completions"
MODEL = "llama3.2:latest"


def events(text: str) -> list[Any]:
    """The data of each server-sent event, in order (``[DONE]`` as the string)."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = block.split("\n")
        assert all(line.startswith("data: ") for line in lines), block
        data = "\n".join(line[6:] for line in lines)
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def ask(max_tokens: int = 12, *, usage: bool = True, model: str = MODEL) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model, "messages": [{"role": "user", "content": "why is the sky blue"}],
        "stream": True, "max_tokens": max_tokens, "temperature": 0, "seed": 7,
    }  # fmt: skip
    if usage:
        body["stream_options"] = {"include_usage": True}
    return body


def completions(emu: OllamaEmulator) -> list[RequestRecord]:
    return emu.records_for(CHAT)


async def through_worker(
    target: TargetSettings, step: Callable[[TargetWorker], Awaitable[object]]
) -> Store:
    """The store after one ``step`` (``TargetWorker.cycle``, ``.discover``) of a new worker."""
    store = Store()
    store.set_targets([target_state(target)])
    worker = TargetWorker(target, store)
    try:
        await step(worker)
    finally:
        await worker.aclose()
    return store


# --- conformance of the emulator's /v1, read with plain httpx -----------------------------------


@pytest.mark.parametrize("engine", ["ollama", "llama.cpp"])
async def test_stream_is_server_sent_chunks_then_usage_then_done(emulator_factory, engine) -> None:
    emu = await emulator_factory([chat_model(MODEL, output_tokens=40)], engine=engine)
    async with httpx.AsyncClient() as http:
        reply = await http.post(emu.url + CHAT, json=ask(12))
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    got = events(reply.text)
    assert got[-1] == "[DONE]"
    chunks = got[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    *body, last = chunks
    assert last["choices"] == []  # include_usage: a last chunk with no choices
    rec = completions(emu)[0]
    assert last["usage"] == {
        "completion_tokens": 12, "prompt_tokens": rec.prompt_eval_count,
        "total_tokens": 12 + rec.prompt_eval_count,
    }  # fmt: skip
    finish = [c for c in body if c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finish] == ["length"]
    tokens = [c for c in body if c["choices"][0]["delta"].get("content")]
    assert len(tokens) == rec.eval_count == rec.content_chunks == 12
    # max_tokens, temperature and seed reach the generation as Ollama's options
    assert rec.body["options"] == {"temperature": 0, "seed": 7, "num_predict": 12}
    if engine == "llama.cpp":
        role = body[0]["choices"][0]["delta"]
        assert role == {"role": "assistant", "content": None}  # before any token
        timings = last["timings"]
        assert timings["predicted_n"] == 12
        assert timings["predicted_ms"] == rec.metrics["eval_duration"] / 1e6
        assert timings["prompt_n"] == rec.metrics["prompt_eval_count"]
        assert timings["prompt_ms"] == rec.metrics["prompt_eval_duration"] / 1e6
    else:
        assert "timings" not in last and body[0]["system_fingerprint"] == "fp_ollama"


async def test_without_include_usage_no_usage_is_sent(emulator_factory) -> None:
    emu = await emulator_factory([chat_model(MODEL)], engine="llama.cpp")
    async with httpx.AsyncClient() as http:
        reply = await http.post(emu.url + CHAT, json=ask(8, usage=False))
    chunks = events(reply.text)[:-1]
    assert all(c["choices"] for c in chunks)


@pytest.mark.parametrize(
    ("engine", "field"),
    [("ollama", "reasoning"), ("llama.cpp", "reasoning_content"), ("vllm", "reasoning"),
     ("lmstudio", "reasoning_content")],
)  # fmt: skip
async def test_reasoning_streams_in_its_own_field(emulator_factory, engine, field) -> None:
    model = thinking("qwen3:8b", thinking_tokens=5, output_tokens=5)
    emu = await emulator_factory([model], engine=engine)
    async with httpx.AsyncClient() as http:
        reply = await http.post(emu.url + CHAT, json=ask(20, model="qwen3:8b"))
    deltas = [c["choices"][0]["delta"] for c in events(reply.text)[:-1] if c["choices"]]
    assert sum(1 for d in deltas if d.get(field)) == 5
    assert sum(1 for d in deltas if d.get("content")) == 5


async def test_models_props_and_openai_error_bodies(emulator_factory) -> None:
    llama = await emulator_factory([chat_model(MODEL)], engine="llama.cpp", num_parallel=4)
    ollama = await emulator_factory([chat_model(MODEL)], api_key="sekrit-key-123")
    async with httpx.AsyncClient() as http:
        models = (await http.get(llama.url + "/v1/models")).json()
        assert models["object"] == "list"
        assert [(m["id"], m["owned_by"]) for m in models["data"]] == [(MODEL, "llamacpp")]
        props = (await http.get(llama.url + "/props")).json()
        assert (props["total_slots"], props["default_generation_settings"]["n_ctx"]) == (4, 4096)
        assert (await http.get(llama.url + "/api/tags")).status_code == 404  # no Ollama API
        missing = await http.post(llama.url + CHAT, json=ask(model="nope:latest"))
        assert missing.status_code == 404
        assert set(missing.json()["error"]) == {"message", "type", "code"}
        denied = await http.get(ollama.url + "/v1/models")
        assert denied.status_code == 401 and "message" in denied.json()["error"]


# --- the OpenAI client against the emulator's ground truth -------------------------------------


@pytest.mark.parametrize("engine", ["ollama", "llama.cpp"])
async def test_client_ttft_tokens_and_timings_match_ground_truth(emulator_factory, engine) -> None:
    model = chat_model(MODEL, decode_tokens_per_second=200.0, output_tokens=60)
    emu = await emulator_factory([model], engine=engine, num_parallel=2)
    emu.preload(MODEL)  # Ollama behind /v1 would load it in the first run: not this test's point
    settings = BenchmarkSettings(runs=3, num_predict=40)
    async with OpenAIClient(emu.url + "/v1") as client:
        version = await client.version()
        tags = await client.tags()
        # One request first: the process's first completion pays one-off costs on both sides of
        # the shared event loop (lazy imports, the first SSE writer), as a warmup would.
        await client.chat(MODEL, [{"role": "user", "content": "hi"}], options={"num_predict": 8})
        emu.records.clear()
        result = await measure_model(
            client, MODEL, tags[0].capabilities or (), settings, cloud=True
        )
    expected = ("llama.cpp", emu.build, 2) if engine == "llama.cpp" else ("ollama", "0.33.0", None)
    assert (client.engine, version, client.slots) == expected
    assert result is not None and result.success and result.warmup is None
    records = completions(emu)
    assert len(records) == len(result.runs) == 3
    for index, (run, rec) in enumerate(zip(result.runs, records, strict=True)):
        assert rec.first_chunk is not None and run.first_token_at is not None
        assert run.sent_at is not None
        assert run.ttft == pytest.approx(rec.first_chunk - rec.arrived, abs=TTFT_TOLERANCE), (
            index, rec.arrived - run.sent_at, run.first_token_at - rec.first_chunk
        )  # fmt: skip
        assert run.done.eval_count == rec.eval_count == 40
        assert not run.done.eval_count_approximate
        assert run.done.prompt_eval_count == rec.prompt_eval_count
        if engine == "llama.cpp":  # timings feed the fields Ollama's done line feeds
            assert run.done.eval_duration == rec.metrics["eval_duration"]
            assert run.done.prompt_eval_duration == rec.metrics["prompt_eval_duration"]
        else:
            assert run.done.eval_duration is None
        assert rec.last_token_chunk is not None
        wire = (rec.eval_count - 1) / (rec.last_token_chunk - rec.first_chunk)
        assert run.client_tokens_per_second == pytest.approx(wire, rel=0.02)
    assert emu.records_for("/api/ps") == []  # never asked what is loaded


async def test_client_discovery_metadata(emulator_factory) -> None:
    models = [chat_model(MODEL), embedding_model("nomic-embed-text:latest")]
    llama = await emulator_factory(models[:1], engine="llama.cpp", default_num_ctx=8192)
    ollama = await emulator_factory(models)
    async with OpenAIClient(llama.url + "/v1") as client:
        await client.version()
        (tag,) = await client.tags()
        show = await client.show(MODEL)
    assert (tag.name, tag.context_length, tag.size) == (MODEL, 8192, models[0].size)
    assert tag.parameter_size == "3.21B" and show.capabilities == ("completion",)
    async with OpenAIClient(ollama.url + "/v1") as client:
        await client.version()
        caps = {t.name: t.capabilities for t in await client.tags()}
        embedded = await client.embed("nomic-embed-text:latest", ["one two three"])
    assert caps["nomic-embed-text:latest"] == ("embedding",)  # from Ollama's /api/tags
    assert (embedded.embeddings, embedded.dimensions) == (1, models[1].embedding_length)
    assert embedded.done.prompt_eval_count == 5  # three words and the two markers


@pytest.mark.parametrize(
    ("status", "body", "error_type", "text"),
    [
        (401, {"error": {"message": "Invalid API Key", "type": "authentication_error"}},
         ErrorType.AUTH, "Invalid API Key"),
        (404, {"error": {"message": "model not found", "type": "not_found_error"}},
         ErrorType.NOT_FOUND, "model not found"),
        (429, {"error": {"message": "slow down", "type": "rate_limit_error"}},
         ErrorType.RATE_LIMITED, "slow down"),
        (503, {"error": {"message": "Loading model", "type": "unavailable_error"}},
         ErrorType.HTTP_5XX, "Loading model"),
        (400, {"error": "plain text form"}, ErrorType.HTTP_4XX, "plain text form"),
    ],
)  # fmt: skip
async def test_openai_error_bodies_map_to_the_error_types(status, body, error_type, text) -> None:
    async def reply(request: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    async with _Server(reply) as url, OpenAIClient(url + "/v1") as client:
        with pytest.raises(OllamaError) as caught:
            await client.chat(MODEL, [{"role": "user", "content": "hi"}], options={})
    assert caught.value.error_type == error_type
    assert str(caught.value) == f"/chat/completions: HTTP {status}: {text}"


async def test_a_stream_without_usage_counts_chunks_as_approximate() -> None:
    async def reply(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for word in ("a", "b", "c"):
            chunk = {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async with _Server(reply) as url, OpenAIClient(url + "/v1") as client:
        stream = await client.chat(MODEL, [{"role": "user", "content": "hi"}], options={})
        settings = BenchmarkSettings(runs=1, num_predict=8)
        result = await measure_model(client, MODEL, ("completion",), settings, cloud=True)
    assert (stream.done.eval_count, stream.done.eval_count_approximate) == (3, True)
    assert stream.done.done_reason == "stop" and stream.content_chunks == 3
    # Three chunks are a "short" run: no rate, and so nothing approximate behind one.
    assert result is not None and not result.output_tokens_approximate
    long_run = replace(result.runs[0], discarded=())
    marked = Record.from_result(replace(result, runs=(long_run,)), method=method_of(settings))
    assert marked.output_tokens_approximate
    assert Record.from_json(marked.to_json()).output_tokens_approximate  # persisted


@pytest.mark.parametrize(
    ("tail", "error_type"),
    [
        (b"", ErrorType.STREAM_INCOMPLETE),  # no [DONE]
        (b'data: {"error":{"message":"out of memory"}}\n\n', ErrorType.STREAM_ERROR),
        (b"data: {not json\n\n", ErrorType.BAD_RESPONSE),
    ],
)
async def test_broken_streams_are_typed(tail: bytes, error_type: ErrorType) -> None:
    async def reply(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n' + tail)
        return resp

    async with _Server(reply) as url, OpenAIClient(url + "/v1") as client:
        with pytest.raises(OllamaError) as caught:
            await client.chat(MODEL, [{"role": "user", "content": "hi"}], options={})
    assert caught.value.error_type == error_type
    assert "/v1/chat/completions" in str(caught.value)


# --- one Ollama server through both of its APIs ------------------------------------------------


async def test_the_same_model_through_api_chat_and_v1_gives_close_numbers(emulator_factory) -> None:
    model = chat_model(MODEL, decode_tokens_per_second=100.0, output_tokens=200)
    emu = await emulator_factory([model])
    emu.preload(MODEL)
    settings = BenchmarkSettings(runs=3, num_predict=100, idle_before=0.0)
    async with OllamaClient(emu.url) as native:
        ollama = await measure_model(native, MODEL, model.capabilities, settings)
    async with OpenAIClient(emu.url + "/v1") as compat:
        await compat.version()
        openai = await measure_model(compat, MODEL, model.capabilities, settings, cloud=True)
    assert ollama is not None and openai is not None and ollama.success and openai.success
    assert ollama.ttft is not None and openai.ttft is not None
    assert ollama.client_tokens_per_second is not None and openai.client_tokens_per_second
    # Same generation, two wire formats: TTFT within 5 ms, client decode rate within 2 %.
    assert openai.ttft == pytest.approx(ollama.ttft, abs=0.005)
    assert openai.client_tokens_per_second == pytest.approx(
        ollama.client_tokens_per_second, rel=0.02
    )
    assert sum(r.done.eval_count or 0 for r in openai.runs) == 300


# --- an api: openai target through the worker ---------------------------------------------------


async def test_worker_measures_every_listed_model_of_an_openai_target(emulator_factory) -> None:
    emu = await emulator_factory([chat_model(MODEL, output_tokens=20), chat_model("qwen3:8b")],
                                 engine="llama.cpp", num_parallel=4)  # fmt: skip
    target = TargetSettings(
        name="llamacpp", url=emu.url + "/v1", cloud=False, api="openai", select="all",
        benchmark=BenchmarkSettings(runs=2, num_predict=16),
    )  # fmt: skip
    store = await through_worker(target, TargetWorker.cycle)
    snapshot = store.snapshot
    assert {m for (_, m) in snapshot.models} == {MODEL, "qwen3:8b"}
    for entry in snapshot.models.values():
        assert entry.benchmark is not None and entry.benchmark.success
        assert entry.inventory is not None and entry.inventory.loaded is None  # no /api/ps
    assert len(completions(emu)) == 4  # two runs each, no warmup
    state = snapshot.targets["llamacpp"]
    assert (state.api, state.engine, state.version, state.slots) == (
        "openai",
        "llama.cpp",
        emu.build,
        4,
    )
    info = [s for s in target_samples(state) if s[0].name == "ometer_target"]
    assert [labels for _, labels, _ in info] == [("llamacpp", "openai", "llama.cpp", emu.build)]
    slots = [s for s in target_samples(state) if s[0].name == "ometer_target_parallel_slots"]
    assert [(labels, value) for _, labels, value in slots] == [(("llamacpp",), 4.0)]


class _Server:
    """A one-route aiohttp server on loopback for malformed replies no emulator sends."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handler)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def __aexit__(self, *exc: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


# --- connections the server closes (llama-server after a streamed response) ---------------------


async def test_emulator_closes_a_reused_connection_before_any_reply(emulator_factory) -> None:
    emu = await emulator_factory([chat_model(MODEL)], engine="llama.cpp", close_reused=True)
    async with httpx.AsyncClient() as http:
        first = await http.post(emu.url + CHAT, json=ask(8))
        assert first.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await http.post(emu.url + CHAT, json=ask(8))
        again = await http.post(emu.url + CHAT, json=ask(8))  # a fresh connection works
    assert again.status_code == 200 and emu.closed_reused == 1
    assert len(completions(emu)) == 2  # the dropped request never reached the model


async def test_a_request_the_server_dropped_is_sent_again_and_ttft_starts_then(
    emulator_factory,
) -> None:
    model = chat_model(MODEL, decode_tokens_per_second=200.0, output_tokens=40)
    emu = await emulator_factory([model], engine="llama.cpp", close_reused=True)
    settings = BenchmarkSettings(runs=3, num_predict=20)
    async with OpenAIClient(emu.url + "/v1") as client:
        await client.version()
        result = await measure_model(client, MODEL, ("completion",), settings, cloud=True)
    assert result is not None and len(result.good_runs) == 3 and not result.errors
    # Runs 2 and 3 each met the connection run 1 (then 2) had streamed on.
    assert (client.reconnects, emu.closed_reused) == (2, 2)
    for run, rec in zip(result.runs, completions(emu), strict=True):
        assert run.sent_at is not None and rec.socket_arrived is not None
        assert rec.socket_first_chunk is not None
        # The retry's own send time: its headers went out on the new connection, which the
        # emulator read right after (the truth at the socket, not at its handler).
        assert run.sent_at <= rec.socket_arrived <= run.sent_at + 0.005
        truth = rec.socket_first_chunk - rec.socket_arrived
        assert run.ttft == pytest.approx(truth, abs=TTFT_TOLERANCE)


async def test_a_fresh_connection_that_fails_is_not_sent_again() -> None:
    async def drop(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        return web.StreamResponse()

    async with _Server(drop) as url, OpenAIClient(url + "/v1") as client:
        with pytest.raises(OllamaError) as caught:
            await client.chat(MODEL, [{"role": "user", "content": "hi"}], options={})
    assert caught.value.error_type == ErrorType.CONNECT and client.reconnects == 0


async def test_reconnects_are_a_counter_of_the_target(emulator_factory) -> None:
    emu = await emulator_factory([chat_model(MODEL, output_tokens=20)], engine="llama.cpp",
                                 close_reused=True)  # fmt: skip
    target = TargetSettings(
        name="llamacpp", url=emu.url + "/v1", cloud=False, api="openai", select="all",
        benchmark=BenchmarkSettings(runs=3, num_predict=16),
    )  # fmt: skip
    store = Store()
    store.set_targets([target_state(target)])
    for _ in range(2):  # a new worker (a reload) keeps counting from the store's value
        worker = TargetWorker(target, store)
        try:
            await worker.cycle()
        finally:
            await worker.aclose()
    state = store.snapshot.targets["llamacpp"]
    assert state.reconnects == emu.closed_reused == 4  # runs 2 and 3 of each cycle
    counter = [v for spec, _, v in target_samples(state) if spec.name == "ometer_target_reconnects"]
    assert counter == [4.0]


# --- load sweeps on an OpenAI-compatible server ------------------------------------------------


async def test_slots_say_which_slots_are_processing(emulator_factory) -> None:
    """llama-server's /slots (conformance, plain httpx): one entry per slot, ``is_processing``
    while a request holds one."""
    emu = await emulator_factory(
        [chat_model(MODEL, decode_tokens_per_second=40.0, output_tokens=40)],
        engine="llama.cpp", num_parallel=4,
    )  # fmt: skip
    async with httpx.AsyncClient(base_url=emu.url, timeout=30) as http:
        idle = (await http.get("/slots")).json()
        assert [(s["id"], s["is_processing"]) for s in idle] == [(i, False) for i in range(4)]
        async with (
            http.stream("POST", CHAT, json=ask(40)) as one,
            http.stream("POST", CHAT, json=ask(40)) as two,
        ):
            # The iterators are kept: one dropped would close its stream when collected.
            chunks = [one.aiter_bytes(), two.aiter_bytes()]
            for stream in chunks:
                await stream.__anext__()
            await asyncio.sleep(0.2)  # mid-stream (40 tokens at 40/s), not just its start
            busy = (await http.get("/slots")).json()
            assert sum(s["is_processing"] for s in busy) == 2
        await until(lambda: not any(r.finished is None for r in completions(emu)),
                    what="both streams closed")  # fmt: skip
        assert not any(s["is_processing"] for s in (await http.get("/slots")).json())


async def test_an_openai_target_is_swept_through_the_worker(emulator_factory, monkeypatch) -> None:
    """``api: openai`` against a llama-server emulation with four batching slots: the worker's
    sweep publishes the curve, four users within the SLO, four slots inferred."""
    emu = await emulator_factory(
        [chat_model(MODEL, output_tokens=32, batch_slowdown=0.2)],
        engine="llama.cpp", num_parallel=4, close_reused=True,
    )  # fmt: skip
    capacity = CapacitySettings(
        enabled=True, concurrency=(1, 2, 4, 8), requests_per_level=8, num_predict=32,
        slo=Slo(ttft=0.2, tpot=0.1),
    )  # fmt: skip
    target = TargetSettings(
        name="llamacpp", url=emu.url + "/v1", cloud=False, api="openai",
        benchmark=BenchmarkSettings(capacity=capacity),
    )  # fmt: skip
    monkeypatch.setattr(worker_module, "SWEEP_PAUSE", 0.1)
    store = Store()
    store.set_targets([target_state(target)])
    worker = TargetWorker(target, store)
    try:
        await worker.discover()
        sweep = await worker.sweep_capacity(MODEL, allow_load=False)
    finally:
        await worker.aclose()
    assert sweep is not None and sweep.aborted is None, sweep
    record = store.snapshot.models[("llamacpp", MODEL)].capacity
    assert record is not None
    assert [lv.concurrency for lv in record.levels] == [1, 2, 4, 8]
    assert (record.max_concurrency, record.parallel_slots) == (4, 4)
    assert [lv.queued for lv in record.levels] == [False, False, False, True]
    assert (
        record.slots_hint
        == "from 8 users on, TTFT is queueing: the server decodes 4 requests at a time"
    )
    swept = [
        r for r in completions(emu) if r.body and r.body.get("options", {}).get("num_predict") == 32
    ]
    assert len(swept) == 8 * 4


@pytest.mark.parametrize("engine", ["llama.cpp", "vllm"])
async def test_an_error_mid_stream_is_an_error_event_and_a_stream_error(
    emulator_factory, engine
) -> None:
    """The emulator's mid-stream error on an OpenAI stream is an SSE error event then
    ``[DONE]`` (not an NDJSON line); the client types it ``stream_error``."""
    from ollama_emulator import Fault

    emu = await emulator_factory([chat_model(MODEL, output_tokens=20)], engine=engine)
    broken = Fault(kind="error_line", after_chunks=3, message="the GPU fell over", paths=(CHAT,))
    emu.add_fault(MODEL, broken)
    async with httpx.AsyncClient(timeout=30) as http:
        text = (await http.post(emu.url + CHAT, json=ask(20))).text
    got = events(text)
    assert got[-1] == "[DONE]" and got[-2]["error"]["message"] == "the GPU fell over"
    emu.add_fault(MODEL, broken)
    async with OpenAIClient(emu.url + "/v1") as client:
        await client.version()
        with pytest.raises(OllamaError) as caught:
            await client.chat(MODEL, [{"role": "user", "content": "hi"}], options={})
    assert caught.value.error_type is ErrorType.STREAM_ERROR
    assert "the GPU fell over" in str(caught.value)
