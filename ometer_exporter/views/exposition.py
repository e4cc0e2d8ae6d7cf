"""``/metrics`` fast: :class:`Exposition` caches each model's sample lines by entry identity and
the assembled, gzip-compressed body by snapshot generation, so an unchanged snapshot is never
re-rendered and a changed model costs only its own lines. The process, platform and GC
collectors ("the live part") come from prometheus_client, refreshed at most once a second.
"""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry

from ometer_exporter.store.records import ModelEntry, ModelKey, Snapshot
from ometer_exporter.views.families import Sample, Spec, bucket_label, sample_text
from ometer_exporter.views.isolation import RENDER_ERRORS
from ometer_exporter.views.reference import openmetrics_latest, text_latest
from ometer_exporter.views.series import (
    BOUNDS,
    BUILD,
    LOOP_LAG,
    MODEL_SPECS,
    RELOAD_OK,
    RENDER_ERRORS_SPEC,
    ROWS_SKIPPED,
    TARGET_SPECS,
    model_samples,
    render_error_samples,
    self_samples,
    target_samples,
)

# -- cached fast rendering -------------------------------------------------------------------


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _line(sample_name: str, spec: Spec, labels: tuple[str, ...], value: float) -> str:
    if not spec.labels:
        return f"{sample_name} {sample_text(value)}\n"
    pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(spec.labels, labels, strict=True))
    return f"{sample_name}{{{pairs}}} {sample_text(value)}\n"


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
    spec.name: (i, _sample_name(spec), tuple(spec.labels[2:])) for i, spec in enumerate(MODEL_SPECS)
}
_LE: Final = {name: tuple(bucket_label(b) for b in (*bounds, float("inf"))) for name, bounds in
              BOUNDS.items()}  # fmt: skip


def _model_lines(entry: ModelEntry) -> list[str]:
    """One string per model family (empty when the model has no such series).

    The same sample lines serve the text format and OpenMetrics (only headers differ). The
    ``target``/``model`` label pairs are escaped once per model, not once per sample. Lines are
    collected in lists and joined once: linear in the number of samples (a model with 50,000
    capabilities costs 50,000 lines, not 50,000 growing copies of one string).
    """
    parts: list[list[str]] = [[] for _ in MODEL_SPECS]
    dropped: list[str] = []
    samples, hists = model_samples(entry, dropped)
    base = f'target="{_escape(entry.target)}",model="{_escape(entry.model)}"'
    families = _MODEL_FAMILY
    for spec, labels, value in samples:
        index, name, extra = families[spec.name]
        if extra:
            pairs = "".join(f',{k}="{_escape(v)}"' for k, v in zip(extra, labels[2:], strict=True))
            parts[index].append(f"{name}{{{base}{pairs}}} {sample_text(value)}\n")
        else:
            parts[index].append(f"{name}{{{base}}} {sample_text(value)}\n")
    for spec, _labels, hist in hists:
        name = spec.name
        cumulative = 0
        lines = parts[_MODEL_INDEX[name]]
        for le, count in zip(_LE[name], hist.counts, strict=True):
            cumulative += count
            lines.append(f'{name}_bucket{{{base},le="{le}"}} {cumulative}\n')
        lines.append(f"{name}_count{{{base}}} {hist.count}\n")
        lines.append(f"{name}_sum{{{base}}} {sample_text(hist.total)}\n")
    if dropped:
        cause = "samples left out (not a finite number)"
        RENDER_ERRORS.left_out("metrics", entry.target, entry.model, cause, ", ".join(dropped))
    return ["".join(family) for family in parts]


def _encoded_lines(entry: ModelEntry) -> list[bytes]:
    """A model's lines as UTF-8, or none at all when they cannot be rendered or encoded (a lone
    surrogate in a label): one model never takes ``/metrics`` down (``views.isolation``). Not
    replaced by ``?``: the name could then collide with another model's, and a duplicate series
    fails the whole scrape."""
    try:
        return [text.encode("utf-8") for text in _model_lines(entry)]
    except Exception as exc:  # defense in depth: whatever went wrong is this model's alone
        RENDER_ERRORS.failed("metrics", entry.target, entry.model, exc)
        return [b""] * len(MODEL_SPECS)


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


def _recompress(
    texts: list[bytes], sources: list[bytes] | None, segments: list[bytes] | None, level: int
) -> list[bytes]:
    """``texts`` deflated, reusing the segment of each family whose text equals the one its
    segment was made from (segments are independent): a result that changed a model's
    benchmark re-compresses its shard's benchmark families, not its load sweep's."""
    if sources is None or segments is None or len(sources) != len(texts):
        return _deflate(texts, level)
    changed = [i for i, (new, old) in enumerate(zip(texts, sources, strict=True)) if new != old]
    out = list(segments)
    for i, segment in zip(changed, _deflate([texts[i] for i in changed], level), strict=True):
        out[i] = segment
    return out


