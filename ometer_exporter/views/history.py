"""``/api/history``: each model's stored results over time, for the page's sparklines and charts.

    GET /api/history?target=gpu&model=llama3.2&since=24h&points=30

``target`` and ``model`` filter as on ``/export`` (each may repeat; a model matches by exact
name or family); ``since`` is a duration back from now (``24h``, ``7d``) or an RFC 3339 time
(default: all the stored history); ``points`` the newest results per model (1 to
``MAX_POINTS``, default ``DEFAULT_POINTS``). The answer is bounded: at most ``MAX_TOTAL``
points in all — with many models each gets fewer (``points_per_model`` says how many), and a
series that has more stored says ``truncated``. A bad parameter is a 400 that names it, in the
``/export`` wording (``config.checks.Checker``).

Each series holds columns, oldest first: ``t`` (Unix seconds), ``ok`` (1: the cycle gave
numbers), ``ttft``, ``tps``, ``prefill`` (prompt tokens/s), ``load`` (seconds) — null where the
cycle failed —, its ``changes`` (where the Ollama version, the method or the server's URL
changed) and ``trend``: ``↑ ↓ →`` of TTFT and tokens/s, the newest good result against the
one before it, by the one-shot's rule (``grades.comparable``: the same URL and method, else no
arrow; ``grades.trend``: within 5 % is →). Stored figures are checked on the way out as any
stored row is: a point of the wrong type or out of range is left out.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ometer_exporter.config.checks import Checker, parse_duration, show
from ometer_exporter.names import match_model
from ometer_exporter.store.database import POINT_COLUMNS, PointRow
from ometer_exporter.store.records import MAX_TIMESTAMP, ModelKey, Record, Snapshot
from ometer_exporter.store.store import Store
from ometer_exporter.views.grades import comparable, trend
from ometer_exporter.views.query import ExportError

log = logging.getLogger(__name__)

DEFAULT_POINTS: Final = 30  # the page's sparklines (``page_charts.SPARK_POINTS``)
MAX_POINTS: Final = 1000
MAX_TOTAL: Final = 12_000
_PARAMETERS: Final = ("model", "points", "since", "target")
_SINCE_HELP: Final = (
    "use a duration back from now such as 24h or 7d, or an RFC 3339 time such as "
    "2026-01-31T12:00:00Z"
)


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    targets: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    since: float = 0.0  # Unix seconds; 0: everything stored
    points: int = DEFAULT_POINTS

    @classmethod
    def parse(
        cls, params: Mapping[str, Sequence[str]], *, now: float | None = None
    ) -> HistoryQuery:
        """From a query string (``target`` and ``model`` may repeat); every problem at once."""
        checker = Checker()
        for key in params:
            if key not in _PARAMETERS:
                checker.problems.append(
                    f"unknown parameter {show(key)} (allowed: {', '.join(_PARAMETERS)})"
                )
        since = _since(checker, _one(checker, params, "since"), time.time() if now is None else now)
        points = _points(checker, _one(checker, params, "points"))
        if checker.problems:
            raise ExportError(checker.problems)
        return cls(
            targets=tuple(v for v in params.get("target", []) if v),
            models=tuple(v for v in params.get("model", []) if v),
            since=since,
            points=points,
        )

    def keys(self, snapshot: Snapshot) -> list[ModelKey]:
        """The models asked for, among those the snapshot holds, by target and name."""
        return sorted(
            key
            for key in snapshot.models
            if (not self.targets or key[0] in self.targets)
            and (not self.models or any(match_model(q, key[1]) for q in self.models))
        )

    def per_model(self, count: int) -> int:
        """Points per model: as asked, fewer when ``count`` models would pass ``MAX_TOTAL``."""
        return max(1, min(self.points, MAX_TOTAL // max(count, 1)))


def _one(checker: Checker, params: Mapping[str, Sequence[str]], key: str) -> str | None:
    values = params.get(key) or []
    if len(values) > 1:
        checker.problems.append(f"{key} given {len(values)} times; give it once")
    return values[-1] if values else None


def _since(checker: Checker, text: str | None, now: float) -> float:
    if text is None or text == "":
        return 0.0
    try:
        return max(0.0, now - parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        checker.problems.append(f"since={show(text)} is not allowed ({_SINCE_HELP})")
        return 0.0
    return min(max(0.0, moment.timestamp()), MAX_TIMESTAMP)


def _points(checker: Checker, text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_POINTS
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_POINTS:
        checker.problems.append(
            f"points={show(text)} is not allowed (use an integer from 1 to {MAX_POINTS})"
        )
        return DEFAULT_POINTS
    return int(text)


# -- the answer ----------------------------------------------------------------------------------

_NUMBER: Final = (int, float)
_KINDS: Final = frozenset(("chat", "embedding"))


def _figure(value: Any) -> bool:
    """A stored rate or duration: None, or a finite number ≥ 0."""
    return value is None or (type(value) in _NUMBER and 0.0 <= value < math.inf)


@functools.lru_cache(maxsize=256)
def _method(meta: tuple[Any, ...]) -> bool:
    """prompt_set, num_predict, think, url, version: texts (or empty) and a count (or empty);
    few distinct values, so checked once each."""
    prompt_set, num_predict, think, url, version = meta
    texts = (prompt_set, think, url, version)
    if not all(v is None or (type(v) is str and len(v) <= MAX_TEXT_CHECK) for v in texts):
        return False
    return num_predict is None or (type(num_predict) is int and num_predict >= 0)


MAX_TEXT_CHECK: Final = 65_536


def _point(row: PointRow) -> bool:
    """Whether a stored point's time, kind, success and figures are what the store writes."""
    at, kind, success, ttft, tps, prefill, load = row[:7]
    return (
        type(at) in _NUMBER
        and 0.0 <= at <= MAX_TIMESTAMP
        and kind in _KINDS
        and success in (0, 1)
        and _figure(ttft)
        and _figure(tps)
        and _figure(prefill)
        and _figure(load)
    )


