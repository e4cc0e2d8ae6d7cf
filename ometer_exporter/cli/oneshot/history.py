"""``bench --history``: the stored results instead of a measurement (with ``--capacity`` each
model's latest stored load sweep, as ``bench --capacity`` prints one).

It reads the SQLite store and nothing else: no request goes to any server, and no API key is
needed (``parse_options`` loads the configuration without reading keys for it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TextIO, TypeVar

from ometer_exporter.cli.oneshot import output
from ometer_exporter.cli.oneshot.options import CLOUD_TARGET, EXIT_NOTHING, EXIT_OK, Options
from ometer_exporter.names import match_model
from ometer_exporter.store.records import ModelEntry, ModelKey, Snapshot, Stored
from ometer_exporter.store.store import Store
from ometer_exporter.views import curve, grades, table
from ometer_exporter.views import query as queries
from ometer_exporter.views import rows as export

_T = TypeVar("_T")


def target_names(opts: Options) -> frozenset[str] | None:
    """The targets whose results to show: with one of --local/--cloud its targets' names
    (``cloud`` when no cloud target is configured), else every target (None)."""
    if opts.local == opts.cloud:
        return None
    chosen = opts.local_targets if opts.local else opts.cloud_targets
    return frozenset(t.name for t in chosen) or frozenset({CLOUD_TARGET})


def _entry(target: str, model: str, stored: Stored) -> ModelEntry:
    _, _, bench, inventory = stored
    return ModelEntry(target, model, inventory=inventory, benchmark=bench,
                      load_duration=bench.load_duration)  # fmt: skip


def latest_and_previous(
    picked: Sequence[Stored],
) -> tuple[dict[ModelKey, ModelEntry], dict[ModelKey, export.Row]]:
    """Each model's latest result (``picked`` is oldest first), and the one before it where an
    arrow may compare the two (``grades.comparable``: the same URL and method)."""
    latest: dict[ModelKey, ModelEntry] = {}
    previous: dict[ModelKey, export.Row] = {}
    for stored in picked:
        target, model, bench, _ = stored
        key = (target, model)
        before = latest.get(key)
        previous.pop(key, None)
        if (
            before is not None
            and before.benchmark is not None
            and grades.comparable(
                bench, before.benchmark, new_target=target, old_target=before.target
            )
        ):
            previous[key] = export.row(before)
        latest[key] = _entry(target, model, stored)
    return latest, previous


def _wanted(opts: Options, names: frozenset[str] | None, target: str, model: str) -> bool:
    return (names is None or target in names) and (
        not opts.models or any(match_model(q, model) for q in opts.models)
    )


async def _read(opts: Options, read: Callable[[Store], Awaitable[list[_T]]]) -> list[_T]:
    """What ``read`` gets from the store, [] when there is none (reading must not create one)."""
    storage = opts.settings.storage
    if not await asyncio.to_thread(Path(storage.path).is_dir):
        return []
    store = Store(storage.path, retention=storage.retention)
    try:
        return await read(store)
    finally:
        await store.close()


async def sweeps(opts: Options, stdout: TextIO, stderr: TextIO) -> int:
    """Each chosen model's latest stored load sweep: its curve, or the rows of
    ``/export?view=capacity`` with --json/--csv."""
    names = target_names(opts)
    records = [r for r in await _read(opts, Store.capacity_records)
               if _wanted(opts, names, r[0], r[1])]  # fmt: skip
    if not records:
        what = f" matching {', '.join(map(repr, opts.models))}" if opts.models else ""
        print(f"no stored load sweeps{what} in {opts.settings.storage.path}", file=stderr)
        return EXIT_NOTHING if opts.models else EXIT_OK
    records.sort(key=lambda r: (r[0], r[1]))
    if not opts.to_stdout:
        for target, model, record in records:
            stdout.write(curve.render(target, model, record, color=opts.color) + "\n\n")
        stdout.flush()
    entries = {(t, m): ModelEntry(t, m, capacity=r) for t, m, r in records}
    snapshot = Snapshot(0, MappingProxyType({}), MappingProxyType(entries))
    rows = export.capacity_rows(snapshot, queries.Query())
    return output.write_exports(opts, rows, stdout, stderr, columns=export.CAPACITY_COLUMNS)


async def history(opts: Options, stdout: TextIO, stderr: TextIO) -> int:
    if opts.capacity is not None:
        return await sweeps(opts, stdout, stderr)
    storage = opts.settings.storage
    names = target_names(opts)
    stored: list[Stored] = await _read(opts, Store.history)  # oldest first
    picked = [s for s in stored if _wanted(opts, names, s[0], s[1])]
    if not picked:
        what = f" matching {', '.join(map(repr, opts.models))}" if opts.models else ""
        print(f"no stored results{what} in {storage.path}", file=stderr)
        return EXIT_NOTHING if opts.models else EXIT_OK
    latest, previous = latest_and_previous(picked)
    if opts.verbose:  # every stored result, oldest first within each model
        rows = export.sort_rows(
            [export.row(_entry(s[0], s[1], s), verbose=True) for s in picked],
            opts.sort,
            reverse=opts.reverse,
        )
    else:
        snapshot = Snapshot(0, MappingProxyType({}), MappingProxyType(latest))
        rows = export.rows(snapshot, queries.Query(sort=opts.sort, reverse=opts.reverse))
    if not opts.to_stdout:
        runs = max(len(s[2].run_ttft) for s in picked)
        columns = output.layout(opts, targets=len({t for t, _ in latest}), runs=runs,
                                history=True)  # fmt: skip
        text = table.render(rows, columns, color=opts.color,
                            previous=None if opts.verbose else previous,
                            display=opts.settings.display)  # fmt: skip
        stdout.write(text + "\n")
        stdout.flush()
    return output.write_exports(opts, rows, stdout, stderr)
