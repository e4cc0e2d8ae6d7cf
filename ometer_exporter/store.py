"""Latest results as an immutable snapshot, swapped atomically; SQLite persistence and history.

Only the event loop's scheduler writes (``Store`` methods); readers (collector, export, page)
take ``store.snapshot`` once and work on that object, which never changes. Every change makes a
new ``Snapshot`` that shares the unchanged ``ModelEntry`` objects, so a renderer can cache its
work per entry by identity.

SQLite work runs in a worker thread, never on the event loop. A failing disk is logged and the
exporter keeps serving from memory.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from ometer_exporter.measure import ModelResult

log = logging.getLogger(__name__)

# Histogram upper bounds (seconds): ~14 buckets each, per DESIGN §4.
TTFT_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
TPOT_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5,
)  # fmt: skip

ModelKey = tuple[str, str]  # (target, model)
Stored = tuple[str, str, "Benchmark", "Inventory | None"]  # a stored row: target, model, ...


@dataclass(frozen=True, slots=True)
class Inventory:
    """What a target says about a model (``/api/tags`` + ``/api/show`` + ``/api/ps``)."""

    family: str = ""
    parameter_size: str = ""
    quantization_level: str = ""
    format: str = ""
    parameters: int | None = None
    context_length: int | None = None
    size_bytes: int | None = None
    modified_at: float | None = None  # Unix seconds
    capabilities: tuple[str, ...] = ()
    loaded: bool | None = None  # None: the target has no /api/ps (cloud), or not asked yet
    vram_bytes: int | None = None
    wanted: bool = True  # include/exclude of its target let it in
    select_all: bool = False  # its target benchmarks every model, not only loaded ones

    @property
    def selected(self) -> bool:
        """Due to be benchmarked: wanted, and loaded or on a ``select: all`` target."""
        return self.wanted and (self.select_all or self.loaded is True)

    @classmethod
    def from_json(cls, text: str) -> Inventory:
        return cls(**_stored_fields(cls, text, tuples=("capabilities",)))


def _stored_fields(cls: type, text: str, *, tuples: tuple[str, ...]) -> dict[str, Any]:
    """A stored JSON object's known fields (unknown ones, from a newer version, are dropped)."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("not an object")
    known = {f.name for f in fields(cls)}
    data = {k: v for k, v in raw.items() if k in known}
    for key in tuples:
        data[key] = tuple(data.get(key) or ())
    return data


