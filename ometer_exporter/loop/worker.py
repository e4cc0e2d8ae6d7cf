"""The background benchmark loop: one worker per target, one run at a time within a target.

A cycle: discover (version, tags, show for new digests, ps) -> select models -> measure each
-> record and persist. Between cycles a cheap ``/api/ps`` poll keeps loaded/VRAM current. A
target that fails discovery is marked down, keeps its models' last values with success 0, and
is retried with backoff. Nothing a target does can end the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol

from ometer_exporter.client.errors import ErrorType, OllamaError, OllamaNotFound
from ometer_exporter.client.ollama import OllamaClient
from ometer_exporter.client.replies import ShowInfo, TagModel
from ometer_exporter.config.settings import TargetSettings
from ometer_exporter.loop.selection import method_of, reported_models, wanted
from ometer_exporter.measure.lag import LoopLagProbe
from ometer_exporter.measure.model import measure_model
from ometer_exporter.measure.results import ModelResult
from ometer_exporter.names import canonical_name, parse_parameter_size
from ometer_exporter.store.records import Inventory
from ometer_exporter.store.store import Store

log = logging.getLogger(__name__)

_Step = Callable[[], Awaitable[object]]

PS_POLL_INTERVAL: Final = 15.0
# No Retry-After comes with Ollama Cloud's usage-limit 429: its session window is hours long.
USAGE_LIMIT_PAUSE: Final = 3600.0
BACKOFF_START: Final = 5.0
BACKOFF_MAX: Final = 300.0


class CycleProgress(Protocol):
    """What one requested cycle reports, model by model (``TargetWorker.measure_once``)."""

    def started(self, target: str, model: str) -> None:
        """A slot is free and the model's benchmark begins."""

    def skipped(self, target: str, model: str) -> None:
        """The model's turn came after a usage limit: not measured."""

    def finished(self, target: str, model: str, result: ModelResult | None) -> None:
        """The model's benchmark ended (None: not loaded, nothing measured)."""


def jittered(interval: float, jitter: float) -> float:
    return max(0.0, interval * (1 + random.uniform(-jitter, jitter)))


