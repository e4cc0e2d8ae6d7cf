"""When a model's load sweep runs (``benchmark.capacity``): once per ``interval`` per model,
starting only inside the ``window`` (local time), and — like every benchmark — only on an idle
model (the worker checks that). A sweep that met someone else's traffic or could not load the
model is tried again sooner (:data:`RETRY_AFTER_ABORT`, at most the interval).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final

from ometer_exporter.config.capacity import in_window
from ometer_exporter.config.settings import CapacitySettings
from ometer_exporter.measure.capacity import Sweep

RETRY_AFTER_ABORT: Final = 1800.0  # seconds before a contended or failed sweep is tried again
_DAY_MINUTES: Final = 24 * 60


def local_minutes(when: float) -> int:
    """Minutes after local midnight at Unix time ``when``."""
    t = time.localtime(when)
    return t.tm_hour * 60 + t.tm_min


class SweepSchedule:
    """Each model's next sweep, for one target."""

    def __init__(self, settings: CapacitySettings) -> None:
        self.settings = settings
        self._due: dict[str, float] = {}  # model -> Unix time (absent: never swept: due now)

    def restore(self, finished: Mapping[str, float]) -> None:
        """Stored sweeps (a restart): each model due one interval after its last one."""
        self._due = {m: at + self.settings.interval for m, at in finished.items()}

    def is_due(self, model: str, now: float) -> bool:
        return now >= self._due.get(model, 0.0)

    def may_start(self, now: float) -> bool:
        return in_window(self.settings.window, local_minutes(now))

    def next_start(self, model: str, now: float) -> float:
        """When the model's next sweep may start: due, and inside the window."""
        at = max(now, self._due.get(model, 0.0))
        if self.may_start(at):
            return at
        start = at - time.localtime(at).tm_sec
        for minute in range(1, _DAY_MINUTES + 1):  # the window opens within a day
            if self.may_start(start + 60 * minute):
                return start + 60 * minute
        return at

    def after(self, model: str, sweep: Sweep) -> None:
        """A sweep ended: the next one is an interval later, sooner when it was cut short by
        someone's traffic or a failed load (nothing was learnt)."""
        wait = self.settings.interval
        if sweep.aborted in ("contended", "load_failed"):
            wait = min(wait, RETRY_AFTER_ABORT)
        self._due[model] = sweep.finished_at + wait