def _meta(row: PointRow) -> tuple[Any, ...] | None:
    """A point's method and version, texts read as "" when empty; None when not stored values."""
    meta = row[7:]
    try:
        if not _method(meta):
            return None
    except TypeError:  # not hashable: not a stored value
        return None
    prompt_set, num_predict, think, url, version = meta
    return (prompt_set or "", num_predict, think or "", url or "", version or "")


# (t, (prompt_set, num_predict, think, url, version), ttft, tps) of a point.
Mark = tuple[int, tuple[Any, ...], Any, Any]


def _record(kind: str, mark: Mark) -> Record:
    """The fields of a point the trend rule compares (``grades.comparable``)."""
    prompt_set, num_predict, think, url, _ = mark[1]
    return Record(
        kind=kind, started_at=mark[0], finished_at=mark[0], success=True,
        prompt_set=prompt_set, num_predict=num_predict, think=think, url=url,
    )  # fmt: skip


def _trend(target: str, kind: str, good: list[Mark]) -> dict[str, str]:
    """The newest good result against the good one before it, if they compare."""
    if len(good) < 2:
        return {"ttft": "", "tps": ""}
    old, new = good
    if not comparable(_record(kind, new), _record(kind, old), new_target=target,
                      old_target=target):  # fmt: skip
        return {"ttft": "", "tps": ""}
    return {"ttft": trend(new[2], old[2], "ttft"), "tps": trend(new[3], old[3], "tps")}


def _changes(marks: list[Mark]) -> list[dict[str, Any]]:
    """Where the Ollama version, the method or the URL changed (a marker on the charts)."""
    out: list[dict[str, Any]] = []
    for (_, before, _, _), (at, after, _, _) in itertools.pairwise(marks):
        if before[4] and after[4] and before[4] != after[4]:
            out.append({"t": at, "what": "version", "text": f"Ollama {before[4]} → {after[4]}"})
        if before[:3] != after[:3]:
            method = f"prompts {after[0]}, num_predict {after[1]}, think {after[2] or 'auto'}"
            out.append({"t": at, "what": "method", "text": f"method: {method}"})
        if before[3] and after[3] and before[3] != after[3]:
            out.append({"t": at, "what": "url", "text": f"server {after[3]}"})
    return out


def series(key: ModelKey, rows: Sequence[PointRow], limit: int) -> dict[str, Any]:
    """One model's answer from its stored rows (oldest first; ``limit`` + 1 were asked for, so
    one more than ``limit`` says there is more). One pass, every column checked
    (``database.POINT_COLUMNS``): this runs for every point of the answer."""
    target, model = key
    kept = rows[-limit:]
    t: list[int] = []
    ok: list[int] = []
    figures: tuple[list[Any], ...] = ([], [], [], [])
    marks: list[Mark] = []  # (t, method and version) where they changed
    good: list[Mark] = []  # the last two good points: (t, meta, ttft, tps)
    kind = None
    raw_meta: tuple[Any, ...] | None = None
    meta: tuple[Any, ...] | None = None
    for row in kept:
        if len(row) != len(POINT_COLUMNS) + 1 or not _point(row):
            continue
        if row[7:] != raw_meta:  # few distinct values: checked when they change
            raw_meta, meta = row[7:], _meta(row)
        if meta is None:
            continue
        at, kind, success = round(row[0]), row[1], row[2]
        t.append(at)
        ok.append(success)
        for column, value in zip(figures, row[3:7], strict=True):
            column.append(value if success else None)
        if not marks or marks[-1][1] != meta:
            marks.append((at, meta, None, None))
        if success:
            good = [*good[-1:], (at, meta, row[3], row[4])]
    return {
        "target": target,
        "model": model,
        "kind": kind,
        "truncated": len(rows) > limit,
        "t": t,
        "ok": ok,
        "ttft": figures[0],
        "tps": figures[1],
        "prefill": figures[2],
        "load": figures[3],
        "changes": _changes(marks),
        "trend": _trend(target, kind or "chat", good),
        "skipped": len(kept) - len(t),
    }


