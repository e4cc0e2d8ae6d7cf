"""The scheduler: one worker per configured target; a reload restarts only what changed.

It owns the loop's lifecycle (``running``): the loop-lag probe every measurement consults, the
workers, and the store they write, closed only once the workers have stopped. Besides the
endless loop (``apply``) it runs one requested cycle (``discover_once`` then ``measure_once``,
or ``sweep_once`` for load sweeps), what ``ometer-exporter bench`` does.

A worker cannot die unnoticed: one whose task ends by an exception is logged, counted as a loop
error and restarted after :data:`RESTART_DELAY`; until then ``running`` is false (``/-/ready``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Final, Protocol

from ometer_exporter.client.errors import OllamaError
from ometer_exporter.config.describe import describe_target, target_changes
from ometer_exporter.config.settings import Settings, TargetSettings
from ometer_exporter.loop.holds import UsageHolds
from ometer_exporter.loop.selection import target_state
from ometer_exporter.loop.worker import TargetWorker
from ometer_exporter.measure.capacity import Level, Sweep
from ometer_exporter.measure.lag import LoopLagProbe
from ometer_exporter.measure.results import ModelResult
from ometer_exporter.store.records import ModelKey
from ometer_exporter.store.store import Store

log = logging.getLogger(__name__)

RESTART_DELAY: Final = 1.0  # seconds before a worker that ended by an exception is restarted


class CycleProgress(Protocol):
    """What one requested cycle reports, model by model (``Scheduler.measure_once``)."""

    def started(self, target: str, model: str) -> None:
        """A slot is free and the model's benchmark begins."""

    def skipped(self, target: str, model: str) -> None:
        """The model's turn came after a usage limit: not measured."""

    def finished(self, target: str, model: str, result: ModelResult | None) -> None:
        """The model's benchmark ended (None: not loaded, nothing measured)."""


class SweepProgress(Protocol):
    """What ``Scheduler.sweep_once`` reports, model by model."""

    def started(self, target: str, model: str) -> None:
        """The model's load sweep begins."""

    def level(self, target: str, model: str, level: Level) -> None:
        """One level of the model's sweep ended and is kept."""

    def finished(self, target: str, model: str, outcome: Sweep | OllamaError | None) -> None:
        """The sweep ended (its record, if any, is stored): how it ended, the error that
        stopped it (the target stopped answering), or None (not loaded, nothing swept)."""


