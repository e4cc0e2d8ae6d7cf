"""exporter-toolkit web configuration: TLS and bcrypt basic auth on every endpoint."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import subprocess
import time
from pathlib import Path

import bcrypt
import httpx
import pytest
from ollama_emulator import chat_model

from ometer_exporter.cli.main import main
from ometer_exporter.web.app import GUARD

ENDPOINTS = ["/metrics", "/export", "/api/history", "/", "/-/healthy", "/-/ready"]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def web_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return path


def hashed(password: str, rounds: int = 4) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()


def config(url: str) -> str:
    return f"targets:\n  - name: local\n    url: {url}\n"


async def test_tls_with_a_real_client(emulator_factory, start_exporter, certificate,
                                      tmp_path) -> None:  # fmt: skip
    cert, key = certificate
    emu = await emulator_factory([chat_model()])
    path = web_config(tmp_path, f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
                                "  min_version: TLS12\n")  # fmt: skip
    context = ssl.create_default_context(cafile=str(cert))
    running = await start_exporter(config(emu.url), web_config=path, verify=context)
    assert running.url.startswith("https://")
    for endpoint in ENDPOINTS:
        assert (await running.http.get(endpoint)).status_code == 200, endpoint
    async with httpx.AsyncClient(verify=True) as untrusting:  # system CAs: ours is unknown
        with pytest.raises(httpx.ConnectError):
            await untrusting.get(running.url + "/metrics")
    plain = running.url.replace("https://", "http://")
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.HTTPError):
            await http.get(plain + "/metrics")


async def test_basic_auth_on_every_endpoint(emulator_factory, start_exporter,
                                            tmp_path) -> None:  # fmt: skip
    emu = await emulator_factory([chat_model()])
    users = f"basic_auth_users:\n  prometheus: '{hashed('s3cret')}'\n"
    headers = "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
    path = web_config(tmp_path, users + headers)
    running = await start_exporter(config(emu.url), web_config=path)
    http = running.http
    for endpoint in ENDPOINTS:
        missing = await http.get(endpoint)
        assert missing.status_code == 401, endpoint
        assert missing.headers["www-authenticate"].startswith("Basic ")
        assert (await http.get(endpoint, auth=("prometheus", "wrong"))).status_code == 401
        assert (await http.get(endpoint, auth=("nobody", "s3cret"))).status_code == 401
        ok = await http.get(endpoint, auth=("prometheus", "s3cret"))
        assert ok.status_code == 200, endpoint
        assert ok.headers["x-frame-options"] == "deny"
    garbage = await http.get("/metrics", headers={"Authorization": "Basic !!!not-base64"})
    assert garbage.status_code == 401
    reload = await http.post("/-/reload")
    assert reload.status_code == 401  # reload is protected too


async def test_bcrypt_is_cached_and_off_the_loop(emulator_factory, start_exporter, tmp_path,
                                                 monkeypatch) -> None:  # fmt: skip
    import ometer_exporter.web.auth as webconfig

    emu = await emulator_factory([chat_model()])
    # A realistic cost (12 rounds: ~0.2 s of CPU per check).
    path = web_config(tmp_path, f"basic_auth_users:\n  p: '{hashed('pw', rounds=12)}'\n")
    running = await start_exporter(config(emu.url), web_config=path)
    calls = []
    real = webconfig._verify

    def counting(password: bytes, hashed_pw: bytes | None, dummy: bytes) -> bool:
        calls.append(1)
        return real(password, hashed_pw, dummy)

    monkeypatch.setattr(webconfig, "_verify", counting)
    loop = asyncio.get_running_loop()
    worst = 0.0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal worst
        while not stop.is_set():
            expected = loop.time() + 0.005
            await asyncio.sleep(0.005)
            worst = max(worst, loop.time() - expected)

    watcher = asyncio.create_task(watch())
    started = time.perf_counter()
    assert (await running.http.get("/metrics", auth=("p", "pw"))).status_code == 200
    first = time.perf_counter() - started
    stop.set()
    await watcher
    for _ in range(5):
        assert (await running.http.get("/metrics", auth=("p", "pw"))).status_code == 200
    assert calls == [1]  # one bcrypt check for six requests
    assert first > 0.05  # the check really ran bcrypt…
    assert worst < 0.05  # …in a worker thread: the event loop kept ticking


def test_bad_web_config_exits_2_listing_problems(tmp_path, capsys) -> None:
    path = web_config(tmp_path, "tls_server_config:\n  cert_file: /no/such.crt\n"
                                "  key_file: /no/such.key\n  min_version: TLS9\n"
                                "basic_auth_users:\n  alice: plaintext-password\n"
                                "colour: blue\n")  # fmt: skip
    code = main(["--config.check", "--web.config.file", str(path)], env={})
    err = capsys.readouterr().err
    assert code == 2
    assert "colour: unknown key" in err
    assert "cannot load cert_file /no/such.crt" in err
    assert "basic_auth_users.alice: not a bcrypt hash" in err
    assert "plaintext-password" not in err


# -- the server's own limits -------------------------------------------------------------------


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _closed_after(reader: asyncio.StreamReader, within: float) -> float:
    """Seconds until the server closes the connection (EOF or reset); fails after ``within``."""
    started = time.monotonic()
    try:
        data = await asyncio.wait_for(reader.read(65536), timeout=within)
    except ConnectionResetError:
        data = b""
    assert data == b"", data[:200]
    return time.monotonic() - started


async def test_half_sent_and_dripped_requests_are_closed_at_the_header_timeout(
    emulator_factory, start_exporter
) -> None:
    emu = await emulator_factory([chat_model()])
    running = await start_exporter(config(emu.url), header_timeout=0.5)
    half_reader, half = await _connect(running.url)
    half.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    drip_reader, drip = await _connect(running.url)

    async def dribble() -> None:  # a byte every 50 ms: data keeps coming, headers never end
        with contextlib.suppress(ConnectionError):
            for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 200:
                drip.write(bytes([byte]))
                await drip.drain()
                await asyncio.sleep(0.05)

    dribbler = asyncio.create_task(dribble())
    waited = await asyncio.gather(_closed_after(half_reader, 5), _closed_after(drip_reader, 5))
    dribbler.cancel()
    for writer in (half, drip):
        writer.close()
    # Closed at the timeout (0.5 s, aiohttp rounds its timers up to the next second past 5 s
    # only), not held open: without the timeout both would stay open for an hour.
    assert all(0.3 < w < 2.0 for w in waited), waited
    assert (await running.http.get("/metrics")).status_code == 200


async def test_idle_connections_past_the_cap_do_not_stop_a_scrape(
    emulator_factory, start_exporter
) -> None:
    emu = await emulator_factory([chat_model()])
    running = await start_exporter(config(emu.url), max_connections=8)
    idle = [await _connect(running.url) for _ in range(30)]
    for _, writer in idle:
        writer.write(b"GET / HTTP/1.1\r\n")  # half-sent: each holds a descriptor
    await asyncio.sleep(0.05)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=running.url, timeout=5) as fresh:
        response = await fresh.get("/metrics")
    assert response.status_code == 200 and 'target="local"' in response.text
    assert time.monotonic() - started < 2.0
    closed = 0
    for reader, writer in idle:
        try:
            data = await asyncio.wait_for(reader.read(1), timeout=0.2)
            closed += data == b""
        except ConnectionResetError:
            closed += 1
        except TimeoutError:
            pass
        writer.close()
    guard = running.runner.app[GUARD]
    assert closed >= 30 - 8 + 1  # the oldest idle ones made room (for the scrape too)
    assert guard.evicted == closed and guard.refused == 0


async def test_a_malformed_request_line_is_one_short_log_line(emulator_factory, start_exporter,
                                                              caplog) -> None:  # fmt: skip
    emu = await emulator_factory([chat_model()])
    running = await start_exporter(config(emu.url))
    caplog.set_level(logging.DEBUG)
    reader, writer = await _connect(running.url)
    nasty = b"GET /\x01\x1b[2J" + b"A" * 4000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    writer.write(nasty)
    answer = await asyncio.wait_for(reader.read(65536), timeout=5)
    writer.close()
    assert answer.startswith(b"HTTP/1.0 400")
    lines = [r for r in caplog.records if r.name.startswith(("aiohttp", "ometer_exporter.web"))]
    assert len(lines) == 1, [r.getMessage()[:200] for r in lines]
    message = lines[0].getMessage()
    assert lines[0].exc_info is None and lines[0].exc_text is None  # no traceback
    assert len(message) < 300 and "\x1b" not in message and "AAAAAAAAAA" * 20 not in message


# -- POST /-/reload -----------------------------------------------------------------------------


async def test_reload_needs_the_lifecycle_flag(emulator_factory, start_exporter) -> None:
    emu = await emulator_factory([chat_model()])
    off = await start_exporter(config(emu.url))
    refused = await off.http.post("/-/reload")
    assert refused.status_code == 403
    assert "--web.enable-lifecycle" in refused.text and "SIGHUP" in refused.text
    on = await start_exporter(config(emu.url), enable_lifecycle=True)
    assert (await on.http.post("/-/reload")).status_code == 200
    host = on.url.removeprefix("http://")
    same = await on.http.post("/-/reload", headers={"Origin": on.url})
    assert same.status_code == 200
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):  # fmt: skip
        response = await on.http.post("/-/reload", headers=headers)
        assert response.status_code == 403, headers
        assert "Cross-site reload refused" in response.text
    assert host  # the same-origin case above used this host


def test_main_has_the_lifecycle_flag() -> None:
    from ometer_exporter.cli.main import build_parser

    assert build_parser().parse_args(["--web.enable-lifecycle"]).enable_lifecycle is True
    assert build_parser().parse_args([]).enable_lifecycle is False


# -- auth timing -------------------------------------------------------------------------------


async def test_unknown_user_costs_as_much_as_the_costliest_user() -> None:
    from ometer_exporter.web.auth import BasicAuth, cost, dummy_hash

    users = {"cheap": hashed("a", rounds=4).encode(), "dear": hashed("b", rounds=12).encode()}
    assert cost(dummy_hash(users)) == 12
    assert cost(dummy_hash({})) == 10
    auth = BasicAuth(users)

    async def timed(user: str, password: str) -> float:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        started = time.perf_counter()
        assert await auth.check(f"Basic {token}") is False
        return time.perf_counter() - started

    wrong_password = await timed("dear", "wrong")
    unknown_user = await timed("nobody", "wrong")
    # Both pay cost 12 (~0.2-0.4 s); a fixed cost 10 would be a quarter of it.
    assert unknown_user > 0.6 * wrong_password, (unknown_user, wrong_password)
