"""Content negotiation of ``/metrics``: the exposition format by ``Accept``, gzip by
``Accept-Encoding``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

OPENMETRICS: Final = "application/openmetrics-text"
TEXT: Final = "text/plain"


def _entries(header: str) -> Iterator[tuple[str, float]]:
    """(lower-cased value, q) of each entry of an ``Accept``-style header; parameters other
    than q are ignored, and an entry with a bad q is left out, as if it were not there."""
    for part in header.split(","):
        value, *params = (p.strip() for p in part.split(";"))
        q: float | None = 1.0
        for param in params:
            name, _, text = param.partition("=")
            if name.strip().lower() == "q":
                q = _quality(text.strip())
        if q is not None:
            yield value.lower(), q


def media_ranges(accept: str) -> dict[str, float]:
    """``Accept`` as media range -> q (the highest, when one is listed twice); an entry with
    no type/subtype is left out."""
    ranges: dict[str, float] = {}
    for media, q in _entries(accept):
        kind, slash, sub = media.partition("/")
        if slash and kind and sub:
            ranges[media] = max(q, ranges.get(media, 0.0))
    return ranges


def _quality(value: str) -> float | None:
    try:
        q = float(value)
    except ValueError:
        return None
    return q if 0.0 <= q <= 1.0 else None


def _q(ranges: dict[str, float], media: str) -> float:
    """The q of ``media``: listed itself, else by ``type/*``, else by ``*/*``, else 0."""
    for candidate in (media, media.partition("/")[0] + "/*", "*/*"):
        if candidate in ranges:
            return ranges[candidate]
    return 0.0


def wants_openmetrics(accept: str) -> bool:
    """OpenMetrics only when the client names it, acceptable (q > 0) and at least as welcome
    as the text format; anything else (no header, only ``*/*``) gets the text format."""
    ranges = media_ranges(accept)
    openmetrics = ranges.get(OPENMETRICS, 0.0)
    return openmetrics > 0 and openmetrics >= _q(ranges, TEXT)


def accepts_gzip(accept_encoding: str) -> bool:
    return any(coding == "gzip" and q > 0 for coding, q in _entries(accept_encoding))
