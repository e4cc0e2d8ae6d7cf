"""The running exporter: the app (routes over one ``Exporter`` and its lifecycle) and ``serve``."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping

from aiohttp import web

from ometer_exporter.config.settings import Overrides, Settings
from ometer_exporter.web.auth import middleware
from ometer_exporter.web.lifecycle import (
    EXPORTER,
    SHUTDOWN_GRACE,
    Exporter,
    exporter_context,
    settle_memory,
)
from ometer_exporter.web.routes import OPENMETRICS_TYPE, TEXT_TYPE, add_routes

__all__ = [
    "EXPORTER",
    "OPENMETRICS_TYPE",
    "SHUTDOWN_GRACE",
    "TEXT_TYPE",
    "Exporter",
    "create_app",
    "parse_listen_address",
    "serve",
    "settle_memory",
]

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, *, overrides: Overrides, env: Mapping[str, str]
) -> web.Application:
    """The exporter's app: its ``Exporter`` (``app[EXPORTER]``) starts with the app and stops
    with it (``lifecycle.lifecycle`` as the app's ``cleanup_ctx``)."""
    exporter = Exporter(settings, overrides=overrides, env=env)
    app = web.Application(
        middlewares=[middleware(lambda: exporter.web_config, lambda: exporter.auth)]
    )
    app[EXPORTER] = exporter
    app.cleanup_ctx.append(exporter_context)
    add_routes(app)
    return app


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """``:9877`` -> (None, 9877) (all interfaces); ``[::1]:9877`` -> ("::1", 9877)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    return (host or None), int(port)


async def serve(settings: Settings, *, overrides: Overrides, env: Mapping[str, str]) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the configuration."""
    # Signals first: as PID 1 in a container, a SIGTERM during start-up must still stop us.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    app = create_app(settings, overrides=overrides, env=env)
    exporter = app[EXPORTER]
    reloads: set[asyncio.Task[str | None]] = set()  # held, or the loop may drop them mid-way

    def reload_on_hup() -> None:
        task = asyncio.create_task(exporter.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_on_hup)
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_GRACE, access_log=None)
    try:
        await runner.setup()  # the lifecycle starts: restoring from here on, in the background
        await _listen(runner, settings.listen_address, exporter)
        await exporter.wait_ready()
        log.info("ready: %d target(s)", len(settings.targets))
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)


async def _listen(runner: web.AppRunner, address: str, exporter: Exporter) -> None:
    host, port = parse_listen_address(address)
    site = web.TCPSite(
        runner,
        host,
        port,
        ssl_context=exporter.web_config.ssl_context,
    )
    await site.start()
    for bound in runner.addresses:
        log.info("listening on %s:%s", bound[0], bound[1])
