"""vLLM and LM Studio: the emulator's modes read with plain httpx (conformance to what each
server's public reference says, see ``tests/ollama_emulator/openai.py``)."""

from __future__ import annotations

import re
from typing import Any

import httpx
from ollama_emulator import EmulatorFactory, OllamaEmulator, chat_model, embedding_model
from test_openai import CHAT, ask, completions, events

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
