"""The running exporter: aiohttp routes over the store, lifecycle, reload and signals.

Handlers only read ``store.snapshot``; they never talk to Ollama (no URL from a request is ever
fetched) and heavy work (gzip, CSV/JSON of many rows) happens off the event loop or once per
snapshot.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Final

from aiohttp import web

from ometer_exporter import __version__
from ometer_exporter.config.checks import ConfigError
from ometer_exporter.config.load import load_settings
from ometer_exporter.config.settings import Overrides, Settings
from ometer_exporter.config.web_file import WebConfig, load_web_config
from ometer_exporter.loop.scheduler import Scheduler
from ometer_exporter.loop.selection import target_state
from ometer_exporter.measure.lag import LoopLagProbe
from ometer_exporter.store.records import Snapshot
from ometer_exporter.store.store import Store
from ometer_exporter.views import page
from ometer_exporter.views.exposition import Exposition
from ometer_exporter.views.query import ExportError, Query
from ometer_exporter.views.rows import rows, to_csv, to_json
from ometer_exporter.web.auth import BasicAuth, middleware

log = logging.getLogger(__name__)

SHUTDOWN_GRACE: Final = 1.5  # seconds; SIGTERM must end the process within 5 s
TEXT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class Exporter:
    """Settings, store, scheduler and exposition of one process; what the routes read."""

    def __init__(self, settings: Settings, *, overrides: Overrides, env: Mapping[str, str]):
        self.settings = settings
        self.overrides = overrides
        self.env = env
        self.store = Store(settings.storage.path, retention=settings.storage.retention)
        self.lag_probe = LoopLagProbe()
        self.scheduler = Scheduler(self.store, lag_probe=self.lag_probe)
        self.exposition = Exposition(loop_lag=self.lag_probe.worst_recent)
        self.web_config = load_web_config(settings.web_config_file)
        self.auth = BasicAuth(self.web_config.users) if self.web_config.users else None
        self.ready = False
        self.started_at = time.time()
        self._probe_task: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()

    async def start(self) -> None:
        """Restore stored results, then start the loop; ready from then on."""
        self._probe_task = asyncio.create_task(self.lag_probe.run(), name="ometer-loop-lag")
        self.store.set_targets(target_state(t) for t in self.settings.targets)
        await self.store.restore()
        await self.scheduler.apply(self.settings)
        settle_memory()
        self.ready = True

    async def reload(self) -> str | None:
        """Re-read the configuration; a bad file keeps the old one. Returns the problem, if any."""
        async with self._reload_lock:
            try:
                settings = await asyncio.to_thread(load_settings, self.overrides, self.env)
                web_config = await asyncio.to_thread(load_web_config, settings.web_config_file)
            except ConfigError as exc:
                log.error("configuration reload failed, keeping the old one: %s", exc)
                self.store.set_config_reload(False)
                return str(exc)
            if settings.storage != self.settings.storage:
                log.warning("storage settings change only on restart; keeping %s",
                            self.settings.storage.path)  # fmt: skip
            self.settings = settings
            self._apply_web_config(web_config)
            self.store.set_config_reload(True)
            await self.scheduler.apply(settings)
            log.info("configuration reloaded: %d target(s)", len(settings.targets))
            return None

    def _apply_web_config(self, new: WebConfig) -> None:
        """Users and headers apply at once; certificates from the next TLS handshake on."""
        if self.web_config.ssl_context is not None and new.cert_files is not None:
            self.web_config.ssl_context.load_cert_chain(*new.cert_files)
            new = replace(new, ssl_context=self.web_config.ssl_context)
        elif (self.web_config.ssl_context is None) != (new.ssl_context is None):
            log.warning("turning TLS on or off needs a restart; keeping the current setting")
            new = replace(new, ssl_context=self.web_config.ssl_context)
        self.web_config = new
        self.auth = BasicAuth(new.users) if new.users else None

    async def stop(self) -> None:
        self.ready = False
        await self.scheduler.stop(grace=SHUTDOWN_GRACE)
        if self._probe_task is not None:
            self._probe_task.cancel()
        await self.store.close()


def settle_memory() -> None:
    """Move everything alive after start-up out of the cyclic GC's reach.

    A full collection walks every tracked object: ~45,000 after the imports alone, 10 ms on
    these machines — a 10 ms freeze of every timestamp the loop takes, at random. Frozen, the
    imports, settings and restored results are never walked again.
    """
    gc.collect()
    gc.freeze()


EXPORTER: Final = web.AppKey("exporter", Exporter)


def create_app(exporter: Exporter) -> web.Application:
    app = web.Application(
        middlewares=[middleware(lambda: exporter.web_config, lambda: exporter.auth)]
    )
    app[EXPORTER] = exporter
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/export", export)
    app.router.add_get("/", landing)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    return app


def _accepts_gzip(request: web.Request) -> bool:
    for part in request.headers.get("Accept-Encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


async def metrics(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    openmetrics = "application/openmetrics-text" in request.headers.get("Accept", "")
    gzip = _accepts_gzip(request)
    body = await exporter.exposition.render(
        exporter.store.snapshot, openmetrics=openmetrics, gzip=gzip
    )
    response = web.Response(body=body)
    response.headers["Content-Type"] = OPENMETRICS_TYPE if openmetrics else TEXT_TYPE
    if gzip:
        response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept, Accept-Encoding"
    return response


async def export(request: web.Request) -> web.Response:
    params: dict[str, list[str]] = {}
    for key, value in request.query.items():
        params.setdefault(key, []).append(value)
    try:
        query = Query.parse(params)
    except ExportError as exc:
        return web.Response(status=400, text=f"bad request: {exc}\n")
    snapshot = request.app[EXPORTER].store.snapshot
    items = rows(snapshot, query)
    if query.format == "csv":
        text = await asyncio.to_thread(to_csv, items)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return web.Response(
            text=text,
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="ometer-{stamp}.csv"'},
        )
    text = await asyncio.to_thread(to_json, items)
    return web.Response(text=text, content_type="application/json", charset="utf-8")


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    if request.app[EXPORTER].ready:
        return web.Response(text="Ready.\n")
    return web.Response(status=503, text="Not ready: restoring results or starting the loop.\n")


async def reload(request: web.Request) -> web.Response:
    problem = await request.app[EXPORTER].reload()
    if problem is not None:
        return web.Response(status=500, text=f"reload failed, old configuration kept:\n{problem}\n")
    return web.Response(text="Reloaded.\n")


async def landing(request: web.Request) -> web.Response:
    snapshot = request.app[EXPORTER].store.snapshot
    text = await asyncio.to_thread(render_landing, snapshot)  # a big table: off the loop
    return web.Response(
        text=text,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": page.CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


def render_landing(snapshot: Snapshot) -> str:
    return page.render(snapshot, version=__version__)


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """``:9877`` -> (None, 9877) (all interfaces); ``[::1]:9877`` -> ("::1", 9877)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    return (host or None), int(port)


async def serve(
    settings: Settings, *, overrides: Overrides, env: Mapping[str, str]
) -> None:  # pragma: no cover - exercised by the subprocess tests
    """Run until SIGTERM/SIGINT; SIGHUP reloads the configuration."""
    # Signals first: as PID 1 in a container, a SIGTERM during start-up must still stop us.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    exporter = Exporter(settings, overrides=overrides, env=env)
    reloads: set[asyncio.Task[str | None]] = set()  # held, or the loop may drop them mid-way

    def reload_on_hup() -> None:
        task = asyncio.create_task(exporter.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_on_hup)
    app = create_app(exporter)
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_GRACE, access_log=None)
    await runner.setup()
    host, port = parse_listen_address(settings.listen_address)
    site = web.TCPSite(
        runner,
        host,
        port,
        shutdown_timeout=SHUTDOWN_GRACE,
        ssl_context=exporter.web_config.ssl_context,
    )
    await site.start()
    for address in runner.addresses:
        log.info("listening on %s:%s", address[0], address[1])
    try:
        await exporter.start()
        log.info("ready: %d target(s)", len(settings.targets))
        await stop.wait()
        log.info("shutting down")
    finally:
        await exporter.stop()
        await runner.cleanup()