@dataclass(frozen=True, slots=True)
class Benchmark:
    """What a model's latest completed cycle left behind (persisted; survives restarts)."""

    kind: str
    started_at: float
    finished_at: float
    success: bool
    ttft: float | None = None
    time_to_first_content: float | None = None
    tokens_per_second: float | None = None
    client_tokens_per_second: float | None = None
    prompt_tokens_per_second: float | None = None
    request_duration: float | None = None
    queue_wait: float | None = None
    load_duration: float | None = None
    error_type: str | None = None
    error: str | None = None
    run_ttft: tuple[float | None, ...] = ()
    run_tokens_per_second: tuple[float | None, ...] = ()
    prompt_set: str = ""
    num_predict: int | None = None
    think: str = ""

    @classmethod
    def from_result(cls, result: ModelResult, *, method: Method) -> Benchmark:
        first_error = result.first_error
        chat = result.kind == "chat"
        return cls(
            kind=result.kind,
            started_at=result.started_at,
            finished_at=result.finished_at,
            success=result.success,
            ttft=result.ttft,
            time_to_first_content=result.time_to_first_content,
            tokens_per_second=result.tokens_per_second,
            client_tokens_per_second=result.client_tokens_per_second,
            prompt_tokens_per_second=result.prompt_tokens_per_second,
            request_duration=result.request_duration,
            queue_wait=result.queue_wait,
            load_duration=result.load_duration,
            error_type=first_error.error_type.value
            if first_error and first_error.error_type
            else None,
            error=first_error.error if first_error else None,
            run_ttft=tuple(r.ttft if chat else r.request_duration for r in result.runs),
            run_tokens_per_second=tuple(
                r.tokens_per_second if chat else r.prompt_tokens_per_second for r in result.runs
            ),
            prompt_set=method.prompt_set,
            num_predict=method.num_predict,
            think=method.think,
        )

    def failed(
        self, error_type: str | None, error: str | None, *, started_at: float, at: float
    ) -> Benchmark:
        """This result's values, marked as the outcome of a later cycle that failed."""
        return replace(
            self,
            success=False,
            error_type=error_type,
            error=error,
            started_at=started_at,
            finished_at=at,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Benchmark:
        return cls(**_stored_fields(cls, text, tuples=("run_ttft", "run_tokens_per_second")))


@dataclass(frozen=True, slots=True)
class Method:
    """The method behind the numbers (``ometer_benchmark_config_info``)."""

    prompt_set: str
    num_predict: int
    think: str


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative-ready bucket counts (per bucket, not cumulative), sum and count."""

    counts: tuple[int, ...]
    total: float = 0.0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> Histogram:
        return cls(counts=(0,) * (len(bounds) + 1))

    def observe(self, bounds: tuple[float, ...], values: Iterable[float]) -> Histogram:
        counts = list(self.counts)
        total = self.total
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += 1
            total += value
        return Histogram(tuple(counts), total)

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class Counters:
    """Totals since the process started (Prometheus handles the reset on restart)."""

    runs: int = 0
    output_tokens: int = 0
    prompt_tokens: int = 0
    errors: tuple[tuple[str, int], ...] = ()
    discarded: tuple[tuple[str, int], ...] = ()
    ttft: Histogram = field(default_factory=lambda: Histogram.empty(TTFT_BUCKETS))
    tpot: Histogram = field(default_factory=lambda: Histogram.empty(TPOT_BUCKETS))

    def add(self, result: ModelResult) -> Counters:
        good = result.good_runs
        return Counters(
            runs=self.runs + result.requests,
            output_tokens=self.output_tokens + result.output_tokens,
            prompt_tokens=self.prompt_tokens + result.prompt_tokens,
            errors=_merge(self.errors, {k.value: v for k, v in result.errors.items()}),
            discarded=_merge(self.discarded, {str(k): v for k, v in result.discarded.items()}),
            ttft=self.ttft.observe(TTFT_BUCKETS, (r.ttft for r in good if r.ttft is not None))
            if result.kind == "chat"
            else self.ttft,
            tpot=self.tpot.observe(
                TPOT_BUCKETS,
                (
                    t
                    for r in good
                    if "short" not in r.discarded and (t := r.time_per_output_token) is not None
                ),
            ),
        )


def _merge(old: tuple[tuple[str, int], ...], new: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    merged = dict(old)
    for key, count in new.items():
        merged[key] = merged.get(key, 0) + count
    return tuple(sorted(merged.items()))


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model on one target: inventory, latest benchmark, totals."""

    target: str
    model: str
    inventory: Inventory | None = None  # None: restored, not yet seen in /api/tags
    benchmark: Benchmark | None = None
    counters: Counters = field(default_factory=Counters)
    last_success: float | None = None
    # load_duration of the last cold (warmup) request, carried forward through the cycles that
    # find the model already loaded and so cannot measure a load.
    load_duration: float | None = None


@dataclass(frozen=True, slots=True)
class TargetState:
    name: str
    cloud: bool
    interval: float
    method: Method
    up: bool | None = None  # None: not contacted yet
    version: str | None = None
    last_cycle_started: float | None = None
    last_cycle_duration: float | None = None
    error: str | None = None
    loop_errors: int = 0  # unexpected exceptions the loop survived


@dataclass(frozen=True, slots=True)
class Snapshot:
    generation: int
    targets: Mapping[str, TargetState]
    models: Mapping[ModelKey, ModelEntry]
    config_reload_ok: bool = True


_EMPTY: Final = Snapshot(0, MappingProxyType({}), MappingProxyType({}))


class Store:
    """Holds the current snapshot; every change builds a new one and swaps it in."""

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, retention: float = 7 * 86400.0
    ):
        self._snapshot = _EMPTY
        self._db = _Database(Path(path) / "ometer.sqlite3", retention) if path else None
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
    ) -> Snapshot:
        old = self._snapshot
        self._snapshot = Snapshot(
            generation=old.generation + 1,
            targets=MappingProxyType(dict(targets)) if targets is not None else old.targets,
            models=MappingProxyType(dict(models)) if models is not None else old.models,
            config_reload_ok=old.config_reload_ok if config_reload_ok is None else config_reload_ok,
        )
        return self._snapshot

    # -- changes (event loop only) -----------------------------------------------------------

    def set_targets(self, targets: Iterable[TargetState]) -> None:
        """Install the configured targets; models of targets no longer configured leave."""
        new = {t.name: t for t in targets}
        old = self._snapshot.targets
        merged = {
            name: replace(t, up=old[name].up, version=old[name].version,
                          last_cycle_started=old[name].last_cycle_started,
                          last_cycle_duration=old[name].last_cycle_duration,
                          loop_errors=old[name].loop_errors)
            if name in old else t
            for name, t in new.items()
        }  # fmt: skip
        models = {k: v for k, v in self._snapshot.models.items() if k[0] in new}
        self._swap(targets=merged, models=models)

    def update_target(self, name: str, **changes: Any) -> None:
        targets = dict(self._snapshot.targets)
        if name in targets:
            targets[name] = replace(targets[name], **changes)
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

    def record(self, target: str, result: ModelResult, method: Method) -> Benchmark:
        """A model's cycle finished: new latest values, totals, and a row for persistence."""
        key = (target, result.model)
        entry = self._snapshot.models.get(key) or ModelEntry(target, result.model)
        bench = Benchmark.from_result(result, method=method)
        if not bench.success and entry.benchmark is not None:
            # A failed cycle keeps the last good values; success 0 and the error say the rest.
            bench = entry.benchmark.failed(
                bench.error_type, bench.error, started_at=bench.started_at, at=bench.finished_at
            )
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
        """Load each model's latest stored benchmark (before the loop starts)."""
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
        self._swap(models=models)

    async def persist(self, target: str, model: str, bench: Benchmark) -> None:
        """Write a result, with the model's inventory as it is now, in a worker thread."""
        if self._db is None:
            return
        entry = self._snapshot.models.get((target, model))
        inventory = entry.inventory if entry is not None else None
        async with self._lock:
            await asyncio.to_thread(self._db.write, target, model, bench, inventory)

    async def history(self, target: str | None = None) -> list[Stored]:
        if self._db is None:
            return []
        return await asyncio.to_thread(self._db.history, target)

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


