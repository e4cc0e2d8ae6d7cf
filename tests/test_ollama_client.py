"""The Ollama client against the emulator: parsing, auth, errors, phased deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from ollama_emulator import (
    Fault,
    chat_model,
    cloud_stub_model,
    embedding_model,
    thinking_model,
)

from ometer_exporter.client.errors import (
    OllamaAuthError,
    OllamaError,
    OllamaNotFound,
    OllamaRateLimited,
    OllamaTimeout,
)
from ometer_exporter.client.ollama import OllamaClient
from ometer_exporter.config.settings import Timeouts
from ometer_exporter.names import match_model, parse_parameter_size


async def test_inventory_endpoints(emulator_factory) -> None:
    emu = await emulator_factory(
        [
            chat_model("llama3.2:latest", parameter_count=3_212_749_888, context_length=131072),
            thinking_model("qwen3:8b"),
            embedding_model("nomic-embed-text:latest"),
            cloud_stub_model("gpt-oss:120b-cloud"),
        ],
        version="0.33.0",
    )
    emu.preload("qwen3:8b")
    async with OllamaClient(emu.url) as client:
        assert await client.version() == "0.33.0"
        tags = {t.name: t for t in await client.tags()}
        assert set(tags) == {
            "llama3.2:latest", "qwen3:8b", "nomic-embed-text:latest", "gpt-oss:120b-cloud",
        }  # fmt: skip
        llama = tags["llama3.2:latest"]
        assert llama.capabilities == ("completion", "tools")
        assert llama.context_length == 131072
        assert llama.modified_at is not None and llama.modified_at.utcoffset() is not None
        assert len(llama.digest) == 64
        assert tags["gpt-oss:120b-cloud"].is_cloud_passthrough
        assert not llama.is_cloud_passthrough
        show = await client.show("llama3.2")
        assert show.parameter_count == 3_212_749_888
        assert show.context_length == 131072
        assert show.architecture == "llama"
        embed = await client.show("nomic-embed-text")
        assert embed.capabilities == ("embedding",)
        loaded = await client.ps()
        assert [m.name for m in loaded] == ["qwen3:8b"]
        assert loaded[0].size_vram and loaded[0].expires_at is not None


async def test_bearer_key_sent_and_bad_key_is_auth(emulator_factory) -> None:
    emu = await emulator_factory([chat_model("gpt-oss:120b")], api_key="sk-right", cloud=True)
    async with OllamaClient(emu.url, api_key="sk-right") as client:
        assert [t.name for t in await client.tags()] == ["gpt-oss:120b"]
    assert emu.records[-1].headers["authorization"] == "Bearer sk-right"
    async with OllamaClient(emu.url, api_key="sk-wrong-SECRET") as client:
        with pytest.raises(OllamaAuthError) as info:
            await client.tags()
    assert info.value.status == 401 and "unauthorized" in str(info.value)


async def test_server_echoing_the_key_is_redacted(emulator_factory) -> None:
    emu = await emulator_factory([chat_model()])
    emu.preload("llama3.2:latest")
    secret = "sk-ometer-test-9f8e7d6c"
    emu.add_fault("llama3.2:latest", Fault(kind="status", status=500, message=f"bad {secret}"))
    async with OllamaClient(emu.url, api_key=secret) as client:
        with pytest.raises(OllamaError) as info:
            await client.chat("llama3.2:latest", [{"role": "user", "content": "hi"}], options={})
    assert secret not in str(info.value)
    assert "<redacted>" in str(info.value)


async def test_exact_error_texts_are_kept(emulator_factory) -> None:
    emu = await emulator_factory([chat_model()])
    async with OllamaClient(emu.url) as client:
        with pytest.raises(OllamaNotFound) as info:
            await client.chat("llama9:7b", [{"role": "user", "content": "hi"}], options={})
    assert str(info.value) == "/api/chat: HTTP 404: model 'llama9:7b' not found"


async def test_usage_limit_429(emulator_factory) -> None:
    emu = await emulator_factory([chat_model()])
    emu.add_fault("llama3.2:latest", Fault(kind="status", status=429))
    async with OllamaClient(emu.url) as client:
        with pytest.raises(OllamaRateLimited) as info:
            await client.chat("llama3.2:latest", [{"role": "user", "content": "hi"}], options={})
    assert info.value.usage_limit


async def test_retry_after_is_read(emulator_factory) -> None:
    emu = await emulator_factory([chat_model()])
    emu.add_fault("llama3.2:latest", Fault(kind="status", status=503, retry_after="7"))
    async with OllamaClient(emu.url) as client:
        with pytest.raises(OllamaError) as info:
            await client.chat("llama3.2:latest", [{"role": "user", "content": "hi"}], options={})
    assert info.value.status == 503 and info.value.retry_after == 7.0


async def test_connection_is_kept_alive_across_requests(emulator_factory) -> None:
    emu = await emulator_factory([chat_model()])
    emu.preload("llama3.2:latest")
    async with OllamaClient(emu.url) as client:
        for _ in range(3):
            await client.chat("llama3.2:latest", [{"role": "user", "content": "hi"}],
                              options={"num_predict": 4})  # fmt: skip
            await client.ps()
    peers = {r.headers.get("x-emulator-peer") or r.peer for r in emu.records}
    assert len(peers) == 1, peers


async def test_a_request_is_sent_when_its_headers_go_out(emulator_factory, monkeypatch) -> None:
    """A slow connect (here 200 ms before the TCP handshake) is the client's, not the
    server's: the TTFT starts when the request's headers start out, after it."""
    emu = await emulator_factory([chat_model(prefill_tokens_per_second=100_000.0)])
    emu.preload("llama3.2:latest")
    loop = asyncio.get_running_loop()
    connect = loop.create_connection

    async def slow_connect(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.2)
        return await connect(*args, **kwargs)

    monkeypatch.setattr(loop, "create_connection", slow_connect)
    async with OllamaClient(emu.url) as client:
        called = time.perf_counter()
        stream = await client.chat("llama3.2:latest", [{"role": "user", "content": "hi"}],
                                   options={"num_predict": 4})  # fmt: skip
    (rec,) = emu.records_for("/api/chat")
    assert rec.socket_arrived is not None and rec.socket_first_chunk is not None
    assert stream.sent_at - called >= 0.2  # after the connection was made
    assert stream.sent_at <= rec.socket_arrived  # and before the server read a byte
    assert stream.first_token_at is not None
    assert stream.first_token_at - stream.sent_at < 0.1


# -- phased deadlines ---------------------------------------------------------------------


def _timeouts(**kw: float) -> Timeouts:
    base = {"connect": 1.0, "first_byte": 5.0, "idle": 5.0, "total": 10.0}
    base.update(kw)
    return Timeouts(**base)


async def _chat_timeout(url: str, timeouts: Timeouts) -> tuple[OllamaTimeout, float]:
    async with OllamaClient(url, timeouts=timeouts) as client:
        started = time.perf_counter()
        with pytest.raises(OllamaTimeout) as info:
            await client.chat("llama3.2:latest", [{"role": "user", "content": "hi"}],
                              options={"num_predict": 100})  # fmt: skip
        return info.value, time.perf_counter() - started


async def test_a_server_that_compresses_when_asked_is_read(aiohttp_gzip_server: str) -> None:
    """A reverse proxy gzips whatever a client says it accepts; the client asks for identity."""
    async with OllamaClient(aiohttp_gzip_server) as client:
        tags = await client.tags()
    assert [t.name for t in tags] == ["llama3.2:latest"]


@pytest.fixture
async def aiohttp_gzip_server() -> AsyncIterator[str]:
    from aiohttp import web

    async def tags(request: web.Request) -> web.Response:
        response = web.json_response({"models": [{"name": "llama3.2:latest"}]})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        return response

    app = web.Application()
    app.router.add_get("/api/tags", tags)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_first_byte_deadline(emulator_factory) -> None:
    emu = await emulator_factory([chat_model()], time_scale=0.01)
    emu.preload("llama3.2:latest")
    emu.add_fault("llama3.2:latest", Fault(kind="no_headers", seconds=100.0))  # 1 s real
    error, elapsed = await _chat_timeout(emu.url, _timeouts(first_byte=0.3))
    assert error.phase == "first_byte"
    assert 0.3 <= elapsed < 0.6


async def test_a_long_cold_load_fits_in_first_byte(emulator_factory) -> None:
    # Headers come only after the load: 120 s (scaled to 0.6 s) must not trip idle.
    emu = await emulator_factory([chat_model(load_seconds=120.0)], time_scale=0.005)
    async with OllamaClient(emu.url, timeouts=_timeouts(first_byte=2.0, idle=0.2)) as client:
        stream = await client.chat("llama3.2:latest", [{"role": "user", "content": "hi"}],
                                   options={"num_predict": 4})  # fmt: skip
    assert stream.done.load_duration is not None
    assert stream.done.load_duration / 1e9 == pytest.approx(120.0, rel=0.05)


async def test_idle_deadline(emulator_factory) -> None:
    emu = await emulator_factory([chat_model()], time_scale=0.01)
    emu.preload("llama3.2:latest")
    emu.add_fault("llama3.2:latest", Fault(kind="stall", after_chunks=2, seconds=100.0))
    error, elapsed = await _chat_timeout(emu.url, _timeouts(idle=0.25))
    assert error.phase == "idle"
    assert 0.25 <= elapsed < 0.6


async def test_total_deadline_ends_a_slow_drip(emulator_factory) -> None:
    # 20 tok/s never idles 0.2 s, but 100 tokens take 5 s: the total deadline ends it.
    emu = await emulator_factory([chat_model(decode_tokens_per_second=20.0, output_tokens=100)])
    emu.preload("llama3.2:latest")
    error, elapsed = await _chat_timeout(emu.url, _timeouts(idle=0.2, total=0.5))
    assert error.phase == "total"
    assert 0.5 <= elapsed < 0.8


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A listening socket whose accept queue is full: new connections never complete."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        fillers.append(s)
    yield f"http://127.0.0.1:{port}"
    for s in fillers:
        s.close()
    server.close()


async def test_connect_deadline(blackhole: str) -> None:
    error, elapsed = await _chat_timeout(blackhole, _timeouts(connect=0.3))
    assert error.phase == "connect"
    assert 0.3 <= elapsed < 0.8


# -- naming helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "name", "expected"),
    [
        ("llama3.2", "llama3.2:latest", True),
        ("llama3.2", "llama3.2:1b", True),
        ("llama3.2:1b", "llama3.2:1b", True),
        ("llama3.2:1b", "llama3.2:latest", False),
        ("llama3", "llama3.2:latest", False),
        ("LLAMA3.2", "llama3.2:latest", True),
        ("user/model", "user/model:q4", True),
        ("", "llama3.2:latest", False),
    ],
)
def test_match_model(query: str, name: str, expected: bool) -> None:
    assert match_model(query, name) is expected


def test_parse_parameter_size() -> None:
    assert parse_parameter_size("8.2B") == 8_200_000_000
    assert parse_parameter_size("137M") == 137_000_000
    assert parse_parameter_size("") is None
    assert parse_parameter_size("big") is None
