"""The running exporter: the app (routes over one ``Exporter`` and its lifecycle) and ``serve``.

``create_app``, ``make_runner`` and ``listen`` are the three steps every way of running it
takes (``serve``, the tests): the listening socket goes through ``connections.ConnectionGuard``
and the request handlers get the header timeout (see ``web.connections`` for why so).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ometer_exporter.config.settings import Overrides, Settings
from ometer_exporter.web.auth import middleware
from ometer_exporter.web.connections import HEADER_TIMEOUT, ConnectionGuard, handler_args
from ometer_exporter.web.lifecycle import (
    EXPORTER,
    SHUTDOWN_GRACE,
    Exporter,
    exporter_context,
    settle_memory,
)
from ometer_exporter.web.routes import LIFECYCLE_API, OPENMETRICS_TYPE, TEXT_TYPE, add_routes

__all__ = [
    "EXPORTER",
    "GUARD",
    "OPENMETRICS_TYPE",
    "SHUTDOWN_GRACE",
    "TEXT_TYPE",
    "Exporter",
    "Listener",
    "create_app",
    "listen",
    "make_runner",
    "parse_listen_address",
    "serve",
    "settle_memory",
]

log = logging.getLogger(__name__)


GUARD = web.AppKey("connection_guard", ConnectionGuard)


def create_app(
    settings: Settings,
    *,
    overrides: Overrides,
    env: Mapping[str, str],
    enable_lifecycle: bool = False,
    guard: ConnectionGuard | None = None,
) -> web.Application:
    """The exporter's app: its ``Exporter`` (``app[EXPORTER]``) starts with the app and stops
    with it (``lifecycle.lifecycle`` as the app's ``cleanup_ctx``). ``enable_lifecycle``
    (``--web.enable-lifecycle``) opens ``POST /-/reload``; SIGHUP always reloads."""
    exporter = Exporter(settings, overrides=overrides, env=env)
    guard = guard or ConnectionGuard()
    app = web.Application(
        middlewares=[
            guard.middleware,  # outermost: a connection waiting for bcrypt is busy too
            middleware(lambda: exporter.web_config, lambda: exporter.auth),
        ]
    )
    app[EXPORTER] = exporter
    app[GUARD] = guard
    app[LIFECYCLE_API] = enable_lifecycle
    app.cleanup_ctx.append(exporter_context)
    add_routes(app)
    return app


def make_runner(app: web.Application, *, header_timeout: float = HEADER_TIMEOUT) -> web.AppRunner:
    """The app's runner: the shutdown grace of ``lifecycle``, no access log, the header
    timeout and the short log line per malformed request of ``web.connections``."""
    # The runner hands its other keyword arguments to every request handler.
    return web.AppRunner(
        app, shutdown_timeout=SHUTDOWN_GRACE, access_log=None, **handler_args(header_timeout)
    )


@dataclass(slots=True)
class Listener:
    """The listening socket(s) of a runner, made by ``listen``; closed before the runner."""

    server: asyncio.Server

    @property
    def addresses(self) -> list[Any]:
        return [sock.getsockname() for sock in self.server.sockets]

    def close(self) -> None:
        self.server.close()  # stop accepting; the runner's cleanup closes the connections


async def listen(
    runner: web.AppRunner,
    host: str | None,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> Listener:
    """Listen on ``host:port`` (all interfaces when None) through the app's connection guard
    (after ``runner.setup()``)."""
    server = runner.server
    if server is None:
        raise RuntimeError("listen after runner.setup()")
    guard = runner.app[GUARD]
    loop = asyncio.get_running_loop()
    # A TLS handshake comes before the request handler exists (the guard cannot count it yet):
    # it gets the header timeout too, not asyncio's 60 s.
    factory = guard.factory(server)
    if ssl_context is None:
        listening = await loop.create_server(factory, host, port, reuse_address=True)
    else:
        listening = await loop.create_server(factory, host, port, reuse_address=True,
                                             ssl=ssl_context,
                                             ssl_handshake_timeout=HEADER_TIMEOUT)  # fmt: skip
    return Listener(listening)


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """``:9877`` -> (None, 9877) (all interfaces); ``[::1]:9877`` -> ("::1", 9877)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    return (host or None), int(port)


async def serve(
    settings: Settings,
    *,
    overrides: Overrides,
    env: Mapping[str, str],
    enable_lifecycle: bool = False,
) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the configuration."""
    # Signals first: as PID 1 in a container, a SIGTERM during start-up must still stop us.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    app = create_app(settings, overrides=overrides, env=env, enable_lifecycle=enable_lifecycle)
    exporter = app[EXPORTER]
    reloads: set[asyncio.Task[str | None]] = set()  # held, or the loop may drop them mid-way

    def reload_on_hup() -> None:
        task = asyncio.create_task(exporter.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_on_hup)
    runner = make_runner(app)
    listener: Listener | None = None
    try:
        await runner.setup()  # the lifecycle starts: restoring from here on, in the background
        host, port = parse_listen_address(settings.listen_address)
        listener = await listen(runner, host, port, ssl_context=exporter.web_config.ssl_context)
        for bound in listener.addresses:
            log.info("listening on %s:%s", bound[0], bound[1])
        await exporter.wait_ready()
        log.info("ready: %d target(s)", len(settings.targets))
        await stop.wait()
        log.info("shutting down")
    finally:
        if listener is not None:
            listener.close()
        await runner.cleanup()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
