"""``--config.check``: a human summary of the settings; API keys appear only as their source."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields

from ometer_exporter.config.checks import format_duration
from ometer_exporter.config.display import describe as describe_display
from ometer_exporter.config.settings import (
    BenchmarkSettings,
    CapacitySettings,
    Settings,
    TargetSettings,
)


def describe(settings: Settings) -> str:
    """A human summary for ``--config.check``; API keys appear only as their source::

    config file: /etc/ometer/config.yaml
    listen address: :9877
    ...
    targets (1):
      local  http://localhost:11434
        api key: none
        select: loaded; include: any; exclude: none
        interval 10m, jitter 10%, runs 3, ...
    """
    lines = [
        f"config file: {settings.config_file or 'none (built-in defaults and environment)'}",
        f"listen address: {settings.listen_address}",
        f"web config file: {settings.web_config_file or 'none (plain HTTP, no authentication)'}",
        f"log: level {settings.log_level}, format {settings.log_format}",
        f"storage: {settings.storage.path} (history kept "
        f"{format_duration(settings.storage.retention)})",
        f"benchmark defaults: {_describe_benchmark(settings.benchmark)}",
        f"colours: {describe_display(settings.display)}",
        f"targets ({len(settings.targets)}):",
    ]
    for target in settings.targets:
        if target.api_key_source:
            key = f"from {target.api_key_source}"
        else:
            key = "set" if target.api_key else "none"
        lines += [
            f"  {target.name}  {target.url}{'  (cloud)' if target.cloud else ''}"
            f"{'  (api: openai)' if target.api == 'openai' else ''}",
            f"    api key: {key}",
            f"    select: {target.select}; include: {', '.join(target.include) or 'any'}; "
            f"exclude: {', '.join(target.exclude) or 'none'}",
            f"    {_describe_benchmark(target.benchmark)}",
        ]
    return "\n".join(lines)


def _describe_benchmark(b: BenchmarkSettings) -> str:
    t = b.timeouts
    return (
        f"interval {format_duration(b.interval)}, jitter {b.jitter * 100:g}%, "
        f"idle_before {format_duration(b.idle_before)}, runs {b.runs}, "
        f"{len(b.prompts)} prompts, num_predict {b.num_predict}, temperature {b.temperature:g}, "
        f"seed {b.seed}, think {b.think}, unload_after {str(b.unload_after).lower()}, "
        f"max_models {b.max_models}; timeouts: "
        f"connect {format_duration(t.connect)}, first_byte {format_duration(t.first_byte)}, "
        f"idle {format_duration(t.idle)}, total {format_duration(t.total)}; prompt lengths: "
        f"{', '.join(map(str, b.prompt_tokens)) or 'none'}"
        f"{f' (num_predict {b.prompt_num_predict})' if b.prompt_tokens else ''}"
        f"; capacity sweeps: {describe_capacity(b.capacity)}"
    )


def describe_capacity(c: CapacitySettings) -> str:
    """The load sweep's settings in a phrase ("off" when not enabled)."""
    if not c.enabled:
        return "off"
    window = f" starting within {c.window}" if c.window else ""
    refine = ", refined" if c.refine else ""
    return (
        f"every {format_duration(c.interval)}{window}, concurrency "
        f"[{', '.join(map(str, c.concurrency))}], {c.requests_per_level} requests per level, "
        f"num_predict {c.num_predict}, SLO TTFT {format_duration(c.slo.ttft)}, "
        f"TPOT {format_duration(c.slo.tpot)}, "
        f"attainment {c.slo.attainment * 100:g}%{refine}"
    )


def describe_target(target: TargetSettings) -> str:
    """One log line's worth: name, URL (never credentials), select policy and interval."""
    kind = " (cloud)" if target.cloud else ""
    kind += " (api openai)" if target.api == "openai" else ""
    b = target.benchmark
    return (
        f"{target.name}: {target.url}{kind}, select {target.select}, "
        f"interval {format_duration(b.interval)}, idle_before {format_duration(b.idle_before)}, "
        f"include {', '.join(target.include) or 'any'}, "
        f"exclude {', '.join(target.exclude) or 'none'}, "
        f"capacity sweeps {describe_capacity(b.capacity)}"
    )


def target_changes(old: Mapping[str, TargetSettings], new: Sequence[TargetSettings]) -> list[str]:
    """What a reload changed, one line per target added, removed or changed (a key's change is
    named, never its value when it is a secret)."""
    lines: list[str] = []
    names = {t.name for t in new}
    for target in new:
        before = old.get(target.name)
        if before is None:
            lines.append(f"target added: {describe_target(target)}")
        elif before != target:
            lines.append(f"target {target.name} changed: {', '.join(_differences(before, target))}")
    lines += [f"target removed: {name}" for name in old if name not in names]
    return lines


def _differences(before: TargetSettings, after: TargetSettings) -> list[str]:
    out: list[str] = []
    for f in fields(TargetSettings):
        a, b = getattr(before, f.name), getattr(after, f.name)
        if a == b:
            continue
        if f.name == "api_key":
            out.append("api key")
        elif f.name == "benchmark":
            out += [
                f"{g.name} {_shown(getattr(a, g.name))} → {_shown(getattr(b, g.name))}"
                for g in fields(BenchmarkSettings)
                if getattr(a, g.name) != getattr(b, g.name)
            ]
        else:
            out.append(f"{f.name} {_shown(a)} → {_shown(b)}")
    return out


def _shown(value: object) -> str:
    if isinstance(value, CapacitySettings):
        return f"({describe_capacity(value)})"
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return f"[{', '.join(value)}]" if len(value) <= 4 else f"{len(value)} entries"
    return str(value)
