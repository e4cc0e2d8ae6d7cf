"""Snapshot -> rows -> JSON / CSV (the OMeter export format, extended).

OMeter's columns keep OMeter's meaning and units (seconds, tokens/s, display strings for size);
everything new has its unit in its name. For embedding rows ``ttft`` is the request time and
``tps`` the input tokens/s, as in OMeter.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from ometer_exporter.names import match_model
from ometer_exporter.store.capacity import QUANTILES, CapacityLevel, CapacityRecord
from ometer_exporter.store.records import ModelEntry, Snapshot, TargetState
from ometer_exporter.views.isolation import RENDER_ERRORS
from ometer_exporter.views.isolation import integer as _i
from ometer_exporter.views.isolation import number as _f
from ometer_exporter.views.query import SORT_KEYS, Query

OMETER_COLUMNS: Final = (
    "model", "size", "context", "quant", "capabilities", "modified_at", "ttft", "tps", "error",
)  # fmt: skip
EXTRA_COLUMNS: Final = (
    "target",
    "kind",
    "family",
    "parameter_size",
    "parameters",
    "context_length_tokens",
    "size_bytes",
    "modified_timestamp_seconds",
    "loaded",
    "vram_bytes",
    "success",
    "error_type",
    "time_to_first_token_seconds",
    "time_to_first_content_seconds",
    "output_tokens_per_second",
    "client_output_tokens_per_second",
    "output_tokens_approximate",
    "prompt_tokens_per_second",
    "load_duration_seconds",
    "request_duration_seconds",
    "queue_wait_seconds",
    "benchmarked_at",
    "last_success_at",
    "status",
    "next_due_at",
)
COLUMNS: Final = OMETER_COLUMNS + EXTRA_COLUMNS

Row = dict[str, Any]


def rows(snapshot: Snapshot, query: Query, *, view: str = "export") -> list[Row]:
    """Rows of the latest results, filtered and sorted. A model whose row cannot be made (or
    holds text that is not valid Unicode) is left out, logged and counted under ``view``."""
    out: list[Row] = []
    for entry in snapshot.models.values():
        try:
            if query.targets and entry.target not in query.targets:
                continue
            if query.models and not any(match_model(q, entry.model) for q in query.models):
                continue
            target = snapshot.targets.get(entry.target)
            out.append(_checked(row(entry, verbose=query.verbose, target=target)))
        except Exception as exc:  # defense in depth: one model never takes the response down
            RENDER_ERRORS.failed(view, str(entry.target), str(entry.model), exc)
    return sort_rows(out, query.sort, reverse=query.reverse)


def _checked(r: Row) -> Row:
    """``r`` if every text in it can be encoded as UTF-8 (no lone surrogate); else raises."""
    for value in r.values():
        if isinstance(value, str):
            value.encode("utf-8")
    return r


def sort_rows(items: list[Row], sort: str | None, *, reverse: bool = False) -> list[Row]:
    """Stable sort, best first by default; unknown values always last."""
    items = sorted(items, key=lambda r: (r["model"].lower(), r["target"]))
    if sort is None:
        return items
    column, descending = SORT_KEYS[sort]
    if reverse:
        descending = not descending
    known = [r for r in items if r[column] is not None]
    unknown = [r for r in items if r[column] is None]
    key: Callable[[Row], Any] = (
        (lambda r: r[column].lower()) if column == "model" else (lambda r: r[column])
    )
    return sorted(known, key=key, reverse=descending) + unknown


def status_of(entry: ModelEntry, target: TargetState | None) -> str:
    """The model's status (``store.records.Status``), or ``target_down`` while its target is."""
    return "target_down" if target is not None and target.up is False else entry.status


