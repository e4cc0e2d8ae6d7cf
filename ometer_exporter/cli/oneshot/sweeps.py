"""``bench --capacity``: a load sweep of each selected model, instead of the regular runs.

Each sweep is the loop's (``Scheduler.sweep_once`` → ``TargetWorker.sweep_capacity``, with the
flags applied to ``benchmark.capacity`` by ``options.for_oneshot``): its record is stored and
persisted as ``serve`` stores one, then printed as the curve (``views.curve``) when the sweep
ends, and exported with ``/export?view=capacity``'s rows (``--json``/``--csv``). Only local
chat models are swept (``TargetWorker.sweepable``); the others are named and left out.

Exit code: 0 every sweep finished, 1 nothing to sweep, 3 some sweep was aborted (someone else's
requests, a failed load, the target stopped answering) or refused part-way (its levels are
kept and shown), or some target was not reached. Ctrl-C cancels the sweeps; a model a sweep
loaded is unloaded on the way out (``measure_capacity``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, TextIO

from ometer_exporter.cli.oneshot import output
from ometer_exporter.cli.oneshot.options import EXIT_NOTHING, Options
from ometer_exporter.cli.oneshot.screen import Progress
from ometer_exporter.client.errors import OllamaError
from ometer_exporter.loop.outcome import describe_level
from ometer_exporter.loop.scheduler import Scheduler
from ometer_exporter.measure.capacity import Level, Sweep
from ometer_exporter.store.records import ModelKey
from ometer_exporter.store.store import Store
from ometer_exporter.views import curve, grades
from ometer_exporter.views import query as queries
from ometer_exporter.views import rows as export

ABORTED_WHY: Final = {
    "contended": "someone else's requests reached the model during the sweep, so the level "
    "they met says nothing of its own; run it again when the server is idle",
    "load_failed": "the model could not be loaded",
}


def aborted_text(outcome: Sweep | OllamaError | None) -> str | None:
    """Why a sweep left no complete curve (None: it finished). A refusal part-way is said by
    its record (``CapacityRecord.stopped``) under the levels it kept."""
    if isinstance(outcome, OllamaError):
        return f"the target stopped answering: {outcome}"
    if outcome is None:
        return "the model is not loaded"
    if outcome.aborted is None or outcome.aborted == "refused":
        return None
    error = f": {outcome.error}" if outcome.error else ""
    return f"{ABORTED_WHY[outcome.aborted]}{error}"


@dataclass
class _Sweeps:
    """The sweeps while they run: the scheduler's ``SweepProgress``. Each model's curve (or why
    there is none) is printed as its sweep ends."""

    opts: Options
    store: Store
    stdout: TextIO
    stderr: TextIO
    progress: Progress
    running: list[ModelKey] = field(default_factory=list)
    failed: list[ModelKey] = field(default_factory=list)  # aborted or refused part-way

    def started(self, target: str, model: str) -> None:
        self.running.append((target, model))
        self.progress.update(self.running, None)

    def level(self, target: str, model: str, level: Level) -> None:
        users = "user" if level.concurrency == 1 else "users"
        self.progress.note(f"{model} ({target}): {describe_level(level)} ({users})")

    def finished(self, target: str, model: str, outcome: Sweep | OllamaError | None) -> None:
        key = (target, model)
        self.running.remove(key)
        if not isinstance(outcome, Sweep) or outcome.aborted is not None:
            self.failed.append(key)
        entry = self.store.snapshot.models.get(key)
        record = entry.capacity if entry is not None else None
        why = aborted_text(outcome)
        self.progress.clear()
        if why is not None:
            name = f"{grades.plain(model)} ({grades.plain(target)})"
            stream = self.stderr if self.opts.to_stdout else self.stdout
            stream.write(f"{name}: load sweep aborted: {grades.plain(why)}\n\n")
        elif record is not None and not self.opts.to_stdout:
            self.stdout.write(curve.render(target, model, record, color=self.opts.color) + "\n\n")
        self.stdout.flush()
        self.progress.update(self.running, key)


async def sweep_models(
    opts: Options,
    scheduler: Scheduler,
    selected: Sequence[ModelKey],
    unreached: Sequence[str],
    stdout: TextIO,
    stderr: TextIO,
) -> int:
    """Sweep the selected models that may be swept; print each curve, export the rows."""
    keys = [(t, m) for t, m in selected if scheduler.workers[t].sweepable(m)]
    others = [key for key in selected if key not in keys]
    if others:
        names = ", ".join(f"{grades.plain(m)} ({grades.plain(t)})" for t, m in others)
        print(f"warning: not swept (a load sweep runs on local chat models only): {names}",
              file=stderr)  # fmt: skip
    if not keys:
        print("ometer-exporter bench: no model to sweep", file=stderr)
        return EXIT_NOTHING
    sweeps = _Sweeps(opts, scheduler.store, stdout, stderr, Progress(stderr, len(keys)))
    try:
        await scheduler.sweep_once(keys, progress=sweeps)
    finally:
        sweeps.progress.close()
    wanted = set(keys)
    rows = [r for r in export.capacity_rows(scheduler.store.snapshot, queries.Query())
            if (r["target"], r["model"]) in wanted]  # fmt: skip
    code = output.write_exports(opts, rows, stdout, stderr, columns=export.CAPACITY_COLUMNS)
    return code or output.outcome(
        sweeps.failed, len(keys), unreached, stderr, missing="without a complete load sweep"
    )
