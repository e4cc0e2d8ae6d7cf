"""Latest results as an immutable snapshot, swapped atomically; SQLite persistence and history.

Only the event loop's scheduler writes (``Store`` methods); readers (collector, export, page)
take ``store.snapshot`` once and work on that object, which never changes. Every change makes a
new ``Snapshot`` that shares the unchanged ``ModelEntry`` objects, so a renderer can cache its
work per entry by identity.

SQLite work runs in a worker thread, never on the event loop. A failing disk is logged and the
exporter keeps serving from memory.
"""

import asyncio
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ometer_exporter.config.settings import CapacitySettings
from ometer_exporter.measure.capacity import Sweep
from ometer_exporter.measure.results import ModelResult
from ometer_exporter.store.capacity import CapacityRecord
from ometer_exporter.store.database import Database, PointRow
from ometer_exporter.store.records import (
    EMPTY_SNAPSHOT,
    MAX_TEXT,
    Inventory,
    Method,
    ModelEntry,
    ModelKey,
    Record,
    Snapshot,
    Status,
    Stored,
    TargetState,
    merge_counts,
)

log = logging.getLogger(__name__)


def without_userinfo(url: str) -> str:
    """``url`` without any ``user:password@`` (the configuration refuses such URLs already;
    a stored row must never hold one all the same)."""
    if "@" not in url:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class Keep(Enum):
    """The type of ``KEEP``: "leave this field as it is" in ``Store.update_target``."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP

_T = TypeVar("_T")


def _kept(value: _T | Keep, old: _T) -> _T:
    return old if isinstance(value, Keep) else value


class Store:
    """Holds the current snapshot; every change builds a new one and swaps it in."""

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, retention: float = 7 * 86400.0
    ):
        self._snapshot = EMPTY_SNAPSHOT
        self._db = Database(Path(path) / "ometer.sqlite3", retention) if path else None
        self._lock = asyncio.Lock()  # one SQLite writer at a time

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def _swap(
        self,
        *,
        targets: Mapping[str, TargetState] | None = None,
        models: Mapping[ModelKey, ModelEntry] | None = None,
        config_reload_ok: bool | None = None,
        rows_skipped: int | None = None,
    ) -> Snapshot:
        old = self._snapshot
        self._snapshot = Snapshot(
            generation=old.generation + 1,
            targets=MappingProxyType(dict(targets)) if targets is not None else old.targets,
            models=MappingProxyType(dict(models)) if models is not None else old.models,
            config_reload_ok=old.config_reload_ok if config_reload_ok is None else config_reload_ok,
            rows_skipped=old.rows_skipped if rows_skipped is None else rows_skipped,
        )
        return self._snapshot

    # -- changes (event loop only) -----------------------------------------------------------

    def set_targets(self, targets: Iterable[TargetState]) -> None:
        """Install the configured targets; models of targets no longer configured leave."""
        new = {t.name: t for t in targets}
        old = self._snapshot.targets
        merged = {
            name: replace(t, up=old[name].up, version=old[name].version,
                          engine=old[name].engine, slots=old[name].slots,
                          reconnects=old[name].reconnects,
                          last_cycle_started=old[name].last_cycle_started,
                          last_cycle_duration=old[name].last_cycle_duration,
                          loop_errors=old[name].loop_errors, error=old[name].error,
                          next_cycle_at=old[name].next_cycle_at)
            if name in old else t
            for name, t in new.items()
        }  # fmt: skip
        models = {k: v for k, v in self._snapshot.models.items() if k[0] in new}
        self._swap(targets=merged, models=models)

    def update_target(
        self,
        name: str,
        *,
        up: bool | Keep | None = KEEP,
        version: str | Keep | None = KEEP,
        error: str | Keep | None = KEEP,
        last_cycle_started: float | Keep | None = KEEP,
        last_cycle_duration: float | Keep | None = KEEP,
        loop_errors: int | Keep = KEEP,
        next_cycle_at: float | Keep | None = KEEP,
        models_left_out: int | Keep = KEEP,
        engine: str | Keep | None = KEEP,
        slots: int | Keep | None = KEEP,
        reconnects: int | Keep = KEEP,
    ) -> None:
        """Change some of a target's fields; those left at ``KEEP`` stay as they are."""
        old = self._snapshot.targets.get(name)
        if old is None:
            return
        new = replace(
            old,
            up=_kept(up, old.up),
            version=_kept(version, old.version),
            error=_kept(error, old.error),
            last_cycle_started=_kept(last_cycle_started, old.last_cycle_started),
            last_cycle_duration=_kept(last_cycle_duration, old.last_cycle_duration),
            loop_errors=_kept(loop_errors, old.loop_errors),
            next_cycle_at=_kept(next_cycle_at, old.next_cycle_at),
            models_left_out=_kept(models_left_out, old.models_left_out),
            engine=_kept(engine, old.engine),
            slots=_kept(slots, old.slots),
            reconnects=_kept(reconnects, old.reconnects),
        )
        targets = dict(self._snapshot.targets)
        targets[name] = new
        self._swap(targets=targets)

    def set_config_reload(self, ok: bool) -> None:
        self._swap(config_reload_ok=ok)

    def set_inventory(self, target: str, inventory: Mapping[str, Inventory]) -> None:
        """The target's full model list: models it no longer lists leave every series."""
        models = {k: v for k, v in self._snapshot.models.items() if k[0] != target}
        old = self._snapshot.models
        for name, inv in inventory.items():
            entry = old.get((target, name))
            if entry is None:
                entry = ModelEntry(target, name, inventory=inv)
            elif entry.inventory != inv:
                entry = replace(entry, inventory=inv)
            models[(target, name)] = entry
        self._swap(models=models)

    def update_loaded(self, target: str, loaded: Mapping[str, int | None]) -> None:
        """Refresh loaded/VRAM from ``/api/ps`` (name -> size_vram) between cycles."""
        models = dict(self._snapshot.models)
        changed = False
        for key, entry in models.items():
            if key[0] != target or entry.inventory is None:
                continue
            is_loaded = key[1] in loaded
            vram = loaded.get(key[1]) if is_loaded else None
            inv = entry.inventory
            if inv.loaded != is_loaded or inv.vram_bytes != vram:
                models[key] = replace(
                    entry, inventory=replace(inv, loaded=is_loaded, vram_bytes=vram)
                )
                changed = True
        if changed:
            self._swap(models=models)

    def set_status(self, target: str, statuses: Mapping[str, tuple[Status, float | None]]) -> None:
        """Where the target's models stand: model -> (status, due_at); others keep theirs."""
        models = dict(self._snapshot.models)
        changed = False
        for name, (status, due_at) in statuses.items():
            entry = models.get((target, name))
            if entry is not None and (entry.status, entry.due_at) != (status, due_at):
                models[(target, name)] = replace(entry, status=status, due_at=due_at)
                changed = True
        if changed:
            self._swap(models=models)

    def count_only(self, target: str, result: ModelResult) -> None:
        """An abandoned attempt (contended): its runs and discards count, its values do not."""
        key = (target, result.model)
        entry = self._snapshot.models.get(key) or ModelEntry(target, result.model)
        models = dict(self._snapshot.models)
        models[key] = replace(entry, counters=entry.counters.add(result))
        self._swap(models=models)

    def record(self, target: str, result: ModelResult, method: Method, *, url: str = "") -> Record:
        """A model's cycle finished: new latest values, totals, and a row for persistence.

        ``url`` is the target's, kept with the result (never its credentials) so that trends
        compare only results of the same server; so is the target's Ollama version (the history
        marks where it changed)."""
        key = (target, result.model)
        entry = self._snapshot.models.get(key) or ModelEntry(target, result.model)
        state = self._snapshot.targets.get(target)
        version = (state.version or "")[:MAX_TEXT] if state is not None else ""
        bench = Record.from_result(
            result, method=method, url=without_userinfo(url), ollama_version=version
        )
        if not bench.success and entry.benchmark is not None:
            # A failed cycle keeps the last good values; success 0 and the error say the rest.
            bench = entry.benchmark.failed(
                bench.error_type, bench.error, started_at=bench.started_at, at=bench.finished_at
            )
            bench = replace(bench, ollama_version=version)
        if bench.load_duration is None:  # stored with the carried value: survives a restart
            bench = replace(bench, load_duration=entry.load_duration)
        entry = replace(
            entry,
            benchmark=bench,
            counters=entry.counters.add(result),
            last_success=bench.finished_at if bench.success else entry.last_success,
            load_duration=bench.load_duration,
        )
        models = dict(self._snapshot.models)
        models[key] = entry
        self._swap(models=models)
        return bench

    def record_capacity(
        self, target: str, model: str, sweep: Sweep, settings: CapacitySettings, *, url: str = ""
    ) -> CapacityRecord | None:
        """A sweep ended. Contended or not loaded: the abort is counted by reason and the
        previous record stays (None). Else it is the model's record (refused part-way: the
        levels before the refusal, with what the server said, and the abort counted too)."""
        key = (target, model)
        entry = self._snapshot.models.get(key) or ModelEntry(target, model)
        if sweep.aborted is not None:
            entry = replace(
                entry, capacity_aborted=merge_counts(entry.capacity_aborted, {sweep.aborted: 1})
            )
        published: CapacityRecord | None = None
        if sweep.aborted in (None, "refused") and sweep.levels:
            state = self._snapshot.targets.get(target)
            version = (state.version or "") if state is not None else ""
            published = CapacityRecord.from_sweep(
                sweep, settings, url=without_userinfo(url), ollama_version=version
            )
            entry = replace(entry, capacity=published)
        models = dict(self._snapshot.models)
        models[key] = entry
        self._swap(models=models)
        return published

    def set_capacity_due(self, target: str, due: Mapping[str, float | None]) -> None:
        """When each model's next sweep is due (the page's "next sweep")."""
        models = dict(self._snapshot.models)
        changed = False
        for model, at in due.items():
            entry = models.get((target, model))
            if entry is not None and entry.capacity_due_at != at:
                models[(target, model)] = replace(entry, capacity_due_at=at)
                changed = True
        if changed:
            self._swap(models=models)

    def mark_failed(self, target: str, error_type: str, error: str) -> None:
        """A target went down: its models keep their last values with success 0."""
        models = dict(self._snapshot.models)
        now = time.time()
        for key, entry in models.items():
            if key[0] == target and entry.benchmark is not None and entry.benchmark.success:
                failed = entry.benchmark.failed(error_type, error, started_at=now, at=now)
                models[key] = replace(entry, benchmark=failed)
        self._swap(models=models)

    # -- persistence -------------------------------------------------------------------------

    async def restore(self) -> None:
        """Load each model's latest stored benchmark (before the loop starts). Every row is
        checked as input from a server is (``Database``): a bad one is skipped and counted."""
        if self._db is None:
            return
        rows = await asyncio.to_thread(self._db.latest)
        models = dict(self._snapshot.models)
        for target, model, bench, inventory in rows:
            if target not in self._snapshot.targets:
                continue
            models[(target, model)] = ModelEntry(
                target,
                model,
                # Whether it is loaded now is for the first /api/ps to say, not the disk.
                inventory=replace(inventory, loaded=None, vram_bytes=None) if inventory else None,
                benchmark=bench,
                last_success=bench.finished_at if bench.success else None,
                load_duration=bench.load_duration,
            )
        for target, model, sweep in await asyncio.to_thread(self._db.latest_capacity):
            key = (target, model)
            if target in self._snapshot.targets:
                models[key] = replace(models.get(key) or ModelEntry(target, model), capacity=sweep)
        self._swap(models=models, rows_skipped=self._db.rows_skipped)

    async def persist_capacity(self, target: str, model: str, record: CapacityRecord) -> None:
        """Write a published sweep, in a worker thread."""
        if self._db is None:
            return
        async with self._lock:
            await asyncio.to_thread(self._db.write_capacity, target, model, record)

    async def persist(self, target: str, model: str, bench: Record) -> None:
        """Write a result, with the model's inventory as it is now, in a worker thread."""
        if self._db is None:
            return
        entry = self._snapshot.models.get((target, model))
        inventory = entry.inventory if entry is not None else None
        async with self._lock:
            await asyncio.to_thread(self._db.write, target, model, bench, inventory)

    async def capacity_records(self) -> list[tuple[str, str, CapacityRecord]]:
        """Each model's latest stored load sweep (target, model, record), checked."""
        if self._db is None:
            return []
        return await asyncio.to_thread(self._db.latest_capacity)

    async def history(self, target: str | None = None) -> list[Stored]:
        if self._db is None:
            return []
        return await asyncio.to_thread(self._db.history, target)

    async def points(
        self, keys: Sequence[ModelKey], since: float, limit: int
    ) -> list[list[PointRow]]:
        """Each model's newest ``limit`` stored points since ``since`` (``Database.points``),
        read in a worker thread; [] each without storage."""
        if self._db is None:
            return [[] for _ in keys]
        return await asyncio.to_thread(self._db.points, keys, since, limit)

    def newest_finish(self, target: str) -> float | None:
        times = [
            e.benchmark.finished_at
            for (t, _), e in self._snapshot.models.items()
            if t == target and e.benchmark is not None
        ]
        return max(times) if times else None

    async def close(self) -> None:
        if self._db is not None:
            async with self._lock:
                await asyncio.to_thread(self._db.close)
