"""A target's load sweeps (``benchmark.capacity``): when a model's sweep runs — once per
``interval`` per model, starting only inside the ``window`` (local time), and like every
benchmark only on an idle model (the worker checks that) —, on which models (local chat models
the target measures), and what becomes of one (stored, persisted, logged). A sweep that met
someone else's traffic or could not load the model is tried again sooner
(:data:`RETRY_AFTER_ABORT`, at most the interval).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Final

from ometer_exporter.client.engine import EngineClient
from ometer_exporter.config.capacity import in_window, window_start
from ometer_exporter.config.settings import CapacitySettings, TargetSettings
from ometer_exporter.loop.inventory import known_cold
from ometer_exporter.loop.outcome import describe_level, describe_sweep
from ometer_exporter.loop.selection import wanted
from ometer_exporter.measure.capacity import Level, OnLevel, Sweep
from ometer_exporter.measure.lag import LoopLagProbe
from ometer_exporter.measure.model import measure_capacity
from ometer_exporter.measure.results import model_kind
from ometer_exporter.store.store import Store

log = logging.getLogger(__name__)

RETRY_AFTER_ABORT: Final = 1800.0  # seconds before a contended or failed sweep is tried again
_DAY_MINUTES: Final = 24 * 60


def local_minutes(when: float) -> int:
    """Minutes after local midnight at Unix time ``when``."""
    t = time.localtime(when)
    return t.tm_hour * 60 + t.tm_min


class SweepSchedule:
    """Each model's next sweep, for one target."""

    def __init__(self, settings: CapacitySettings) -> None:
        self.settings = settings
        self._due: dict[str, float] = {}  # model -> Unix time (absent: never swept: due now)

    def restore(self, finished: Mapping[str, float]) -> None:
        """Stored sweeps (a restart): each model due one interval after its last one."""
        self._due = {m: at + self.settings.interval for m, at in finished.items()}

    def is_due(self, model: str, now: float) -> bool:
        return now >= self._due.get(model, 0.0)

    def may_start(self, now: float) -> bool:
        return in_window(self.settings.window, local_minutes(now))

    def next_start(self, model: str, now: float) -> float:
        """When the model's next sweep may start: due, and inside the window."""
        at = max(now, self._due.get(model, 0.0))
        opens = window_start(self.settings.window)
        if opens is None or self.may_start(at):
            return at
        minute = at - time.localtime(at).tm_sec  # the start of at's minute
        return minute + 60 * ((opens - local_minutes(at)) % _DAY_MINUTES)

    def after(self, model: str, sweep: Sweep) -> None:
        """A sweep ended: the next one is an interval later, sooner when it was cut short by
        someone's traffic or a failed load (nothing was learnt)."""
        wait = self.settings.interval
        if sweep.aborted in ("contended", "load_failed"):
            wait = min(wait, RETRY_AFTER_ABORT)
        self._due[model] = sweep.finished_at + wait


class TargetSweeps:
    """One target's sweeps: which models, which are due now, and running one."""

    def __init__(self, target: TargetSettings, store: Store) -> None:
        self.target = target
        self.store = store
        self.schedule = SweepSchedule(target.benchmark.capacity)

    def restore(self) -> None:
        """Stored sweeps (a restart): each model due one interval after its last one."""
        self.schedule.restore({
            model: entry.capacity.finished_at
            for (target, model), entry in self.store.snapshot.models.items()
            if target == self.target.name and entry.capacity is not None
        })  # fmt: skip

    def sweepable(self, name: str, cloud_models: Collection[str]) -> bool:
        """Whether a load sweep may run on ``name``: a local chat model its target measures (a
        cloud model's capacity is not ours to load-test, an embedding model has no tokens)."""
        if self.target.cloud or name in cloud_models or not wanted(self.target, name):
            return False
        entry = self.store.snapshot.models.get((self.target.name, name))
        caps = entry.inventory.capabilities if entry and entry.inventory else ()
        return model_kind(caps) == "chat"

    def due(self, models: Iterable[str], cloud_models: Collection[str]) -> list[str]:
        """The sweepable models whose sweep is due and may start now (none outside the
        window); every sweepable model's next start goes to the store, for the page."""
        if not self.target.benchmark.capacity.enabled:
            return []
        now = time.time()
        names = [name for name in models if self.sweepable(name, cloud_models)]
        self.store.set_capacity_due(
            self.target.name, {m: self.schedule.next_start(m, now) for m in names}
        )
        if not self.schedule.may_start(now):
            return []
        return [
            n for n in names
            if self.schedule.is_due(n, now) and not known_cold(self.store, self.target, n)
        ]  # fmt: skip

    def _level(self, model: str, level: Level, then: OnLevel | None) -> None:
        log.debug("target %s: load sweep of %s: level %s",
                  self.target.name, model, describe_level(level))  # fmt: skip
        if then is not None:
            then(level)

    async def run(
        self,
        client: EngineClient,
        model: str,
        *,
        allow_load: bool,
        lag_probe: LoopLagProbe | None,
        pause: float,
        on_level: OnLevel | None = None,
    ) -> Sweep | None:
        """One load sweep of ``model``; its record (if it publishes one) is stored and
        persisted, and it is logged (each level at DEBUG, as it ends; ``on_level`` hears of it
        too). None: not loaded, and loading is not allowed."""
        target = self.target
        entry = self.store.snapshot.models.get((target.name, model))
        caps = entry.inventory.capabilities if entry and entry.inventory else ()
        log.info("target %s: load sweep of %s begins (%d levels)",
                 target.name, model, len(target.benchmark.capacity.concurrency))  # fmt: skip
        sweep = await measure_capacity(
            client, model, caps, target.benchmark, watches_loaded=target.watches_loaded,
            allow_load=allow_load, lag_probe=lag_probe, pause=pause,
            on_level=lambda level: self._level(model, level, on_level),
        )  # fmt: skip
        if sweep is None:
            return None
        self.schedule.after(model, sweep)
        record = self.store.record_capacity(
            target.name, model, sweep, target.benchmark.capacity, url=target.url
        )
        if record is not None:
            await self.store.persist_capacity(target.name, model, record)
        self.store.set_capacity_due(
            target.name, {model: self.schedule.next_start(model, time.time())}
        )
        log.info("target %s: %s", target.name, describe_sweep(model, sweep))
        return sweep
