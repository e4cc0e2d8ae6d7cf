"""Snapshot -> metric families. No I/O here: everything comes from the store's snapshot.

One definition of every series (``_model_samples`` / ``_target_samples``) feeds two renderers:

* :class:`SnapshotCollector`, a prometheus_client ``Collector`` (the reference rendering);
* :class:`Exposition`, which caches each model's sample lines by entry identity and the
  assembled, gzip-compressed body by snapshot generation, so an unchanged snapshot is never
  re-rendered and a changed model costs only its own lines. Rendering 1,000 models through
  prometheus_client takes ~180 ms on a 2-core machine: too slow to do per scrape.

Sample of the output::

    # HELP ometer_time_to_first_token_seconds Time from sending a chat request to the first ...
    # TYPE ometer_time_to_first_token_seconds gauge
    ometer_time_to_first_token_seconds{target="local",model="llama3.2:latest"} 0.183
"""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final, cast

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)
from prometheus_client.exposition import generate_latest as text_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _go_float

from ometer_exporter import __version__
from ometer_exporter.store import (
    TPOT_BUCKETS,
    TTFT_BUCKETS,
    Histogram,
    ModelEntry,
    ModelKey,
    Snapshot,
    TargetState,
)

CACHED: Final = " Cached: the value comes from the background benchmark loop."


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric family. ``name`` is the family name (counters without ``_total``)."""

    name: str
    type: str  # gauge | counter | histogram | info
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
    "output tokens, left out of tokens/s only), loop_lag (the exporter's event loop stalled).",
    (*_M, "reason"),
)
OUTPUT_TOKENS = Spec(
    "ometer_benchmark_output_tokens", "counter", "Output tokens generated by benchmarks.", _M
)
PROMPT_TOKENS = Spec(
    "ometer_benchmark_prompt_tokens", "counter", "Prompt tokens processed by benchmarks.", _M
)
MODEL_SPECS: Final = (
    TTFT, TTFC, TPS, CLIENT_TPS, PROMPT_TPS, LOAD, REQUEST, QUEUE,
    PARAMETERS, CONTEXT, SIZE, MODIFIED, INFO, CAPABILITY, LOADED, VRAM, SELECTED,
    SUCCESS, LAST_SUCCESS, LAST_RUN, TTFT_HIST, TPOT_HIST,
    RUNS, ERRORS, DISCARDED, OUTPUT_TOKENS, PROMPT_TOKENS,
)  # fmt: skip

_T = ("target",)
UP = _g("ometer_target_up", "1 if the target answered its last discovery, else 0.", _T)
TARGET_INFO = Spec("ometer_target", "info", "The target's Ollama version.", (*_T, "version"))
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
TARGET_SPECS: Final = (UP, TARGET_INFO, INTERVAL, CONFIG_INFO, CYCLE, LOOP_ERRORS)

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


def _fmt(value: float) -> str:
    """Sample value: integers without a fraction, others in shortest round-trip form."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _le(bound: float) -> str:
    """Bucket bound as prometheus_client writes it (``0.005``, ``1.0``, ``+Inf``)."""
    return cast(str, _go_float(bound))


def _text_latest(registry: CollectorRegistry) -> bytes:
    return text_latest(registry)


def _openmetrics_latest(registry: CollectorRegistry) -> bytes:
    body: bytes = openmetrics_latest(registry)
    return body


Sample = tuple[Spec, tuple[str, ...], float]
HistSample = tuple[Spec, tuple[str, ...], Histogram]


def _model_samples(entry: ModelEntry) -> tuple[list[Sample], list[HistSample]]:
    """Every series of one model. A series that never had a value is absent, not 0."""
    m = (entry.target, entry.model)
    out: list[Sample] = []

    def put(spec: Spec, value: float | None, labels: tuple[str, ...] = m) -> None:
        if value is not None:
            out.append((spec, labels, float(value)))

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
    put(LOAD, entry.load_duration)
    inv = entry.inventory
    if inv is not None:
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
    c = entry.counters
    if c.runs:
        if c.ttft.count:
            hists.append((TTFT_HIST, m, c.ttft))
        if c.tpot.count:
            hists.append((TPOT_HIST, m, c.tpot))
        put(RUNS, c.runs)
        for error_type, count in c.errors:
            put(ERRORS, count, (*m, error_type))
        for reason, count in c.discarded:
            put(DISCARDED, count, (*m, reason))
        put(OUTPUT_TOKENS, c.output_tokens)
        put(PROMPT_TOKENS, c.prompt_tokens)
    return out, hists


