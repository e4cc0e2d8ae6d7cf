"""Which models a target reports on and measures, and the method its numbers were taken with."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

from ometer_exporter.client.replies import TagModel
from ometer_exporter.config.settings import DEFAULT_PROMPTS, BenchmarkSettings, TargetSettings
from ometer_exporter.names import canonical_name, match_model
from ometer_exporter.store.records import Method, TargetState

log = logging.getLogger(__name__)


def method_of(settings: BenchmarkSettings) -> Method:
    """What ``ometer_benchmark_config_info`` shows: a changed method is not a regression."""
    if settings.prompts == DEFAULT_PROMPTS:
        prompt_set = "default"
    else:
        digest = hashlib.sha256("\n".join(settings.prompts).encode()).hexdigest()
        prompt_set = f"custom-{digest[:8]}"
    return Method(prompt_set=prompt_set, num_predict=settings.num_predict, think=settings.think)


def target_state(target: TargetSettings) -> TargetState:
    return TargetState(
        name=target.name,
        cloud=target.cloud,
        interval=target.benchmark.interval,
        method=method_of(target.benchmark),
        url=target.url,
        select=target.select,
        api=target.api,
    )


def reported_models(
    target: TargetSettings, models: Iterable[TagModel]
) -> tuple[list[TagModel], int]:
    """Models this target lists that it should report on (inventory), in tags order, and how
    many were left out by ``max_models``.

    On a local target, cloud pass-through entries are skipped unless included by exact name:
    benchmarking them would bill the user's cloud account. At most ``max_models`` are kept, those
    include/exclude let in first, then the first ones listed: the rest are left out with a
    warning, so that a server listing 100,000 models costs neither 100,000 /api/show calls nor
    their series.
    """
    out = []
    for m in models:
        included = any(canonical_name(q).lower() == m.name.lower() for q in target.include)
        if target.cloud or not m.is_cloud_passthrough or included:
            out.append(m)
    limit = target.benchmark.max_models
    if len(out) <= limit:
        return out, 0
    kept = {id(m) for m in sorted(out, key=lambda m: not wanted(target, m.name))[:limit]}
    left_out = [m for m in out if id(m) not in kept]
    log.warning(
        "target %s: lists %d models, more than max_models %d: %d left out (first %r)",
        target.name, len(out), limit, len(left_out), left_out[0].name[:80],
    )  # fmt: skip
    return [m for m in out if id(m) in kept], len(left_out)


def wanted(target: TargetSettings, name: str) -> bool:
    """include (empty = all) and exclude, each an exact name or a family."""
    if target.include and not any(match_model(q, name) for q in target.include):
        return False
    return not any(match_model(q, name) for q in target.exclude)
