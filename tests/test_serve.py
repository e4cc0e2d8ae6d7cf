"""``serve`` in-process: listens, answers, reloads on SIGHUP, stops on SIGTERM within the grace.

The signals go to this very process: ``serve`` installs its handlers on the running loop first
thing, and removes them when it returns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
from service import until

from ometer_exporter.config.load import load_settings
from ometer_exporter.config.settings import Overrides
from ometer_exporter.store.store import Store
from ometer_exporter.web.app import SHUTDOWN_GRACE, serve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, url: str, names: tuple[str, ...]) -> None:
    targets = "".join(f"  - {{name: {n}, url: {url}, select: loaded}}\n" for n in names)
    path.write_text(f"benchmark: {{interval: 1h}}\ntargets:\n{targets}")


def overrides_for(tmp_path: Path, url: str) -> Overrides:
    config = tmp_path / "config.yaml"
    write_config(config, url, ("local",))
    return Overrides(
        config_file=str(config),
        storage_path=str(tmp_path / "data"),
        listen_address=f"127.0.0.1:{free_port()}",
    )


async def stopped_within(task: asyncio.Task[None], seconds: float) -> float:
    started = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, timeout=10)
    elapsed = time.monotonic() - started
    assert elapsed < seconds, f"serve took {elapsed:.2f}s to stop"
    return elapsed


async def test_serve_answers_reloads_and_stops_on_sigterm(
    emulator_factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    emu = await emulator_factory()
    overrides = overrides_for(tmp_path, emu.url)
    task = asyncio.create_task(serve(load_settings(overrides, {}), overrides=overrides, env={},
                                     enable_lifecycle=True))  # fmt: skip
    url = f"http://{overrides.listen_address}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/-/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            deadline = time.monotonic() + 20
            while not await ready():
                assert not task.done(), task.exception()
                assert time.monotonic() < deadline, "serve never became ready"
                await asyncio.sleep(0.02)
            response = await http.get("/metrics")
            assert response.status_code == 200
            assert 'target="local"' in response.text

            write_config(Path(str(overrides.config_file)), emu.url, ("local", "second"))
            os.kill(os.getpid(), signal.SIGHUP)
            await until(lambda: "configuration reloaded: 2 target(s)" in caplog.text,
                        what="the SIGHUP reload")  # fmt: skip
            assert 'target="second"' in (await http.get("/metrics")).text
            reloaded = await http.post("/-/reload")
            assert (reloaded.status_code, reloaded.text) == (200, "Reloaded.\n")
    except BaseException:
        task.cancel()
        raise
    await stopped_within(task, 2 * SHUTDOWN_GRACE)
    assert "shutting down" in caplog.text
    async with httpx.AsyncClient(timeout=1) as http:
        with pytest.raises(httpx.TransportError):
            await http.get(url + "/-/healthy")


async def test_sigterm_during_start_up_still_stops(
    emulator_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = await emulator_factory()
    overrides = overrides_for(tmp_path, emu.url)
    restoring, release = asyncio.Event(), asyncio.Event()
    restore = Store.restore

    async def slow_restore(store: Store) -> None:
        restoring.set()
        await release.wait()
        await restore(store)

    monkeypatch.setattr(Store, "restore", slow_restore)
    task = asyncio.create_task(serve(load_settings(overrides, {}), overrides=overrides, env={}))
    await asyncio.wait_for(restoring.wait(), timeout=10)
    os.kill(os.getpid(), signal.SIGTERM)  # start-up is not over: not ready yet
    await asyncio.sleep(0.05)
    assert not task.done()
    release.set()
    await asyncio.wait_for(task, timeout=2 * SHUTDOWN_GRACE + 2)