def _target_samples(t: TargetState) -> list[Sample]:
    n = (t.name,)
    out: list[Sample] = []
    if t.up is not None:
        out.append((UP, n, 1.0 if t.up else 0.0))
    if t.version is not None:
        out.append((TARGET_INFO, (*n, t.version), 1.0))
    out.append((INTERVAL, n, t.interval))
    method = t.method
    out.append((CONFIG_INFO, (*n, method.prompt_set, str(method.num_predict), method.think), 1.0))
    if t.last_cycle_duration is not None:
        out.append((CYCLE, n, t.last_cycle_duration))
    out.append((LOOP_ERRORS, n, float(t.loop_errors)))
    return out


def _buckets(bounds: tuple[float, ...], hist: Histogram) -> list[tuple[str, float]]:
    cumulative = 0
    out: list[tuple[str, float]] = []
    for bound, count in zip((*bounds, float("inf")), hist.counts, strict=True):
        cumulative += count
        out.append((_le(bound), float(cumulative)))
    return out


_BOUNDS: Final = {TTFT_HIST.name: TTFT_BUCKETS, TPOT_HIST.name: TPOT_BUCKETS}

# -- reference rendering through prometheus_client ----------------------------------------------


class SnapshotCollector(Collector):
    """prometheus_client Collector over a snapshot getter (benchmark results, targets, self)."""

    def __init__(
        self, snapshot: Callable[[], Snapshot], *, loop_lag: Callable[[], float] | None = None
    ):
        self._snapshot = snapshot
        self._loop_lag = loop_lag

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        families: dict[str, Metric] = {}

        def family(spec: Spec) -> Metric:
            metric = families.get(spec.name)
            if metric is None:
                metric = _new_family(spec)
                families[spec.name] = metric
            return metric

        for entry in snap.models.values():
            samples, hists = _model_samples(entry)
            for spec, labels, value in samples:
                _add(family(spec), spec, labels, value)
            for spec, labels, hist in hists:
                h = family(spec)
                assert isinstance(h, HistogramMetricFamily)
                h.add_metric(list(labels), _buckets(_BOUNDS[spec.name], hist), hist.total)
        for target in snap.targets.values():
            for spec, labels, value in _target_samples(target):
                _add(family(spec), spec, labels, value)
        for spec, labels, value in self_samples(snap, self._loop_lag):
            _add(family(spec), spec, labels, value)
        order = {s.name: i for i, s in enumerate((*MODEL_SPECS, *TARGET_SPECS, BUILD, RELOAD_OK,
                                                   LOOP_LAG))}  # fmt: skip
        yield from sorted(families.values(), key=lambda m: order.get(m.name, 999))


def self_samples(snap: Snapshot, loop_lag: Callable[[], float] | None) -> list[Sample]:
    out: list[Sample] = [
        (BUILD, (__version__,), 1.0),
        (RELOAD_OK, (), 1.0 if snap.config_reload_ok else 0.0),
    ]
    if loop_lag is not None:
        out.append((LOOP_LAG, (), loop_lag()))
    return out


def _new_family(spec: Spec) -> Metric:
    labels = list(spec.labels)
    if spec.type == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=labels)
    if spec.type == "histogram":
        return HistogramMetricFamily(spec.name, spec.help, labels=labels)
    if spec.type == "info":
        return InfoMetricFamily(spec.name, spec.help, labels=labels[: _info_split(spec)])
    return GaugeMetricFamily(spec.name, spec.help, labels=labels)