def fragment(key: ModelKey, rows: Sequence[PointRow], limit: int) -> tuple[str, int | None]:
    """One model's series as JSON text, and the time of its newest point."""
    body = series(key, rows, limit)
    newest = body["t"][-1] if body["t"] else None
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")), newest


def fragments(
    keys: Sequence[ModelKey], rows: Sequence[Sequence[PointRow]], limit: int
) -> list[tuple[str, int | None]]:
    return [fragment(k, r, limit) for k, r in zip(keys, rows, strict=True)]


def assemble(query: HistoryQuery, per_model: int, texts: Sequence[str]) -> str:
    """The answer from each model's JSON text, in order."""
    head = json.dumps({"since": query.since, "points_per_model": per_model}, allow_nan=False)
    return f'{head[:-1]},"series":[{",".join(texts)}]}}'


def to_json(query: HistoryQuery, per_model: int, keys: Sequence[ModelKey],
            rows: Sequence[Sequence[PointRow]]) -> str:  # fmt: skip
    return assemble(query, per_model, [text for text, _ in fragments(keys, rows, per_model)])


class HistoryCache:
    """Each model's encoded series (the whole history, ``since`` 0), kept while the newest
    stored point is the snapshot's latest result: a model changes once a cycle, so an answer
    reads and encodes only the models measured since the last one. A series whose newest
    result is not stored yet (written just after the snapshot changed) is not kept. One entry
    per model, for the last ``points`` asked; models that left are dropped."""

    def __init__(self) -> None:
        self._entries: dict[ModelKey, tuple[int, float, str]] = {}

    def get(self, key: ModelKey, limit: int, finished_at: float | None) -> str | None:
        entry = self._entries.get(key)
        if entry is None or finished_at is None or entry[:2] != (limit, finished_at):
            return None
        return entry[2]

    def put(self, key: ModelKey, limit: int, finished_at: float | None, text: str,
            newest: int | None) -> None:  # fmt: skip
        if finished_at is not None and newest is not None and newest == round(finished_at):
            self._entries[key] = (limit, finished_at, text)

    def prune(self, live: Iterable[ModelKey]) -> None:
        keep = set(live)
        for key in [k for k in self._entries if k not in keep]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


async def answer(store: Store, query: HistoryQuery, cache: HistoryCache) -> str:
    """The JSON answer: cached series where they are current, the others read (in a worker
    thread) and encoded (in another), never on the event loop."""
    snapshot = store.snapshot
    keys = query.keys(snapshot)
    per_model = query.per_model(len(keys))
    stamps = [_finished(snapshot, key) for key in keys]
    use_cache = query.since == 0.0
    texts: list[str | None] = [
        cache.get(key, per_model, stamp) if use_cache else None
        for key, stamp in zip(keys, stamps, strict=True)
    ]
    missing = [i for i, text in enumerate(texts) if text is None]
    if missing:
        wanted = [keys[i] for i in missing]
        rows = await store.points(wanted, query.since, per_model + 1)  # one more: is there more?
        made = await asyncio.to_thread(fragments, wanted, rows, per_model)
        for i, (text, newest) in zip(missing, made, strict=True):
            texts[i] = text
            if use_cache:
                cache.put(keys[i], per_model, stamps[i], text, newest)
    if len(cache) > 2 * len(snapshot.models):
        cache.prune(snapshot.models)
    return assemble(query, per_model, [text or "" for text in texts])


async def warm(store: Store, cache: HistoryCache) -> None:
    """Encode every model's default series (the page's sparklines) ahead of the first page:
    a cold answer costs ~100 ms at 200 models (docs/performance.md, 6.)."""
    try:
        await answer(store, HistoryQuery(), cache)
    except Exception:  # a cache left cold is only slower
        log.exception("could not prepare the history of the page")


def _finished(snapshot: Snapshot, key: ModelKey) -> float | None:
    entry = snapshot.models.get(key)
    return entry.benchmark.finished_at if entry is not None and entry.benchmark else None