@dataclass(slots=True)
class _Model:
    entry: ModelEntry
    lines: list[bytes]  # per model family
    shard: _Shard


@dataclass(eq=False, slots=True)
class _Shard:
    keys: dict[ModelKey, None]  # an ordered set
    texts: list[bytes] | None = None  # per family: the shard's lines; None = to rebuild
    segments: list[bytes] | None = None  # ``sources`` deflated, per family
    sources: list[bytes] | None = None  # the texts ``segments`` were compressed from

    @property
    def compressed(self) -> bool:
        """Whether ``segments`` are ``texts`` deflated (else some families are to compress)."""
        return self.segments is not None and self.sources is self.texts


@dataclass(slots=True)
class _Plan:
    """What one generation's snapshot part consists of, in output order (one format)."""

    generation: int
    texts: list[bytes]  # uncompressed pieces
    shards: list[_Shard]  # shards whose segments are missing or stale
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
      compressed as independent deflate segments, so a change re-compresses the families of
      one shard whose lines changed.
    * Per snapshot generation and format, a worker thread joins the deflated pieces into the
      gzip body's prefix and checksums the plain pieces (``bytes.join`` and ``zlib`` release
      the GIL); the plain body is joined only when one is asked for.
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
            lines = _encoded_lines(entry)
            if cached is None:
                shard = self._place(key)
                models[key] = _Model(entry, lines, shard)
            else:
                cached.entry, cached.lines, shard = entry, lines, cached.shard
            shard.texts = None
            if time.perf_counter() - mark > _YIELD_AFTER:
                yield
                mark = time.perf_counter()
        if len(models) > len(snap.models):  # every key of snap is cached: the rest are gone
            for key in [k for k in models if k not in snap.models]:
                shard = models.pop(key).shard
                del shard.keys[key]
                shard.texts = None
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
        per_target = [s for t in snap.targets.values() for s in target_samples(t)]
        tail = _lines(per_target, TARGET_SPECS, openmetrics=openmetrics) + _lines(
            self_samples(snap, None), (BUILD, RELOAD_OK, ROWS_SKIPPED), openmetrics=openmetrics
        )
        return _Plan(
            generation=snap.generation,
            texts=texts,
            shards=[s for s in shards if not s.compressed],
            segments=segments,
            tail=tail.encode("utf-8", "replace"),
        )

    def snapshot_text(self, snap: Snapshot, *, openmetrics: bool) -> bytes:
        """The snapshot part (models, targets, build) as UTF-8 text.

        Reuses the cached lines of models whose entry did not change; called on its own it
        does all the work itself (``render`` joins the same pieces, prepared on the event loop,
        in a worker thread).
        """
        plan = self._plans.get(openmetrics)
        if plan is None or plan.generation != snap.generation:
            for _ in self._refresh(snap):
                pass
            plan = self._plan(snap, openmetrics=openmetrics)
            self._plans[openmetrics] = plan
        return b"".join([*plan.texts, plan.tail])  # releases the GIL for a large body

    def _build(self, snap: Snapshot, plan: _Plan, *, openmetrics: bool) -> _Built:
        """Worker thread: compress the changed families of changed shards, join the gzip body,
        checksum the plain one piece by piece (never joined unless a plain body is asked for:
        17 MB with 1,000 models and their load sweeps)."""
        level = self._gzip_level
        for shard in plan.shards:
            if not shard.compressed and shard.texts is not None:
                shard.segments = _recompress(shard.texts, shard.sources, shard.segments, level)
                shard.sources = shard.texts
        crc = size = 0
        for text in (*plan.texts, plan.tail):
            crc = zlib.crc32(text, crc)
            size += len(text)
        deflated: list[bytes] = [_GZIP_HEADER]
        for piece in plan.segments:
            if isinstance(piece, tuple):
                shard, index = piece
                assert shard.segments is not None
                deflated.append(shard.segments[index])
            else:
                deflated.append(piece)
        deflated.append(_deflate([plan.tail], level)[0])
        return _Built(snap.generation, plan, size, crc, b"".join(deflated))

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
        own_samples = [(LOOP_LAG, (), lag)] if lag is not None else []
        own = _lines(
            [*own_samples, *render_error_samples()],
            (LOOP_LAG, RENDER_ERRORS_SPEC),
            openmetrics=openmetrics,
        ).encode()
        if openmetrics:
            return own + openmetrics_latest(self._live)  # ends with "# EOF"
        return own + text_latest(self._live)

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
