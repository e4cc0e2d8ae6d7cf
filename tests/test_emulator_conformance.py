"""Conformance of the test-suite Ollama emulator to docs/ollama-protocol.md.

Driven with raw sockets (for wire timing and exact bytes) and aiohttp — never with the
exporter's own client, so the emulator is checked against the reference, not against us.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
import statistics
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter
from typing import Any

import aiohttp
import pytest
from ollama_emulator import (
    USAGE_LIMIT_MESSAGE,
    EmulatedModel,
    EmulatorFactory,
    Fault,
    OllamaEmulator,
    chat_model,
    cloud_stub_model,
    embedding_model,
    thinking_model,
)
from ollama_emulator.wire import go_float, parse_go_duration, rfc3339_nano

JSON_UTF8 = "application/json; charset=utf-8"
CREATED_AT_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z$")
LOCAL_TS_RE = re.compile(r"^(\d{4})-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?\+02:00$")
METRICS = [
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
]
USER = [{"role": "user", "content": "why is the sky blue"}]


def fast(make: Callable[..., EmulatedModel], name: str | None = None, **kw: Any) -> EmulatedModel:
    """A model that loads, prefills and decodes quickly unless told otherwise."""
    params: dict[str, Any] = {
        "load_seconds": 0.02,
        "prefill_tokens_per_second": 100_000.0,
        "decode_tokens_per_second": 2000.0,
    }
    if make is not embedding_model:
        params["output_tokens"] = 8
    params.update(kw)
    return make(name, **params) if name is not None else make(**params)


def standard_models() -> list[EmulatedModel]:
    return [
        fast(chat_model),
        fast(thinking_model, thinking_tokens=5),
        fast(embedding_model),
        fast(chat_model, "gemma2:latest", capabilities=["completion"], family="gemma2"),
    ]


# ------------------------------------------------------------------------------ raw HTTP


@dataclass
class Raw:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    sent_at: float = 0.0
    headers_at: float | None = None
    lines: list[tuple[float, bytes]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False  # the body ended as framed (chunk terminator / Content-Length)
    chunked: bool = False
    error: str | None = None

    def objs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for _, line in self.lines]

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_http(
    url: str,
    method: str,
    path: str,
    payload: Any = None,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    limit_s: float = 15.0,
) -> Raw:
    """One HTTP/1.1 request on a fresh socket; records when headers and each line arrive."""
    u = urllib.parse.urlsplit(url)
    assert u.hostname is not None
    assert u.port is not None
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    data = body if body is not None else b"" if payload is None else json.dumps(payload).encode()
    head = [f"{method} {path} HTTP/1.1", f"Host: {u.hostname}:{u.port}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if method not in ("GET", "HEAD") or data:
        head.append(f"Content-Length: {len(data)}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    await writer.drain()
    r = Raw(sent_at=perf_counter())
    try:
        async with asyncio.timeout(limit_s):
            block = await reader.readuntil(b"\r\n\r\n")
            r.headers_at = perf_counter()
            status_line, *header_lines = block.decode("latin-1").split("\r\n")
            r.status = int(status_line.split()[1])
            for h in header_lines:
                if h:
                    k, _, v = h.partition(":")
                    r.headers[k.strip().lower()] = v.strip()
            if method == "HEAD":
                r.complete = True
            elif r.headers.get("transfer-encoding") == "chunked":
                r.chunked = True
                pending = b""
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")
                        r.complete = True
                        break
                    chunk = (await reader.readexactly(size + 2))[:-2]
                    t = perf_counter()
                    r.body += chunk
                    pending += chunk
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        r.lines.append((t, line))
            elif "content-length" in r.headers:
                r.body = await reader.readexactly(int(r.headers["content-length"]))
                r.complete = True
            else:
                r.body = await reader.read()
    except (ConnectionError, asyncio.IncompleteReadError) as e:
        r.error = type(e).__name__
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return r


async def post(url: str, path: str, payload: Any, **kw: Any) -> Raw:
    return await raw_http(url, "POST", path, payload, **kw)


async def get_json(url: str, path: str) -> Any:
    r = await raw_http(url, "GET", path)
    assert r.status == 200, r.body
    return r.json()


async def ps_names(url: str) -> list[str]:
    return [m["name"] for m in (await get_json(url, "/api/ps"))["models"]]


async def eventually(check: Callable[[], Awaitable[bool]], limit_s: float = 2.0) -> None:
    deadline = perf_counter() + limit_s
    while not await check():
        assert perf_counter() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}, separators=(",", ":"), ensure_ascii=False).encode()


def parse_local(ts: str) -> datetime:
    """RFC 3339 with up to 9 fractional digits → datetime (µs precision)."""
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)$", ts)
    assert m is not None
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{m.group(1)}.{frac}{m.group(3).replace('Z', '+00:00')}")


@pytest.fixture
async def emu(emulator_factory: EmulatorFactory) -> OllamaEmulator:
    return await emulator_factory(standard_models())


# ------------------------------------------------------------------------------ basics


async def test_root_get_and_head(emu: OllamaEmulator) -> None:
    r = await raw_http(emu.url, "GET", "/")
    assert (r.status, r.headers["content-type"], r.body) == (
        200,
        "text/plain; charset=utf-8",
        b"Ollama is running",
    )
    h = await raw_http(emu.url, "HEAD", "/")
    assert h.status == 200
    assert h.body == b""


async def test_version_exact_bytes(emulator_factory: EmulatorFactory) -> None:
    emu = await emulator_factory([], version="0.12.6")
    r = await raw_http(emu.url, "GET", "/api/version")
    assert r.status == 200
    assert r.headers["content-type"] == JSON_UTF8
    assert r.body == b'{"version":"0.12.6"}'
    assert r.headers["content-length"] == "20"
    h = await raw_http(emu.url, "HEAD", "/api/version")
    assert h.status == 200
    assert h.body == b""
    assert h.headers["content-type"] == JSON_UTF8


@pytest.mark.parametrize(
    ("method", "path", "status", "text"),
    [
        ("GET", "/api/nope", 404, b"404 page not found"),
        ("POST", "/v2/chat", 404, b"404 page not found"),
        ("GET", "/api/chat", 405, b"405 method not allowed"),
        ("POST", "/api/tags", 405, b"405 method not allowed"),
        ("DELETE", "/", 405, b"405 method not allowed"),
        ("HEAD", "/api/show", 405, b""),
        ("POST", "/api/ps", 405, b"405 method not allowed"),
    ],
)
async def test_unknown_path_and_wrong_method(
    emu: OllamaEmulator, method: str, path: str, status: int, text: bytes
) -> None:
    r = await raw_http(emu.url, method, path)
    assert r.status == status
    assert r.headers["content-type"] == "text/plain"
    assert r.body == text
    assert emu.records[-1].status == status
    assert emu.records[-1].path == path


# ------------------------------------------------------------------------------ tags / show / ps


async def test_tags_shape_order_and_stub(emulator_factory: EmulatorFactory) -> None:
    old = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    new = datetime(2026, 6, 1, 12, 0, 0, 120000, tzinfo=UTC)
    emu = await emulator_factory(
        [
            chat_model(modified_at=old),
            embedding_model(modified_at=new),
            cloud_stub_model(modified_at=old - timedelta(days=1)),
        ]
    )
    r = await raw_http(emu.url, "GET", "/api/tags")
    assert r.status == 200
    assert r.headers["content-type"] == JSON_UTF8
    models = r.json()["models"]
    assert [m["name"] for m in models] == [
        "nomic-embed-text:latest",
        "llama3.2:latest",
        "gpt-oss:120b-cloud",
    ]
    chat = models[1]
    assert list(chat) == [
        "name", "model", "modified_at", "size", "digest", "details", "capabilities",
    ]  # fmt: skip
    assert chat["model"] == chat["name"]
    assert re.fullmatch(r"[0-9a-f]{64}", chat["digest"])
    assert chat["modified_at"] == "2026-01-02T05:04:05+02:00"
    assert models[0]["modified_at"] == "2026-06-01T14:00:00.12+02:00"
    assert list(chat["details"]) == [
        "parent_model", "format", "family", "families", "parameter_size",
        "quantization_level", "context_length", "embedding_length",
    ]  # fmt: skip
    assert chat["details"]["families"] == ["llama"]
    assert chat["capabilities"] == ["completion", "tools"]
    assert models[0]["capabilities"] == ["embedding"]
    assert models[0]["details"]["context_length"] == 2048
    assert models[0]["details"]["embedding_length"] == 768
    stub = models[2]
    assert list(stub)[:4] == ["name", "model", "remote_model", "remote_host"]
    assert stub["remote_model"] == "gpt-oss:120b"
    assert stub["remote_host"] == "https://ollama.com:443"
    assert stub["details"]["families"] is None
    assert stub["details"]["format"] == ""
    assert "context_length" not in stub["details"]
    assert b'"families":null' in r.body


async def test_tags_empty(emulator_factory: EmulatorFactory) -> None:
    emu = await emulator_factory([])
    assert (await raw_http(emu.url, "GET", "/api/tags")).body == b'{"models":[]}'
    h = await raw_http(emu.url, "HEAD", "/api/tags")
    assert h.status == 200
    assert h.body == b""


async def test_show_shape_escaping_and_alias(emu: OllamaEmulator) -> None:
    r = await post(emu.url, "/api/show", {"name": "QWEN3:8b"})
    assert r.status == 200
    assert r.headers["content-type"] == JSON_UTF8
    assert r.chunked  # a large c.JSON body leaves Go's 2 KiB buffer: chunked encoding
    body = r.json()
    assert list(body) == [
        "license", "modelfile", "parameters", "template", "details", "model_info", "tensors",
        "capabilities", "modified_at",
    ]  # fmt: skip
    assert body["modelfile"].startswith(
        '# Modelfile generated by "ollama show"\n'
        "# To build a new Modelfile based on this, replace FROM with:\n# FROM qwen3:8b\n\nFROM "
    )
    # Go's encoding/json escapes HTML characters
    assert b"<" not in r.body
    assert b"\\u003c|im_start|\\u003e" in r.body
    assert "top_k                          20" in body["parameters"].split("\n")
    assert list(body["details"]) == [
        "parent_model", "format", "family", "families", "parameter_size", "quantization_level",
    ]  # fmt: skip
    info = body["model_info"]
    assert list(info) == sorted(info)
    assert info["general.architecture"] == "qwen3"
    assert info["general.parameter_count"] == 8_190_735_360
    assert info["qwen3.context_length"] == 40960
    assert info["qwen3.embedding_length"] == 4096
    assert isinstance(info["qwen3.block_count"], int)
    assert {"general.file_type", "general.quantization_version"} <= set(info)
    assert info["tokenizer.ggml.tokens"] == []
    assert all(list(t) == ["name", "type", "shape"] for t in body["tensors"])
    assert body["capabilities"] == ["completion", "tools", "thinking"]
    assert LOCAL_TS_RE.match(body["modified_at"])

    verbose = (await post(emu.url, "/api/show", {"model": "qwen3:8b", "verbose": True})).json()
    assert len(verbose["model_info"]["tokenizer.ggml.tokens"]) > 5

    emb = (await post(emu.url, "/api/show", {"model": "nomic-embed-text"})).json()
    assert emb["model_info"]["nomic-bert.pooling_type"] == 1
    assert emb["model_info"]["nomic-bert.context_length"] == 2048
    assert emb["capabilities"] == ["embedding"]


async def test_ps_shape_sort_and_forever(emu: OllamaEmulator) -> None:
    assert (await raw_http(emu.url, "GET", "/api/ps")).body == b'{"models":[]}'
    r1 = await post(emu.url, "/api/chat", {"model": "llama3.2", "keep_alive": -1})
    assert r1.json()["done_reason"] == "load"
    await post(emu.url, "/api/embed", {"model": "nomic-embed-text", "input": "hi"})
    ps = await get_json(emu.url, "/api/ps")
    names = [m["name"] for m in ps["models"]]
    assert names == ["llama3.2:latest", "nomic-embed-text:latest"]  # expires_at descending
    entry = ps["models"][0]
    assert list(entry) == [
        "name", "model", "size", "digest", "details", "expires_at", "size_vram", "context_length",
    ]  # fmt: skip
    assert "context_length" not in entry["details"]
    assert entry["context_length"] == 4096  # min(4096, trained context)
    assert ps["models"][1]["context_length"] == 2048
    assert entry["size_vram"] == entry["size"] > 2_019_393_189
    forever = LOCAL_TS_RE.match(entry["expires_at"])
    assert forever is not None
    assert int(forever.group(1)) >= 2300
    emb_expiry = parse_local(ps["models"][1]["expires_at"])
    assert abs((emb_expiry - datetime.now(UTC)).total_seconds() - 300) < 5
    state = emu.loaded()
    assert state["llama3.2:latest"].expires_at is None
    assert state["llama3.2:latest"].keep_alive < 0


async def test_ps_lists_a_model_while_it_loads(emulator_factory: EmulatorFactory) -> None:
    emu = await emulator_factory([fast(chat_model, load_seconds=0.4)])
    task = asyncio.create_task(post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER}))
    await asyncio.sleep(0.15)
    ps = await get_json(emu.url, "/api/ps")
    assert [m["name"] for m in ps["models"]] == ["llama3.2:latest"]
    expiry = parse_local(ps["models"][0]["expires_at"])
    assert abs((expiry - datetime.now(UTC)).total_seconds() - 300) < 5
    assert emu.loaded()["llama3.2:latest"].loading
    assert (await task).status == 200
    assert not emu.loaded()["llama3.2:latest"].loading


# ------------------------------------------------------------------------------ chat streaming


async def test_chat_stream_shape(emu: OllamaEmulator) -> None:
    r = await post(emu.url, "/api/chat", {"model": "LLAMA3.2", "messages": USER})
    assert r.status == 200
    assert r.complete
    assert r.chunked
    assert r.headers["content-type"] == "application/x-ndjson"
    objs = r.objs()
    for _, line in r.lines:  # compact, Go-style bytes (no spaces, keys in struct order)
        assert line == json.dumps(json.loads(line), separators=(",", ":")).encode()
    assert r.body.endswith(b"\n")
    assert len(r.lines) == len(objs) == 9
    for o in objs[:-1]:
        assert list(o) == ["model", "created_at", "message", "done"]
        assert o["model"] == "LLAMA3.2"  # echoed exactly as sent
        assert CREATED_AT_RE.match(o["created_at"])
        assert list(o["message"]) == ["role", "content"]  # no thinking key on content chunks
        assert o["message"]["role"] == "assistant"
        assert o["message"]["content"]
        assert o["done"] is False
    final = objs[-1]
    assert list(final) == ["model", "created_at", "message", "done", "done_reason", *METRICS]
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    assert all(isinstance(final[k], int) and final[k] > 0 for k in METRICS)
    assert final["eval_count"] == 8
    assert final["prompt_eval_count"] == 8  # 5 words + role header, end marker, reply header

    # a warm request: load_duration is the (small, non-zero) lookup overhead
    warm = (await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})).objs()
    assert 0 < warm[-1]["load_duration"] < 50_000_000


async def test_headers_arrive_only_with_the_first_chunk(emulator_factory: EmulatorFactory) -> None:
    model = fast(chat_model, load_seconds=0.25, prefill_tokens_per_second=1000.0)
    emu = await emulator_factory([model])
    prompt = " ".join(f"w{i}" for i in range(97))  # 100 prompt tokens → 0.1 s prefill
    messages = [{"role": "user", "content": prompt}]
    r = await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": messages})
    assert r.status == 200
    assert r.headers_at is not None
    assert r.headers_at - r.sent_at >= 0.25 + 0.1 - 0.005
    first_line_at = r.lines[0][0]
    assert first_line_at - r.headers_at < 0.005  # headers and the first line travel together
    rec = emu.records_for("/api/chat")[-1]
    assert rec.cold_load
    assert rec.headers_sent == rec.first_chunk
    final = r.objs()[-1]
    assert final["load_duration"] >= 250_000_000
    assert 95_000_000 <= final["prompt_eval_duration"] <= 110_000_000


async def test_stream_false_single_object(emu: OllamaEmulator) -> None:
    streamed = await post(emu.url, "/api/chat", {"model": "qwen3:8b", "messages": USER})
    chunks = streamed.objs()
    r = await post(emu.url, "/api/chat", {"model": "qwen3:8b", "messages": USER, "stream": False})
    assert r.status == 200
    assert r.headers["content-type"] == JSON_UTF8
    body = r.json()
    assert list(body) == ["model", "created_at", "message", "done", "done_reason", *METRICS]
    assert list(body["message"]) == ["role", "content", "thinking"]
    assert body["message"]["content"] == "".join(c["message"]["content"] for c in chunks)
    assert body["message"]["thinking"] == "".join(c["message"].get("thinking", "") for c in chunks)
    assert body["eval_count"] == chunks[-1]["eval_count"] == 13
    rec = emu.records_for("/api/chat")[-1]
    assert rec.first_chunk is None
    assert rec.done_written is not None


async def test_thinking_first_then_content(emu: OllamaEmulator) -> None:
    objs = (await post(emu.url, "/api/chat", {"model": "qwen3:8b", "messages": USER})).objs()
    msgs = [o["message"] for o in objs[:-1]]
    assert [("thinking" in m) for m in msgs] == [True] * 5 + [False] * 8
    assert all(m["content"] == "" and m["thinking"] for m in msgs[:5])
    assert objs[-1]["eval_count"] == 13  # thinking tokens count
    rec = emu.records_for("/api/chat")[-1]
    assert (rec.thinking_chunks, rec.content_chunks, rec.eval_count) == (5, 8, 13)
    assert rec.first_chunk is not None
    assert rec.first_content is not None
    assert rec.first_content > rec.first_chunk

    off = await post(emu.url, "/api/chat", {"model": "qwen3:8b", "messages": USER, "think": False})
    assert all("thinking" not in o["message"] for o in off.objs())
    assert off.objs()[-1]["eval_count"] == 8

    low = {"model": "qwen3:8b", "messages": USER, "think": "low"}
    level = await post(emu.url, "/api/chat", low)
    assert level.status == 200
    assert "thinking" in level.objs()[0]["message"]

    plain_false = {"model": "llama3.2", "messages": USER, "think": False}
    assert (await post(emu.url, "/api/chat", plain_false)).status == 200


async def test_done_reason_length_counts_thinking(emu: OllamaEmulator) -> None:
    base = {"model": "qwen3:8b", "messages": USER}
    short = (await post(emu.url, "/api/chat", {**base, "options": {"num_predict": 7}})).objs()
    assert short[-1]["done_reason"] == "length"
    assert short[-1]["eval_count"] == 7
    assert sum(1 for o in short[:-1] if "thinking" not in o["message"]) == 2
    long = (await post(emu.url, "/api/chat", {**base, "options": {"num_predict": 100}})).objs()
    assert long[-1]["done_reason"] == "stop"
    assert long[-1]["eval_count"] == 13


async def test_generate_basic(emu: OllamaEmulator) -> None:
    r = await post(emu.url, "/api/generate", {"model": "llama3.2", "prompt": "why is the sky blue"})
    objs = r.objs()
    assert r.headers["content-type"] == "application/x-ndjson"
    assert list(objs[0]) == ["model", "created_at", "response", "done"]
    final = objs[-1]
    assert list(final) == ["model", "created_at", "response", "done", "done_reason", "context",
                           *METRICS]  # fmt: skip
    assert final["response"] == ""
    assert len(final["context"]) == 8 + 8
    thinking = (await post(emu.url, "/api/generate", {"model": "qwen3:8b", "prompt": "x"})).objs()
    assert list(thinking[0]) == ["model", "created_at", "response", "thinking", "done"]
    raw = {"model": "llama3.2", "prompt": "a b c", "raw": True, "stream": False}
    body = (await post(emu.url, "/api/generate", raw)).json()
    assert "context" not in body
    assert body["prompt_eval_count"] == 3
    load = (await post(emu.url, "/api/generate", {"model": "llama3.2"})).json()
    assert list(load) == ["model", "created_at", "response", "done", "done_reason"]
    assert load["done_reason"] == "load"


# ------------------------------------------------------------------------------ errors


ERROR_CASES: list[tuple[str, Any, int, str]] = [
    ("/api/chat", {"messages": USER}, 400, "model is required"),
    ("/api/chat", {"model": "", "messages": USER}, 400, "model is required"),
    ("/api/chat", {"model": "llama9", "messages": USER}, 404, "model 'llama9' not found"),
    ("/api/chat", {"model": "llama9:7b"}, 404, "model 'llama9:7b' not found"),
    (
        "/api/chat",
        {"model": "nomic-embed-text", "messages": USER},
        400,
        '"nomic-embed-text" does not support chat',
    ),
    ("/api/chat", {"model": "nomic-embed-text"}, 400, '"nomic-embed-text" does not support chat'),
    (
        "/api/chat",
        {"model": "llama3.2", "messages": USER, "think": True},
        400,
        '"llama3.2" does not support thinking',
    ),
    (
        "/api/chat",
        {"model": "llama3.2", "messages": USER, "think": "high"},
        400,
        '"llama3.2" does not support thinking',
    ),
    (
        "/api/chat",
        {"model": "nomic-embed-text", "messages": USER, "think": True},
        400,
        '"nomic-embed-text" does not support thinking',
    ),
    (
        "/api/chat",
        {"model": "qwen3:8b", "messages": USER, "think": "x"},
        400,
        'invalid think value: "x" (must be "high", "medium", "low", "max", true, or false)',
    ),
    (
        "/api/chat",
        {"model": "llama3.2", "messages": USER, "keep_alive": "3600"},
        400,
        'time: missing unit in duration "3600"',
    ),
    ("/api/chat", b"", 400, "missing request body"),
    ("/api/chat", b"  \n", 400, "missing request body"),
    ("/api/chat", b"{bad", 400, "invalid character 'b' looking for beginning of object key string"),
    ("/api/chat", b'{"model":', 400, "unexpected EOF"),
    ("/api/chat", b'{"model":"x" "y"}', 400, "invalid character '\"' after object key:value pair"),
    (
        "/api/chat",
        b"[1]",
        400,
        "json: cannot unmarshal array into Go value of type api.ChatRequest",
    ),
    (
        "/api/chat",
        {"model": "llama3.2", "stream": "yes"},
        400,
        "json: cannot unmarshal string into Go struct field ChatRequest.stream of type bool",
    ),
    (
        "/api/chat",
        {"model": "llama3.2", "messages": [{"role": "user", "content": 5}]},
        400,
        "json: cannot unmarshal number into Go struct field ChatRequest.messages.content "
        "of type string",
    ),
    (
        "/api/chat",
        {"model": "llama3.2", "messages": USER, "options": {"temperature": "hot"}},
        500,
        'option "temperature" must be of type float32',
    ),
    (
        "/api/chat",
        {"model": "llama3.2", "messages": USER, "options": {"num_ctx": "big"}},
        500,
        'option "num_ctx" must be of type integer',
    ),
    (
        "/api/chat",
        {"model": "gemma2", "messages": USER, "tools": [{"type": "function", "function": {}}]},
        400,
        "registry.ollama.ai/library/gemma2:latest does not support tools",
    ),
    ("/api/generate", {"model": ""}, 404, "model '' not found"),
    ("/api/generate", {"model": "llama9", "prompt": "x"}, 404, "model 'llama9' not found"),
    (
        "/api/generate",
        {"model": "nomic-embed-text", "prompt": "x"},
        400,
        '"nomic-embed-text" does not support generate',
    ),
    (
        "/api/generate",
        {"model": "llama3.2", "prompt": "x", "raw": True, "system": "s"},
        400,
        "raw mode does not support template, system, or context",
    ),
    (
        "/api/embed",
        {"model": "nomic-embed-txt", "input": "x"},
        404,
        'model "nomic-embed-txt" not found, try pulling it first',
    ),
    ("/api/embed", {"input": "x"}, 404, "model '' not found"),
    ("/api/embed", {"model": "nomic-embed-text", "input": 5}, 400, "invalid input type"),
    ("/api/embed", {"model": "nomic-embed-text", "input": ["a", 1]}, 400, "invalid input type"),
    ("/api/show", {}, 400, "model is required"),
    ("/api/show", {"model": "missing"}, 404, "model 'missing:latest' not found"),
    ("/api/show", {"model": "user/Foo:7b"}, 404, "model 'user/Foo:7b' not found"),
    ("/api/show", {"model": "bad name!"}, 400, "invalid model name"),
]


@pytest.mark.parametrize(("path", "payload", "status", "message"), ERROR_CASES)
async def test_error_texts(
    emu: OllamaEmulator, path: str, payload: Any, status: int, message: str
) -> None:
    if isinstance(payload, bytes):
        r = await post(emu.url, path, None, body=payload)
    else:
        r = await post(emu.url, path, payload)
    assert (r.status, r.body) == (status, error_body(message))
    assert r.headers["content-type"] == JSON_UTF8
    rec = emu.records[-1]
    assert (rec.path, rec.status, rec.error) == (path, status, message)
    assert not emu.loaded()  # no error path loads a model


async def test_embed_with_completion_model_fails_after_loading(emu: OllamaEmulator) -> None:
    r = await post(emu.url, "/api/embed", {"model": "llama3.2", "input": "hello"})
    assert r.status == 500
    assert "llama-server" in r.json()["error"]
    assert "llama3.2:latest" in emu.loaded()


async def test_queue_full_503(emulator_factory: EmulatorFactory) -> None:
    emu = await emulator_factory(
        [fast(chat_model, load_seconds=0.3), fast(thinking_model, load_seconds=0.3)], max_queue=1
    )
    first = asyncio.create_task(post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER}))
    await asyncio.sleep(0.05)
    qwen = {"model": "qwen3:8b", "messages": USER}
    second = asyncio.create_task(post(emu.url, "/api/chat", qwen))
    await asyncio.sleep(0.05)
    third = await post(emu.url, "/api/chat", {"model": "qwen3:8b", "messages": USER})
    assert third.status == 503
    assert third.body == error_body(
        "server busy, please try again.  maximum pending requests exceeded"
    )
    assert (await first).status == 200
    assert (await second).status == 200
    # a loaded model bypasses the load queue: no 503 however many wait for its slot
    many = await asyncio.gather(
        *(post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER}) for _ in range(4))
    )
    assert [r.status for r in many] == [200] * 4


# ------------------------------------------------------------------------------ load / keep-alive


async def test_load_and_unload_shortcuts(emu: OllamaEmulator) -> None:
    r = await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": []})
    assert r.status == 200
    assert r.headers["content-type"] == JSON_UTF8
    body = r.json()
    assert list(body) == ["model", "created_at", "message", "done", "done_reason"]
    assert body["model"] == "llama3.2"
    assert body["done_reason"] == "load"
    assert body["message"] == {"role": "assistant", "content": ""}
    assert emu.records[-1].cold_load
    assert await ps_names(emu.url) == ["llama3.2:latest"]
    u = await post(emu.url, "/api/chat", {"model": "llama3.2", "keep_alive": 0})
    assert u.json()["done_reason"] == "unload"
    assert await ps_names(emu.url) == []


async def test_keep_alive_absent_keeps_runner_setting(emu: OllamaEmulator) -> None:
    await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER, "keep_alive": "10m"})
    await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})
    [entry] = (await get_json(emu.url, "/api/ps"))["models"]
    remaining = (parse_local(entry["expires_at"]) - datetime.now(UTC)).total_seconds()
    assert 590 < remaining <= 600
    assert emu.loaded()["llama3.2:latest"].keep_alive == 600
    await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER, "keep_alive": 90.5})
    assert emu.loaded()["llama3.2:latest"].keep_alive == 90.5


async def test_pin_survives_requests_without_keep_alive(emu: OllamaEmulator) -> None:
    await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER, "keep_alive": "-1m"})
    await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})
    [entry] = (await get_json(emu.url, "/api/ps"))["models"]
    m = LOCAL_TS_RE.match(entry["expires_at"])
    assert m is not None
    assert 2300 <= int(m.group(1)) <= 2330
    assert emu.loaded()["llama3.2:latest"].expires_at is None


async def test_keep_alive_zero_unloads_after_the_request(emu: OllamaEmulator) -> None:
    r = await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER, "keep_alive": 0})
    assert r.objs()[-1]["done"] is True

    async def gone() -> bool:
        return await ps_names(emu.url) == []

    await eventually(gone)


async def test_idle_expiry_unloads(emulator_factory: EmulatorFactory) -> None:
    emu = await emulator_factory([fast(chat_model, load_seconds=1.0)], time_scale=0.01)
    payload = {"model": "llama3.2", "messages": USER, "keep_alive": "30s"}
    r = await post(emu.url, "/api/chat", payload)
    assert r.status == 200
    [entry] = (await get_json(emu.url, "/api/ps"))["models"]
    assert LOCAL_TS_RE.match(entry["expires_at"])
    remaining = (parse_local(entry["expires_at"]) - datetime.now(UTC)).total_seconds()
    assert 28 < remaining <= 30  # emulated keep-alive on the wall clock
    await asyncio.sleep(0.2)  # 20 emulated seconds
    assert await ps_names(emu.url) == ["llama3.2:latest"]
    await asyncio.sleep(0.2)  # past 30 emulated seconds: the timer unloaded it
    assert emu.loaded() == {}
    assert await ps_names(emu.url) == []
    again = (await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})).objs()
    assert again[-1]["load_duration"] >= 1_000_000_000  # cold again


async def test_runner_option_change_forces_reload(emulator_factory: EmulatorFactory) -> None:
    emu = await emulator_factory([fast(chat_model, load_seconds=10.0)], time_scale=0.01)

    async def run(options: dict[str, Any] | None = None) -> tuple[bool, int]:
        payload: dict[str, Any] = {"model": "llama3.2", "messages": USER}
        if options is not None:
            payload["options"] = options
        final = (await post(emu.url, "/api/chat", payload)).objs()[-1]
        return emu.records[-1].cold_load, final["load_duration"]

    cold, load = await run()
    assert cold
    assert load >= 10_000_000_000
    cold, load = await run({"temperature": 0, "seed": 42, "num_predict": 100})
    assert not cold
    assert load < 100_000_000
    cold, load = await run({"num_ctx": 8192})
    assert cold
    assert load >= 10_000_000_000
    [entry] = (await get_json(emu.url, "/api/ps"))["models"]
    assert entry["context_length"] == 8192
    assert emu.loaded()["llama3.2:latest"].options["num_ctx"] == 8192
    cold, _ = await run({"num_ctx": 8192, "temperature": 0.2})
    assert not cold
    cold, _ = await run()  # back to the default num_ctx: another reload
    assert cold
    cold, _ = await run({"num_batch": 256})
    assert cold


# ------------------------------------------------------------------------------ timing


async def test_fifo_slot_serialises_and_shows_wait_in_total(
    emulator_factory: EmulatorFactory,
) -> None:
    model = fast(chat_model, decode_tokens_per_second=200.0, output_tokens=20)
    emu = await emulator_factory([model])
    emu.preload("llama3.2")
    payload = {"model": "llama3.2", "messages": USER}
    first = asyncio.create_task(post(emu.url, "/api/chat", payload))
    await asyncio.sleep(0.01)
    second = await post(emu.url, "/api/chat", payload)
    await first
    rec1, rec2 = emu.records_for("/api/chat")
    assert rec1.done_written is not None
    assert rec2.first_chunk is not None
    assert rec2.first_chunk >= rec1.done_written
    final2 = second.objs()[-1]
    wait = final2["total_duration"] - sum(
        final2[k] for k in ("load_duration", "prompt_eval_duration", "eval_duration")
    )
    assert wait >= 0.8 * (rec1.done_written - rec2.arrived) * 1e9
    assert final2["load_duration"] < 20_000_000  # the slot wait is not load time

    # with two slots the requests overlap
    emu2 = await emulator_factory([model], num_parallel=2)
    emu2.preload("llama3.2")
    await asyncio.gather(*(post(emu2.url, "/api/chat", payload) for _ in range(2)))
    a, b = emu2.records_for("/api/chat")
    assert a.done_written is not None
    assert b.first_chunk is not None
    assert b.first_chunk < a.done_written


async def test_wire_decode_rate_within_one_percent(emulator_factory: EmulatorFactory) -> None:
    rate, n = 250.0, 100
    emu = await emulator_factory([fast(chat_model, decode_tokens_per_second=rate, output_tokens=n)])
    emu.preload("llama3.2")
    r = await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})
    times = [t for t, _ in r.lines[:-1]]
    assert len(times) == n
    wire_rate = (n - 1) / (times[-1] - times[0])
    assert abs(wire_rate / rate - 1) < 0.01
    final = r.objs()[-1]
    server_rate = (final["eval_count"] - 1) / final["eval_duration"] * 1e9
    assert abs(server_rate / rate - 1) < 0.01
    rec = emu.records[-1]
    assert rec.first_chunk is not None
    assert rec.last_token_chunk is not None
    assert abs((rec.last_token_chunk - rec.first_chunk) / ((n - 1) / rate) - 1) < 0.01
    assert rec.decode_interval == pytest.approx(1 / rate)
    # client arrival vs the emulator's ground truth on loopback
    assert 0 <= times[0] - rec.first_chunk < 0.005


async def test_socket_truth_under_eight_concurrent_streams(
    emulator_factory: EmulatorFactory,
) -> None:
    """The connection's stamps come before the handler's and belong to their own request (on
    kept-alive connections too), and they hold what a client sees: the handler starts after
    the request's bytes were read, a gap its own truth misses; the emulator keeps its decode
    schedule with eight streams in its loop."""
    rate, n = 100.0, 24
    model = fast(chat_model, decode_tokens_per_second=rate, output_tokens=n)
    emu = await emulator_factory([model], num_parallel=8)
    emu.preload("llama3.2")
    seen: dict[str, tuple[float, float]] = {}  # prompt → (sent, first line read)

    async def user(session: aiohttp.ClientSession, index: int) -> None:
        await asyncio.sleep(index * 0.03)  # arrivals meet streams already decoding
        for turn in range(3):
            prompt = f"user {index} turn {turn}"
            payload = {"model": "llama3.2", "messages": [{"role": "user", "content": prompt}]}
            sent = perf_counter()
            async with session.post(f"{emu.url}/api/chat", json=payload) as resp:
                await resp.content.readline()
                seen[prompt] = (sent, perf_counter())
                await resp.read()

    connector = aiohttp.TCPConnector(limit=8)  # each user's turns on one kept-alive connection
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(user(session, i) for i in range(8)))
    records = {r.body["messages"][0]["content"]: r for r in emu.records_for("/api/chat")}
    assert len(records) == len(seen) == 24
    assert len({r.peer for r in records.values()}) == 8
    gaps, misses = [], []
    for prompt, (sent, read) in seen.items():
        rec = records[prompt]
        assert rec.socket_arrived is not None and rec.socket_first_chunk is not None
        assert rec.first_chunk is not None
        assert sent <= rec.socket_arrived < rec.arrived  # its own bytes, before the handler
        assert rec.socket_first_chunk <= rec.first_chunk <= read
        socket_ttft = rec.socket_first_chunk - rec.socket_arrived
        handler_ttft = rec.first_chunk - rec.arrived
        client_ttft = read - sent
        assert client_ttft >= socket_ttft  # the truth never exceeds what a client can see
        gaps.append(client_ttft - socket_ttft)
        misses.append(client_ttft - handler_ttft)
    # What the handler's truth misses of the client's TTFT is more than the socket truth does
    # (it includes the handler starting late); what the socket truth misses is loopback transit.
    assert statistics.median(gaps) < statistics.median(misses)
    assert statistics.median(gaps) < 0.005
    # The decode schedule holds: tokens go out on time (a stall of the whole process shows in
    # every stream's worst token, hence medians) and the wire rate does not drift.
    assert statistics.median(r.token_late_max for r in records.values()) < 0.25 / rate
    spans = [r.last_token_chunk - r.first_chunk for r in records.values()
             if r.last_token_chunk is not None and r.first_chunk is not None]  # fmt: skip
    assert len(spans) == 24
    assert statistics.median(abs((n - 1) / span / rate - 1) for span in spans) < 0.01


async def test_prefix_cache_inflates_prefill_rate(emulator_factory: EmulatorFactory) -> None:
    emu = await emulator_factory([fast(chat_model, prefill_tokens_per_second=2000.0)])
    emu.preload("llama3.2")
    prompt = [{"role": "user", "content": " ".join(f"w{i}" for i in range(197))}]
    a = (await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": prompt})).objs()[-1]
    b = (await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": prompt})).objs()[-1]
    assert a["prompt_eval_count"] == b["prompt_eval_count"] == 200
    assert 99_000_000 <= a["prompt_eval_duration"] <= 110_000_000
    assert b["prompt_eval_duration"] < a["prompt_eval_duration"] / 20
    assert emu.records[-1].prompt_cached_tokens == 199
    unique = [{"role": "user", "content": "nonce " + prompt[0]["content"]}]
    c = (await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": unique})).objs()[-1]
    assert c["prompt_eval_duration"] >= 99_000_000  # only the role header was reusable


async def test_time_scale_shrinks_a_two_minute_load(emulator_factory: EmulatorFactory) -> None:
    emu = await emulator_factory([fast(chat_model, load_seconds=120.0)], time_scale=0.001)
    t0 = perf_counter()
    r = await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})
    assert perf_counter() - t0 < 0.5
    load = r.objs()[-1]["load_duration"]
    assert 120e9 <= load <= 120.5e9  # machine overhead is not magnified by the time scale
    rec = emu.records[-1]
    assert rec.cold_load
    assert 0.12 <= rec.load_seconds < 0.2


async def test_ground_truth_records(emu: OllamaEmulator) -> None:
    await post(emu.url, "/api/chat", {"model": "qwen3:8b", "messages": USER}, headers={"X-Id": "7"})
    rec = emu.records_for("/api/chat", "QWEN3:8b")[-1]
    assert (rec.method, rec.model, rec.status) == ("POST", "qwen3:8b", 200)
    assert rec.body == {"model": "qwen3:8b", "messages": USER}
    assert rec.headers["x-id"] == "7"
    assert rec.peer is not None
    assert rec.peer.startswith("127.0.0.1:")
    stamps = [
        rec.arrived, rec.runner_ready, rec.slot_acquired, rec.first_token, rec.headers_sent,
        rec.first_chunk, rec.first_content, rec.last_token_chunk, rec.done_written, rec.finished,
    ]  # fmt: skip
    assert all(s is not None for s in stamps)
    assert stamps == sorted(s for s in stamps if s is not None)
    assert rec.cold_load
    assert rec.load_seconds > 0.015
    assert rec.metrics["eval_count"] == rec.eval_count == 13
    assert rec.done_reason == "stop"


async def test_model_controls() -> None:
    emu = OllamaEmulator([fast(chat_model)])
    emu.preload("llama3.2", keep_alive=-1)  # before start: no event loop needed
    await emu.start()
    try:
        assert await ps_names(emu.url) == ["llama3.2:latest"]
        emu.add_model(fast(embedding_model, "mxbai-embed-large"))
        tags = await get_json(emu.url, "/api/tags")
        assert [m["name"] for m in tags["models"]] == [
            "llama3.2:latest",
            "mxbai-embed-large:latest",
        ]
        emu.unload("LLAMA3.2:latest")
        assert await ps_names(emu.url) == []
        emu.remove_model("llama3.2")
        r = await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})
        assert r.status == 404
        assert [x.status for x in emu.records_for("/api/chat", "llama3.2")] == [404]
        assert emu.records_for("/api/tags")[0].status == 200
    finally:
        await emu.close()


# ------------------------------------------------------------------------------ faults


async def test_fault_status_with_retry_after_and_times(emu: OllamaEmulator) -> None:
    emu.add_fault("llama3.2:latest", Fault("status", status=429, retry_after="30", times=2))
    payload = {"model": "llama3.2", "messages": USER}
    for _ in range(2):
        r = await post(emu.url, "/api/chat", payload)
        assert r.status == 429
        assert r.body == error_body(USAGE_LIMIT_MESSAGE)
        assert r.headers["retry-after"] == "30"
        assert r.headers["content-type"] == "application/json"  # error after streaming chosen
    assert (await post(emu.url, "/api/chat", payload)).status == 200
    emu.add_fault("LLAMA3.2", Fault("status", status=500, message="boom", times=-1))
    for _ in range(3):
        r = await post(emu.url, "/api/chat", {**payload, "stream": False})
        assert (r.status, r.body) == (500, error_body("boom"))
        assert r.headers["content-type"] == JSON_UTF8
    emu.clear_faults()
    assert (await post(emu.url, "/api/chat", payload)).status == 200


async def test_fault_paths_filter(emu: OllamaEmulator) -> None:
    emu.add_fault("nomic-embed-text", Fault("status", status=503, paths=("/api/embed",)))
    emu.add_fault("llama3.2", Fault("status", status=502, paths=("/api/generate",)))
    assert (await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})).status == 200
    gen = await post(emu.url, "/api/generate", {"model": "llama3.2", "prompt": "x"})
    assert gen.status == 502
    r = await post(emu.url, "/api/embed", {"model": "nomic-embed-text", "input": "x"})
    assert r.status == 503


async def test_fault_malformed_line(emu: OllamaEmulator) -> None:
    emu.add_fault("llama3.2", Fault("malformed_line", after_chunks=2))
    r = await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})
    lines = [line for _, line in r.lines]
    assert len(lines) == 10
    assert r.complete
    json.loads(lines[1])
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[2])
    assert json.loads(lines[-1])["done"] is True


async def test_fault_truncate(emu: OllamaEmulator) -> None:
    emu.add_fault("llama3.2", Fault("truncate", after_chunks=3))
    r = await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})
    assert r.status == 200
    assert r.complete
    assert [o["done"] for o in r.objs()] == [False] * 3


async def test_fault_error_line(emu: OllamaEmulator) -> None:
    emu.add_fault("llama3.2", Fault("error_line", after_chunks=2))
    r = await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})
    assert r.status == 200
    assert r.complete
    objs = r.objs()
    assert len(objs) == 3
    assert objs[-1] == {"error": "an error was encountered while running the model: unexpected EOF"}
    emu.add_fault("llama3.2", Fault("error_line", message="gpu fell off"))
    nb = await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER, "stream": False})
    assert (nb.status, nb.body) == (500, error_body("gpu fell off"))


async def test_fault_stall(emu: OllamaEmulator) -> None:
    emu.add_fault("llama3.2", Fault("stall", after_chunks=2, seconds=0.2))
    r = await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})
    times = [t for t, _ in r.lines]
    assert times[2] - times[1] >= 0.2
    assert times[1] - times[0] < 0.05
    assert times[3] - times[2] < 0.05
    assert r.objs()[-1]["done"] is True


async def test_fault_no_headers(emu: OllamaEmulator) -> None:
    emu.preload("llama3.2")
    emu.add_fault("llama3.2", Fault("no_headers", seconds=0.25))
    r = await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})
    assert r.headers_at is not None
    assert r.headers_at - r.sent_at >= 0.25
    assert r.objs()[-1]["done"] is True


async def test_fault_huge_line(emu: OllamaEmulator) -> None:
    size = 2 * 1024 * 1024
    emu.add_fault("llama3.2", Fault("huge_line", after_chunks=1, size=size))
    r = await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})
    lines = [line for _, line in r.lines]
    assert len(lines[1]) + 1 == size
    assert len(json.loads(lines[1])["message"]["content"]) > size - 200
    assert json.loads(lines[-1])["done"] is True


async def test_fault_reset(emu: OllamaEmulator) -> None:
    emu.add_fault("llama3.2", Fault("reset", after_chunks=2))
    r = await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})
    assert r.status == 200
    assert not r.complete
    assert r.error is not None
    assert emu.records[-1].status == 200
    emu.add_fault("llama3.2", Fault("reset"))
    r0 = await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})
    assert r0.status == 0
    assert r0.error is not None
    assert r0.headers_at is None
    assert emu.records[-1].status == 0
    # the emulator keeps serving
    assert (await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})).complete


async def test_fault_force_reload(emu: OllamaEmulator) -> None:
    emu.preload("llama3.2", keep_alive=-1)
    emu.add_fault("llama3.2", Fault("force_reload"))
    r = await post(emu.url, "/api/chat", {"model": "llama3.2", "messages": USER})
    assert emu.records[-1].cold_load
    assert r.objs()[-1]["load_duration"] >= 20_000_000
    assert emu.loaded()["llama3.2:latest"].keep_alive == 300  # a fresh runner


async def test_embed_faults(emu: OllamaEmulator) -> None:
    emu.add_fault("nomic-embed-text", Fault("malformed_line"))
    bad = await post(emu.url, "/api/embed", {"model": "nomic-embed-text", "input": "x"})
    assert bad.status == 200
    with pytest.raises(json.JSONDecodeError):
        bad.json()
    emu.add_fault("nomic-embed-text", Fault("truncate"))
    cut = await post(emu.url, "/api/embed", {"model": "nomic-embed-text", "input": "x"})
    assert cut.status == 200
    assert not cut.complete
    emu.add_fault("nomic-embed-text", Fault("huge_line", size=300_000))
    big = await post(emu.url, "/api/embed", {"model": "nomic-embed-text", "input": "x"})
    assert len(big.body) == 300_000
    assert len(big.json()["embeddings"][0]) == 768


# ------------------------------------------------------------------------------ embed


async def test_embed_shape_and_vectors(emu: OllamaEmulator) -> None:
    r = await post(emu.url, "/api/embed", {"model": "nomic-embed-text", "input": ["a b c", "d"]})
    assert r.status == 200
    assert r.headers["content-type"] == JSON_UTF8
    body = r.json()
    assert list(body) == ["model", "embeddings", "total_duration", "load_duration",
                          "prompt_eval_count"]  # fmt: skip
    assert body["model"] == "nomic-embed-text"
    assert body["prompt_eval_count"] == 5 + 3
    assert body["load_duration"] >= 20_000_000
    v1, v2 = body["embeddings"]
    assert len(v1) == len(v2) == 768
    assert v1 != v2
    assert math.isclose(math.fsum(x * x for x in v1), 1.0, rel_tol=1e-5)
    assert b"e-0" not in r.body  # Go cleans exponents; values print like 0.010071029
    again = (await post(emu.url, "/api/embed", {"model": "nomic-embed-text", "input": "d"})).json()
    assert again["embeddings"] == [v2]  # deterministic in the text
    cut = await post(
        emu.url, "/api/embed", {"model": "nomic-embed-text", "input": "d", "dimensions": 256}
    )
    [short] = cut.json()["embeddings"]
    assert len(short) == 256
    assert math.isclose(math.fsum(x * x for x in short), 1.0, rel_tol=1e-5)


@pytest.mark.parametrize("empty", [[], "", None])
async def test_embed_empty_input(emu: OllamaEmulator, empty: Any) -> None:
    payload: dict[str, Any] = {"model": "nomic-embed-text"}
    if empty is not None:
        payload["input"] = empty
    r = await post(emu.url, "/api/embed", payload)
    assert r.body == b'{"model":"nomic-embed-text","embeddings":[]}'
    assert "nomic-embed-text:latest" in emu.loaded()


# ------------------------------------------------------------------------------ auth / cloud


async def test_api_key_required(emulator_factory: EmulatorFactory) -> None:
    emu = await emulator_factory([fast(chat_model)], api_key="sekret")
    for headers in ({}, {"Authorization": "Bearer nope"}, {"x-api-key": "sekret"}):
        r = await raw_http(emu.url, "GET", "/api/tags", headers=headers)
        assert (r.status, r.body) == (401, b'{"error":"unauthorized"}')
        assert r.headers["content-type"] == JSON_UTF8
    ok = await raw_http(emu.url, "GET", "/api/tags", headers={"Authorization": "Bearer sekret"})
    assert ok.status == 200
    assert (await raw_http(emu.url, "GET", "/")).status == 200
    chat = await post(
        emu.url,
        "/api/chat",
        {"model": "llama3.2", "messages": USER},
        headers={"Authorization": "Bearer sekret"},
    )
    assert chat.objs()[-1]["done"] is True
    assert emu.records[-1].headers["authorization"] == "Bearer sekret"


async def test_cloud_mode(emulator_factory: EmulatorFactory) -> None:
    emu = await emulator_factory(
        [fast(chat_model, "gpt-oss:120b", load_seconds=5.0)], cloud=True, api_key="k"
    )
    auth = {"Authorization": "Bearer k"}
    ps = await raw_http(emu.url, "GET", "/api/ps", headers=auth)
    assert (ps.status, ps.body) == (404, b"404 page not found")
    r = await post(emu.url, "/api/chat", {"model": "gpt-oss:120b", "messages": USER}, headers=auth)
    final = r.objs()[-1]
    assert "load_duration" not in final
    assert final["total_duration"] > 0
    assert final["eval_count"] == 8
    assert not emu.records[-1].cold_load
    assert emu.loaded() == {}
    tags = await raw_http(emu.url, "GET", "/api/tags", headers=auth)
    assert [m["name"] for m in tags.json()["models"]] == ["gpt-oss:120b"]


async def test_local_cloud_stub_never_loads(emulator_factory: EmulatorFactory) -> None:
    emu = await emulator_factory([cloud_stub_model(output_tokens=4)])
    r = await post(emu.url, "/api/chat", {"model": "gpt-oss:120b-cloud", "messages": USER})
    assert "load_duration" not in r.objs()[-1]
    assert await ps_names(emu.url) == []
    show = (await post(emu.url, "/api/show", {"model": "gpt-oss:120b-cloud"})).json()
    assert show["remote_host"] == "https://ollama.com:443"
    assert set(show["model_info"]) == {
        "general.architecture",
        "general.parameter_count",
        "gptoss.context_length",
        "gptoss.embedding_length",
    }


# ------------------------------------------------------------------------------ encoders


def test_go_encoding_helpers() -> None:
    assert go_float(1e-7) == "1e-7"
    assert go_float(1e21) == "1e+21"
    assert go_float(1e20) == "100000000000000000000"
    assert go_float(500000.0) == "500000"
    assert go_float(0.1, 32) == "0.1"
    assert go_float(0.010071029, 32) == "0.010071029"
    assert rfc3339_nano(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"
    assert rfc3339_nano(1_700_000_000_000_000_000, timedelta(hours=2)) == (
        "2023-11-15T00:13:20+02:00"
    )
    assert parse_go_duration("1h30m") == 5400 * 10**9
    assert parse_go_duration("250ms") == 250 * 10**6
    assert parse_go_duration("1.5s") == 1_500_000_000
    assert parse_go_duration("-1m") == -60 * 10**9
    assert parse_go_duration("0") == 0
    for bad, message in [
        ("3600", 'time: missing unit in duration "3600"'),
        ("5x", 'time: unknown unit "x" in duration "5x"'),
        ("", 'time: invalid duration ""'),
        ("m", 'time: invalid duration "m"'),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_go_duration(bad)


async def test_module_entry_point_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    models = tmp_path / "models.json"
    models.write_text(json.dumps([{"name": "tiny:1b", "load_seconds": 0.0, "output_tokens": 2}]))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollama_emulator", "--port", "0", "--models", str(models),
        "--time-scale", "0.01", stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{url}/api/tags") as resp:
                assert [m["name"] for m in (await resp.json())["models"]] == ["tiny:1b"]
            async with s.post(f"{url}/api/chat", json={"model": "tiny:1b", "messages": USER}) as c:
                lines = [json.loads(line) async for line in c.content]
                assert lines[-1]["eval_count"] == 2
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