class _Database:
    """SQLite file; every method runs in a worker thread. Failures are logged, never raised."""

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS results ("
        " target TEXT NOT NULL, model TEXT NOT NULL, finished_at REAL NOT NULL,"
        " benchmark TEXT NOT NULL, inventory TEXT)",
        "CREATE INDEX IF NOT EXISTS results_by_model ON results (target, model, finished_at)",
        "CREATE INDEX IF NOT EXISTS results_by_time ON results (finished_at)",
    )

    def __init__(self, path: Path, retention: float) -> None:
        self.path = path
        self.retention = retention
        self._conn: sqlite3.Connection | None = None
        self._broken = False

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is not None or self._broken:
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
            for statement in self._SCHEMA:
                conn.execute(statement)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
            if "inventory" not in columns:  # a file written before inventories were kept
                conn.execute("ALTER TABLE results ADD COLUMN inventory TEXT")
            conn.commit()
        except (sqlite3.Error, OSError) as exc:
            log.warning("storage %s unusable (%s); results are kept in memory only", self.path, exc)
            self._broken = True
            return None
        self._conn = conn
        return conn

    def write(
        self, target: str, model: str, bench: Benchmark, inventory: Inventory | None
    ) -> None:
        conn = self._connect()
        if conn is None:
            return
        try:
            inv = json.dumps(asdict(inventory), allow_nan=False) if inventory else None
            with conn:
                conn.execute(
                    "INSERT INTO results (target, model, finished_at, benchmark, inventory)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (target, model, bench.finished_at, bench.to_json(), inv),
                )
                conn.execute(
                    "DELETE FROM results WHERE finished_at < ?", (time.time() - self.retention,)
                )
        except (sqlite3.Error, OSError, ValueError) as exc:
            log.warning("could not store the result of %s on %s: %s", model, target, exc)

    def latest(self) -> list[Stored]:
        return self._select(
            "SELECT target, model, benchmark, inventory FROM results r WHERE finished_at = "
            "(SELECT MAX(finished_at) FROM results WHERE target = r.target AND model = r.model)",
            (),
        )

    def history(self, target: str | None) -> list[Stored]:
        columns = "SELECT target, model, benchmark, inventory FROM results"
        if target is None:
            return self._select(f"{columns} ORDER BY finished_at", ())
        return self._select(f"{columns} WHERE target = ? ORDER BY finished_at", (target,))

    def _select(self, sql: str, args: tuple[Any, ...]) -> list[Stored]:
        conn = self._connect()
        if conn is None:
            return []
        try:
            rows = conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            log.warning("could not read stored results from %s: %s", self.path, exc)
            return []
        out: list[Stored] = []
        for target, model, text, inventory in rows:
            try:
                bench = Benchmark.from_json(text)
                inv = Inventory.from_json(inventory) if inventory else None
            except (ValueError, TypeError) as exc:
                log.warning("skipping an unreadable stored result of %s: %s", model, exc)
                continue
            out.append((str(target), str(model), bench, inv))
        return out

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
