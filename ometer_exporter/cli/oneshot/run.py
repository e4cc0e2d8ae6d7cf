"""``ometer-exporter bench``: one benchmark cycle in the terminal, with OMeter's flags.

It reuses the exporter end to end, so a number means the same here as on ``/metrics``:
configuration (``config.load_settings``), one cycle of the loop (``Scheduler.discover_once``,
``Scheduler.measure_once``: the workers and lag probe of ``serve``), selection
(``selection.wanted``, OMeter's exact-or-family match), measurement (``measure_model``), the
store (an in-memory snapshot, persisted to the same SQLite file as ``serve`` so the next run can
show trends), and the export rows, sorting and encodings (``export``). Only the orchestration
of one cycle lives here: targets concurrently, ``--parallel`` models at once per target.

Environment as OMeter (``ENVIRONMENT_HELP``): ``OLLAMA_LOCAL_BASE_URL`` (else ``OLLAMA_HOST``),
``OLLAMA_CLOUD_BASE_URL``, ``OLLAMA_CLOUD_API_KEY`` (a cloud target exists only with a key, or
when the config file names one), ``OMETER_RUNS``, ``OMETER_PARALLEL``, ``NO_COLOR``; also read
from ``./.env``, ``~/.env`` and ``~/.config/ometer/.env``, the real environment winning.

Exit codes: 0 ok, 1 nothing matched or no target could be reached, 2 usage or configuration.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, TextIO

from ometer_exporter.cli.oneshot.options import (
    CLOUD_TARGET,
    EXIT_NOTHING,
    EXIT_OK,
    EXIT_USAGE,
    Options,
    UsageError,
    build_parser,
    for_oneshot,
    no_target_message,
    parse_options,
    with_dotenv,
)
from ometer_exporter.cli.oneshot.screen import Progress, Screen, collected_warnings, isatty, menu
from ometer_exporter.client.errors import OllamaError
from ometer_exporter.config.checks import ConfigError
from ometer_exporter.config.settings import StorageSettings, TargetSettings
from ometer_exporter.loop.scheduler import Scheduler
from ometer_exporter.loop.selection import target_state, wanted
from ometer_exporter.measure.results import DiscardReason, ModelResult
from ometer_exporter.names import match_model
from ometer_exporter.store.records import ModelEntry, ModelKey, Snapshot, Stored
from ometer_exporter.store.store import Store
from ometer_exporter.views import grades, table
from ometer_exporter.views import query as queries
from ometer_exporter.views import rows as export

log = logging.getLogger(__name__)


def main(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.reverse and args.sort is None:
            parser.error("--reverse needs --sort (one of " + ", ".join(queries.SORT_KEYS) + ")")
    except SystemExit as exc:  # argparse has printed the problem (or the help)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    environ = with_dotenv(env)
    try:
        opts = parse_options(args, environ, stdout)
    except (UsageError, ConfigError) as exc:
        print(f"ometer-exporter bench: {exc}", file=stderr)
        return EXIT_USAGE

    if opts.history:
        names = None
        if opts.local != opts.cloud:  # one kind asked for: its target names
            chosen = opts.local_targets if opts.local else opts.cloud_targets
            names = frozenset(t.name for t in chosen) or frozenset({CLOUD_TARGET})
        return asyncio.run(_history(opts, names, stdout, stderr))

    local, cloud = opts.local, opts.cloud
    if not local and not cloud:
        if not opts.models and isatty(stdin):
            picked = menu(stdin, stderr, has_cloud=bool(opts.cloud_targets))
            if picked is None:
                print("Cancelled.", file=stderr)
                return EXIT_OK
            local, cloud = picked
        else:
            local = cloud = True
    targets = (opts.local_targets if local else ()) + (opts.cloud_targets if cloud else ())
    if not targets:
        print(f"ometer-exporter bench: {no_target_message(opts, cloud_only=not local)}",
              file=stderr)  # fmt: skip
        return EXIT_USAGE
    if opts.measure and opts.parallel > 1:
        print(f"warning: --parallel {opts.parallel} runs several models at once on each "
              "Ollama: the numbers then include queueing for its slots, not just the model",
              file=stderr)  # fmt: skip
    targets = tuple(for_oneshot(t, opts) for t in targets)
    return asyncio.run(_bench(opts, targets, stdout, stderr))


def _write_exports(opts: Options, rows: Sequence[export.Row], stdout: TextIO,
                   stderr: TextIO) -> int:  # fmt: skip
    for path, encode in ((opts.json_path, export.to_json), (opts.csv_path, export.to_csv)):
        if path is None:
            continue
        text = encode(rows)
        if path == "-":
            stdout.write(text if text.endswith("\n") else text + "\n")
            stdout.flush()
            continue
        try:
            with open(Path(path).expanduser(), "w", encoding="utf-8", newline="") as handle:
                handle.write(text if text.endswith("\n") else text + "\n")
        except OSError as exc:
            print(f"ometer-exporter bench: cannot write {path}: {exc.strerror}", file=stderr)
            return EXIT_USAGE
        print(f"wrote {len(rows)} row{'' if len(rows) == 1 else 's'} to {path}", file=stderr)
    return EXIT_OK


def _layout(opts: Options, *, targets: int, runs: int, history: bool = False) -> table.Layout:
    """Columns of the table; ``history`` adds when each stored result was taken."""
    measured = opts.measure or history
    both = not (opts.ttft or opts.tps)
    return table.Layout(
        ttft=measured and (opts.ttft or both),
        tps=measured and (opts.tps or both),
        runs=runs if opts.verbose and measured else 0,
        target=targets > 1,
        inventory=True,
        benchmarked_at=history,
    )


# -- one cycle -------------------------------------------------------------------------------


@dataclass
class _Run:
    """What the run knows while it goes: what is selected, queued, running.

    It is the cycle's ``CycleProgress``: each report updates the sets, then ``on_change``
    redraws (with the model that just finished, if one did).
    """

    opts: Options
    store: Store
    targets: tuple[TargetSettings, ...]
    selected: list[ModelKey] = field(default_factory=list)
    queued: set[ModelKey] = field(default_factory=set)
    running: list[ModelKey] = field(default_factory=list)
    previous: dict[ModelKey, export.Row] = field(default_factory=dict)
    on_change: Callable[[ModelKey | None], None] = lambda finished: None

    def rows(self) -> list[export.Row]:
        query = queries.Query(
            targets=tuple(t.name for t in self.targets),
            sort=self.opts.sort,
            reverse=self.opts.reverse,
            verbose=self.opts.verbose,
        )
        chosen = set(self.selected)
        return [r for r in export.rows(self.store.snapshot, query)
                if (r["target"], r["model"]) in chosen]  # fmt: skip

    def text(self, layout: table.Layout) -> str:
        return table.render(
            self.rows(),
            layout,
            color=self.opts.color,
            queued=frozenset(self.queued),
            running=frozenset(self.running),
            previous=self.previous,
        )

    def started(self, target: str, model: str) -> None:
        self.queued.discard((target, model))
        self.running.append((target, model))
        self.on_change(None)

    def skipped(self, target: str, model: str) -> None:
        self.queued.discard((target, model))

    def finished(self, target: str, model: str, result: ModelResult | None) -> None:
        if result is not None and not result.success and result.first_error is None:
            _explain_discarded(target, model, result.discarded)
        self.running.remove((target, model))
        self.on_change((target, model))


async def _bench(
    opts: Options, targets: tuple[TargetSettings, ...], stdout: TextIO, stderr: TextIO
) -> int:
    storage = opts.settings.storage
    store = Store(storage.path if opts.measure else None, retention=storage.retention)
    run = _Run(opts, store, targets)
    async with Scheduler(store).started() as scheduler:
        with collected_warnings(stderr):
            found = await scheduler.discover_once(targets)
            code = _select(run, found, stderr)
            if code is not None:
                return code
            show_table = not opts.to_stdout
            layout = _layout(opts, targets=len(targets),
                             runs=max(t.benchmark.runs for t in targets))  # fmt: skip
            if opts.measure and await _measure(run, scheduler, layout, stdout, stderr):
                show_table = False  # the live table is on the screen already
            if show_table:
                stdout.write(run.text(layout) + "\n")
                stdout.flush()
            return _write_exports(opts, run.rows(), stdout, stderr)


def _select(run: _Run, found: Sequence[list[str] | OllamaError], stderr: TextIO) -> int | None:
    """The models the run measures, from what discovery found; an exit code if there are none."""
    opts = run.opts
    reached = [(t, tags) for t, tags in zip(run.targets, found, strict=True)
               if not isinstance(tags, OllamaError)]  # fmt: skip
    for t, tags in zip(run.targets, found, strict=True):
        if isinstance(tags, OllamaError):
            print(f"ometer-exporter bench: cannot reach {t.name} ({t.url}): {tags}", file=stderr)
    if not reached:
        return EXIT_NOTHING
    run.selected = [(t.name, name) for t, tags in reached for name in tags if wanted(t, name)]
    listed = [name for _, tags in reached for name in tags]
    unmatched = [q for q in opts.models if not any(match_model(q, name) for name in listed)]
    if opts.models and not run.selected:
        where = ", ".join(t.name for t in run.targets)
        print(f"ometer-exporter bench: no model matches {', '.join(map(repr, unmatched))} "
              f"on {where}; `ometer-exporter bench` lists the models", file=stderr)  # fmt: skip
        return EXIT_NOTHING
    for query in unmatched:
        print(f"warning: no model matches {query!r}", file=stderr)
    return None


async def _measure(
    run: _Run, scheduler: Scheduler, layout: table.Layout, stdout: TextIO, stderr: TextIO
) -> bool:
    """Benchmark the selected models, showing progress: a live table on a terminal (then True),
    or a progress line on stderr when the table is not wanted."""
    opts = run.opts
    storage = opts.settings.storage
    run.previous = await _previous(run.targets, storage, run.selected)
    run.queued = set(run.selected)
    show_table = not opts.to_stdout
    live = Screen(stdout) if show_table and isatty(stdout) else None
    progress = None if show_table else Progress(stderr, len(run.selected))

    def changed(finished: ModelKey | None) -> None:
        if live is not None:
            done = len(run.selected) - len(run.queued) - len(run.running)
            note = f"benchmarking… {done}/{len(run.selected)} done"
            # A table taller than the terminal cannot be redrawn: don't even render it.
            tall = len(run.selected) + 4 >= shutil.get_terminal_size().lines
            live.draw(note if tall else run.text(layout), fallback=note)
        if progress is not None:
            progress.update(run.running, finished)

    run.on_change = changed
    changed(None)
    try:
        limits = await scheduler.measure_once(run.selected, parallel=opts.parallel, progress=run)
    finally:
        if progress is not None:
            progress.close()
    for target, error in limits.items():
        log.warning("%s: usage limit reached (%s); the models after it were not measured",
                    target, error)  # fmt: skip
    if live is None:
        return False
    live.draw(run.text(layout), final=True)
    return True


_DISCARDED_WHY: Final = {
    "loop_lag": "the machine was too busy to time it (event loop stalled)",
    "reloaded": "the model was reloaded during the run",
    "short": "fewer than 8 output tokens",
}


def _explain_discarded(target: str, model: str, discarded: Mapping[DiscardReason, int]) -> None:
    """A model without a value and without an error: say why its runs were left out."""
    why = "; ".join(f"{n} run{'' if n == 1 else 's'}: {_DISCARDED_WHY.get(reason, reason)}"
                    for reason, n in discarded.items())  # fmt: skip
    log.warning("%s (%s): no run was counted (%s)", grades.plain(model), target, why or "none")


async def _previous(
    targets: Sequence[TargetSettings], storage: StorageSettings, keys: Sequence[ModelKey]
) -> dict[ModelKey, export.Row]:
    """The latest stored result of each model before this run: what the arrows compare with."""
    store = Store(storage.path, retention=storage.retention)
    try:
        store.set_targets(target_state(t) for t in targets)
        await store.restore()
        wanted_keys = set(keys)
        return {
            key: export.row(entry)
            for key, entry in store.snapshot.models.items()
            if key in wanted_keys and entry.benchmark is not None
        }
    finally:
        await store.close()


# -- --history -------------------------------------------------------------------------------


async def _history(
    opts: Options, names: frozenset[str] | None, stdout: TextIO, stderr: TextIO
) -> int:
    storage = opts.settings.storage
    stored: list[Stored] = []
    if await asyncio.to_thread(Path(storage.path).is_dir):  # reading must not create a store
        store = Store(storage.path, retention=storage.retention)
        try:
            stored = await store.history()  # oldest first
        finally:
            await store.close()
    picked = [
        (target, model, bench, inventory)
        for target, model, bench, inventory in stored
        if (names is None or target in names)
        and (not opts.models or any(match_model(q, model) for q in opts.models))
    ]
    if not picked:
        what = f" matching {', '.join(map(repr, opts.models))}" if opts.models else ""
        print(f"no stored results{what} in {storage.path}", file=stderr)
        return EXIT_NOTHING if opts.models else EXIT_OK
    latest: dict[ModelKey, ModelEntry] = {}
    previous: dict[ModelKey, export.Row] = {}
    for target, model, bench, inventory in picked:
        if (target, model) in latest:
            previous[(target, model)] = export.row(latest[(target, model)])
        latest[(target, model)] = ModelEntry(target, model, inventory=inventory, benchmark=bench)
    if opts.verbose:  # every stored result, oldest first within each model
        rows = export.sort_rows(
            [export.row(ModelEntry(t, m, inventory=i, benchmark=b), verbose=True)
             for t, m, b, i in picked],
            opts.sort,
            reverse=opts.reverse,
        )  # fmt: skip
    else:
        snapshot = Snapshot(0, MappingProxyType({}), MappingProxyType(latest))
        rows = export.rows(snapshot, queries.Query(sort=opts.sort, reverse=opts.reverse))
    if not opts.to_stdout:
        runs = max(len(b.run_ttft) for _, _, b, _ in picked)
        layout = _layout(opts, targets=len({t for t, _ in latest}), runs=runs, history=True)
        text = table.render(rows, layout, color=opts.color,
                            previous=None if opts.verbose else previous)  # fmt: skip
        stdout.write(text + "\n")
        stdout.flush()
    return _write_exports(opts, rows, stdout, stderr)
