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
from ``./.env``, ``~/.env`` and ``~/.config/ometer/.env``, the real environment winning (read by
``cli.main`` for both commands). ``--history`` lives in ``history``, ``--capacity`` (load sweeps
instead of the regular runs, through ``Scheduler.sweep_once``) in ``sweeps``, the columns,
exports and exit code in ``output``.

Exit codes (``ENVIRONMENT_HELP``): 0 every model measured (or swept), 1 nothing matched (or
nothing to sweep) or no target could be reached, 2 usage or configuration, 3 some models failed
(or their load sweep was aborted or refused) or some target was not reached.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TextIO

from ometer_exporter.cli.oneshot import output
from ometer_exporter.cli.oneshot.history import history
from ometer_exporter.cli.oneshot.options import (
    EXIT_NOTHING,
    EXIT_OK,
    EXIT_USAGE,
    Options,
    UsageError,
    build_parser,
    for_oneshot,
    no_target_message,
    parse_options,
)
from ometer_exporter.cli.oneshot.screen import Progress, Screen, collected_warnings, isatty, menu
from ometer_exporter.cli.oneshot.sweeps import sweep_models
from ometer_exporter.client.errors import OllamaError
from ometer_exporter.config.checks import ConfigError
from ometer_exporter.config.settings import StorageSettings, TargetSettings
from ometer_exporter.loop.scheduler import Scheduler
from ometer_exporter.loop.selection import target_state, wanted
from ometer_exporter.measure.results import DiscardReason, ModelResult
from ometer_exporter.names import match_model
from ometer_exporter.store.records import ModelEntry, ModelKey, Record
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
    """Run ``bench`` with ``argv`` (its flags); ``env`` is the environment with the ``.env``
    files already read (``cli.environment.with_dotenv``, as for ``serve``)."""
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
    try:
        opts = parse_options(args, env, stdout)
    except (UsageError, ConfigError) as exc:
        print(f"ometer-exporter bench: {exc}", file=stderr)
        return EXIT_USAGE

    if opts.history:
        return asyncio.run(history(opts, stdout, stderr))
    picked = _which(opts, stdin, stderr)
    if picked is None:
        print("Cancelled.", file=stderr)
        return EXIT_OK
    local, cloud = picked
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


def _which(opts: Options, stdin: TextIO, stderr: TextIO) -> tuple[bool, bool] | None:
    """(local, cloud): the flags; with neither, the menu when there is a choice to make (both
    kinds of target exist, a terminal, no ``--model``), else both. None: cancelled."""
    if opts.local or opts.cloud:
        return opts.local, opts.cloud
    if opts.local_targets and opts.cloud_targets and not opts.models and isatty(stdin):
        return menu(stdin, stderr)
    return True, True


# -- one cycle -------------------------------------------------------------------------------


@dataclass
class _Run:
    """What the run knows while it goes: what is selected, queued, running, measured.

    It is the cycle's ``CycleProgress``: each report updates the sets, then ``on_change``
    redraws (with the model that just finished, if one did).
    """

    opts: Options
    store: Store
    targets: tuple[TargetSettings, ...]
    selected: list[ModelKey] = field(default_factory=list)
    queued: set[ModelKey] = field(default_factory=set)
    running: list[ModelKey] = field(default_factory=list)
    measured: set[ModelKey] = field(default_factory=set)  # finished with a good run
    unreached: list[str] = field(default_factory=list)  # targets discovery could not reach
    previous: dict[ModelKey, Record] = field(default_factory=dict)  # stored before this run
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
            previous=self.comparable_previous(),
            display=self.opts.settings.display,
        )

    def comparable_previous(self) -> dict[ModelKey, export.Row]:
        """The stored results an arrow may compare this run's with (``grades.comparable``:
        the same URL and method); a model measured otherwise before gets no arrow."""
        out: dict[ModelKey, export.Row] = {}
        for key, old in self.previous.items():
            entry = self.store.snapshot.models.get(key)
            new = entry.benchmark if entry is not None else None
            if new is not None and grades.comparable(new, old, new_target=key[0],
                                                     old_target=key[0]):  # fmt: skip
                out[key] = export.row(ModelEntry(*key, benchmark=old))
        return out

    def failed(self) -> list[ModelKey]:
        """Selected models without a good run: failed, left out, or never reached."""
        return [key for key in self.selected if key not in self.measured]

    def started(self, target: str, model: str) -> None:
        self.queued.discard((target, model))
        self.running.append((target, model))
        self.on_change(None)

    def skipped(self, target: str, model: str) -> None:
        self.queued.discard((target, model))

    def finished(self, target: str, model: str, result: ModelResult | None) -> None:
        if result is not None and not result.success and result.first_error is None:
            _explain_discarded(target, model, result.discarded)
        if result is not None and result.success:
            self.measured.add((target, model))
        self.running.remove((target, model))
        self.on_change((target, model))


async def _bench(
    opts: Options, targets: tuple[TargetSettings, ...], stdout: TextIO, stderr: TextIO
) -> int:
    storage = opts.settings.storage
    stores = opts.measure or opts.capacity is not None
    store = Store(storage.path if stores else None, retention=storage.retention)
    run = _Run(opts, store, targets)
    async with Scheduler(store).started() as scheduler:
        with collected_warnings(stderr):
            found = await scheduler.discover_once(targets)
            code = _select(run, found, stderr)
            if code is not None:
                return code
            if opts.capacity is not None:
                return await sweep_models(opts, scheduler, run.selected, run.unreached, stdout,
                                          stderr)  # fmt: skip
            show_table = not opts.to_stdout
            columns = output.layout(opts, targets=len(targets),
                                    runs=max(t.benchmark.runs for t in targets))  # fmt: skip
            if opts.measure and await _measure(run, scheduler, columns, stdout, stderr):
                show_table = False  # the live table is on the screen already
            if show_table:
                stdout.write(run.text(columns) + "\n")
                stdout.flush()
            if not opts.to_stdout and opts.measure:
                snapshot = store.snapshot
                stdout.write(output.lengths_text(export.length_rows(snapshot, queries.Query())))
            code = output.write_exports(opts, run.rows(), stdout, stderr)
            failed = run.failed() if opts.measure else []
            return code or output.outcome(failed, len(run.selected), run.unreached, stderr)


def _select(run: _Run, found: Sequence[list[str] | OllamaError], stderr: TextIO) -> int | None:
    """The models the run measures, from what discovery found; an exit code if there are none."""
    opts = run.opts
    reached = [(t, tags) for t, tags in zip(run.targets, found, strict=True)
               if not isinstance(tags, OllamaError)]  # fmt: skip
    for t, tags in zip(run.targets, found, strict=True):
        if isinstance(tags, OllamaError):
            print(f"ometer-exporter bench: cannot reach {t.name} ({t.url}): {tags}", file=stderr)
            run.unreached.append(t.name)
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
) -> dict[ModelKey, Record]:
    """The latest stored result of each model before this run: what the arrows compare with
    (when comparable: ``_Run.comparable_previous``)."""
    store = Store(storage.path, retention=storage.retention)
    try:
        store.set_targets(target_state(t) for t in targets)
        await store.restore()
        wanted_keys = set(keys)
        return {
            key: entry.benchmark
            for key, entry in store.snapshot.models.items()
            if key in wanted_keys and entry.benchmark is not None
        }
    finally:
        await store.close()
