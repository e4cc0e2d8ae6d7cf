"""vLLM and LM Studio: the emulator's modes read with plain httpx (conformance to what each
server's public reference says, see ``tests/ollama_emulator/openai.py``), then the OpenAI client
against them — engine, version and context discovery, and measurements against the emulator's
ground truth with the tolerances of ``tests/test_openai.py``."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from ollama_emulator import EmulatorFactory, OllamaEmulator, chat_model, embedding_model
from test_openai import CHAT, TTFT_TOLERANCE, ask, completions, events, through_worker

from ometer_exporter.client.errors import OllamaNotFound
from ometer_exporter.client.openai import OpenAIClient
from ometer_exporter.config.settings import BenchmarkSettings, SelectMode, TargetSettings
from ometer_exporter.loop.worker import TargetWorker
from ometer_exporter.measure.contention import BusyGate
from ometer_exporter.measure.model import measure_model

VLLM = "Qwen/Qwen2.5-7B-Instruct"
ADAPTER = "sql-lora"  # a LoRA adapter vLLM serves on the base model
VLLM_VERSION = "0.11.2"
STUDIO = "qwen2.5-7b-instruct"
STUDIO_EMBED = "text-embedding-nomic-embed-text-v1.5"
STUDIO_VISION = "qwen2-vl-7b-instruct"


def studio_models() -> list[Any]:
    return [
        chat_model(STUDIO, family="qwen2", context_length=32768),
        embedding_model(STUDIO_EMBED, context_length=2048),
        chat_model(
            STUDIO_VISION,
            family="qwen2_vl",
            quantization_level="4bit",
            format="mlx",
            capabilities=["completion", "vision"],
        ),
    ]


async def streamed(
    emulator_factory: EmulatorFactory, engine: str, model: str
) -> tuple[OllamaEmulator, list[Any]]:
    """A fresh emulator of ``engine`` and the events of one completion of 12 tokens with usage
    (``[DONE]`` checked last, and dropped)."""
    emu = await emulator_factory([chat_model(model, output_tokens=40)], engine=engine)
    async with httpx.AsyncClient() as http:
        reply = await http.post(emu.url + CHAT, json=ask(12, model=model))
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    got = events(reply.text)
    assert got[-1] == "[DONE]"
    return emu, got[:-1]


def usage_of(chunks: list[Any]) -> dict[str, int]:
    (last,) = [c for c in chunks if not c["choices"]]
    return dict(last["usage"])


# --- vLLM, read with plain httpx ----------------------------------------------------------------


async def test_vllm_stream_opens_with_the_role_and_finishes_on_the_last_token(
    emulator_factory,
) -> None:
    emu, got = await streamed(emulator_factory, "vllm", VLLM)
    *body, last = got
    assert {c["object"] for c in got} == {"chat.completion.chunk"}
    assert len({c["id"] for c in got}) == 1
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", last["id"])
    assert not any("system_fingerprint" in c or "timings" in c for c in got)
    opening, *tokens = body
    assert opening["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
         "finish_reason": None}
    ]  # fmt: skip
    assert len(tokens) == 12 and all(set(t["choices"][0]["delta"]) == {"content"} for t in tokens)
    assert [t["choices"][0]["finish_reason"] for t in tokens] == [None] * 11 + ["length"]
    assert tokens[-1]["choices"][0]["stop_reason"] is None and tokens[-1]["choices"][0]["delta"]
    rec = completions(emu)[0]
    assert last["choices"] == []
    assert list(last["usage"]) == ["prompt_tokens", "total_tokens", "completion_tokens"]
    assert usage_of(got) == {
        "prompt_tokens": rec.prompt_eval_count, "total_tokens": rec.prompt_eval_count + 12,
        "completion_tokens": 12,
    }  # fmt: skip
    assert rec.eval_count == rec.content_chunks == 12


async def test_vllm_routes_models_and_errors(emulator_factory) -> None:
    emu = await emulator_factory(
        [chat_model(VLLM, context_length=32768), chat_model(ADAPTER)],
        engine="vllm", version=VLLM_VERSION, default_num_ctx=8192, api_key="sekrit-key-123",
    )  # fmt: skip
    key = {"Authorization": "Bearer sekrit-key-123"}
    async with httpx.AsyncClient(base_url=emu.url) as http:
        assert (await http.get("/version")).json() == {"version": VLLM_VERSION}  # no key needed
        health = await http.get("/health")
        assert (health.status_code, health.content) == (200, b"")
        denied = await http.get("/v1/models")
        assert (denied.status_code, denied.json()) == (401, {"error": "Unauthorized"})
        models = (await http.get("/v1/models", headers=key)).json()
        base, adapter = models["data"]
        assert (base["id"], base["owned_by"], base["parent"], base["max_model_len"]) == (
            VLLM,
            "vllm",
            None,
            8192,
        )  # the served context: --max-model-len, here the emulator's default_num_ctx
        assert (adapter["id"], adapter["parent"], adapter["max_model_len"]) == (ADAPTER, VLLM, None)
        assert base["permission"][0]["object"] == "model_permission"
        for route in ("/api/tags", "/api/version", "/props", "/api/v0/models"):
            missing = await http.get(route, headers=key)
            assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"}), route
        unknown = await http.post(CHAT, json=ask(model="qwen2.5"), headers=key)  # ids are exact
        assert unknown.status_code == 404
        assert unknown.json() == {"error": {
            "message": "The model `qwen2.5` does not exist.", "type": "NotFoundError",
            "param": "model", "code": 404,
        }}  # fmt: skip
        long = ask(8, model=VLLM)
        long["messages"] = [{"role": "user", "content": "word " * 8190}]
        refused = await http.post(CHAT, json=long, headers=key)
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("BadRequestError", 400)
        assert "maximum context length is 8192 tokens" in error["message"]
        assert "8201 tokens (8193 in the messages, 8 in the completion)" in error["message"]
    assert all(r.eval_count == 0 for r in completions(emu))  # neither reached the model


# --- LM Studio, read with plain httpx -----------------------------------------------------------


async def test_lmstudio_stream_repeats_the_role_and_finishes_with_an_empty_delta(
    emulator_factory,
) -> None:
    emu, got = await streamed(emulator_factory, "lmstudio", STUDIO)
    async with httpx.AsyncClient() as http:
        bare = await http.post(emu.url + CHAT, json=ask(8, model=STUDIO, usage=False))
    *tokens, finish, last = got
    assert re.fullmatch(r"chatcmpl-[0-9a-z]{21}", last["id"])
    assert {c["system_fingerprint"] for c in got} == {STUDIO}
    assert not any("timings" in c for c in got)
    assert len(tokens) == 12
    assert all(t["choices"][0]["delta"]["role"] == "assistant" for t in tokens)
    assert all(t["choices"][0]["delta"]["content"] for t in tokens)
    assert finish["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    ]
    rec = completions(emu)[0]
    assert usage_of(got) == {
        "prompt_tokens": rec.prompt_eval_count, "completion_tokens": 12,
        "total_tokens": rec.prompt_eval_count + 12,
    }  # fmt: skip
    assert all(c["choices"] for c in events(bare.text)[:-1])  # no include_usage: no usage


async def test_lmstudio_routes_models_and_errors(emulator_factory) -> None:
    emu = await emulator_factory(studio_models(), engine="lmstudio", default_num_ctx=4096)
    emu.unload(STUDIO_VISION)
    async with httpx.AsyncClient(base_url=emu.url) as http:
        listed = (await http.get("/v1/models")).json()
        assert listed["data"] == [
            {"id": name, "object": "model", "owned_by": "organization_owner"}
            for name in (STUDIO, STUDIO_EMBED, STUDIO_VISION)
        ]  # every downloaded model (just-in-time loading), loaded or not
        studio = {m["id"]: m for m in (await http.get("/api/v0/models")).json()["data"]}
        chat, embed, vision = studio[STUDIO], studio[STUDIO_EMBED], studio[STUDIO_VISION]
        assert (chat["type"], chat["arch"], chat["compatibility_type"], chat["quantization"]) == (
            "llm",
            "qwen2",
            "gguf",
            "Q4_K_M",
        )
        assert (chat["state"], chat["max_context_length"], chat["loaded_context_length"]) == (
            "loaded",
            32768,
            4096,
        )
        assert chat["capabilities"] == ["tool_use"]
        assert (embed["type"], embed["max_context_length"]) == ("embeddings", 2048)
        assert (vision["type"], vision["state"], vision["max_context_length"]) == (
            "vlm",
            "not-loaded",
            131072,
        )
        assert "loaded_context_length" not in vision and "capabilities" not in vision
        for route in ("/api/tags", "/props", "/version"):  # LM Studio answers 200 anyway
            other = await http.get(route)
            assert other.status_code == 200, route
            assert other.json() == {"error": f"Unexpected endpoint or method. (GET {route})"}
        unknown = await http.post(CHAT, json=ask(model="llama3.2"))
        assert unknown.status_code == 404
        error = unknown.json()["error"]
        assert (error["type"], error["param"], error["code"]) == (
            "invalid_request_error",
            "model",
            "model_not_found",
        )
        assert error["message"].startswith('Model "llama3.2" not found. Please specify a valid')
        assert error["message"].endswith(f"{STUDIO}\n{STUDIO_EMBED}\n{STUDIO_VISION}")
        embedded = (await http.post("/v1/embeddings", json={
            "model": STUDIO_EMBED, "input": "one two three"
        })).json()  # fmt: skip
        assert embedded["usage"] == {"prompt_tokens": 0, "total_tokens": 0}  # as LM Studio's docs
        assert len(embedded["data"][0]["embedding"]) == studio_models()[1].embedding_length
    locked = await emulator_factory(studio_models()[:1], engine="lmstudio", api_key="sk-lm-1")
    async with httpx.AsyncClient(base_url=locked.url) as http:
        denied = await http.get("/api/v0/models")
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"


async def test_lmstudio_loads_an_unloaded_model_on_its_first_request(emulator_factory) -> None:
    """Just-in-time loading: the request pays the load, and the model is loaded after it."""
    model = chat_model(STUDIO, load_seconds=40.0, output_tokens=8)
    emu = await emulator_factory([model], engine="lmstudio", time_scale=0.005)
    emu.unload(STUDIO)
    async with httpx.AsyncClient(base_url=emu.url) as http:
        assert (await http.post(CHAT, json=ask(8, model=STUDIO))).status_code == 200
        (entry,) = (await http.get("/api/v0/models")).json()["data"]
    (rec,) = completions(emu)
    assert rec.cold_load and rec.first_chunk is not None
    assert rec.first_chunk - rec.arrived >= 40.0 * 0.005  # the load is inside the first token
    assert (entry["state"], entry["loaded_context_length"]) == ("loaded", 4096)


# --- the client against both ------------------------------------------------------------------


async def test_client_discovers_vllm_its_version_and_each_models_context(emulator_factory) -> None:
    emu = await emulator_factory(
        [chat_model(VLLM, context_length=32768), chat_model(ADAPTER)],
        engine="vllm", version=VLLM_VERSION, default_num_ctx=16384,
    )  # fmt: skip
    async with OpenAIClient(emu.url + "/v1") as client:
        version = await client.version()
        tags = {t.name: t for t in await client.tags()}
        show = await client.show(ADAPTER)
    assert (client.engine, version, client.slots) == ("vllm", VLLM_VERSION, None)
    assert tags[VLLM].context_length == 16384  # max_model_len
    assert tags[ADAPTER].context_length == 16384  # an adapter runs with its parent's
    assert show.context_length == 16384 and show.capabilities == ("completion",)
    assert {t.capabilities for t in tags.values()} == {("completion",)}
    assert emu.records_for("/api/v0/models") == []  # no probe of other engines once known


async def test_client_discovers_lmstudio_without_a_version(emulator_factory) -> None:
    models = studio_models()
    emu = await emulator_factory(models, engine="lmstudio", default_num_ctx=8192)
    emu.unload(STUDIO_VISION)
    async with OpenAIClient(emu.url + "/v1") as client:
        with pytest.raises(OllamaNotFound, match="LM Studio tells no version"):
            await client.version()
        assert client.engine == "lmstudio"
        tags = {t.name: t for t in await client.tags()}
        embedded = await client.embed(STUDIO_EMBED, ["one two three"])
    chat, embed, vision = tags[STUDIO], tags[STUDIO_EMBED], tags[STUDIO_VISION]
    assert chat.context_length == 8192  # loaded: the context it runs with
    assert vision.context_length == 131072  # not loaded: the most it can have
    assert embed.context_length == 2048
    assert chat.capabilities == ("completion", "tools")
    assert embed.capabilities == ("embedding",)
    assert vision.capabilities == ("completion", "vision")
    assert (chat.family, chat.format, chat.quantization_level) == ("qwen2", "gguf", "Q4_K_M")
    assert (vision.family, vision.format, vision.quantization_level) == ("qwen2_vl", "mlx", "4bit")
    assert (embedded.embeddings, embedded.dimensions) == (1, models[1].embedding_length)
    assert embedded.done.prompt_eval_count is None  # LM Studio's 0 is no count


@pytest.mark.parametrize(("engine", "model"), [("vllm", VLLM), ("lmstudio", STUDIO)])
async def test_client_ttft_and_tokens_match_ground_truth(emulator_factory, engine, model) -> None:
    emulated = chat_model(model, decode_tokens_per_second=200.0, output_tokens=60)
    emu = await emulator_factory([emulated], engine=engine, num_parallel=2)
    settings = BenchmarkSettings(runs=3, num_predict=40)
    async with OpenAIClient(emu.url + "/v1") as client:
        try:
            await client.version()
        except OllamaNotFound:
            assert engine == "lmstudio"
        tags = await client.tags()
        # One request first: the process's first completion pays one-off costs (see test_openai).
        await client.chat(model, [{"role": "user", "content": "hi"}], options={"num_predict": 8})
        emu.records.clear()
        result = await measure_model(
            client, model, tags[0].capabilities or (), settings, cloud=True
        )
    assert client.engine == engine
    assert result is not None and result.success and result.warmup is None
    records = completions(emu)
    assert len(records) == len(result.runs) == 3
    for index, (run, rec) in enumerate(zip(result.runs, records, strict=True)):
        assert rec.first_chunk is not None and rec.last_token_chunk is not None
        assert run.sent_at is not None and run.first_token_at is not None
        assert run.ttft == pytest.approx(rec.first_chunk - rec.arrived, abs=TTFT_TOLERANCE), (
            index, rec.arrived - run.sent_at, run.first_token_at - rec.first_chunk
        )  # fmt: skip
        assert run.done.eval_count == rec.eval_count == 40
        assert not run.done.eval_count_approximate and run.done.done_reason == "length"
        assert run.done.prompt_eval_count == rec.prompt_eval_count
        assert run.done.eval_duration is None  # neither engine reports its times
        wire = (rec.eval_count - 1) / (rec.last_token_chunk - rec.first_chunk)
        assert run.client_tokens_per_second == pytest.approx(wire, rel=0.02)


async def test_an_lmstudio_target_is_up_with_its_engine_and_no_version(emulator_factory) -> None:
    emu = await emulator_factory(studio_models()[:2], engine="lmstudio")
    target = TargetSettings(
        name="studio", url=emu.url + "/v1", cloud=False, api="openai", select="all",
        benchmark=BenchmarkSettings(runs=1, num_predict=8),
    )  # fmt: skip
    store = await through_worker(target, TargetWorker.discover)
    state = store.snapshot.targets["studio"]
    assert (state.up, state.engine, state.version) == (True, "lmstudio", None)
    inventory = store.snapshot.models[("studio", STUDIO_EMBED)].inventory
    assert inventory is not None and inventory.capabilities == ("embedding",)


async def test_vllm_metrics_tell_a_request_in_progress_and_the_busy_gate_sees_it(
    emulator_factory,
) -> None:
    """vLLM's /metrics gauges (conformance, plain httpx), then the client's ``busy`` and the
    load sweep's quiet gate on them: someone else's request during the pause is seen."""
    emu = await emulator_factory(
        [chat_model(VLLM, decode_tokens_per_second=40.0, output_tokens=40)],
        engine="vllm", num_parallel=1,
    )  # fmt: skip
    running = re.compile(r'^vllm:num_requests_running\{.*model_name="([^"]+)".*\} (\S+)$', re.M)
    async with (
        httpx.AsyncClient(base_url=emu.url, timeout=30) as http,
        OpenAIClient(emu.url + "/v1") as client,
    ):
        await client.version()
        idle = (await http.get("/metrics")).text
        assert running.findall(idle) == [(VLLM, "0.0")]
        assert await client.busy() is False
        assert await BusyGate(client, 0.1)() is True
        async with http.stream("POST", CHAT, json=ask(40, model=VLLM)) as theirs:
            chunks = theirs.aiter_bytes()  # kept: dropped, it would close the stream
            await chunks.__anext__()
            busy = (await http.get("/metrics")).text
            assert running.findall(busy) == [(VLLM, "1.0")]
            assert await client.busy() is True
            assert await BusyGate(client, 0.1)() is False


@pytest.mark.parametrize("select", ["loaded", "all"])
async def test_lmstudio_state_decides_what_is_measured_and_no_ttft_pays_a_load(
    emulator_factory, select: SelectMode
) -> None:
    """LM Studio says which models are loaded (``/api/v0/models`` ``state``) and loads one on
    its first request: ``select: loaded`` sends nothing to a model that is not loaded;
    ``select: all`` measures it after a warmup that takes the load, so no TTFT includes it."""
    cold, warm = "qwen3-8b", STUDIO
    models = [chat_model(warm, output_tokens=16), chat_model(cold, output_tokens=16,
                                                             load_seconds=40.0)]  # fmt: skip
    emu = await emulator_factory(models, engine="lmstudio", time_scale=0.005)
    emu.unload(cold)
    target = TargetSettings(
        name="studio", url=emu.url + "/v1", cloud=False, api="openai", select=select,
        benchmark=BenchmarkSettings(runs=2, num_predict=16),
    )  # fmt: skip
    store = await through_worker(target, lambda w: w.cycle())
    entries = {m: e for (_, m), e in store.snapshot.models.items()}
    warm_inventory, cold_inventory = entries[warm].inventory, entries[cold].inventory
    assert warm_inventory is not None and warm_inventory.loaded is True
    assert cold_inventory is not None and cold_inventory.loaded is False
    warm_bench = entries[warm].benchmark
    assert warm_bench is not None and warm_bench.success
    sent = [r for r in completions(emu) if r.model == cold]
    if select == "loaded":
        assert sent == [] and entries[cold].status == "not_loaded"
        return
    warmup, *runs = sent
    assert warmup.cold_load and (warmup.body or {})["options"]["num_predict"] == 1  # max_tokens
    assert len(runs) == 2 and not any(r.cold_load for r in runs)
    bench = entries[cold].benchmark
    assert bench is not None and bench.success and bench.ttft is not None
    assert bench.ttft < 40.0 * 0.005  # the 0.2 s load is in no TTFT
