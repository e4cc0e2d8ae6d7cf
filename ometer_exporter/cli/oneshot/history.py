"""``bench --history``: the stored results instead of a measurement.

It reads the SQLite store and nothing else: no request goes to any server, and no API key is
needed (``parse_options`` loads the configuration without reading keys for it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TextIO

from ometer_exporter.cli.oneshot import output
from ometer_exporter.cli.oneshot.options import CLOUD_TARGET, EXIT_NOTHING, EXIT_OK, Options
from ometer_exporter.names import match_model
from ometer_exporter.store.records import ModelEntry, ModelKey, Snapshot, Stored
from ometer_exporter.store.store import Store
from ometer_exporter.views import grades, table
from ometer_exporter.views import query as queries
from ometer_exporter.views import rows as export


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


async def history(opts: Options, stdout: TextIO, stderr: TextIO) -> int:
    storage = opts.settings.storage
    names = target_names(opts)
    stored: list[Stored] = []
    if await asyncio.to_thread(Path(storage.path).is_dir):  # reading must not create a store
        store = Store(storage.path, retention=storage.retention)
        try:
            stored = await store.history()  # oldest first
        finally:
            await store.close()
    picked = [
        s
        for s in stored
        if (names is None or s[0] in names)
        and (not opts.models or any(match_model(q, s[1]) for q in opts.models))
    ]
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
