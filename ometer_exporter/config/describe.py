"""``--config.check``: a human summary of the settings; API keys appear only as their source."""

from __future__ import annotations

from ometer_exporter.config.checks import format_duration
from ometer_exporter.config.settings import BenchmarkSettings, Settings


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
        f"targets ({len(settings.targets)}):",
    ]
    for target in settings.targets:
        if target.api_key_source:
            key = f"from {target.api_key_source}"
        else:
            key = "set" if target.api_key else "none"
        lines += [
            f"  {target.name}  {target.url}{'  (cloud)' if target.cloud else ''}",
            f"    api key: {key}",
            f"    select: {target.select}; include: {', '.join(target.include) or 'any'}; "
            f"exclude: {', '.join(target.exclude) or 'none'}",
            f"    {_describe_benchmark(target.benchmark)}",
        ]
    return "\n".join(lines)


def _describe_benchmark(b: BenchmarkSettings) -> str:
    t = b.timeouts
    return (
        f"interval {format_duration(b.interval)}, jitter {b.jitter * 100:g}%, runs {b.runs}, "
        f"{len(b.prompts)} prompts, num_predict {b.num_predict}, temperature {b.temperature:g}, "
        f"seed {b.seed}, think {b.think}, unload_after {str(b.unload_after).lower()}, "
        f"max_models {b.max_models}; timeouts: "
        f"connect {format_duration(t.connect)}, first_byte {format_duration(t.first_byte)}, "
        f"idle {format_duration(t.idle)}, total {format_duration(t.total)}"
    )
