"""The file's ``display`` section: how TTFT and tokens/s are coloured (``DisplaySettings``).

display:
  grading: absolute              # absolute | relative (thirds of the table)
  thresholds:
    ttft: [500ms, 2s]            # good below the first, poor from the second
    tokens_per_second: [50, 20]  # good from the first, poor below the second
"""

from __future__ import annotations

from typing import Final

from ometer_exporter.config.checks import Checker, format_duration, join_path, show
from ometer_exporter.config.settings import DEFAULT_DISPLAY, DisplaySettings, GradingMode

DISPLAY_KEYS: Final = ("grading", "thresholds")
THRESHOLD_KEYS: Final = ("ttft", "tokens_per_second")
_GRADINGS: Final[dict[str, GradingMode]] = {"absolute": "absolute", "relative": "relative"}
_HINTS: Final = {"tps": "the key is tokens_per_second", "tokens": "the key is tokens_per_second"}
MAX_RATE: Final = 1e9  # tokens/s: far beyond any model, small enough to stay a plain number


def parse_display(checker: Checker, value: object, path: str = "display") -> DisplaySettings:
    """The ``display`` section; defaults for what is missing, a problem for what is wrong."""
    section = checker.mapping(value, path, DISPLAY_KEYS) or {}
    grading = DEFAULT_DISPLAY.grading
    if "grading" in section:
        grading = checker.choice(section["grading"], join_path(path, "grading"), _GRADINGS) or (
            grading
        )
    limits = join_path(path, "thresholds")
    thresholds = (
        checker.mapping(section.get("thresholds"), limits, THRESHOLD_KEYS, hints=_HINTS) or {}
    )
    ttft = DEFAULT_DISPLAY.ttft
    if "ttft" in thresholds:
        ttft = _ttft(checker, thresholds["ttft"], join_path(limits, "ttft")) or ttft
    rate = DEFAULT_DISPLAY.tokens_per_second
    if "tokens_per_second" in thresholds:
        path_tps = join_path(limits, "tokens_per_second")
        rate = _rate(checker, thresholds["tokens_per_second"], path_tps) or rate
    return DisplaySettings(grading=grading, ttft=ttft, tokens_per_second=rate)


_TTFT_ALLOWED: Final = "two durations, good below the first, poor from the second, e.g. [500ms, 2s]"
_RATE_ALLOWED: Final = (
    "two numbers of tokens/s, good from the first, poor below the second, e.g. [50, 20]"
)


def _pair(checker: Checker, value: object, path: str, allowed: str) -> list[object] | None:
    if not isinstance(value, list) or len(value) != 2:
        checker.wrong_type(path, value, allowed)
        return None
    return value


def _ttft(checker: Checker, value: object, path: str) -> tuple[float, float] | None:
    pair = _pair(checker, value, path, _TTFT_ALLOWED)
    if pair is None:
        return None
    good, poor = (checker.duration(item, f"{path}[{i}]") for i, item in enumerate(pair))
    if good is None or poor is None:
        return None
    if not good < poor:
        checker.add(
            path,
            f"{format_duration(good)} is not below {format_duration(poor)}; allowed: "
            f"{_TTFT_ALLOWED}",
        )
        return None
    return good, poor


def _rate(checker: Checker, value: object, path: str) -> tuple[float, float] | None:
    pair = _pair(checker, value, path, _RATE_ALLOWED)
    if pair is None:
        return None
    numbers: list[float] = []
    for index, item in enumerate(pair):
        if isinstance(item, bool) or not isinstance(item, int | float) or not 0 < item < MAX_RATE:
            where = f"{path}[{index}]"
            if isinstance(item, int | float) and not isinstance(item, bool):
                checker.add(where, f"{show(item)} is out of range; allowed: a number above 0")
            else:
                checker.wrong_type(where, item, "a number of tokens/s above 0")
            continue
        numbers.append(float(item))
    if len(numbers) != 2:
        return None
    good, poor = numbers
    if not good > poor:
        checker.add(path, f"{good:g} is not above {poor:g}; allowed: {_RATE_ALLOWED}")
        return None
    return good, poor


def describe(display: DisplaySettings) -> str:
    """One line for ``--config.check`` and the README: what the colours mean."""
    if display.grading == "relative":
        return "relative: thirds of the table (33rd/66th percentile)"
    (t_good, t_poor), (r_good, r_poor) = display.ttft, display.tokens_per_second
    return (
        f"absolute: TTFT good below {format_duration(t_good)}, poor from "
        f"{format_duration(t_poor)}; tokens/s good from {r_good:g}, poor below {r_poor:g}"
    )
