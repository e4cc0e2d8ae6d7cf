"""The load sweep's families (``benchmark.capacity``): the latest published sweep of a model,
a set per level, and its aborted sweeps by reason."""

from __future__ import annotations

from typing import Final

from ometer_exporter.store.capacity import ABORTS, QUANTILES
from ometer_exporter.store.records import ModelEntry
from ometer_exporter.views.families import MODEL_LABELS as _M
from ometer_exporter.views.families import Put, Spec, sample_text
from ometer_exporter.views.families import gauge as _g
from ometer_exporter.views.isolation import number

QUANTILE_LABELS: Final = tuple(str(q) for q in QUANTILES)  # "0.5", "0.9", "0.95", "0.99"

SWEPT: Final = " From the latest load sweep (benchmark.capacity)."
_C = (*_M, "concurrency")  # a level of the sweep: its number of concurrent users
_Q = (*_C, "quantile")  # "0.5", "0.9", "0.95", "0.99" over the level's good requests


def _quantiles(name: str, help: str, labels: tuple[str, ...]) -> Spec:
    """A level's quantiles: typed summary, the type whose samples carry ``quantile`` (linters
    refuse the label elsewhere); no ``_count`` or ``_sum``, which the sweep does not keep."""
    return Spec(name, "summary", help, labels)


CAPACITY_MAX = _g(
    "ometer_capacity_max_concurrency",
    "Largest concurrency level whose SLO attainment reached the target (every request judged "
    "against the TTFT and TPOT SLOs); 0 when not even the first level did." + SWEPT,
)
CAPACITY_TPS = _g(
    "ometer_capacity_output_tokens_per_second",
    "Aggregate decode throughput at this concurrency: every output token of the level over its "
    "window (first request sent to last reply ended)." + SWEPT,
    _C,
)
CAPACITY_GOODPUT = _g(
    "ometer_capacity_goodput_requests_per_second",
    "Goodput at this concurrency: requests per second of the level's window that met every "
    "SLO (TTFT and TPOT)." + SWEPT,
    _C,
)
CAPACITY_ATTAINMENT = _g(
    "ometer_capacity_slo_attainment_ratio",
    "SLO attainment at this concurrency: the share (0-1) of the level's requests that met "
    "every SLO (TTFT and TPOT); a failed request meets none." + SWEPT,
    _C,
)
CAPACITY_TTFT = _quantiles(
    "ometer_capacity_time_to_first_token_seconds",
    "Client-measured time to first token at this concurrency, by quantile of the level's good "
    "requests (linear interpolation between ranks)." + SWEPT,
    _Q,
)
CAPACITY_TPOT = _quantiles(
    "ometer_capacity_time_per_output_token_seconds",
    "Time per output token after the first, TPOT = (e2e - TTFT) / (output tokens - 1), at "
    "this concurrency, by quantile of the level's good requests." + SWEPT,
    _Q,
)
CAPACITY_E2E = _quantiles(
    "ometer_capacity_request_duration_seconds",
    "End-to-end request time (request sent to reply ended) at this concurrency, by quantile "
    "of the level's good requests." + SWEPT,
    _Q,
)
CAPACITY_SLOTS = _g(
    "ometer_capacity_server_parallel_slots",
    "Parallel request slots the server appears to have: the largest level at which requests "
    "did not wait for a slot (their median queue wait, as the server reports it); beyond it "
    "TTFT is queueing. A hint, never a change to the server; absent when unknown." + SWEPT,
)
CAPACITY_LAST_RUN = _g(
    "ometer_capacity_last_run_timestamp_seconds", "When the published load sweep finished."
)
CAPACITY_SLO = _g(
    "ometer_capacity_slo_seconds",
    "The SLO the published sweep judged its requests by: slo=ttft (time to first token) or "
    "slo=tpot (time per output token after the first).",
    (*_M, "slo"),
)
CAPACITY_CONFIG = Spec(
    "ometer_capacity_config",
    "info",
    "The method behind the capacity figures (SLOs in seconds, attainment target, output "
    "tokens and requests per level); a change here is not a regression.",
    (*_M, "slo_ttft", "slo_tpot", "slo_attainment", "num_predict", "requests_per_level"),
)
CAPACITY_ABORTED = Spec(
    "ometer_capacity_sweeps_aborted",
    "counter",
    "Load sweeps that ended early, by reason: contended (someone else's traffic met it; the "
    "previous record stays), refused (the server refused a request; the levels before it are "
    "kept), load_failed (the model could not be loaded).",
    (*_M, "reason"),
)
CAPACITY_SPECS: Final = (
    CAPACITY_MAX, CAPACITY_TPS, CAPACITY_GOODPUT, CAPACITY_ATTAINMENT,
    CAPACITY_TTFT, CAPACITY_TPOT, CAPACITY_E2E,
    CAPACITY_SLOTS, CAPACITY_LAST_RUN, CAPACITY_SLO, CAPACITY_CONFIG, CAPACITY_ABORTED,
)  # fmt: skip


def capacity_samples(
    entry: ModelEntry, m: tuple[str, str], put: Put, dropped: list[str] | None
) -> None:
    """The load sweep's series; the aborted counter with every reason (0 included) for each
    model that has a sweep or an abort."""
    aborted = dict(entry.capacity_aborted)
    for reason in ABORTS:
        put(CAPACITY_ABORTED, aborted.get(reason, 0), (*m, reason))
    sweep = entry.capacity
    if sweep is None:
        return
    put(CAPACITY_MAX, sweep.max_concurrency or 0)
    seen: set[int] = set()
    for level in sweep.levels:
        if level.concurrency in seen:  # a tampered store: a second series of one name fails
            if dropped is not None:  # the whole scrape, so only the first level is shown
                dropped.append(f"{CAPACITY_TPS.name} (concurrency {level.concurrency} repeated)")
            continue
        seen.add(level.concurrency)
        at = (*m, str(level.concurrency))
        put(CAPACITY_TPS, level.output_tokens_per_second, at)
        put(CAPACITY_GOODPUT, level.goodput, at)
        put(CAPACITY_ATTAINMENT, level.attainment, at)
        for spec, values in ((CAPACITY_TTFT, level.ttft), (CAPACITY_TPOT, level.tpot),
                             (CAPACITY_E2E, level.e2e)):  # fmt: skip
            for q, value in zip(QUANTILE_LABELS, values, strict=False):
                put(spec, value, (*at, q))
    put(CAPACITY_SLOTS, sweep.parallel_slots)
    put(CAPACITY_LAST_RUN, sweep.finished_at)
    put(CAPACITY_SLO, sweep.slo_ttft, (*m, "ttft"))
    put(CAPACITY_SLO, sweep.slo_tpot, (*m, "tpot"))
    method = [number(v) for v in (sweep.slo_ttft, sweep.slo_tpot, sweep.slo_attainment)]
    if all(v is not None for v in method):
        shown = [sample_text(v) for v in method if v is not None]
        put(CAPACITY_CONFIG, 1, (*m, *shown, str(sweep.num_predict),
                                 str(sweep.requests_per_level)))  # fmt: skip
    elif dropped is not None:
        dropped.append(CAPACITY_CONFIG.name)
