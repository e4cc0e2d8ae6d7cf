"""The exporter's lifecycle, in one place: what runs while the app runs, and in which order.

``Exporter`` holds what the routes read (settings, store, scheduler, exposition, web config,
readiness) and reloads the configuration. ``lifecycle`` owns everything that starts and stops:
it is the app's ``cleanup_ctx`` (``web.app.create_app``), so every way of running the app —
``serve``, the tests, the perf scripts — starts and stops it the same way:

1. the loop-lag probe starts (``Scheduler.started``);
2. in the background, while the server already answers (``/-/ready`` 503): the stored results
   are restored (and their history encoded for the page, in a task of its own), the scheduler
   starts its workers, start-up memory is frozen; ready;
3. on the way out: not ready; start-up is let finish; the workers stop within
   ``SHUTDOWN_GRACE``; the probe stops; the store closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Final

from aiohttp import web

from ometer_exporter.config.checks import ConfigError
from ometer_exporter.config.load import load_settings
from ometer_exporter.config.settings import Overrides, Settings
from ometer_exporter.config.web_file import WebConfig, load_web_config
from ometer_exporter.loop.scheduler import Scheduler
from ometer_exporter.loop.selection import target_state
from ometer_exporter.store.store import Store
from ometer_exporter.views import history
from ometer_exporter.views.exposition import Exposition
from ometer_exporter.web.auth import BasicAuth

# The logger of the whole web stage's lines (reload, start-up), as operators know them.
log = logging.getLogger("ometer_exporter.web.app")

SHUTDOWN_GRACE: Final = 1.5  # seconds; SIGTERM must end the process within 5 s


class Exporter:
    """Settings, store, scheduler and exposition of one process; what the routes read."""

    def __init__(self, settings: Settings, *, overrides: Overrides, env: Mapping[str, str]):
        self.settings = settings
        self.overrides = overrides
        self.env = env
        self.store = Store(settings.storage.path, retention=settings.storage.retention)
        self.scheduler = Scheduler(self.store)
        self.lag_probe = self.scheduler.lag_probe
        self.exposition = Exposition(loop_lag=self.lag_probe.worst_recent)
        self.web_config = load_web_config(settings.web_config_file)
        self.auth = BasicAuth(self.web_config.users) if self.web_config.users else None
        self.history_cache = history.HistoryCache()  # ``/api/history``'s encoded series
        self.ready = False
        self._starting: asyncio.Task[None] | None = None
        self._warming: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()

    async def wait_ready(self) -> None:
        """Until start-up finished (restore, workers started); raises what made it fail."""
        if self._starting is None:
            raise RuntimeError("the exporter is not running: start its app (create_app)")
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        self.store.set_targets(target_state(t) for t in self.settings.targets)
        await self.store.restore()
        self.warm_history()
        await self.scheduler.apply(self.settings)
        settle_memory()
        self.ready = True

    def warm_history(self) -> None:
        """Encode the restored history for the page's sparklines, in the background."""
        self._warming = asyncio.create_task(
            history.warm(self.store, self.history_cache), name="ometer-history-warm"
        )

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


def settle_memory() -> None:
    """Move everything alive after start-up out of the cyclic GC's reach.

    A full collection walks every tracked object: ~45,000 after the imports alone, 10 ms on
    these machines — a 10 ms freeze of every timestamp the loop takes, at random. Frozen, the
    imports, settings and restored results are never walked again.
    """
    gc.collect()
    gc.freeze()


EXPORTER: Final = web.AppKey("exporter", Exporter)


@contextlib.asynccontextmanager
async def lifecycle(exporter: Exporter) -> AsyncIterator[Exporter]:
    """The exporter runs inside (see the module's docstring for the order)."""
    async with exporter.scheduler.started(grace=SHUTDOWN_GRACE):
        starting = asyncio.create_task(exporter._start(), name="ometer-start")
        exporter._starting = starting
        try:
            yield exporter
        finally:
            exporter.ready = False
            # A stop during start-up waits for it: restore and apply are not cut in half.
            await asyncio.wait([starting])
            if exporter._warming is not None:
                await asyncio.wait([exporter._warming])  # a read in a thread: not cut off
            if not starting.cancelled() and starting.exception() is not None:
                log.debug("start-up had failed: %s", starting.exception())


async def exporter_context(app: web.Application) -> AsyncIterator[None]:
    """``lifecycle`` as an aiohttp ``cleanup_ctx`` of an app made by ``create_app``."""
    async with lifecycle(app[EXPORTER]):
        yield
