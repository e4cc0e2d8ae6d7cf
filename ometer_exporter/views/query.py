"""The ``/export`` query (and the one-shot's ``--sort``): which rows, in which order and format.

Problems are named all at once, in the checker's one message form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

FORMATS: Final = ("json", "csv")


class ExportError(ValueError):
    """A bad export parameter; the message says what is allowed."""


# Best first: lower TTFT, higher tokens/s, bigger, longer context, newest.
SORT_KEYS: Final[Mapping[str, tuple[str, bool]]] = {
    "name": ("model", False),
    "size": ("size_bytes", True),
    "ctx": ("context_length_tokens", True),
    "modified": ("modified_timestamp_seconds", True),
    "ttft": ("ttft", False),
    "tps": ("tps", True),
}


@dataclass(frozen=True, slots=True)
class Query:
    """Validated ``/export`` (and ``bench``) parameters."""

    format: str = "json"
    targets: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    sort: str | None = None
    reverse: bool = False
    verbose: bool = False

    @classmethod
    def parse(cls, params: Mapping[str, Sequence[str]]) -> Query:
        """From a query string (each key may repeat); every problem is named at once."""
        allowed = {"format", "target", "model", "sort", "reverse", "verbose"}
        problems = [
            f"unknown parameter {key!r} (allowed: {', '.join(sorted(allowed))})"
            for key in params
            if key not in allowed
        ]

        def one(key: str) -> str | None:
            values = params.get(key) or []
            if len(values) > 1:
                problems.append(f"{key} given {len(values)} times; give it once")
            return values[-1] if values else None

        def flag(key: str) -> bool:
            value = one(key)
            if value is None:
                return False
            if value.lower() in ("1", "true", "yes"):
                return True
            if value.lower() in ("0", "false", "no", ""):
                return False
            problems.append(f"{key}={_show(value)} is not allowed (use 1 or 0)")
            return False

        fmt = (one("format") or "json").lower()
        if fmt not in FORMATS:
            problems.append(f"format={_show(fmt)} is not allowed (use json or csv)")
        sort = one("sort")
        if sort is not None and sort not in SORT_KEYS:
            problems.append(f"sort={_show(sort)} is not allowed (use {', '.join(SORT_KEYS)})")
        reverse = flag("reverse")
        if reverse and sort is None:
            problems.append("reverse=1 needs sort= (one of " + ", ".join(SORT_KEYS) + ")")
        verbose = flag("verbose")
        if problems:
            raise ExportError("; ".join(problems))
        return cls(
            format=fmt,
            targets=tuple(v for v in params.get("target", []) if v),
            models=tuple(v for v in params.get("model", []) if v),
            sort=sort,
            reverse=reverse,
            verbose=verbose,
        )


def _show(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "…")
