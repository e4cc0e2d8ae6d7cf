"""Whether someone else's request shared the model with one of ours, from what Ollama reports.

A benchmark of a model in use measures the user's load, not the model. Two signs, both read from
the server, mark a run ``contended``:

* **Queue wait.** A request that waited for one of the runner's parallel slots was behind another
  one. Ollama counts that wait in ``total_duration`` but in none of its parts, so
  ``total - load - prompt_eval - eval`` above :data:`QUEUE_WAIT_LIMIT` is someone else's request
  ahead of ours (a few milliseconds of templating is the normal remainder).
* **``expires_at`` in ``/api/ps``.** Ollama recomputes a model's expiry only when its last in-flight
  request finishes. After each of our runs it must therefore have moved; when it has not, another
  request was still running as ours ended (with several parallel slots, that is the only sign).

Neither sign can see a foreign request that starts and ends inside one of our runs on a server
with several slots; the quiet period before a model is measured (``benchmark.idle_before``) is
what makes that unlikely.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Final

from ometer_exporter.client.engine import EngineClient
from ometer_exporter.client.errors import OllamaError
from ometer_exporter.client.replies import LoadedModel
from ometer_exporter.measure.results import RunResult
from ometer_exporter.names import canonical_name

QUEUE_WAIT_LIMIT: Final = 0.1  # seconds a run may wait for a slot before it counts as queued
# Ollama marks the runner idle just after the reply's last byte: re-read a stale expiry this many
# seconds later before concluding someone else's request is still running.
SETTLE_READS: Final = (0.0, 0.02, 0.05, 0.1)
PAUSE_READS: Final = 4  # reads of a busy flag during a sweep's quiet pause


async def loaded_entry(client: EngineClient, model: str) -> LoadedModel | None:
    """The model's ``/api/ps`` entry (names compared as Ollama resolves them), None if absent."""
    wanted = canonical_name(model).lower()
    for entry in await client.ps():
        if canonical_name(entry.name).lower() == wanted:
            return entry
    return None


def queued(run: RunResult) -> bool:
    """The run waited for a slot behind another request."""
    wait = run.queue_wait
    return wait is not None and wait > QUEUE_WAIT_LIMIT


class IdleWatch:
    """Follows one model's ``expires_at`` across our runs."""

    def __init__(
        self, client: EngineClient, model: str, expires_at: datetime | None, *, loaded: bool
    ) -> None:
        self.client = client
        self.model = model
        self.last = expires_at
        self.loaded = loaded  # in memory when the attempt began

    async def went_idle(self) -> bool:
        """After one of our requests: True when the model went idle with it (its expiry moved,
        or it was unloaded), False when another request kept it busy. Unknown counts as idle:
        a failing ``/api/ps`` never discards a run."""
        for delay in SETTLE_READS:
            if delay:
                await asyncio.sleep(delay)
            try:
                entry = await loaded_entry(self.client, self.model)
            except OllamaError:
                return True
            if entry is None or entry.expires_at is None or entry.expires_at != self.last:
                self.last = entry.expires_at if entry is not None else None
                return True
        return False


class QuietGate:
    """Before the first level of a load sweep and after each: was the model left to us?

    After a level our last reply must have moved the expiry (else another request is still
    running); then, during ``pause`` seconds in which we send nothing, it must not move (else
    another request finished)."""

    def __init__(self, watch: IdleWatch, pause: float) -> None:
        self.watch = watch
        self.pause = pause
        self.sent = False

    async def __call__(self) -> bool:
        if self.sent and not await self.watch.went_idle():
            return False
        self.sent = True
        before = self.watch.last
        await asyncio.sleep(self.pause)
        try:
            entry = await loaded_entry(self.watch.client, self.watch.model)
        except OllamaError:
            return True  # unknown is quiet: a failing /api/ps never aborts a sweep
        return (entry.expires_at if entry is not None else None) == before


class BusyGate:
    """The same question on a server without ``/api/ps`` that says when it is serving a
    request (``EngineClient.busy``: llama.cpp's ``/slots``, vLLM's ``/metrics``): after our
    last reply it may not stay busy beyond the settle reads, nor become busy during ``pause``
    (read a few times). A server that tells nothing is taken as quiet: contention cannot be
    seen there."""

    def __init__(self, client: EngineClient, pause: float) -> None:
        self.client = client
        self.pause = pause

    async def __call__(self) -> bool:
        for delay in SETTLE_READS:
            await asyncio.sleep(delay)
            if not await self._busy():
                break
        else:
            return False
        for _ in range(PAUSE_READS):
            await asyncio.sleep(self.pause / PAUSE_READS)
            if await self._busy():
                return False
        return True

    async def _busy(self) -> bool:
        try:
            return await self.client.busy() is True
        except OllamaError:
            return False  # unknown is quiet, as with /api/ps
