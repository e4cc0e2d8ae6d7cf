"""The background benchmark loop: one worker per target, one run at a time within a target.

A model is measured when it is *due* — no attempt within its target's interval — and, when it is
in memory, once it is *idle* (``benchmark.idle_before``, see ``loop.idle``). The worker

* runs a **cycle** every interval: discover (version, tags, show for new digests, ps), then
  measure each due model in tags order (``select: all`` loads those not in memory);
* **polls** ``/api/ps`` between cycles (every :data:`PS_POLL_INTERVAL`, sooner while a loaded due
  model waits out its quiet period): loaded/VRAM stay current, two failed polls mark the target
  down and a good one brings the next cycle forward, and a due model that is loaded and idle is
  measured at once — so a model loaded for a few minutes of use is measured while it is there;
* after a pass's measurements runs at most one **load sweep** (``loop.sweeps``), of a due model
  that is loaded and idle: the target's measurements wait while it runs.

A target that fails discovery is marked down, keeps its models' last values with success 0, and
is retried with backoff. Every exception is caught, logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final

from ometer_exporter.client.engine import EngineClient, client_for
from ometer_exporter.client.errors import ErrorType, OllamaError, OllamaNotFound
from ometer_exporter.client.replies import TagModel
from ometer_exporter.config.checks import format_duration
from ometer_exporter.config.settings import TargetSettings
from ometer_exporter.loop.holds import UsageHolds, account_of
from ometer_exporter.loop.idle import IdleTracker
from ometer_exporter.loop.inventory import ShowCache, inventory_of, known_cold
from ometer_exporter.loop.outcome import Outcome, describe_run
from ometer_exporter.loop.selection import method_of, reported_models, wanted
from ometer_exporter.loop.sweeps import TargetSweeps
from ometer_exporter.measure.capacity import OnLevel, Sweep
from ometer_exporter.measure.lag import LoopLagProbe
from ometer_exporter.measure.model import measure_model
from ometer_exporter.measure.results import ModelResult
from ometer_exporter.names import canonical_name
from ometer_exporter.store.records import Inventory, Status
from ometer_exporter.store.store import Store

log = logging.getLogger(__name__)

_Step = Callable[[], Awaitable[object]]

PS_POLL_INTERVAL: Final = 15.0
POLLS_TO_DOWN: Final = 2  # consecutive failed polls that mark a target down
MIN_WAKE: Final = 0.05  # never sleep less than this between two passes
BACKOFF_START: Final = 5.0
BACKOFF_MAX: Final = 300.0
SWEEP_PAUSE: Final = 2.0  # seconds of quiet a load sweep waits for before and after each level


def jittered(interval: float, jitter: float) -> float:
    return max(0.0, interval * (1 + random.uniform(-jitter, jitter)))


class TargetWorker:
    """Benchmarks one target forever (until cancelled)."""

    def __init__(
        self,
        target: TargetSettings,
        store: Store,
        *,
        lag_probe: LoopLagProbe | None = None,
        holds: UsageHolds | None = None,
    ) -> None:
        self.target = target
        self.store = store
        self.lag_probe = lag_probe
        self.holds = holds if holds is not None else UsageHolds()
        self.client: EngineClient = client_for(target)
        self._shows = ShowCache(target.name)
        self.idle = IdleTracker(target.benchmark.idle_before)
        self._models: list[str] = []  # the reported models, in tags order (last discovery)
        self._cloud_models: frozenset[str] = frozenset()  # pass-through models of a local server
        self._due: dict[str, float] = {}  # model -> Unix time it is next due
        self._waiting: set[str] = set()  # loaded, due models waiting for their quiet period
        self._tokens_per_word: dict[str, float] = {}  # the prompt-length axis's calibration
        self.sweeps = TargetSweeps(target, store)
        self._next_cycle = 0.0  # Unix time
        self._failures = 0  # consecutive failed cycles
        self._reconnects = 0  # the client's count already added to the store
        self._failed_polls = 0
        self._polled_at: float | None = None  # monotonic time of the last good poll
        self._down = False
        self._unreachable = False  # a poll failed while the target is down
        self.cycles = 0
        self.next_delay: float | None = None  # the delay chosen after the last cycle

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._start()
            while True:
                try:
                    await self._step()
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug outside a guarded step: count it, go on
                    self._count_bug("between steps")
                    await asyncio.sleep(BACKOFF_START)
                    continue
                await asyncio.sleep(self._sleep_time())
        finally:
            await self.aclose()

    async def _start(self) -> None:
        """Stored results still fresh (a restart): refresh the inventory, benchmark when due."""
        self._due = self._stored_due()
        self.sweeps.restore()
        newest = max(self._due.values(), default=None)
        if newest is None or newest <= time.time():
            return
        self._next_cycle = newest
        self.store.update_target(self.target.name, next_cycle_at=newest)
        log.info(
            "target %s: stored results are fresh; first cycle in %s",
            self.target.name, format_duration(round(newest - time.time())),
        )  # fmt: skip
        await self._guard(self._discovery_pass)

    async def _step(self) -> None:
        if time.time() >= self._next_cycle:
            await self._cycle_step()
        elif self.target.watches_loaded:
            await self._guard(self._poll_pass)

    async def _cycle_step(self) -> None:
        started = time.time()
        outcome = Outcome()
        ok = await self._guard(lambda: self.cycle(outcome))
        duration = time.time() - started
        now = time.time()
        if ok:
            self._failures = 0
            delay = jittered(self.target.benchmark.interval, self.target.benchmark.jitter)
            self._next_cycle = max(now + delay, self._target_held() or 0.0)
        else:
            self._failures += 1
            self._next_cycle = now + self._backoff(self._failures)
        delay = self.next_delay = self._next_cycle - now
        self.store.update_target(
            self.target.name,
            last_cycle_started=started,
            last_cycle_duration=duration,
            next_cycle_at=self._next_cycle,
        )
        if ok:
            log.info("target %s: %s", self.target.name, outcome.summary(duration, delay))

    def _sleep_time(self) -> float:
        left = self._next_cycle - time.time()
        if not self.target.watches_loaded:
            return max(MIN_WAKE, left)
        wake = min(left, PS_POLL_INTERVAL)
        now = time.monotonic()
        for name in self._waiting:
            quiet_at = self.idle.quiet_at(name)
            if quiet_at is not None:
                wake = min(wake, quiet_at - now)
        return max(MIN_WAKE, wake)

    async def aclose(self) -> None:
        """Close the worker's connections to its target."""
        await self.client.aclose()

    async def _guard(self, step: _Step) -> bool:
        """Run a step; a failure marks the target down, never ends the loop."""
        try:
            await step()
            return True
        except asyncio.CancelledError:
            raise
        except OllamaError as exc:
            log.warning("target %s (%s) is down: %s", self.target.name, self.target.url, exc)
            self._mark_down(exc.error_type.value, str(exc))
        except Exception as exc:  # a bug must not end the loop: log it, count it, go on
            self._count_bug("in the benchmark loop")
            self._mark_down(ErrorType.BAD_RESPONSE.value, f"internal error: {type(exc).__name__}")
        return False

    def _count_reconnects(self) -> None:
        """Add the client's new reconnects to the target's counter (it outlives the worker)."""
        new, self._reconnects = self.client.reconnects - self._reconnects, self.client.reconnects
        state = self.store.snapshot.targets.get(self.target.name)
        if new and state is not None:
            self.store.update_target(self.target.name, reconnects=state.reconnects + new)

    def _count_bug(self, where: str) -> None:
        log.exception("target %s: unexpected error %s", self.target.name, where)
        state = self.store.snapshot.targets.get(self.target.name)
        if state is not None:
            self.store.update_target(self.target.name, loop_errors=state.loop_errors + 1)

    def _mark_down(self, error_type: str, message: str) -> None:
        self._down = True
        self.store.update_target(self.target.name, up=False, error=message)
        self.store.mark_failed(self.target.name, error_type, message)

    def _backoff(self, failures: int) -> float:
        """Exponential from 5 s (or the interval, if shorter), never longer than the interval."""
        interval = self.target.benchmark.interval
        start = min(BACKOFF_START, interval)
        cap = min(BACKOFF_MAX, max(start, interval))
        return jittered(min(cap, start * 2 ** (failures - 1)), 0.2)

    def _stored_due(self) -> dict[str, float]:
        """When each stored model is next due, from its last attempt."""
        return {
            model: self._due_after(entry.benchmark.finished_at)
            for (target, model), entry in self.store.snapshot.models.items()
            if target == self.target.name and entry.benchmark is not None
        }

    def _due_after(self, finished_at: float) -> float:
        """Due again one interval later, less the jitter: every model measured in one cycle is
        due in the next, however the jitter fell."""
        b = self.target.benchmark
        return finished_at + b.interval * (1 - b.jitter)

    # -- polls -------------------------------------------------------------------------------

    async def _poll_pass(self) -> None:
        """Between cycles: is the target there, what is loaded, and is a due model idle now?"""
        if not await self._poll():
            return
        if self._down:
            if self._unreachable:
                self._next_cycle = time.time()  # it answers again: rediscover now
                log.info("target %s (%s) answers again", self.target.name, self.target.url)
            return
        outcome = Outcome()
        await self._measure_due(outcome, cycle=False)
        if outcome.attempted:
            log.info("target %s: between cycles: %s", self.target.name, outcome.summary())
        await self._sweep_due(cycle=False)

    async def _poll(self) -> bool:
        """Read ``/api/ps``; after :data:`POLLS_TO_DOWN` failures in a row the target is down."""
        try:
            loaded = await self.client.ps()
        except OllamaError as exc:
            self._failed_polls += 1
            self._unreachable = self._unreachable or self._down
            if self._failed_polls == POLLS_TO_DOWN:
                log.warning("target %s (%s) is down: %s", self.target.name, self.target.url, exc)
                self._mark_down(exc.error_type.value, str(exc))
                self._unreachable = True
            return False
        self._failed_polls = 0
        self._polled_at = time.monotonic()
        self.idle.observe(loaded, self._polled_at)
        self.store.update_loaded(
            self.target.name, {canonical_name(m.name): m.size_vram for m in loaded}
        )
        return True

    # -- cycles ------------------------------------------------------------------------------

    async def _discovery_pass(self) -> None:
        await self.discover()
        self.store.set_status(
            self.target.name, {name: self._status_now(name) for name in self._models}
        )

    async def discover(self) -> list[TagModel]:
        """Version, tags, show (cached per digest) and ps -> the target's inventory."""
        name = self.target.name
        try:
            version: str | None = await self.client.version()
        except OllamaNotFound:
            version = None  # Ollama Cloud may not serve /api/version
        tags, left_out = reported_models(self.target, await self.client.tags())
        loaded: dict[str, int | None] | None = None
        if self.target.watches_loaded:
            ps = await self.client.ps()
            self._polled_at = time.monotonic()
            self.idle.observe(ps, self._polled_at)
            loaded = {canonical_name(m.name): m.size_vram for m in ps}
        elif self.client.loaded_now is not None:  # LM Studio says what it has loaded
            loaded = dict.fromkeys(self.client.loaded_now)
        inventory: dict[str, Inventory] = {}
        for tag in tags:
            show = await self._shows.get(self.client, tag)
            inventory[tag.name] = inventory_of(
                tag,
                show,
                loaded,
                wanted=wanted(self.target, tag.name),
                select_all=self.target.select == "all",
            )
        c = self.client
        self.store.update_target(
            name, up=True, version=version, error=None, models_left_out=left_out,
            engine=c.engine, slots=c.slots,
        )  # fmt: skip
        self.store.set_inventory(name, inventory)
        self._count_reconnects()
        self._models = [tag.name for tag in tags]
        self._cloud_models = frozenset(t.name for t in tags if t.is_cloud_passthrough)
        self._down = self._unreachable = False
        self._failed_polls = 0
        return tags

    async def cycle(self, outcome: Outcome | None = None) -> None:
        await self.discover()
        await self._measure_due(outcome if outcome is not None else Outcome(), cycle=True)
        await self._sweep_due(cycle=True)
        self.cycles += 1

    async def _measure_due(self, outcome: Outcome, *, cycle: bool) -> None:
        """Measure each due model that may be measured now; say where every model stands."""
        self._waiting.clear()
        statuses: dict[str, tuple[Status, float | None]] = {}
        for name in self._models:
            statuses[name] = self._status_now(name)
            if statuses[name][0] not in ("due", "pending", "contended"):
                outcome.skipped(name, statuses[name][0])
                continue
            statuses[name] = await self._attempt(name, outcome, cycle=cycle)
            self.store.set_status(self.target.name, {name: statuses[name]})
        self.store.set_status(self.target.name, statuses)

    def _status_now(self, name: str) -> tuple[Status, float | None]:
        """Where the model stands before anything is sent: due (or pending) when it may be
        measured, else why not."""
        if not wanted(self.target, name):
            return "excluded", None
        held = self.holds.until(self._account(name))
        if held is not None:
            return "held", held
        due_at = self._due.get(name)
        entry = self.store.snapshot.models.get((self.target.name, name))
        if due_at is not None and time.time() < due_at:
            measured = entry is not None and entry.benchmark is not None and entry.benchmark.success
            return ("measured" if measured else "failed"), due_at
        if entry is not None and entry.status == "contended":
            return "contended", None
        return ("pending" if due_at is None else "due"), due_at

    async def _attempt(
        self, name: str, outcome: Outcome, *, cycle: bool
    ) -> tuple[Status, float | None]:
        """A due model: measure it if it may be measured now."""
        if self.target.watches_loaded:
            if self.idle.loaded(name):
                if not await self._idle(name):
                    self._waiting.add(name)
                    outcome.skipped(name, "waiting_for_idle")
                    return "waiting_for_idle", None
            elif self.target.select == "loaded":
                outcome.skipped(name, "not_loaded")
                return "not_loaded", None
            elif not cycle:
                return "due", self._next_cycle  # select: all loads it in the next cycle
        elif self.target.select == "loaded" and known_cold(self.store, self.target, name):
            outcome.skipped(name, "not_loaded")
            return "not_loaded", None
        before = self.idle.expiry(name)
        result = await self.benchmark(name, allow_load=self.target.select == "all")
        if (
            result is not None
            and result.contended
            and await self._poll()
            and self.idle.loaded(name)
            and self.idle.expiry(name) == before
        ):
            # Nothing finished since before our attempt, ours included: another request is
            # still running. Wait for it to end (the expiry moves), then for quiet.
            self.idle.busy_until_it_moves(name)
        return self._after(name, result, outcome)

    async def _idle(self, name: str) -> bool:
        """Loaded and quiet, by a fresh look at ``/api/ps`` (a cycle may have run for minutes)."""
        fresh = self._polled_at is not None and time.monotonic() - self._polled_at < 1.0
        if self.idle.quiet > 0 and not fresh and not await self._poll():
            return False
        return self.idle.idle(name, time.monotonic(), time.time())

    def _after(
        self, name: str, result: ModelResult | None, outcome: Outcome
    ) -> tuple[Status, float | None]:
        if result is None:
            outcome.skipped(name, "not_loaded")
            return "not_loaded", None  # it left memory just before its turn
        if result.contended:
            outcome.contended(name)
            return "contended", None
        limited = result.usage_limited
        if limited is not None:
            # The cloud account's usage window is spent: every further request would be
            # refused. Its cloud models wait for the window; local models go on.
            account = self._account(name) or account_of(self.target)
            until = self.holds.hold(account, limited.retry_after)
            log.warning(
                "target %s: usage limit reached on %s (%s); its cloud account's models wait %s",
                self.target.name, name, limited.error, format_duration(round(until - time.time())),
            )  # fmt: skip
            outcome.failed(name, limited.error or "usage limit")
            self._due[name] = until
            return "held", until
        self._due[name] = self._due_after(result.finished_at)
        if result.success:
            outcome.measured(name)
            return "measured", self._due[name]
        first = result.first_error
        outcome.failed(name, first.error if first and first.error else "no good run")
        return "failed", self._due[name]

    def _account(self, name: str) -> str | None:
        """The cloud account a model is billed to (None: a local model, never held)."""
        if self.target.cloud or name in self._cloud_models:
            return account_of(self.target)
        return None

    def _target_held(self) -> float | None:
        """When every model the target measures is held, the end of the first hold."""
        wanted_models = [m for m in self._models if wanted(self.target, m)]
        ends = [self.holds.until(self._account(m)) for m in wanted_models]
        if not wanted_models or any(end is None for end in ends):
            return None
        return min(end for end in ends if end is not None)

    # -- load sweeps -------------------------------------------------------------------------

    def sweepable(self, name: str) -> bool:
        """Whether a load sweep may run on ``name`` (``TargetSweeps.sweepable``)."""
        return self.sweeps.sweepable(name, self._cloud_models)

    async def _sweep_due(self, *, cycle: bool) -> None:
        """At most one load sweep per pass (so polls and measurements go on between sweeps of
        several models): the first due model that may be swept now — loaded and idle, or on a
        ``select: all`` target in a cycle, which loads it."""
        for name in self.sweeps.due(self._models, self._cloud_models):
            if self.target.watches_loaded:
                if self.idle.loaded(name):
                    if not await self._idle(name):
                        continue
                elif self.target.select == "loaded" or not cycle:
                    continue
            await self.sweep_capacity(name, allow_load=self.target.select == "all")
            return

    async def sweep_capacity(
        self, model: str, *, allow_load: bool, on_level: OnLevel | None = None
    ) -> Sweep | None:
        """One load sweep of ``model`` (``TargetSweeps.run``); None: not loaded, not allowed."""
        sweep = await self.sweeps.run(self.client, model, allow_load=allow_load,
                                      lag_probe=self.lag_probe, pause=SWEEP_PAUSE,
                                      on_level=on_level)  # fmt: skip
        self._count_reconnects()
        if sweep is not None and self.target.watches_loaded:
            await self._poll()  # our requests moved the expiry: the quiet period starts again
        return sweep

    async def benchmark(self, model: str, *, allow_load: bool) -> ModelResult | None:
        """Measure one model, then record and persist its result (None: not loaded, skipped).

        An attempt that met someone else's request (contended) only counts its runs."""
        target = self.target
        entry = self.store.snapshot.models.get((target.name, model))
        inventory = entry.inventory if entry else None
        result = await measure_model(
            self.client,
            model,
            inventory.capabilities if inventory else (),
            target.benchmark,
            cloud=not target.watches_loaded,
            cold=known_cold(self.store, target, model),
            allow_load=allow_load,
            lag_probe=self.lag_probe,
            trained_context=inventory.context_length if inventory else None,
            tokens_per_word=self._tokens_per_word.get(model),
        )
        self._count_reconnects()
        if result is None:
            return None
        if result.tokens_per_word:
            self._tokens_per_word[model] = result.tokens_per_word
        log.debug("target %s: %s", target.name, describe_run(result))
        if result.contended:
            self.store.count_only(target.name, result)
        else:
            method = method_of(target.benchmark)
            record = self.store.record(target.name, result, method, url=target.url)
            await self.store.persist(target.name, model, record)
        return result
