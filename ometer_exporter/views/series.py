"""Every series ``/metrics`` serves, defined once: its name, type, help and labels, and the
samples a snapshot gives it. No I/O: everything comes from the store's snapshot.

Two renderers read these definitions: ``views.exposition`` (the cached fast path that serves
``/metrics``) and ``views.reference`` (prometheus_client's own rendering, the baseline the fast
path is tested and benchmarked against).

Sample of the output::

    # HELP ometer_time_to_first_token_seconds Time from sending a chat request to the first ...
    # TYPE ometer_time_to_first_token_seconds gauge
    ometer_time_to_first_token_seconds{target="local",model="llama3.2:latest"} 0.183
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

from prometheus_client.utils import floatToGoString as _go_float

from ometer_exporter import __version__
from ometer_exporter.store.capacity import ABORTS, QUANTILES
from ometer_exporter.store.records import (
    TPOT_BUCKETS,
    TTFT_BUCKETS,
    Counters,
    Histogram,
    Inventory,
    ModelEntry,
    Snapshot,
    TargetState,
)
from ometer_exporter.views.isolation import RENDER_ERRORS, number

CACHED: Final = " Cached: the value comes from the background benchmark loop."
QUANTILE_LABELS: Final = tuple(str(q) for q in QUANTILES)  # "0.5", "0.9", "0.95", "0.99"


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric family. ``name`` is the family name (counters without ``_total``)."""

    name: str
    type: str  # gauge | counter | histogram | info | summary (quantiles only)
    help: str
    labels: tuple[str, ...]


_M = ("target", "model")


def _g(name: str, help: str, labels: tuple[str, ...] = _M) -> Spec:
    return Spec(name, "gauge", help, labels)