def row(entry: ModelEntry, *, verbose: bool = False, target: TargetState | None = None) -> Row:
    inv = entry.inventory
    b = entry.benchmark
    embedding = b is not None and b.kind == "embedding"
    ttft = (b.request_duration if embedding else b.ttft) if b else None
    tps = (b.prompt_tokens_per_second if embedding else b.tokens_per_second) if b else None
    out: Row = {
        "model": entry.model,
        "size": format_size(inv.size_bytes) if inv else None,
        "context": _i(inv.context_length) if inv else None,
        "quant": inv.quantization_level or None if inv else None,
        "capabilities": ", ".join(inv.capabilities) if inv else None,
        "modified_at": _rfc3339(inv.modified_at) if inv else None,
        "ttft": _f(ttft),
        "tps": _f(tps),
        "error": b.error if b and not b.success else _target_error(target),
        "target": entry.target,
        "kind": b.kind if b else (inv.kind if inv else "chat"),
        "family": inv.family or None if inv else None,
        "parameter_size": inv.parameter_size or None if inv else None,
        "parameters": _i(inv.parameters) if inv else None,
        "context_length_tokens": _i(inv.context_length) if inv else None,
        "size_bytes": _i(inv.size_bytes) if inv else None,
        "modified_timestamp_seconds": _f(inv.modified_at) if inv else None,
        "loaded": inv.loaded if inv else None,
        "vram_bytes": _i(inv.vram_bytes) if inv else None,
        "success": b.success if b else None,
        "error_type": b.error_type if b and not b.success else None,
        "time_to_first_token_seconds": _f(b.ttft) if b else None,
        "time_to_first_content_seconds": _f(b.time_to_first_content)
        if b and not embedding
        else None,
        "output_tokens_per_second": _f(b.tokens_per_second) if b else None,
        "client_output_tokens_per_second": _f(b.client_tokens_per_second) if b else None,
        "output_tokens_approximate": b.output_tokens_approximate if b else None,
        "prompt_tokens_per_second": _f(b.prompt_tokens_per_second) if b else None,
        "load_duration_seconds": _f(entry.load_duration),
        "request_duration_seconds": _f(b.request_duration) if b else None,
        "queue_wait_seconds": _f(b.queue_wait) if b else None,
        "benchmarked_at": _rfc3339(b.finished_at) if b else None,
        "last_success_at": _rfc3339(entry.last_success),
        "status": status_of(entry, target),
        "next_due_at": _rfc3339(entry.due_at),
    }
    if verbose:
        runs_ttft = b.run_ttft if b else ()
        runs_tps = b.run_tokens_per_second if b else ()
        for i in range(max(len(runs_ttft), len(runs_tps))):
            out[f"ttft_run_{i + 1}"] = _f(runs_ttft[i]) if i < len(runs_ttft) else None
            out[f"tps_run_{i + 1}"] = _f(runs_tps[i]) if i < len(runs_tps) else None
    return out


def _target_error(target: TargetState | None) -> str | None:
    return target.error if target is not None and target.up is False else None


def format_size(size: int | None) -> str | None:
    """OMeter's display size: ``4.7 GB``, ``274 MB`` (decimal units, as Ollama prints them);
    None when unknown, or not a finite number (``isolation.number``)."""
    value = _f(size)
    if value is None:
        return None
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB", "MB") else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _rfc3339(ts: float | None) -> str | None:
    """RFC 3339 UTC; None when unknown or not a date ``datetime`` can hold (year 1-9999)."""
    value = _f(ts)
    if value is None:
        return None
    try:
        moment = datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


LENGTH_COLUMNS: Final = (
    "target",
    "model",
    "prompt_tokens",
    "actual_prompt_tokens",
    "capped",
    "skipped",
    "time_to_first_token_seconds",
    "prefill_tokens_per_second",
    "ttft_seconds_per_1k_tokens",
    "benchmarked_at",
)


def _per_model(
    snapshot: Snapshot, query: Query, view: str, model_rows: Callable[[ModelEntry], list[Row]]
) -> list[Row]:
    """The rows ``model_rows`` makes of each model the query's filters let in, by target and
    model; a model whose rows cannot be made is left out, logged and counted under ``view``."""
    out: list[Row] = []
    for entry in sorted(snapshot.models.values(), key=lambda e: (e.target, e.model.lower())):
        if query.targets and entry.target not in query.targets:
            continue
        if query.models and not any(match_model(q, entry.model) for q in query.models):
            continue
        try:
            out += model_rows(entry)
        except Exception as exc:  # defense in depth: one model never takes the response down
            RENDER_ERRORS.failed(view, str(entry.target), str(entry.model), exc)
    return out


def length_rows(snapshot: Snapshot, query: Query, *, view: str = "export") -> list[Row]:
    """``view=prompt_length``: a row per model and configured prompt length, by target, model
    and length; models without the axis have no rows."""

    def lengths(entry: ModelEntry) -> list[Row]:
        b = entry.benchmark
        count = len(b.length_prompt_tokens) if b is not None else 0
        return [_length_row(entry, i) for i in range(count)]

    return _per_model(snapshot, query, view, lengths)


def _length_row(entry: ModelEntry, i: int) -> Row:
    b = entry.benchmark
    assert b is not None
    note = b.length_note[i] if i < len(b.length_note) else ""

    def at(values: tuple[Any, ...]) -> Any:
        return values[i] if i < len(values) else None

    return _checked({
        "target": entry.target,
        "model": entry.model,
        "prompt_tokens": b.length_prompt_tokens[i],
        "actual_prompt_tokens": _i(at(b.length_actual_tokens)),
        "capped": note == "capped",
        "skipped": note if note not in ("", "capped") else None,
        "time_to_first_token_seconds": _f(at(b.length_ttft)),
        "prefill_tokens_per_second": _f(at(b.length_prefill_tokens_per_second)),
        "ttft_seconds_per_1k_tokens": _f(b.ttft_per_1k_prompt_tokens),
        "benchmarked_at": _rfc3339(b.finished_at),
    })  # fmt: skip


