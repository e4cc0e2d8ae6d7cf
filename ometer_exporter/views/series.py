"""Every series ``/metrics`` serves, defined once: its name, type, help and labels, and the
samples a snapshot gives it (the load sweep's families are in ``views.capacity_series``). No
I/O: everything comes from the store's snapshot.

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
from typing import Final

from ometer_exporter import __version__
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
from ometer_exporter.views.capacity_series import CAPACITY_SPECS, capacity_samples
from ometer_exporter.views.families import (
    CACHED,
    HistSample,
    Put,
    Sample,
    Spec,
    bucket_label,
)
from ometer_exporter.views.families import MODEL_LABELS as _M
from ometer_exporter.views.families import gauge as _g
from ometer_exporter.views.isolation import RENDER_ERRORS, number

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
MODEL_SPECS: Final = (
    TTFT, TTFC, TPS, CLIENT_TPS, PROMPT_TPS, LOAD, REQUEST, QUEUE,
    PARAMETERS, CONTEXT, SIZE, MODIFIED, INFO, CAPABILITY, LOADED, VRAM, SELECTED,
    SUCCESS, LAST_SUCCESS, LAST_RUN, TTFT_HIST, TPOT_HIST,
    RUNS, ERRORS, DISCARDED, OUTPUT_TOKENS, PROMPT_TOKENS,
    LENGTH_TTFT, LENGTH_TOKENS, LENGTH_PREFILL, TTFT_PER_1K,
    *CAPACITY_SPECS,
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
SLOTS = _g(
    "ometer_target_parallel_slots",
    "Parallel request slots the server reports (llama.cpp's /props total_slots); absent where "
    "the server does not say (Ollama: see ometer_capacity_server_parallel_slots).",
    _T,
)
TARGET_SPECS: Final = (
    UP, TARGET_INFO, INTERVAL, CONFIG_INFO, CYCLE, LOOP_ERRORS, RECONNECTS, LEFT_OUT, SLOTS,
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
        capacity_samples(entry, m, put, dropped)
    return out, hists


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
    if t.slots is not None:
        out.append((SLOTS, n, float(t.slots)))
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
