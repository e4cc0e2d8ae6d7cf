"""One model never takes a whole response down: what a view could not render is left out of it,
logged once per model and cause (not once per scrape) and counted.

Values reach the views from the client's parser, from an older stored database or from a
tampered file; every view checks them on its own (defense in depth). The rules:

* a number that is not finite, or not representable as a float (an integer of 401 digits),
  is absent for that sample or cell (``number``), as a series that never had a value;
* a model whose lines, row or cell text cannot be rendered or encoded (a lone surrogate in its
  name, a bug) is left out of that output (``left_out``); the rest of the response is served.

Both are counted in ``ometer_render_errors_total{view}`` (``metrics``, ``export``, ``page``).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Final

log = logging.getLogger(__name__)

_LOGGED_MAX: Final = 4096  # distinct (view, target, model, cause) remembered for rate limiting
_NAME_MAX: Final = 120  # characters of a name or a message shown in a log line


def number(value: object) -> float | None:
    """``value`` as a finite float, or None (absent) when it is not one or cannot be one."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    return result if math.isfinite(result) else None


def integer(value: object) -> int | None:
    """An integer kept exact when it is representable as a float; else None (absent)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if number(value) is not None else None


def shown(text: object) -> str:
    """Untrusted text for a log line: ASCII-escaped (controls, surrogates) and shortened."""
    out = ascii(str(text))[1:-1]
    return out if len(out) <= _NAME_MAX else out[:_NAME_MAX] + "…"


class RenderErrors:
    """The counter behind ``ometer_render_errors_total`` and its rate-limited log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the views render in worker threads too
        self._counts: dict[str, int] = {}
        self._logged: set[tuple[str, str, str, str]] = set()

    def left_out(self, view: str, target: str, model: str, cause: str, detail: str = "") -> None:
        """Count one omission; log it the first time this model fails this way in this view
        (``cause`` is the kind of failure, ``detail`` only shown)."""
        key = (view, target, model, cause)
        with self._lock:
            self._counts[view] = self._counts.get(view, 0) + 1
            first = key not in self._logged
            if first:
                if len(self._logged) >= _LOGGED_MAX:  # bounded: a flood of names cannot grow it
                    self._logged.clear()
                self._logged.add(key)
        if first:
            log.warning(
                "%s: model %s of target %s: %s%s (logged once per model and cause)",
                view,
                shown(model),
                shown(target),
                cause,
                f": {shown(detail)}" if detail else "",
            )

    def failed(self, view: str, target: str, model: str, exc: BaseException) -> None:
        self.left_out(view, target, model, f"left out ({type(exc).__name__})", str(exc))

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


RENDER_ERRORS: Final = RenderErrors()