_QUANTILE_NAMES: Final = tuple(f"p{round(q * 100)}" for q in QUANTILES)  # p50 p90 p95 p99
_LEVEL_QUANTILES: Final = ("ttft", "tpot", "e2e", "queue_wait")  # CapacityLevel's tuples
CAPACITY_COLUMNS: Final = (
    "target",
    "model",
    "concurrency",
    "requests",
    "good",
    "met_slo",
    *(f"{measure}_{q}_seconds" for measure in _LEVEL_QUANTILES for q in _QUANTILE_NAMES),
    "output_tokens_per_second",
    "goodput_requests_per_second",
    "slo_attainment_ratio",
    "passed",
    "queued",
    "lagged",
    "window_seconds",
    "max_concurrency",
    "server_parallel_slots",
    "slo_ttft_seconds",
    "slo_tpot_seconds",
    "slo_attainment",
    "num_predict",
    "requests_per_level",
    "started_at",
    "finished_at",
    "stopped",
    "url",
    "ollama_version",
)


def capacity_rows(snapshot: Snapshot, query: Query, *, view: str = "export") -> list[Row]:
    """``view=capacity``: a row per model and level of its latest load sweep, by target, model
    and concurrency, each with its sweep's figures; models without a sweep have no rows."""

    def levels(entry: ModelEntry) -> list[Row]:
        sweep = entry.capacity
        if sweep is None:
            return []
        common = _sweep_cells(sweep)
        ordered = sorted(sweep.levels, key=lambda level: level.concurrency)
        return [_checked(_level_cells(entry, level) | common) for level in ordered]

    return _per_model(snapshot, query, view, levels)


def _level_cells(entry: ModelEntry, level: CapacityLevel) -> Row:
    out: Row = {
        "target": entry.target,
        "model": entry.model,
        "concurrency": _i(level.concurrency),
        "requests": _i(level.requests),
        "good": _i(level.good),
        "met_slo": _i(level.met_slo),
    }
    measures = (level.ttft, level.tpot, level.e2e, level.queue_wait)
    for measure, values in zip(_LEVEL_QUANTILES, measures, strict=True):
        for i, q in enumerate(_QUANTILE_NAMES):
            out[f"{measure}_{q}_seconds"] = _f(values[i]) if i < len(values) else None
    return out | {
        "output_tokens_per_second": _f(level.output_tokens_per_second),
        "goodput_requests_per_second": _f(level.goodput),
        "slo_attainment_ratio": _f(level.attainment),
        "passed": level.passed,
        "queued": level.queued,
        "lagged": level.lagged,
        "window_seconds": _f(level.window),
    }


def _sweep_cells(sweep: CapacityRecord) -> Row:
    return {
        "max_concurrency": _i(sweep.max_concurrency or 0),  # 0: not even the first level met it
        "server_parallel_slots": _i(sweep.parallel_slots),
        "slo_ttft_seconds": _f(sweep.slo_ttft),
        "slo_tpot_seconds": _f(sweep.slo_tpot),
        "slo_attainment": _f(sweep.slo_attainment),
        "num_predict": _i(sweep.num_predict),
        "requests_per_level": _i(sweep.requests_per_level),
        "started_at": _rfc3339(sweep.started_at),
        "finished_at": _rfc3339(sweep.finished_at),
        "stopped": sweep.stopped,
        "url": sweep.url or None,
        "ollama_version": sweep.ollama_version or None,
    }


def columns_of(items: Sequence[Row]) -> list[str]:
    """The fixed columns, then per-run columns in run order (verbose)."""
    runs = max((sum(1 for k in r if k.startswith("ttft_run_")) for r in items), default=0)
    extra = [c for i in range(1, runs + 1) for c in (f"ttft_run_{i}", f"tps_run_{i}")]
    return list(COLUMNS) + extra


def to_json(
    items: Sequence[Row], *, view: str = "export", columns: Sequence[str] | None = None
) -> str:
    """A list of objects with every key present (null when unknown). Strict JSON: a row that
    cannot be encoded (a NaN, a lone surrogate) is left out, logged and counted."""
    cols = list(columns) if columns is not None else columns_of(items)
    objects = []
    for r in items:
        obj = {c: r.get(c) for c in cols}
        try:
            json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (ValueError, TypeError) as exc:  # UnicodeEncodeError is a ValueError
            RENDER_ERRORS.failed(view, str(r.get("target")), str(r.get("model")), exc)
            continue
        objects.append(obj)
    return json.dumps(objects, ensure_ascii=False, indent=1, allow_nan=False)


_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    text = str(value)
    # A spreadsheet would run a cell that starts like a formula: model names are untrusted.
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


def to_csv(
    items: Sequence[Row], *, view: str = "export", columns: Sequence[str] | None = None
) -> str:
    """CSV with a header line; a row that cannot be encoded is left out, logged and counted."""
    cols = list(columns) if columns is not None else columns_of(items)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(cols)
    for r in items:
        cells = [_cell(r.get(c)) for c in cols]
        try:
            "".join(cells).encode("utf-8")
        except UnicodeEncodeError as exc:
            RENDER_ERRORS.failed(view, str(r.get("target")), str(r.get("model")), exc)
            continue
        writer.writerow(cells)
    return buffer.getvalue()
