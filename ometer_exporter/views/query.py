"""The ``/export`` query (and the one-shot's ``--sort``): which rows, in which order and format.

Problems are collected by the configuration's checker and named all at once; each names the
bad parameter and what is allowed (the wording the HTTP API has always answered with).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from ometer_exporter.config.checks import Checker, ConfigError, show

FORMATS: Final = ("json", "csv")
# A row per model; per model and prompt length; per model and level of its load sweep.
VIEWS: Final = ("models", "prompt_length", "capacity")
_PARAMETERS: Final = ("format", "model", "reverse", "sort", "target", "verbose", "view")


class ExportError(ConfigError, ValueError):
    """Bad export parameters; the message names each and says what is allowed."""

    def __str__(self) -> str:  # one line: it is the body of a 400 answer
        return "; ".join(self.problems)


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
    view: str = "models"

    @classmethod
    def parse(cls, params: Mapping[str, Sequence[str]]) -> Query:
        """From a query string (each key may repeat); every problem is named at once."""
        checker = Checker()
        for key in params:
            if key not in _PARAMETERS:
                checker.problems.append(
                    f"unknown parameter {show(key)} (allowed: {', '.join(_PARAMETERS)})"
                )
        fmt = (_one(checker, params, "format") or "json").lower()
        if fmt not in FORMATS:
            checker.problems.append(f"format={show(fmt)} is not allowed (use json or csv)")
        sort = _one(checker, params, "sort")
        if sort is not None and sort not in SORT_KEYS:
            checker.problems.append(
                f"sort={show(sort)} is not allowed (use {', '.join(SORT_KEYS)})"
            )
        reverse = _flag(checker, params, "reverse")
        if reverse and sort is None:
            checker.problems.append("reverse=1 needs sort= (one of " + ", ".join(SORT_KEYS) + ")")
        verbose = _flag(checker, params, "verbose")
        view = _one(checker, params, "view") or "models"
        if view not in VIEWS:
            checker.problems.append(f"view={show(view)} is not allowed (use {', '.join(VIEWS)})")
        elif view != "models" and (sort is not None or verbose):
            order = "length" if view == "prompt_length" else "concurrency"
            checker.problems.append(f"view={view} takes no sort= or verbose= (rows come by "
                                    f"target, model and {order})")  # fmt: skip
        if checker.problems:
            raise ExportError(checker.problems)
        return cls(
            format=fmt,
            targets=tuple(v for v in params.get("target", []) if v),
            models=tuple(v for v in params.get("model", []) if v),
            sort=sort,
            reverse=reverse,
            verbose=verbose,
            view=view,
        )


def _one(checker: Checker, params: Mapping[str, Sequence[str]], key: str) -> str | None:
    """The parameter's value; given more than once, a problem (and the last value)."""
    values = params.get(key) or []
    if len(values) > 1:
        checker.problems.append(f"{key} given {len(values)} times; give it once")
    return values[-1] if values else None


def _flag(checker: Checker, params: Mapping[str, Sequence[str]], key: str) -> bool:
    value = _one(checker, params, key)
    if value is None or value.lower() in ("0", "false", "no", ""):
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    checker.problems.append(f"{key}={show(value)} is not allowed (use 1 or 0)")
    return False