def _info_split(spec: Spec) -> int:
    """Info families: identifying labels first, then the metadata labels."""
    return {"ometer_model": 2, "ometer_target": 1, "ometer_benchmark_config": 1}.get(spec.name, 0)


def _add(metric: Metric, spec: Spec, labels: tuple[str, ...], value: float) -> None:
    if isinstance(metric, InfoMetricFamily):
        split = _info_split(spec)
        metric.add_metric(
            list(labels[:split]), dict(zip(spec.labels[split:], labels[split:], strict=True))
        )
    elif isinstance(metric, CounterMetricFamily | GaugeMetricFamily):
        metric.add_metric(list(labels), value)


def full_render(snapshot: Snapshot, *, openmetrics: bool = False) -> bytes:
    """The whole exposition rendered by prometheus_client (reference and benchmark baseline)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snapshot))
    return _openmetrics_latest(registry) if openmetrics else _text_latest(registry)


# -- cached fast rendering -------------------------------------------------------------------


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _line(sample_name: str, spec: Spec, labels: tuple[str, ...], value: float) -> str:
    if not spec.labels:
        return f"{sample_name} {_fmt(value)}\n"
    pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(spec.labels, labels, strict=True))
    return f"{sample_name}{{{pairs}}} {_fmt(value)}\n"


def _sample_name(spec: Spec) -> str:
    if spec.type == "counter":
        return spec.name + "_total"
    if spec.type == "info":
        return spec.name + "_info"
    return spec.name


def _header(spec: Spec, *, openmetrics: bool) -> str:
    help_text = spec.help.replace("\\", "\\\\").replace("\n", "\\n")
    if openmetrics:
        return f"# HELP {spec.name} {help_text}\n# TYPE {spec.name} {spec.type}\n"
    name = _sample_name(spec)
    kind = "gauge" if spec.type == "info" else spec.type
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


_MODEL_INDEX: Final = {spec.name: i for i, spec in enumerate(MODEL_SPECS)}
# Per model family: its index, the sample name, and the names of its labels after the model's
# own two (target, model), rendered once.
_MODEL_FAMILY: Final = {
    spec.name: (i, _sample_name(spec), tuple(spec.labels[2:]))
    for i, spec in enumerate(MODEL_SPECS)
}
_LE: Final = {name: tuple(_le(b) for b in (*bounds, float("inf"))) for name, bounds in
              _BOUNDS.items()}  # fmt: skip


def _model_lines(entry: ModelEntry) -> list[str]:
    """One string per model family (empty when the model has no such series).

    The same sample lines serve the text format and OpenMetrics (only headers differ). The
    ``target``/``model`` label pairs are escaped once per model, not once per sample.
    """
    lines = [""] * len(MODEL_SPECS)
    samples, hists = _model_samples(entry)
    base = f'target="{_escape(entry.target)}",model="{_escape(entry.model)}"'
    families = _MODEL_FAMILY
    for spec, labels, value in samples:
        index, name, extra = families[spec.name]
        if extra:
            pairs = "".join(
                f',{k}="{_escape(v)}"' for k, v in zip(extra, labels[2:], strict=True)
            )
            lines[index] += f"{name}{{{base}{pairs}}} {_fmt(value)}\n"
        else:
            lines[index] += f"{name}{{{base}}} {_fmt(value)}\n"
    for spec, _labels, hist in hists:
        name = spec.name
        cumulative = 0
        parts = []
        for le, count in zip(_LE[name], hist.counts, strict=True):
            cumulative += count
            parts.append(f'{name}_bucket{{{base},le="{le}"}} {cumulative}\n')
        parts.append(f"{name}_count{{{base}}} {hist.count}\n")
        parts.append(f"{name}_sum{{{base}}} {_fmt(hist.total)}\n")
        lines[_MODEL_INDEX[name]] += "".join(parts)
    return lines


def _lines(samples: Iterable[Sample], specs: tuple[Spec, ...], *, openmetrics: bool) -> str:
    grouped: dict[str, list[str]] = {}
    for spec, labels, value in samples:
        grouped.setdefault(spec.name, []).append(_line(_sample_name(spec), spec, labels, value))
    return "".join(
        _header(spec, openmetrics=openmetrics) + "".join(grouped[spec.name])
        for spec in specs
        if spec.name in grouped
    )


# The rendering is cut into independently compressed pieces: every piece is deflated on its own
# (raw deflate ending in a full flush: byte-aligned, no reference to earlier data), so cached
# pieces can be concatenated in any combination into one valid gzip member. Models are grouped
# in shards: a changed model costs the re-rendering of its own lines and the re-compression of
# its shard (~64 models), not of the whole exposition.
SHARD_SIZE: Final = 64
_YIELD_AFTER: Final = 0.001  # seconds of rendering on the event loop before letting others run
_GZIP_HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, no mtime, OS unknown
_FAMILIES: Final = len(MODEL_SPECS)


def _deflate(pieces: Iterable[bytes], level: int) -> list[bytes]:
    """Each piece as an independent raw-deflate segment (one compressor, fully flushed)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return [
        compressor.compress(piece) + compressor.flush(zlib.Z_FULL_FLUSH) if piece else b""
        for piece in pieces
    ]


