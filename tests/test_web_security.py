"""exporter-toolkit web configuration: TLS and bcrypt basic auth on every endpoint."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from pathlib import Path

import bcrypt
import httpx
import pytest
from ollama_emulator import chat_model

from ometer_exporter.cli.main import main

ENDPOINTS = ["/metrics", "/export", "/", "/-/healthy", "/-/ready"]


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
