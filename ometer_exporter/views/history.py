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

import itertools
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ometer_exporter.config.checks import Checker, parse_duration, show
from ometer_exporter.names import match_model
from ometer_exporter.store.database import PointRow
from ometer_exporter.store.records import MAX_TIMESTAMP, ModelKey, Record, Snapshot
from ometer_exporter.views.grades import comparable, trend
from ometer_exporter.views.query import ExportError

DEFAULT_POINTS: Final = 30
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

_NUMBER = (int, float)


def _figure(value: Any) -> float | None:
    """A stored rate or duration: None, or a finite number ≥ 0; else ValueError."""
    if value is None:
        return None
    if type(value) not in _NUMBER or not 0.0 <= value < math.inf:
        raise ValueError(f"{value!r} is not a figure")
    return float(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if type(value) is not str or len(value) > 65_536:
        raise ValueError("not text")
    return value


def checked(row: PointRow) -> PointRow | None:
    """A stored point with every column checked (see ``database.POINT_COLUMNS``), or None."""
    try:
        at, kind, success, ttft, tps, prefill, load, prompt_set, num_predict, think, url, ver = row
        if type(at) not in _NUMBER or not 0.0 <= at <= MAX_TIMESTAMP:
            return None
        if kind not in ("chat", "embedding") or success not in (0, 1):
            return None
        if num_predict is not None and type(num_predict) is not int:
            return None
        return (
            float(at), kind, int(success), _figure(ttft), _figure(tps), _figure(prefill),
            _figure(load), _text(prompt_set), num_predict, _text(think), _text(url), _text(ver),
        )  # fmt: skip
    except (ValueError, TypeError):
        return None


def _record(point: PointRow) -> Record:
    """The fields of a point the trend rule compares (``grades.comparable``)."""
    return Record(
        kind=point[1], started_at=point[0], finished_at=point[0], success=bool(point[2]),
        prompt_set=point[7], num_predict=point[8], think=point[9], url=point[10],
    )  # fmt: skip


def _trend(target: str, good: list[PointRow]) -> dict[str, str]:
    if len(good) < 2:
        return {"ttft": "", "tps": ""}
    new, old = good[-1], good[-2]
    if not comparable(_record(new), _record(old), new_target=target, old_target=target):
        return {"ttft": "", "tps": ""}
    return {"ttft": trend(new[3], old[3], "ttft"), "tps": trend(new[4], old[4], "tps")}


def _changes(points: list[PointRow]) -> list[dict[str, Any]]:
    """Where the Ollama version, the method or the URL changed (a marker on the charts)."""
    out: list[dict[str, Any]] = []
    for before, after in itertools.pairwise(points):
        if before[11] and after[11] and before[11] != after[11]:
            text = f"Ollama {before[11]} → {after[11]}"
            out.append({"t": after[0], "what": "version", "text": text})
        if before[7:10] != after[7:10]:
            method = f"prompts {after[7]}, num_predict {after[8]}, think {after[9] or 'auto'}"
            out.append({"t": after[0], "what": "method", "text": f"method: {method}"})
        if before[10] and after[10] and before[10] != after[10]:
            out.append({"t": after[0], "what": "url", "text": f"server {after[10]}"})
    return out


def series(key: ModelKey, rows: Sequence[PointRow], limit: int) -> dict[str, Any]:
    """One model's answer from its stored rows (oldest first; ``limit`` + 1 were asked for, so
    one more than ``limit`` says there is more)."""
    target, model = key
    points = [p for row in rows[-limit:] if (p := checked(row)) is not None]
    good = [p for p in points if p[2]]

    def column(index: int) -> list[float | None]:
        return [p[index] if p[2] else None for p in points]

    return {
        "target": target,
        "model": model,
        "kind": points[-1][1] if points else None,
        "truncated": len(rows) > limit,
        "t": [p[0] for p in points],
        "ok": [p[2] for p in points],
        "ttft": column(3),
        "tps": column(4),
        "prefill": column(5),
        "load": column(6),
        "changes": _changes(points),
        "trend": _trend(target, good),
        "skipped": len(rows[-limit:]) - len(points),
    }


def to_json(query: HistoryQuery, per_model: int, keys: Sequence[ModelKey],
            rows: Sequence[Sequence[PointRow]]) -> str:  # fmt: skip
    body = {
        "since": query.since,
        "points_per_model": per_model,
        "series": [series(k, r, per_model) for k, r in zip(keys, rows, strict=True)],
    }
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
