"""How late the event loop wakes a timer: a run that saw a stall is not trusted."""

from __future__ import annotations

import asyncio
import time
from collections import deque


class LoopLagProbe:
    """Measures how late the event loop wakes a timer: every timestamp we take passes through it.

    ``run()`` is a background task; ``worst_since(t)`` is the largest delay seen after ``t``
    (``perf_counter`` clock), ``worst_recent()`` the largest over the last ``window`` seconds.
    """

    def __init__(self, *, interval: float = 0.01, window: float = 60.0) -> None:
        self.interval = interval
        self.window = window
        self._samples: deque[tuple[float, float]] = deque()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - expected)
            now = time.perf_counter()
            samples = self._samples
            samples.append((now, lag))
            while samples and samples[0][0] < now - self.window:
                samples.popleft()

    def worst_since(self, since: float) -> float:
        return max((lag for at, lag in self._samples if at >= since), default=0.0)

    def worst_recent(self) -> float:
        return self.worst_since(time.perf_counter() - self.window)
