"""The ``benchmark.capacity`` keys (the load sweep), read from ``benchmark`` or a target.

A target's ``capacity`` mapping overrides the defaults key by key (``slo`` too), as
``timeouts`` does. ``loop.sweeps`` schedules the sweeps; ``measure.model.measure_capacity``
runs one with these settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Final

from ometer_exporter.config.checks import Checker, join_path, show
from ometer_exporter.config.settings import (
    CONCURRENCY_RANGE,
    NUM_PREDICT_RANGE,
    REQUESTS_PER_LEVEL_RANGE,
    CapacitySettings,
)

CAPACITY_KEYS: Final = (
    "enabled", "interval", "window", "concurrency", "requests_per_level", "num_predict", "slo",
    "refine",
)  # fmt: skip
SLO_KEYS: Final = ("ttft", "tpot", "attainment")
_WINDOW: Final = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)")

CapacityPatch = dict[str, object]  # the keys one section sets, checked; "slo" holds a dict


def parse_capacity(checker: Checker, value: object, path: str) -> CapacityPatch:
    """The capacity keys present in one section's ``capacity`` mapping."""
    section = checker.mapping(value, path, CAPACITY_KEYS) or {}
    patch: CapacityPatch = {}
    for key, item in section.items():
        at = join_path(path, key)
        checked = _checked(checker, key, item, at)
        if checked is not None:
            patch[key] = checked
    return patch


def _checked(checker: Checker, key: str, item: object, at: str) -> object | None:
    if key in ("enabled", "refine"):
        return checker.boolean(item, at)
    if key == "interval":
        return checker.duration(item, at)
    if key == "window":
        return _window(checker, item, at)
    if key == "concurrency":
        return parse_levels(checker, item, at)
    if key == "requests_per_level":
        return checker.in_range(item, at, REQUESTS_PER_LEVEL_RANGE)
    if key == "num_predict":
        return checker.in_range(item, at, NUM_PREDICT_RANGE)
    return _slo(checker, item, at)


def _window(checker: Checker, value: object, path: str) -> str | None:
    allowed = 'allowed: "" (any time) or "HH:MM-HH:MM" in local time, e.g. "01:00-05:00"'
    if not isinstance(value, str) or not (value == "" or _WINDOW.fullmatch(value)):
        checker.add(path, f"{show(value)} is not a time window; {allowed}")
        return None
    return value


def parse_levels(checker: Checker, value: object, path: str) -> tuple[int, ...] | None:
    """Concurrency levels (``concurrency``, ``bench --concurrency``): distinct, each within
    :data:`CONCURRENCY_RANGE`, at least one; returned ascending."""
    if value == []:
        checker.add(path, "the list is empty; allowed: concurrency levels such as [1, 2, 4]")
        return None
    return checker.distinct_integers(
        value, path, CONCURRENCY_RANGE, "concurrency levels", "[1, 2, 4, 8]"
    )


def _slo(checker: Checker, value: object, path: str) -> dict[str, float] | None:
    section = checker.mapping(value, path, SLO_KEYS)
    if section is None:
        return None
    out: dict[str, float] = {}
    for key, item in section.items():
        at = join_path(path, key)
        if key == "attainment":
            number = checker.number(item, at, 0.0, 1.0)
        else:
            number = checker.duration(item, at)
        if number is not None:
            out[key] = number
    return out


def apply_capacity(patch: CapacityPatch, base: CapacitySettings) -> CapacitySettings:
    """``base`` with the keys of ``patch`` set (``slo`` merged key by key)."""
    names = {f.name for f in fields(CapacitySettings)} - {"slo"}
    changes = {k: v for k, v in patch.items() if k in names}
    slo = patch.get("slo")
    merged = replace(base, **changes)  # type: ignore[arg-type]
    if isinstance(slo, Mapping):
        merged = replace(merged, slo=replace(base.slo, **slo))
    return merged


def window_start(window: str) -> int | None:
    """Minutes after local midnight at which ``window`` opens (None: no window, any time)."""
    match = _WINDOW.fullmatch(window)
    return int(match[1]) * 60 + int(match[2]) if match else None


def in_window(window: str, minutes: int) -> bool:
    """Whether ``minutes`` after local midnight lie in ``window`` (which may wrap midnight)."""
    match = _WINDOW.fullmatch(window)
    if not match:
        return True
    start = int(match[1]) * 60 + int(match[2])
    end = int(match[3]) * 60 + int(match[4])
    return start <= minutes < end if start <= end else minutes >= start or minutes < end
