"""Content negotiation of ``/metrics``: the exposition format by ``Accept``, gzip by
``Accept-Encoding``."""

from __future__ import annotations

from typing import Final

OPENMETRICS: Final = "application/openmetrics-text"
TEXT: Final = "text/plain"


def media_ranges(accept: str) -> dict[str, float]:
    """``Accept`` as media range -> q (the highest, when one is listed twice); parameters
    other than q are ignored; an entry that is malformed (no type/subtype, a bad q) is left
    out, as if it were not there."""
    ranges: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        kind, slash, sub = media.lower().partition("/")
        if not slash or not kind or not sub:
            continue
        q: float | None = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                q = _quality(value.strip())
        if q is not None:
            ranges[f"{kind}/{sub}"] = max(q, ranges.get(f"{kind}/{sub}", 0.0))
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
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False
