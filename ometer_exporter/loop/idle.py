"""When a loaded model is idle: its ``/api/ps`` expiry has not moved for a quiet period.

Ollama recomputes ``expires_at`` each time the last in-flight request on a model finishes, so an
expiry that stays put means no request has finished since; one in the past means a request is
still running (the expiry is only refreshed when it ends). A model is measured only once it has
been quiet for ``benchmark.idle_before``, so our requests do not queue behind the user's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

from ometer_exporter.client.replies import LoadedModel
from ometer_exporter.names import canonical_name


class IdleTracker:
    """What this worker's polls of ``/api/ps`` saw: each loaded model's expiry, and since when."""

    def __init__(self, quiet: float) -> None:
        self.quiet = quiet
        self._seen: dict[str, tuple[datetime | None, float]] = {}  # name -> (expiry, since)

    def observe(self, loaded: Iterable[LoadedModel], now: float) -> None:
        """One poll's answer, at monotonic time ``now``; models it does not list are gone."""
        seen: dict[str, tuple[datetime | None, float]] = {}
        for entry in loaded:
            name = canonical_name(entry.name)
            old = self._seen.get(name)
            same = old is not None and old[0] == entry.expires_at
            seen[name] = old if same and old is not None else (entry.expires_at, now)
        self._seen = seen

    def loaded(self, name: str) -> bool:
        return name in self._seen

    def expiry(self, name: str) -> datetime | None:
        seen = self._seen.get(name)
        return None if seen is None else seen[0]

    def busy_until_it_moves(self, name: str) -> None:
        """Someone else's request is running on the model (our run ended and the expiry did not
        move): it is not idle until the expiry moves, however long that takes."""
        seen = self._seen.get(name)
        if seen is not None:
            self._seen[name] = (seen[0], math.inf)

    def idle(self, name: str, now: float, wall: float) -> bool:
        """Loaded, and quiet for the whole period up to ``now`` (monotonic); ``wall`` is the
        Unix time, to tell an expiry in the past (a request still running)."""
        seen = self._seen.get(name)
        if seen is None:
            return False
        if self.quiet <= 0:
            return True
        expires, since = seen
        if expires is not None and expires.timestamp() < wall:
            return False
        return now - since >= self.quiet

    def quiet_at(self, name: str) -> float | None:
        """The monotonic time the model will have been quiet long enough, if nothing moves."""
        seen = self._seen.get(name)
        return None if seen is None else seen[1] + self.quiet