class Scheduler:
    """Owns the workers of the current settings; ``apply`` swaps them on reload."""

    def __init__(self, store: Store, *, lag_probe: LoopLagProbe | None = None) -> None:
        self.store = store
        self.lag_probe = lag_probe if lag_probe is not None else LoopLagProbe()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.workers: dict[str, TargetWorker] = {}
        self.holds = UsageHolds()  # one per process: accounts are shared across targets
        self._restarting: set[str] = set()

    @property
    def running(self) -> bool:
        """Every worker of the current settings is alive (none waiting to be restarted)."""
        return not self._restarting and all(not t.done() for t in self._tasks.values())

    @contextlib.asynccontextmanager
    async def started(self, *, grace: float = 3.0) -> AsyncIterator[Scheduler]:
        """The loop-lag probe runs inside; on the way out the workers stop (within ``grace``
        seconds), then the probe, then the store closes."""
        probe = asyncio.create_task(self.lag_probe.run(), name="ometer-loop-lag")
        try:
            yield self
        finally:
            try:
                await self.stop(grace=grace)
            finally:
                probe.cancel()
                await self.store.close()

    async def apply(self, settings: Settings) -> None:
        """Install the targets; restart only the workers whose target settings changed."""
        keep = {
            t.name
            for t in settings.targets
            if t.name in self.workers
            and self.workers[t.name].target == t
            and t.name in self._tasks
            and not self._tasks[t.name].done()
        }
        old = {name: w.target for name, w in self.workers.items()}
        for line in target_changes(old, settings.targets) if old else ():
            log.info("reload: %s", line)
        for name in [n for n in self.workers if n not in keep]:
            await self._stop_one(name)
        self.store.set_targets(target_state(t) for t in settings.targets)
        for target in settings.targets:
            if target.name in keep:
                continue
            if not old:
                log.info("target %s", describe_target(target))
            self._spawn(target)

    def _spawn(self, target: TargetSettings) -> None:
        worker = TargetWorker(target, self.store, lag_probe=self.lag_probe, holds=self.holds)
        self.workers[target.name] = worker
        task = asyncio.create_task(worker.run(), name=f"ometer-target-{target.name}")
        self._tasks[target.name] = task
        task.add_done_callback(lambda done: self._ended(target, done))

    def _ended(self, target: TargetSettings, task: asyncio.Task[None]) -> None:
        """A worker's task ended: by cancellation (stop, reload) that is expected; by an
        exception it is a bug, and the worker is restarted."""
        if task.cancelled() or self._tasks.get(target.name) is not task:
            return
        exc = task.exception()
        log.error(
            "target %s: its worker ended unexpectedly; restarting it in %gs",
            target.name, RESTART_DELAY, exc_info=exc,
        )  # fmt: skip
        state = self.store.snapshot.targets.get(target.name)
        if state is not None:
            self.store.update_target(target.name, loop_errors=state.loop_errors + 1)
        self._restarting.add(target.name)
        asyncio.get_running_loop().call_later(RESTART_DELAY, self._restart, target, task)

    def _restart(self, target: TargetSettings, ended: asyncio.Task[None]) -> None:
        self._restarting.discard(target.name)
        if self._tasks.get(target.name) is ended:  # not stopped or replaced meanwhile
            self._spawn(target)

    # -- one requested cycle -----------------------------------------------------------------

    async def discover_once(
        self, targets: Sequence[TargetSettings]
    ) -> list[list[str] | OllamaError]:
        """Discover each target once, concurrently, without starting its loop: per target (in
        order) the models it lists, or why it could not be reached. Its worker stays, idle, for
        ``measure_once``."""
        self.store.set_targets(target_state(t) for t in targets)
        for target in targets:
            self.workers[target.name] = TargetWorker(
                target, self.store, lag_probe=self.lag_probe, holds=self.holds
            )
        return list(await asyncio.gather(*(self._discover(t.name) for t in targets)))

    async def _discover(self, name: str) -> list[str] | OllamaError:
        try:
            return [tag.name for tag in await self.workers[name].discover()]
        except OllamaError as exc:
            return exc

    async def measure_once(
        self, keys: Sequence[ModelKey], *, parallel: int, progress: CycleProgress
    ) -> dict[str, str]:
        """Benchmark each (target, model) once: targets concurrently, ``parallel`` models at a
        time within a target, in the given order. Returns the targets a usage limit stopped,
        with its error."""
        names = [n for n in self.workers if any(t == n for t, _ in keys)]
        limits = await asyncio.gather(
            *(
                _measure_target(
                    self.workers[n], [m for t, m in keys if t == n], parallel, progress
                )
                for n in names
            )
        )
        return {n: limit for n, limit in zip(names, limits, strict=True) if limit is not None}

    async def sweep_once(self, keys: Sequence[ModelKey], *, progress: SweepProgress) -> None:
        """A load sweep of each (target, model) once, loading the model as needed
        (``TargetWorker.sweep_capacity``): targets concurrently, one model at a time within a
        target (two sweeps on one server would measure each other), in the given order."""

        async def one_target(name: str) -> None:
            worker = self.workers[name]
            for model in [m for t, m in keys if t == name]:
                progress.started(name, model)
                try:
                    outcome: Sweep | OllamaError | None = await worker.sweep_capacity(
                        model, allow_load=True, on_level=partial(progress.level, name, model)
                    )
                except OllamaError as exc:  # the target stopped answering
                    outcome = exc
                progress.finished(name, model, outcome)

        await asyncio.gather(*(one_target(n) for n in self.workers if any(t == n for t, _ in keys)))

    # -- stopping ----------------------------------------------------------------------------

    async def _stop_one(self, name: str, grace: float = 3.0) -> None:
        worker = self.workers.pop(name)
        task = self._tasks.pop(name, None)
        self._restarting.discard(name)
        if task is None:
            await worker.aclose()
            return
        task.cancel()
        await asyncio.wait([task], timeout=grace)

    async def stop(self, grace: float = 3.0) -> None:
        self._restarting.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        idle = [w for n, w in self.workers.items() if n not in self._tasks]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for worker in idle:
            await worker.aclose()
        self._tasks.clear()
        self.workers.clear()


async def _measure_target(
    worker: TargetWorker, models: Sequence[str], parallel: int, progress: CycleProgress
) -> str | None:
    """Benchmark ``models`` of one target once, ``parallel`` at a time, in order, loading them
    as needed. Returns the usage-limit error that stopped it (the models after it are
    skipped)."""
    name = worker.target.name
    slots = asyncio.Semaphore(parallel)
    limited: list[str] = []  # the cloud's usage window is spent: stop asking

    async def one(model: str) -> None:
        async with slots:
            if limited:
                progress.skipped(name, model)
                return
            progress.started(name, model)
            result = await worker.benchmark(model, allow_load=True)
            if result is not None and result.usage_limited is not None:
                limited.append(result.usage_limited.error or "usage limit")
            progress.finished(name, model, result)

    await asyncio.gather(*(one(model) for model in models))
    return limited[0] if limited else None