TTFT = _g(
    "ometer_time_to_first_token_seconds",
    "Client-measured time from sending a chat request to the first streamed chunk carrying "
    "thinking or content; median of the last cycle's warm runs." + CACHED,
)
TTFC = _g(
    "ometer_time_to_first_content_seconds",
    "Client-measured time to the first chunk carrying content (after any thinking); median of "
    "the last cycle's warm runs." + CACHED,
)
TPS = _g(
    "ometer_output_tokens_per_second",
    "Decode rate from the final chunks: sum(eval_count) / sum(eval_duration) over the last "
    "cycle's warm runs (Ollama's formula: N tokens over N-1 intervals)." + CACHED,
)
CLIENT_TPS = _g(
    "ometer_client_output_tokens_per_second",
    "Client-side decode rate (eval_count - 1) / (last token chunk - first token chunk) over "
    "the last cycle's warm runs." + CACHED,
)
PROMPT_TPS = _g(
    "ometer_prompt_tokens_per_second",
    "Prefill rate prompt_eval_count / prompt_eval_duration (embedding models: input tokens per "
    "second of server time net of load) over the last cycle's warm runs." + CACHED,
)
LOAD = _g(
    "ometer_model_load_duration_seconds",
    "load_duration of the last cold (warmup) request; carried forward until the next cold "
    "load." + CACHED,
)
REQUEST = _g(
    "ometer_request_duration_seconds",
    "Median end-to-end request time of the last cycle's warm runs (chat and embed)." + CACHED,
)
QUEUE = _g(
    "ometer_queue_wait_seconds",
    "Server-side wait for a slot, total - load - prompt_eval - eval; median of the last "
    "cycle's warm runs." + CACHED,
)
PARAMETERS = _g("ometer_model_parameters", "Parameter count of the model.")
CONTEXT = _g("ometer_model_context_length_tokens", "Trained context length of the model.")
SIZE = _g("ometer_model_size_bytes", "Size of the model on disk, from /api/tags.")
MODIFIED = _g(
    "ometer_model_modified_timestamp_seconds", "When the model was last modified (pulled)."
)
INFO = Spec(
    "ometer_model",
    "info",
    "Model metadata to join on.",
    (*_M, "family", "parameter_size", "quantization_level", "format"),
)
CAPABILITY = _g(
    "ometer_model_capability", "1 for each capability the model has.", (*_M, "capability")
)
LOADED = _g("ometer_model_loaded", "1 if the model is loaded on the target (/api/ps), else 0.")
VRAM = _g("ometer_model_vram_bytes", "Bytes of the loaded model resident in GPU memory.")
SELECTED = _g(
    "ometer_model_selected",
    "1 if the model is due to be benchmarked (include/exclude let it in, and it is loaded or "
    "its target has select: all), else 0.",
)
SUCCESS = _g(
    "ometer_benchmark_success",
    "1 if the model's last cycle produced at least one good measured run, else 0." + CACHED,
)
LAST_SUCCESS = _g(
    "ometer_benchmark_last_success_timestamp_seconds",
    "When the model's last successful cycle finished.",
)
LAST_RUN = _g(
    "ometer_benchmark_last_run_timestamp_seconds", "When the model's last cycle finished."
)
TTFT_HIST = Spec(
    "ometer_benchmark_time_to_first_token_seconds",
    "histogram",
    "Time to first token of every warm run since the exporter started.",
    _M,
)
TPOT_HIST = Spec(
    "ometer_benchmark_time_per_output_token_seconds",
    "histogram",
    "Server time per output token (eval_duration / eval_count) of every warm run since the "
    "exporter started.",
    _M,
)
RUNS = Spec("ometer_benchmark_runs", "counter", "Benchmark requests sent (warmups included).", _M)
ERRORS = Spec(
    "ometer_benchmark_errors",
    "counter",
    "Benchmark requests that failed, by error type.",
    (*_M, "error_type"),
)
DISCARDED = Spec(
    "ometer_benchmark_discarded_runs",
    "counter",
    "Measured runs left out of the gauges: reloaded (paid a model load), short (under 8 "
    "output tokens, left out of tokens/s only), loop_lag (the exporter's event loop stalled), "
    "contended (someone else's request shared the model; the attempt was retried when idle).",
    (*_M, "reason"),
)
OUTPUT_TOKENS = Spec(
    "ometer_benchmark_output_tokens", "counter", "Output tokens generated by benchmarks.", _M
)
PROMPT_TOKENS = Spec(
    "ometer_benchmark_prompt_tokens", "counter", "Prompt tokens processed by benchmarks.", _M
)
_L = (*_M, "prompt_tokens")  # the configured prompt length
LENGTH_TTFT = _g(
    "ometer_prompt_length_time_to_first_token_seconds",
    "TTFT with a prompt of the configured length (label prompt_tokens; the measured count is "
    "ometer_prompt_length_prompt_tokens); median of the last cycle's good runs." + CACHED,
    _L,
)
LENGTH_TOKENS = _g(
    "ometer_prompt_length_prompt_tokens",
    "Prompt tokens the server counted for the configured length (capped lengths are smaller); "
    "median of the last cycle's good runs." + CACHED,
    _L,
)
LENGTH_PREFILL = _g(
    "ometer_prompt_length_prefill_tokens_per_second",
    "Prefill rate prompt_eval_count / prompt_eval_duration at the configured prompt length; "
    "median of the last cycle's good runs." + CACHED,
    _L,
)
TTFT_PER_1K = _g(
    "ometer_prompt_ttft_seconds_per_1k_tokens",
    "Slope of TTFT against prompt length, least squares over the measured lengths: seconds of "
    "TTFT each 1,000 prompt tokens add." + CACHED,
)
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
    "Parallel request slots the server appears to have: the largest level at which no request "
    "waited for a slot (the server's queue wait); beyond it TTFT is queueing. A hint, never a "
    "change to the server; absent when unknown." + SWEPT,
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
MODEL_SPECS: Final = (
    TTFT, TTFC, TPS, CLIENT_TPS, PROMPT_TPS, LOAD, REQUEST, QUEUE,
    PARAMETERS, CONTEXT, SIZE, MODIFIED, INFO, CAPABILITY, LOADED, VRAM, SELECTED,
    SUCCESS, LAST_SUCCESS, LAST_RUN, TTFT_HIST, TPOT_HIST,
    RUNS, ERRORS, DISCARDED, OUTPUT_TOKENS, PROMPT_TOKENS,
    LENGTH_TTFT, LENGTH_TOKENS, LENGTH_PREFILL, TTFT_PER_1K,
    CAPACITY_MAX, CAPACITY_TPS, CAPACITY_GOODPUT, CAPACITY_ATTAINMENT,
    CAPACITY_TTFT, CAPACITY_TPOT, CAPACITY_E2E,
    CAPACITY_SLOTS, CAPACITY_LAST_RUN, CAPACITY_SLO, CAPACITY_CONFIG, CAPACITY_ABORTED,
)  # fmt: skip