@dataclass(slots=True)
class _Model:
    entry: ModelEntry
    lines: list[bytes]  # per model family
    shard: _Shard


@dataclass(eq=False, slots=True)
class _Shard:
    keys: dict[ModelKey, None]  # an ordered set
    texts: list[bytes] | None = None  # per family: the shard's lines; None = to rebuild
    segments: list[bytes] | None = None  # ``texts`` deflated; None = to compress


@dataclass(slots=True)
class _Plan:
    """What one generation's snapshot part consists of, in output order (one format)."""

    generation: int
    texts: list[bytes]  # uncompressed pieces
    shards: list[_Shard]  # shards whose segments are missing
    segments: list[bytes | tuple[_Shard, int]]  # deflated pieces, or (shard, family)
    tail: bytes  # targets and self metrics


@dataclass(slots=True)
class _Built:
    generation: int
    plan: _Plan  # the pieces of the plain body (joined only when a plain body is asked for)
    size: int  # bytes of the snapshot part
    crc: int  # its CRC-32
    gzip_prefix: bytes  # gzip header + the deflated snapshot part (not final)


@dataclass(slots=True)
class _Live:
    expires: float
    text: bytes
    deflated: bytes  # final raw-deflate segment


class Exposition:
    """``/metrics`` bodies, re-rendered only for what changed, and never all on the event loop.

    * Per model, its sample lines are cached by entry identity (``_model_lines`` runs only for
      new or changed entries, on the event loop, yielding every millisecond).
    * Models are grouped in shards of ``SHARD_SIZE``; each shard's lines per family are
      compressed as independent deflate segments, so a change re-compresses one shard.
    * Per snapshot generation and format, a worker thread joins the pieces (``bytes.join``
      and ``zlib`` release the GIL) into the plain body and the gzip body's prefix.
    * The live part (process metrics, event-loop lag) is rendered at most every ``live_ttl``
      seconds and appended as the final deflate segment with the CRC and length trailer.

    A scrape of an unchanged snapshot returns cached bytes.
    """

    def __init__(
        self,
        *,
        loop_lag: Callable[[], float] | None = None,
        gzip_level: int = 6,
        live_ttl: float = 1.0,
    ):
        self._loop_lag = loop_lag
        self._gzip_level = gzip_level
        self._live_ttl = live_ttl
        self._models: dict[ModelKey, _Model] = {}
        self._shards: list[_Shard] = []
        self._headers: dict[tuple[bool, int], tuple[bytes, bytes]] = {}
        self._plans: dict[bool, _Plan] = {}
        self._built: dict[bool, _Built] = {}
        self._lives: dict[bool, _Live] = {}
        self._bodies: dict[tuple[bool, bool], tuple[_Built, _Live, bytes]] = {}
        self._lock = asyncio.Lock()
        self._live = CollectorRegistry(auto_describe=False)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self._live.register(collector)

    # -- the snapshot part ---------------------------------------------------------------------

    def _refresh(self, snap: Snapshot) -> Iterator[None]:
        """Bring the per-model and per-shard caches to ``snap``; yields now and then."""
        models = self._models
        mark = time.perf_counter()
        for key, entry in snap.models.items():
            cached = models.get(key)
            if cached is not None and cached.entry is entry:
                continue
            lines = [text.encode("utf-8", "replace") for text in _model_lines(entry)]
            if cached is None:
                shard = self._place(key)
                models[key] = _Model(entry, lines, shard)
            else:
                cached.entry, cached.lines, shard = entry, lines, cached.shard
            shard.texts = shard.segments = None
            if time.perf_counter() - mark > _YIELD_AFTER:
                yield
                mark = time.perf_counter()
        if len(models) > len(snap.models):  # every key of snap is cached: the rest are gone
            for key in [k for k in models if k not in snap.models]:
                shard = models.pop(key).shard
                del shard.keys[key]
                shard.texts = shard.segments = None
            if len(self._shards) > 2 * (len(models) // SHARD_SIZE + 1):
                self._repack()
        for shard in self._shards:
            if shard.texts is None:
                per_model = [models[key].lines for key in shard.keys]
                shard.texts = [b"".join([m[i] for m in per_model]) for i in range(_FAMILIES)]
                if time.perf_counter() - mark > _YIELD_AFTER:
                    yield
                    mark = time.perf_counter()

    def _place(self, key: ModelKey) -> _Shard:
        shards = self._shards
        if not shards or len(shards[-1].keys) >= SHARD_SIZE:
            shards.append(_Shard({}))
        shard = shards[-1]
        shard.keys[key] = None
        return shard

    def _repack(self) -> None:
        """Too many sparse shards after removals: regroup every model."""
        self._shards = []
        for key, model in self._models.items():
            model.shard = self._place(key)

    def _header_pieces(self, index: int, spec: Spec, openmetrics: bool) -> tuple[bytes, bytes]:
        cached = self._headers.get((openmetrics, index))
        if cached is None:
            text = _header(spec, openmetrics=openmetrics).encode()
            cached = (text, _deflate([text], self._gzip_level)[0])
            self._headers[(openmetrics, index)] = cached
        return cached

    def _plan(self, snap: Snapshot, *, openmetrics: bool) -> _Plan:
        """The ordered pieces of the snapshot part (after ``_refresh``)."""
        texts: list[bytes] = []
        segments: list[bytes | tuple[_Shard, int]] = []
        shards = [s for s in self._shards if s.keys]
        for index, spec in enumerate(MODEL_SPECS):
            present = [s for s in shards if s.texts is not None and s.texts[index]]
            if not present:
                continue
            header, deflated = self._header_pieces(index, spec, openmetrics)
            texts.append(header)
            segments.append(deflated)
            for shard in present:
                assert shard.texts is not None
                texts.append(shard.texts[index])
                segments.append((shard, index))
        target_samples = [s for t in snap.targets.values() for s in _target_samples(t)]
        tail = _lines(target_samples, TARGET_SPECS, openmetrics=openmetrics) + _lines(
            self_samples(snap, None), (BUILD, RELOAD_OK), openmetrics=openmetrics
        )
        return _Plan(
            generation=snap.generation,
            texts=texts,
            shards=[s for s in shards if s.segments is None],
            segments=segments,
            tail=tail.encode("utf-8", "replace"),
        )

    def snapshot_text(self, snap: Snapshot, *, openmetrics: bool) -> bytes:
        """The snapshot part (models, targets, build) as UTF-8 text.

        Reuses the cached lines of models whose entry did not change. ``render`` calls it once
        per snapshot generation and format, in a worker thread, after preparing the pieces on
        the event loop; called on its own it does all the work itself.
        """
        plan = self._plans.get(openmetrics)
        if plan is None or plan.generation != snap.generation:
            for _ in self._refresh(snap):
                pass
            plan = self._plan(snap, openmetrics=openmetrics)
            self._plans[openmetrics] = plan
        return b"".join([*plan.texts, plan.tail])  # releases the GIL for a large body

    def _build(self, snap: Snapshot, plan: _Plan, *, openmetrics: bool) -> _Built:
        """Worker thread: compress changed shards, join the bodies, checksum."""
        level = self._gzip_level
        for shard in plan.shards:
            if shard.segments is None and shard.texts is not None:
                shard.segments = _deflate(shard.texts, level)
        text = self.snapshot_text(snap, openmetrics=openmetrics)  # only its CRC is kept
        deflated: list[bytes] = [_GZIP_HEADER]
        for piece in plan.segments:
            if isinstance(piece, tuple):
                shard, index = piece
                assert shard.segments is not None
                deflated.append(shard.segments[index])
            else:
                deflated.append(piece)
        deflated.append(_deflate([plan.tail], level)[0])
        return _Built(snap.generation, plan, len(text), zlib.crc32(text), b"".join(deflated))

    async def _snapshot_part(self, snap: Snapshot, *, openmetrics: bool) -> _Built:
        built = self._built.get(openmetrics)
        if built is not None and built.generation == snap.generation:
            return built
        async with self._lock:  # one build at a time: they share the model and shard caches
            built = self._built.get(openmetrics)
            if built is not None and built.generation == snap.generation:
                return built
            plan = self._plans.get(openmetrics)
            if plan is None or plan.generation != snap.generation:
                for _ in self._refresh(snap):
                    await asyncio.sleep(0)
                await asyncio.sleep(0)
                plan = self._plan(snap, openmetrics=openmetrics)
                self._plans[openmetrics] = plan
            built = await asyncio.to_thread(self._build, snap, plan, openmetrics=openmetrics)
            # Older generations are not served again: drop them and their bodies (~6 MB each
            # in plain text with 1,000 models).
            gen = built.generation
            self._built = {k: v for k, v in self._built.items() if v.generation == gen}
            self._built[openmetrics] = built
            self._plans = {k: v for k, v in self._plans.items() if v.generation == gen}
            self._bodies = {k: v for k, v in self._bodies.items() if v[0].generation == gen}
            return built

    # -- the live part -------------------------------------------------------------------------

    def live_text(self, *, openmetrics: bool) -> bytes:
        """The per-scrape part: loop lag and prometheus_client's process/platform/GC metrics."""
        lag = self._loop_lag() if self._loop_lag is not None else None
        own = (
            _lines([(LOOP_LAG, (), lag)], (LOOP_LAG,), openmetrics=openmetrics).encode()
            if lag is not None
            else b""
        )
        if openmetrics:
            return own + _openmetrics_latest(self._live)  # ends with "# EOF"
        return own + _text_latest(self._live)

    def _live_part(self, openmetrics: bool) -> _Live:
        """``live_text``, re-rendered at most every ``live_ttl`` seconds (reading /proc is slow)."""
        now = time.monotonic()
        live = self._lives.get(openmetrics)
        if live is None or now >= live.expires:
            text = self.live_text(openmetrics=openmetrics)
            compressor = zlib.compressobj(self._gzip_level, zlib.DEFLATED, -15)
            deflated = compressor.compress(text) + compressor.flush(zlib.Z_FINISH)
            live = _Live(now + self._live_ttl, text, deflated)
            self._lives[openmetrics] = live
        return live

    async def render(self, snap: Snapshot, *, openmetrics: bool, gzip: bool) -> bytes:
        built = await self._snapshot_part(snap, openmetrics=openmetrics)
        live = self._live_part(openmetrics)
        cached = self._bodies.get((openmetrics, gzip))
        if cached is not None and cached[0] is built and cached[1] is live:
            return cached[2]
        if gzip:
            crc = zlib.crc32(live.text, built.crc)
            size = built.size + len(live.text)
            trailer = struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)
            body = b"".join((built.gzip_prefix, live.deflated, trailer))
        else:
            pieces = [*built.plan.texts, built.plan.tail, live.text]
            body = await asyncio.to_thread(b"".join, pieces)
        self._bodies[(openmetrics, gzip)] = (built, live, body)
        return body
