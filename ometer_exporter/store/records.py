"""The values the store holds: a model's inventory, its latest record, totals, a target's state,
and the immutable :class:`Snapshot` every view reads.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal

from ometer_exporter.measure.results import Kind, ModelResult, model_kind

if TYPE_CHECKING:
    from ometer_exporter.store.capacity import CapacityRecord

# Histogram upper bounds (seconds): ~14 buckets each.
TTFT_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
TPOT_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5,
)  # fmt: skip

ModelKey = tuple[str, str]  # (target, model)

# Where a model stands in its target's loop (the ``status`` column of /export and the page).
Status = Literal[
    "pending",  # not handled yet: the target's first cycle has not reached it
    "measured",  # its latest attempt gave numbers; next due at ``due_at``
    "failed",  # its latest attempt failed (the record's error says why); next due at ``due_at``
    "due",  # to be measured in the target's next cycle (``select: all`` loads it then)
    "waiting_for_idle",  # loaded and due: measured once no one else has used it for a while
    "contended",  # the last attempt met someone else's request: tried again once idle
    "not_loaded",  # due, but its target has ``select: loaded`` and it is not in memory
    "excluded",  # include/exclude of its target leave it out
    "held",  # its cloud account's usage limit is spent: waits until ``due_at``
]
Stored = tuple[str, str, "Record", "Inventory | None"]  # a stored row: target, model, ...


@dataclass(frozen=True, slots=True)
class Inventory:
    """What a target says about a model (``/api/tags`` + ``/api/show`` + ``/api/ps``)."""

    family: str = ""
    parameter_size: str = ""
    quantization_level: str = ""
    format: str = ""
    parameters: int | None = None
    context_length: int | None = None
    size_bytes: int | None = None
    modified_at: float | None = None  # Unix seconds
    capabilities: tuple[str, ...] = ()
    loaded: bool | None = None  # None: the target has no /api/ps (cloud), or not asked yet
    vram_bytes: int | None = None
    wanted: bool = True  # include/exclude of its target let it in
    select_all: bool = False  # its target benchmarks every model, not only loaded ones

    @property
    def kind(self) -> Kind:
        return model_kind(self.capabilities)

    @property
    def selected(self) -> bool:
        """Due to be benchmarked: wanted, and loaded or on a ``select: all`` target."""
        return self.wanted and (self.select_all or self.loaded is True)

    @classmethod
    def from_json(cls, text: str) -> Inventory:
        return cls(**stored_fields(cls, text, INVENTORY_RULES))


def stored_fields(cls: type, text: str, rules: Mapping[str, Rule]) -> dict[str, Any]:
    """A stored JSON object's known fields, each checked as input from a server would be:
    type and range (``rules``); unknown ones, from a newer version, are dropped. Raises
    ValueError naming the first bad field, so the row is skipped."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("not an object")
    return checked_fields(cls, raw, rules)