_T = ("target",)
UP = _g(
    "ometer_target_up",
    "1 if the target answers: its last discovery succeeded and not two polls in a row failed.",
    _T,
)
TARGET_INFO = Spec(
    "ometer_target", "info", "The target's API, engine and its version ('' when unknown).",
    (*_T, "api", "engine", "version"),
)  # fmt: skip
INTERVAL = _g(
    "ometer_benchmark_interval_seconds", "Configured interval between benchmark cycles.", _T
)
CONFIG_INFO = Spec(
    "ometer_benchmark_config",
    "info",
    "The method behind the numbers; a change here is not a regression.",
    (*_T, "prompt_set", "num_predict", "think"),
)
CYCLE = _g("ometer_cycle_duration_seconds", "Duration of the target's last benchmark cycle.", _T)
LOOP_ERRORS = Spec(
    "ometer_benchmark_loop_errors",
    "counter",
    "Unexpected errors the target's benchmark loop survived (see the log).",
    _T,
)
RECONNECTS = Spec(
    "ometer_target_reconnects",
    "counter",
    "Requests sent again on a fresh connection after the server had closed their kept-alive "
    "one before any response byte (nothing had reached the model).",
    _T,
)
LEFT_OUT = _g(
    "ometer_target_models_left_out",
    "Models the target listed beyond benchmark.max_models at its last discovery (not reported "
    "on; see the log).",
    _T,
)
TARGET_SPECS: Final = (
    UP, TARGET_INFO, INTERVAL, CONFIG_INFO, CYCLE, LOOP_ERRORS, RECONNECTS, LEFT_OUT,
)  # fmt: skip

BUILD = Spec("ometer_build", "info", "ometer-exporter build.", ("version",))
RELOAD_OK = _g(
    "ometer_config_last_reload_successful", "1 if the last configuration load succeeded.", ()
)
LOOP_LAG = _g(
    "ometer_event_loop_lag_seconds",
    "Worst delay of the exporter's event loop over the last minute (every timestamp passes "
    "through it).",
    (),
)
ROWS_SKIPPED = Spec(
    "ometer_store_rows_skipped",
    "counter",
    "Stored rows refused on restore (a wrong type or a value out of range; see the log).",
    (),
)
RENDER_ERRORS_SPEC = Spec(
    "ometer_render_errors",
    "counter",
    "Models (or single samples with a value that is not a finite number) left out of a view "
    "because they could not be rendered or encoded (see the log; logged once per model and "
    "cause).",
    ("view",),
)
VIEWS: Final = ("metrics", "export", "page")


