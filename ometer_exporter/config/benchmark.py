"""The benchmark keys, read from the ``benchmark`` section or a target that overrides them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

from ometer_exporter.config.capacity import CapacityPatch, apply_capacity, parse_capacity
from ometer_exporter.config.checks import Checker, join_path, kind_of, show
from ometer_exporter.config.settings import (
    MAX_MODELS_RANGE,
    NUM_PREDICT_RANGE,
    PROMPT_NUM_PREDICT_RANGE,
    PROMPT_TOKENS_RANGE,
    RUNS_RANGE,
    BenchmarkSettings,
    ThinkMode,
    Timeouts,
)

_T = TypeVar("_T")

TIMEOUT_KEYS: Final = ("connect", "first_byte", "idle", "total")
BENCHMARK_KEYS: Final = (
    "interval", "jitter", "idle_before", "runs", "prompts", "num_predict",
    "temperature", "seed", "think", "unload_after", "timeouts", "max_models", "prompt_tokens",
    "prompt_num_predict", "capacity",
)  # fmt: skip
_THINK_MODES: Final[dict[str, ThinkMode]] = {"auto": "auto", "true": "true", "false": "false"}


def first(value: _T | None, default: _T) -> _T:
    """`value` unless it is None (not set, or invalid and already reported)."""
    return default if value is None else value


@dataclass(slots=True)
class BenchmarkPatch:
    """The benchmark keys one section sets; None = not set there (or invalid, already reported)."""

    interval: float | None = None
    jitter: float | None = None
    idle_before: float | None = None
    runs: int | None = None
    prompts: tuple[str, ...] | None = None
    num_predict: int | None = None
    temperature: float | None = None
    seed: int | None = None
    think: ThinkMode | None = None
    unload_after: bool | None = None
    timeouts: dict[str, float] = field(default_factory=dict)
    prompt_tokens: tuple[int, ...] | None = None
    prompt_num_predict: int | None = None
    max_models: int | None = None
    capacity: CapacityPatch = field(default_factory=dict)

    def apply(self, base: BenchmarkSettings) -> BenchmarkSettings:
        t = self.timeouts
        return BenchmarkSettings(
            interval=first(self.interval, base.interval),
            jitter=first(self.jitter, base.jitter),
            idle_before=first(self.idle_before, base.idle_before),
            runs=first(self.runs, base.runs),
            prompts=first(self.prompts, base.prompts),
            num_predict=first(self.num_predict, base.num_predict),
            temperature=first(self.temperature, base.temperature),
            seed=first(self.seed, base.seed),
            think=first(self.think, base.think),
            unload_after=first(self.unload_after, base.unload_after),
            prompt_tokens=first(self.prompt_tokens, base.prompt_tokens),
            prompt_num_predict=first(self.prompt_num_predict, base.prompt_num_predict),
            timeouts=Timeouts(
                connect=t.get("connect", base.timeouts.connect),
                first_byte=t.get("first_byte", base.timeouts.first_byte),
                idle=t.get("idle", base.timeouts.idle),
                total=t.get("total", base.timeouts.total),
            ),
            max_models=first(self.max_models, base.max_models),
            capacity=apply_capacity(self.capacity, base.capacity),
        )


def parse_benchmark(checker: Checker, section: Mapping[str, object], path: str) -> BenchmarkPatch:
    """The benchmark keys present in `section` (the `benchmark` section or a target)."""
    patch = BenchmarkPatch()
    _parse_workload(checker, section, path, patch)
    _parse_request_options(checker, section, path, patch)
    return patch


def _parse_workload(
    checker: Checker, section: Mapping[str, object], path: str, patch: BenchmarkPatch
) -> None:
    """When a model is benchmarked, how many runs, with which prompts and output length."""
    if "interval" in section:
        patch.interval = checker.duration(section["interval"], join_path(path, "interval"))
    if "jitter" in section:
        patch.jitter = _jitter(checker, section["jitter"], join_path(path, "jitter"))
    if "idle_before" in section:
        at = join_path(path, "idle_before")
        patch.idle_before = checker.duration(section["idle_before"], at, allow_zero=True)
    if "runs" in section:
        patch.runs = checker.in_range(section["runs"], join_path(path, "runs"), RUNS_RANGE)
    if "prompts" in section:
        patch.prompts = checker.strings(
            section["prompts"], join_path(path, "prompts"), "prompts", '"Why is the sky blue?"',
            non_empty=True,
        )  # fmt: skip
    if "num_predict" in section:
        at = join_path(path, "num_predict")
        patch.num_predict = checker.in_range(section["num_predict"], at, NUM_PREDICT_RANGE)
    if "prompt_tokens" in section:
        at = join_path(path, "prompt_tokens")
        patch.prompt_tokens = parse_lengths(checker, section["prompt_tokens"], at)
    if "prompt_num_predict" in section:
        at = join_path(path, "prompt_num_predict")
        patch.prompt_num_predict = checker.in_range(
            section["prompt_num_predict"], at, PROMPT_NUM_PREDICT_RANGE
        )
    if "max_models" in section:
        at = join_path(path, "max_models")
        patch.max_models = checker.in_range(section["max_models"], at, MAX_MODELS_RANGE)
    if "capacity" in section:
        patch.capacity = parse_capacity(checker, section["capacity"], join_path(path, "capacity"))


def _parse_request_options(
    checker: Checker, section: Mapping[str, object], path: str, patch: BenchmarkPatch
) -> None:
    """How each request samples, whether the model is unloaded after, and the deadlines."""
    if "temperature" in section:
        at = join_path(path, "temperature")
        patch.temperature = checker.number(section["temperature"], at, 0.0, 2.0)
    if "seed" in section:
        patch.seed = checker.integer(
            section["seed"], join_path(path, "seed"), -(2**63), 2**63 - 1,
            allowed="a 64-bit integer",
        )  # fmt: skip
    if "think" in section:
        think = section["think"]
        if isinstance(think, bool):  # `think: true` in YAML is a boolean: same meaning
            think = str(think).lower()
        patch.think = checker.choice(think, join_path(path, "think"), _THINK_MODES)
    if "unload_after" in section:
        at = join_path(path, "unload_after")
        patch.unload_after = checker.boolean(section["unload_after"], at)
    if "timeouts" in section:
        at = join_path(path, "timeouts")
        for key, value in (checker.mapping(section["timeouts"], at, TIMEOUT_KEYS) or {}).items():
            seconds = checker.duration(value, join_path(at, key))
            if seconds is not None:
                patch.timeouts[key] = seconds


def parse_lengths(checker: Checker, value: object, path: str) -> tuple[int, ...] | None:
    """Distinct prompt lengths in tokens, ascending (an empty list turns the axis off)."""
    return checker.distinct_integers(
        value, path, PROMPT_TOKENS_RANGE, "prompt lengths", "[512, 2048]"
    )


def _jitter(checker: Checker, value: object, path: str) -> float | None:
    allowed = "allowed: a percentage from 0% to 50% such as '10%', or a fraction from 0 to 0.5"
    if isinstance(value, str) and (
        match := re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*", value)
    ):
        fraction = float(match[1]) / 100
    elif isinstance(value, int | float) and not isinstance(value, bool):
        fraction = float(value)
    else:
        checker.add(path, f"{kind_of(value)} is not a jitter; {allowed}")
        return None
    if not 0 <= fraction <= 0.5:
        checker.add(path, f"{show(value)} is out of range; {allowed}")
        return None
    return fraction


def check_timeout_order(
    checker: Checker, merged: Timeouts, given: Mapping[str, float], path: str, inherited: str
) -> None:
    """connect, first_byte and idle must each fit in total; blame the key set in this section."""
    phases = (("connect", merged.connect), ("first_byte", merged.first_byte), ("idle", merged.idle))
    total = _secs(merged.total)
    for phase, seconds in phases:
        if seconds <= merged.total:
            continue
        rule = "allowed: connect, first_byte and idle each ≤ total"
        if phase in given:
            source = "" if "total" in given else f" ({inherited})"
            checker.add(
                join_path(path, phase),
                f"{_secs(seconds)} is longer than total {total}{source}; {rule}",
            )
        elif "total" in given:
            checker.add(
                join_path(path, "total"),
                f"{total} is shorter than {phase} {_secs(seconds)} ({inherited}); {rule}",
            )


def _secs(seconds: float) -> str:
    return f"{seconds:g}s"