def checked_fields(cls: type, raw: Mapping[str, Any], rules: Mapping[str, Rule]) -> dict[str, Any]:
    """The known fields of one decoded object (``stored_fields``), checked."""
    known = {f.name for f in fields(cls)}
    data: dict[str, Any] = {}
    for key, value in raw.items():
        if key in known:
            try:
                data[key] = rules[key](value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{key}: {exc}") from None
    return data


# -- the checks of a stored row (``Record.from_json``, ``Inventory.from_json``, the store's
# capacity records) ---------------------------------------------------------------------------

Rule = Callable[[Any], Any]  # returns the checked value, raises ValueError/TypeError

MAX_TIMESTAMP: Final = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last second datetime holds
MAX_COUNT: Final = 2**63 - 1  # bytes, parameters, tokens: what SQLite and every consumer hold
MAX_TEXT: Final = 1024  # names, families, quantization levels, capabilities
MAX_ERROR: Final = 65_536  # an error message
MAX_ITEMS: Final = 1024  # capabilities of a model, runs of a cycle


def a_float(value: Any, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{type(value).__name__}, not a number")
    try:
        result = float(value)
    except OverflowError:
        raise ValueError("too large for a float") from None
    if not math.isfinite(result) or not low <= result <= high:
        raise ValueError(f"{_short(value)} is out of range ({low} to {high})")
    return result


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}… ({len(text)} characters)"


def optional(rule: Rule) -> Rule:
    return lambda value: None if value is None else rule(value)


def text(limit: int) -> Rule:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{type(value).__name__}, not a string")
        if len(value) > limit:
            raise ValueError(f"{len(value)} characters, more than {limit}")
        value.encode("utf-8")  # a lone surrogate is no text
        return value

    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{type(value).__name__}, not true or false")
    return value


def count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{type(value).__name__}, not an integer")
    if not 0 <= value <= MAX_COUNT:
        raise ValueError(f"{_short(value)} is out of range (0 to 2**63-1)")
    return value


def items(rule: Rule) -> Rule:
    def check(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise TypeError(f"{type(value).__name__}, not a list")
        if len(value) > MAX_ITEMS:
            raise ValueError(f"{len(value)} items, more than {MAX_ITEMS}")
        return tuple(rule(item) for item in value)

    return check


def _kind(value: Any) -> str:
    if value not in ("chat", "embedding"):
        raise ValueError(f"{_short(value)} is not chat or embedding")
    return str(value)


_TIME: Final[Rule] = lambda value: a_float(value, 0.0, MAX_TIMESTAMP)  # noqa: E731
_SECONDS: Final[Rule] = optional(lambda value: a_float(value, 0.0))  # durations, rates
_NAME: Final = text(MAX_TEXT)
INVENTORY_RULES: Final[Mapping[str, Rule]] = {
    "family": _NAME,
    "parameter_size": _NAME,
    "quantization_level": _NAME,
    "format": _NAME,
    "parameters": optional(count),
    "context_length": optional(count),
    "size_bytes": optional(count),
    "modified_at": optional(_TIME),
    "capabilities": items(_NAME),
    "loaded": optional(boolean),
    "vram_bytes": optional(count),
    "wanted": boolean,
    "select_all": boolean,
}
RECORD_RULES: Final[Mapping[str, Rule]] = {
    "kind": _kind,
    "started_at": _TIME,
    "finished_at": _TIME,
    "success": boolean,
    "ttft": _SECONDS,
    "time_to_first_content": _SECONDS,
    "tokens_per_second": _SECONDS,
    "client_tokens_per_second": _SECONDS,
    "output_tokens_approximate": boolean,
    "prompt_tokens_per_second": _SECONDS,
    "request_duration": _SECONDS,
    "queue_wait": optional(a_float),  # total - load - prompt_eval - eval: may dip below 0
    "load_duration": _SECONDS,
    "error_type": optional(_NAME),
    "error": optional(text(MAX_ERROR)),
    "run_ttft": items(_SECONDS),
    "run_tokens_per_second": items(_SECONDS),
    "prompt_set": _NAME,
    "num_predict": optional(count),
    "think": _NAME,
    "url": text(MAX_ERROR),
    "length_prompt_tokens": items(count),
    "length_actual_tokens": items(optional(count)),
    "length_ttft": items(_SECONDS),
    "length_prefill_tokens_per_second": items(_SECONDS),
    "length_note": items(_NAME),
    "ttft_per_1k_prompt_tokens": optional(a_float),
    "ollama_version": _NAME,
}


@dataclass(frozen=True, slots=True)
class Record:
    """What a model's latest completed cycle left behind (persisted; survives restarts)."""

    kind: str
    started_at: float
    finished_at: float
    success: bool
    ttft: float | None = None
    time_to_first_content: float | None = None
    tokens_per_second: float | None = None
    client_tokens_per_second: float | None = None
    # Output tokens were counted chunks (an OpenAI-compatible server that sent no usage).
    output_tokens_approximate: bool = False
    prompt_tokens_per_second: float | None = None
    request_duration: float | None = None
    queue_wait: float | None = None
    load_duration: float | None = None
    error_type: str | None = None
    error: str | None = None
    run_ttft: tuple[float | None, ...] = ()
    run_tokens_per_second: tuple[float | None, ...] = ()
    prompt_set: str = ""
    num_predict: int | None = None
    think: str = ""
    # The target's URL when it was measured, without credentials; "" when unknown (results
    # stored before the URL was kept).
    url: str = ""
    # The prompt-length axis, one entry per configured length (parallel tuples): the length,
    # the median actual prompt tokens, TTFT and prefill rate, and "" / "capped" / why skipped.
    length_prompt_tokens: tuple[int, ...] = ()
    length_actual_tokens: tuple[int | None, ...] = ()
    length_ttft: tuple[float | None, ...] = ()
    length_prefill_tokens_per_second: tuple[float | None, ...] = ()
    length_note: tuple[str, ...] = ()
    ttft_per_1k_prompt_tokens: float | None = None  # fitted over the measured lengths
    # What the target's /api/version said when it was measured; "" when unknown (not asked
    # yet, or a result stored before versions were kept).
    ollama_version: str = ""

    @classmethod
    def from_result(
        cls, result: ModelResult, *, method: Method, url: str = "", ollama_version: str = ""
    ) -> Record:
        first_error = result.first_error
        chat = result.kind == "chat"
        return cls(
            kind=result.kind,
            started_at=result.started_at,
            finished_at=result.finished_at,
            success=result.success,
            ttft=result.ttft,
            time_to_first_content=result.time_to_first_content,
            tokens_per_second=result.tokens_per_second,
            client_tokens_per_second=result.client_tokens_per_second,
            output_tokens_approximate=result.output_tokens_approximate,
            prompt_tokens_per_second=result.prompt_tokens_per_second,
            request_duration=result.request_duration,
            queue_wait=result.queue_wait,
            load_duration=result.load_duration,
            error_type=first_error.error_type.value
            if first_error and first_error.error_type
            else None,
            error=first_error.error if first_error else None,
            run_ttft=tuple(r.ttft if chat else r.request_duration for r in result.runs),
            run_tokens_per_second=tuple(
                r.tokens_per_second if chat else r.prompt_tokens_per_second for r in result.runs
            ),
            prompt_set=method.prompt_set,
            num_predict=method.num_predict,
            think=method.think,
            url=url,
            length_prompt_tokens=tuple(n.plan.configured for n in result.lengths),
            length_actual_tokens=tuple(n.prompt_tokens for n in result.lengths),
            length_ttft=tuple(n.ttft for n in result.lengths),
            length_prefill_tokens_per_second=tuple(
                n.prefill_tokens_per_second for n in result.lengths
            ),
            length_note=tuple(n.note for n in result.lengths),
            ttft_per_1k_prompt_tokens=result.ttft_per_1k_tokens,
            ollama_version=ollama_version,
        )

    def failed(
        self, error_type: str | None, error: str | None, *, started_at: float, at: float
    ) -> Record:
        """This result's values, marked as the outcome of a later cycle that failed."""
        return replace(
            self,
            success=False,
            error_type=error_type,
            error=error,
            started_at=started_at,
            finished_at=at,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Record:
        return cls(**stored_fields(cls, text, RECORD_RULES))


@dataclass(frozen=True, slots=True)
class Method:
    """The method behind the numbers (``ometer_benchmark_config_info``)."""

    prompt_set: str
    num_predict: int
    think: str


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative-ready bucket counts (per bucket, not cumulative), sum and count."""

    counts: tuple[int, ...]
    total: float = 0.0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> Histogram:
        return cls(counts=(0,) * (len(bounds) + 1))

    def observe(self, bounds: tuple[float, ...], values: Iterable[float]) -> Histogram:
        counts = list(self.counts)
        total = self.total
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += 1
            total += value
        return Histogram(tuple(counts), total)

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class Counters:
    """Totals since the process started (Prometheus handles the reset on restart)."""

    runs: int = 0
    output_tokens: int = 0
    prompt_tokens: int = 0
    errors: tuple[tuple[str, int], ...] = ()
    discarded: tuple[tuple[str, int], ...] = ()
    ttft: Histogram = field(default_factory=lambda: Histogram.empty(TTFT_BUCKETS))
    tpot: Histogram = field(default_factory=lambda: Histogram.empty(TPOT_BUCKETS))

    def add(self, result: ModelResult) -> Counters:
        good = result.good_runs
        return Counters(
            runs=self.runs + result.requests,
            output_tokens=self.output_tokens + result.output_tokens,
            prompt_tokens=self.prompt_tokens + result.prompt_tokens,
            errors=merge_counts(self.errors, {k.value: v for k, v in result.errors.items()}),
            discarded=merge_counts(
                self.discarded, {str(k): v for k, v in result.discarded.items()}
            ),
            ttft=self.ttft.observe(TTFT_BUCKETS, (r.ttft for r in good if r.ttft is not None))
            if result.kind == "chat"
            else self.ttft,
            tpot=self.tpot.observe(
                TPOT_BUCKETS,
                (
                    t
                    for r in good
                    if "short" not in r.discarded and (t := r.time_per_output_token) is not None
                ),
            ),
        )


def merge_counts(
    old: tuple[tuple[str, int], ...], new: Mapping[str, int]
) -> tuple[tuple[str, int], ...]:
    """Counts by key (sorted pairs) with ``new`` added."""
    merged = dict(old)
    for key, count in new.items():
        merged[key] = merged.get(key, 0) + count
    return tuple(sorted(merged.items()))


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model on one target: inventory, latest benchmark, totals."""

    target: str
    model: str
    inventory: Inventory | None = None  # None: restored, not yet seen in /api/tags
    benchmark: Record | None = None
    counters: Counters = field(default_factory=Counters)
    last_success: float | None = None
    # load_duration of the last cold (warmup) request, carried forward through the cycles that
    # find the model already loaded and so cannot measure a load.
    load_duration: float | None = None
    status: Status = "pending"
    due_at: float | None = None  # Unix seconds: when it is next due (None: not known yet)
    # The load sweep (``benchmark.capacity``): the latest published one, sweeps that ended
    # without a record by reason (``Abort``), and when the next one is due.
    capacity: CapacityRecord | None = None
    capacity_aborted: tuple[tuple[str, int], ...] = ()
    capacity_due_at: float | None = None


@dataclass(frozen=True, slots=True)
class TargetState:
    name: str
    cloud: bool
    interval: float
    method: Method
    url: str = ""  # never with credentials (config keeps them out of target URLs)
    select: str = "loaded"
    next_cycle_at: float | None = None  # Unix seconds of the next cycle (discovery and sweep)
    models_left_out: int = 0  # listed beyond max_models at the last discovery
    up: bool | None = None  # None: not contacted yet
    version: str | None = None
    api: str = "ollama"  # the API the target speaks (its `api` setting)
    engine: str | None = None  # the server behind it, as discovery saw it ("llama.cpp", …)
    slots: int | None = None  # parallel request slots, where the server says (llama.cpp)
    reconnects: int = 0  # requests sent again on a fresh connection (the client's count)
    last_cycle_started: float | None = None
    last_cycle_duration: float | None = None
    error: str | None = None
    loop_errors: int = 0  # unexpected exceptions the loop survived


@dataclass(frozen=True, slots=True)
class Snapshot:
    generation: int
    targets: Mapping[str, TargetState]
    models: Mapping[ModelKey, ModelEntry]
    config_reload_ok: bool = True
    rows_skipped: int = 0  # stored rows refused on restore (``ometer_store_rows_skipped_total``)


EMPTY_SNAPSHOT: Final = Snapshot(0, MappingProxyType({}), MappingProxyType({}))