class TargetWorker:
    """Benchmarks one target forever (until cancelled)."""

    def __init__(
        self, target: TargetSettings, store: Store, *, lag_probe: LoopLagProbe | None = None
    ) -> None:
        self.target = target
        self.store = store
        self.lag_probe = lag_probe
        self.client = OllamaClient(
            target.url, api_key=target.api_key, timeouts=target.benchmark.timeouts
        )
        self._show_cache: dict[tuple[str, str], ShowInfo | None] = {}
        self.cycles = 0
        self.hold: float | None = None  # a minimum delay before the next cycle (usage limit)
        self.next_delay: float | None = None  # the delay chosen after the last cycle

    async def run(self) -> None:
        name = self.target.name
        failures = 0
        try:
            delay = self._first_delay()
            if delay > 0:
                # Results are fresh (a restart): refresh the inventory, benchmark later.
                log.info("target %s: stored results are fresh; first cycle in %.0fs", name, delay)
                if await self._guard(self.discover):
                    failures = 0
                await self._wait(delay)
            while True:
                started = time.time()
                ok = await self._guard(self.cycle)
                self.store.update_target(
                    name, last_cycle_started=started, last_cycle_duration=time.time() - started
                )
                if ok:
                    failures = 0
                    delay = jittered(self.target.benchmark.interval, self.target.benchmark.jitter)
                else:
                    failures += 1
                    delay = self._backoff(failures)
                if self.hold is not None:
                    delay, self.hold = max(delay, self.hold), None
                self.next_delay = delay
                await self._wait(delay)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the worker's connections to its target."""
        await self.client.aclose()

    async def _guard(self, step: _Step) -> bool:
        """Run a discovery or a cycle; a failure marks the target down, never ends the loop."""
        try:
            await step()
            return True
        except asyncio.CancelledError:
            raise
        except OllamaError as exc:
            log.warning("target %s (%s) is down: %s", self.target.name, self.target.url, exc)
            self._down(exc.error_type.value, str(exc))
        except Exception as exc:  # a bug must not end the loop: log it, count it, go on
            log.exception("target %s: unexpected error in the benchmark loop", self.target.name)
            self._down(ErrorType.BAD_RESPONSE.value, f"internal error: {type(exc).__name__}")
            state = self.store.snapshot.targets.get(self.target.name)
            if state is not None:
                self.store.update_target(self.target.name, loop_errors=state.loop_errors + 1)
        return False

    def _down(self, error_type: str, message: str) -> None:
        self.store.update_target(self.target.name, up=False, error=message)
        self.store.mark_failed(self.target.name, error_type, message)

    def _first_delay(self) -> float:
        newest = self.store.newest_finish(self.target.name)
        if newest is None:
            return 0.0
        return max(0.0, newest + self.target.benchmark.interval - time.time())

    def _backoff(self, failures: int) -> float:
        """Exponential from 5 s (or the interval, if shorter), never longer than the interval."""
        interval = self.target.benchmark.interval
        start = min(BACKOFF_START, interval)
        cap = min(BACKOFF_MAX, max(start, interval))
        return jittered(min(cap, start * 2 ** (failures - 1)), 0.2)

    async def _wait(self, delay: float) -> None:
        """Sleep until the next cycle, polling ``/api/ps`` so loaded/VRAM stay current."""
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, PS_POLL_INTERVAL))
            if deadline - time.monotonic() > 1.0 and not self.target.cloud:
                with contextlib.suppress(OllamaError):
                    loaded = await self.client.ps()
                    self.store.update_loaded(
                        self.target.name, {canonical_name(m.name): m.size_vram for m in loaded}
                    )

    async def discover(self) -> list[TagModel]:
        """Version, tags, show (cached per digest) and ps -> the target's inventory."""
        name = self.target.name
        try:
            version: str | None = await self.client.version()
        except OllamaNotFound:
            version = None  # Ollama Cloud may not serve /api/version
        tags = reported_models(self.target, await self.client.tags())
        loaded: dict[str, int | None] | None = None
        if not self.target.cloud:
            loaded = {canonical_name(m.name): m.size_vram for m in await self.client.ps()}
        inventory: dict[str, Inventory] = {}
        for tag in tags:
            show = await self._show(tag)
            inventory[tag.name] = _inventory(
                tag,
                show,
                loaded,
                wanted=wanted(self.target, tag.name),
                select_all=self.target.select == "all",
            )
        self.store.update_target(name, up=True, version=version, error=None)
        self.store.set_inventory(name, inventory)
        return tags

    async def _show(self, tag: TagModel) -> ShowInfo | None:
        key = (tag.name, tag.digest)
        if key not in self._show_cache:
            try:
                self._show_cache[key] = await self.client.show(tag.name)
            except OllamaError as exc:
                log.warning("target %s: /api/show %s failed: %s", self.target.name, tag.name, exc)
                return None  # not cached: asked again next cycle
        return self._show_cache[key]

    async def benchmark(self, model: str, *, allow_load: bool) -> ModelResult | None:
        """Measure one model, then record and persist its result (None: not loaded, skipped)."""
        target = self.target
        entry = self.store.snapshot.models.get((target.name, model))
        caps = entry.inventory.capabilities if entry and entry.inventory else ()
        result = await measure_model(
            self.client,
            model,
            caps,
            target.benchmark,
            cloud=target.cloud,
            allow_load=allow_load,
            lag_probe=self.lag_probe,
        )
        if result is not None:
            bench = self.store.record(
                target.name, result, method_of(target.benchmark), url=target.url
            )
            await self.store.persist(target.name, model, bench)
        return result

    async def cycle(self) -> None:
        tags = await self.discover()
        target = self.target
        for tag in tags:
            if not wanted(target, tag.name):
                continue
            result = await self.benchmark(tag.name, allow_load=target.select == "all")
            if result is None:
                continue  # select: loaded, and the model is not loaded
            if not result.success:
                first = result.first_error
                log.info(
                    "target %s: %s failed: %s",
                    target.name,
                    tag.name,
                    first.error if first else "no good run",
                )
            limited = result.usage_limited
            if limited is not None:
                # Ollama Cloud's usage window is spent: every further request would be refused
                # and billed against the next window. Wait for it instead of retrying.
                self.hold = max(limited.retry_after or 0.0, USAGE_LIMIT_PAUSE)
                log.warning(
                    "target %s: usage limit reached (%s); next cycle in %.0fs",
                    target.name, limited.error, self.hold,
                )  # fmt: skip
                break
        self.cycles += 1

    async def measure_once(
        self, models: Sequence[str], *, parallel: int, progress: CycleProgress
    ) -> str | None:
        """Benchmark ``models`` once, ``parallel`` at a time, in order, loading them as needed.

        Returns the usage-limit error that stopped it (the models after it are skipped).
        """
        name = self.target.name
        slots = asyncio.Semaphore(parallel)
        limited: list[str] = []  # the cloud's usage window is spent: stop asking

        async def one(model: str) -> None:
            async with slots:
                if limited:
                    progress.skipped(name, model)
                    return
                progress.started(name, model)
                result = await self.benchmark(model, allow_load=True)
                if result is not None and result.usage_limited is not None:
                    limited.append(result.usage_limited.error or "usage limit")
                progress.finished(name, model, result)

        await asyncio.gather(*(one(model) for model in models))
        return limited[0] if limited else None


def _inventory(
    tag: TagModel,
    show: ShowInfo | None,
    loaded: dict[str, int | None] | None,
    *,
    wanted: bool,
    select_all: bool,
) -> Inventory:
    caps = tag.capabilities if tag.capabilities is not None else (show.capabilities if show else ())
    parameters = show.parameter_count if show and show.parameter_count else None
    if parameters is None:
        parameters = parse_parameter_size(tag.parameter_size)
    context = show.context_length if show and show.context_length else tag.context_length
    is_loaded = None if loaded is None else tag.name in loaded
    return Inventory(
        family=tag.family,
        parameter_size=tag.parameter_size,
        quantization_level=tag.quantization_level,
        format=tag.format,
        parameters=parameters,
        context_length=context,
        size_bytes=tag.size,
        modified_at=tag.modified_at.timestamp() if tag.modified_at else None,
        capabilities=tuple(caps),
        loaded=is_loaded,
        vram_bytes=loaded.get(tag.name) if loaded is not None and is_loaded else None,
        wanted=wanted,
        select_all=select_all,
    )
