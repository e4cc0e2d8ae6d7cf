"""The scheduler: one worker per configured target; a reload restarts only what changed."""

from __future__ import annotations

import asyncio

from ometer_exporter.config.settings import Settings
from ometer_exporter.loop.selection import target_state
from ometer_exporter.loop.worker import TargetWorker
from ometer_exporter.measure.lag import LoopLagProbe
from ometer_exporter.store.store import Store


class Scheduler:
    """Owns the workers of the current settings; ``apply`` swaps them on reload."""

    def __init__(self, store: Store, *, lag_probe: LoopLagProbe | None = None) -> None:
        self.store = store
        self.lag_probe = lag_probe
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.workers: dict[str, TargetWorker] = {}

    @property
    def running(self) -> bool:
        return bool(self._tasks) and all(not t.done() for t in self._tasks.values())

    async def apply(self, settings: Settings) -> None:
        """Install the targets; restart only the workers whose target settings changed."""
        keep = {
            t.name
            for t in settings.targets
            if t.name in self.workers
            and self.workers[t.name].target == t
            and not self._tasks[t.name].done()
        }
        for name in [n for n in self._tasks if n not in keep]:
            await self._stop_one(name)
        self.store.set_targets(target_state(t) for t in settings.targets)
        for target in settings.targets:
            if target.name in keep:
                continue
            worker = TargetWorker(target, self.store, lag_probe=self.lag_probe)
            self.workers[target.name] = worker
            self._tasks[target.name] = asyncio.create_task(
                worker.run(), name=f"ometer-target-{target.name}"
            )

    async def _stop_one(self, name: str, grace: float = 3.0) -> None:
        task = self._tasks.pop(name)
        self.workers.pop(name, None)
        task.cancel()
        await asyncio.wait([task], timeout=grace)

    async def stop(self, grace: float = 3.0) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        self._tasks.clear()
        self.workers.clear()