def sample_text(value: float) -> str:
    """Sample value: integers without a fraction, others in shortest round-trip form."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def bucket_label(bound: float) -> str:
    """Bucket bound as prometheus_client writes it (``0.005``, ``1.0``, ``+Inf``)."""
    return cast(str, _go_float(bound))


Sample = tuple[Spec, tuple[str, ...], float]
HistSample = tuple[Spec, tuple[str, ...], Histogram]


Put = Callable[..., None]  # put(spec, value, labels=(target, model))


def model_samples(
    entry: ModelEntry, dropped: list[str] | None = None
) -> tuple[list[Sample], list[HistSample]]:
    """Every series of one model. A series that never had a value is absent, not 0; so is one
    whose value is not a finite number (its name is appended to ``dropped``)."""
    m = (entry.target, entry.model)
    out: list[Sample] = []

    def put(spec: Spec, value: float | None, labels: tuple[str, ...] = m) -> None:
        if value is None:
            return
        checked = number(value)
        if checked is not None:
            out.append((spec, labels, checked))
        elif dropped is not None:
            dropped.append(spec.name)

    hists: list[HistSample] = []
    b = entry.benchmark
    if b is not None:
        put(TTFT, b.ttft)
        put(TTFC, b.time_to_first_content if b.kind == "chat" else None)
        put(TPS, b.tokens_per_second)
        put(CLIENT_TPS, b.client_tokens_per_second)
        put(PROMPT_TPS, b.prompt_tokens_per_second)
        put(REQUEST, b.request_duration)
        put(QUEUE, b.queue_wait)
        put(SUCCESS, 1.0 if b.success else 0.0)
        put(LAST_SUCCESS, entry.last_success)
        put(LAST_RUN, b.finished_at)
        _length_samples(entry, m, put)
    put(LOAD, entry.load_duration)
    if entry.inventory is not None:
        _inventory_samples(entry.inventory, m, put)
    c = entry.counters
    if c.runs:
        for spec, hist in ((TTFT_HIST, c.ttft), (TPOT_HIST, c.tpot)):
            if hist.count and number(hist.total) is not None:
                hists.append((spec, m, hist))
            elif hist.count and dropped is not None:
                dropped.append(spec.name)
        _counter_samples(c, m, put)
    if entry.capacity is not None or entry.capacity_aborted:
        _capacity_samples(entry, m, put, dropped)
    return out, hists


def _capacity_samples(
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


def _length_samples(entry: ModelEntry, m: tuple[str, str], put: Put) -> None:
    b = entry.benchmark
    if b is None:
        return
    for i, configured in enumerate(b.length_prompt_tokens):
        labels = (*m, str(configured))
        put(LENGTH_TTFT, _at(b.length_ttft, i), labels)
        put(LENGTH_TOKENS, _at(b.length_actual_tokens, i), labels)
        put(LENGTH_PREFILL, _at(b.length_prefill_tokens_per_second, i), labels)
    put(TTFT_PER_1K, b.ttft_per_1k_prompt_tokens)


def _at(values: tuple[float | int | None, ...], i: int) -> float | None:
    value = values[i] if i < len(values) else None
    return None if value is None else float(value)


def _counter_samples(c: Counters, m: tuple[str, str], put: Put) -> None:
    put(RUNS, c.runs)
    for error_type, count in c.errors:
        put(ERRORS, count, (*m, error_type))
    for reason, count in c.discarded:
        put(DISCARDED, count, (*m, reason))
    put(OUTPUT_TOKENS, c.output_tokens)
    put(PROMPT_TOKENS, c.prompt_tokens)


def _inventory_samples(inv: Inventory, m: tuple[str, str], put: Put) -> None:
    put(PARAMETERS, inv.parameters)
    put(CONTEXT, inv.context_length)
    put(SIZE, inv.size_bytes)
    put(MODIFIED, inv.modified_at)
    put(INFO, 1, (*m, inv.family, inv.parameter_size, inv.quantization_level, inv.format))
    for cap in inv.capabilities:
        put(CAPABILITY, 1, (*m, cap))
    if inv.loaded is not None:
        put(LOADED, 1.0 if inv.loaded else 0.0)
        put(VRAM, inv.vram_bytes if inv.loaded else None)
    put(SELECTED, 1.0 if inv.selected else 0.0)


def target_samples(t: TargetState) -> list[Sample]:
    n = (t.name,)
    out: list[Sample] = []
    if t.up is not None:
        out.append((UP, n, 1.0 if t.up else 0.0))
    if t.version is not None or t.engine is not None:
        out.append((TARGET_INFO, (*n, t.api, t.engine or "", t.version or ""), 1.0))
    out.append((INTERVAL, n, t.interval))
    method = t.method
    out.append((CONFIG_INFO, (*n, method.prompt_set, str(method.num_predict), method.think), 1.0))
    if t.last_cycle_duration is not None:
        out.append((CYCLE, n, t.last_cycle_duration))
    out.append((LOOP_ERRORS, n, float(t.loop_errors)))
    out.append((RECONNECTS, n, float(t.reconnects)))
    out.append((LEFT_OUT, n, float(t.models_left_out)))
    return out


def buckets(bounds: tuple[float, ...], hist: Histogram) -> list[tuple[str, float]]:
    cumulative = 0
    out: list[tuple[str, float]] = []
    for bound, count in zip((*bounds, float("inf")), hist.counts, strict=True):
        cumulative += count
        out.append((bucket_label(bound), float(cumulative)))
    return out


BOUNDS: Final = {TTFT_HIST.name: TTFT_BUCKETS, TPOT_HIST.name: TPOT_BUCKETS}

# -- reference rendering through prometheus_client ----------------------------------------------


def self_samples(snap: Snapshot, loop_lag: Callable[[], float] | None) -> list[Sample]:
    out: list[Sample] = [
        (BUILD, (__version__,), 1.0),
        (RELOAD_OK, (), 1.0 if snap.config_reload_ok else 0.0),
        (ROWS_SKIPPED, (), float(snap.rows_skipped)),
    ]
    if loop_lag is not None:
        out.append((LOOP_LAG, (), loop_lag()))
    return out


def render_error_samples() -> list[Sample]:
    """``ometer_render_errors_total`` per view (0 until one fails): rendered with every scrape,
    since ``/export`` and the page count into it between two snapshots."""
    counts = RENDER_ERRORS.counts()
    return [(RENDER_ERRORS_SPEC, (view,), float(counts.get(view, 0))) for view in VIEWS]
