"""Run the exporter in-process on a loopback port, configured from a real YAML file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest_asyncio
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from ometer_exporter.config.load import load_settings
from ometer_exporter.config.settings import Overrides
from ometer_exporter.web.app import EXPORTER, Exporter, Listener, create_app, listen, make_runner
from ometer_exporter.web.connections import ConnectionGuard


@dataclass
class Running:
    exporter: Exporter
    url: str
    http: httpx.AsyncClient
    config: Path
    runner: web.AppRunner
    listener: Listener
    stopped: bool = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.http.aclose()
            self.listener.close()
            await self.runner.cleanup()  # the app's lifecycle stops the exporter

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Samples of /metrics: (name, sorted labels) -> value."""
        response = await self.http.get("/metrics")
        assert response.status_code == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }

    async def cycles(self, target: str, count: int, within: float = 20.0) -> None:
        """Wait until the target's worker finished ``count`` cycles."""
        await until(
            lambda: (
                (w := self.exporter.scheduler.workers.get(target)) is not None and w.cycles >= count
            ),
            within=within,
            what=f"{count} cycle(s) of {target}",
        )


async def until(predicate: Callable[[], object], *, within: float = 20.0, what: str) -> None:
    """Poll a condition (state, not time): fails with a message when it never holds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


def sample(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))


Start = Callable[..., Awaitable[Running]]


@pytest_asyncio.fixture
async def start_exporter(tmp_path: Path) -> AsyncIterator[Start]:
    """``await start_exporter(yaml_text, storage=...)`` -> a running exporter (stopped after)."""
    running: list[Running] = []

    async def start(
        yaml_text: str,
        *,
        storage: Path | None = None,
        env: dict[str, str] | None = None,
        web_config: Path | None = None,
        verify: object = True,
        enable_lifecycle: bool = False,
        header_timeout: float | None = None,
        max_connections: int | None = None,
    ) -> Running:
        config = tmp_path / f"config-{len(running)}.yaml"
        config.write_text(yaml_text)
        overrides = Overrides(
            config_file=str(config),
            storage_path=str(storage or tmp_path / "data"),
            web_config_file=str(web_config) if web_config else None,
        )
        environ = env or {}
        settings = load_settings(overrides, environ)
        guard = ConnectionGuard(max_connections) if max_connections else None
        app = create_app(settings, overrides=overrides, env=environ,
                         enable_lifecycle=enable_lifecycle, guard=guard)  # fmt: skip
        exporter = app[EXPORTER]
        runner = (
            make_runner(app) if header_timeout is None else
            make_runner(app, header_timeout=header_timeout)
        )  # fmt: skip
        await runner.setup()
        tls = exporter.web_config.ssl_context
        listener = await listen(runner, "127.0.0.1", 0, ssl_context=tls)
        port = listener.addresses[0][1]
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        await exporter.wait_ready()
        http = httpx.AsyncClient(base_url=url, timeout=10, verify=verify)  # type: ignore[arg-type]
        result = Running(exporter, url, http, config, runner, listener)
        running.append(result)
        return result

    yield start
    for result in running:
        await result.stop()
