"""Each connection as the socket sees it: when a request's bytes came in, when a write went out.

The handler's clock starts late: aiohttp parses the request in ``data_received``, wakes the
connection's task, which starts a task for the handler — two or more turns of an event loop
that, while other streams decode, is busy with them. A client's TTFT contains that delay, so a
ground truth taken at the handler misses it. :class:`StampedProtocol` sits between asyncio and
aiohttp's protocol (it forwards every call) and notes, per connection, the first read since the
last request took its stamp; :class:`StampedTransport` sits between aiohttp's writer and the
real transport and notes when each write was handed over. Nothing else changes: the same bytes,
in the same calls, in the same order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from time import perf_counter
from typing import Any

from aiohttp import web

__all__ = ["StampedProtocol", "StampedTransport", "Stamps", "stamps_of"]


class Stamps:
    """One connection's times (``perf_counter``)."""

    __slots__ = ("last_write", "unclaimed")

    def __init__(self) -> None:
        self.unclaimed: float | None = None  # first read since the last request took it
        self.last_write: float | None = None  # the last write handed to the transport

    def take_arrival(self) -> float | None:
        """The first read of the request being handled; the next read starts the next one.
        Called once the request's body is read (its reads never count for the next request)."""
        arrived, self.unclaimed = self.unclaimed, None
        return arrived


class StampedTransport:
    """aiohttp's view of the connection's transport: writes are stamped, the rest forwarded."""

    def __init__(self, inner: asyncio.Transport, stamps: Stamps) -> None:
        self._inner = inner
        self.stamps = stamps

    def write(self, data: Any) -> None:
        self.stamps.last_write = perf_counter()
        self._inner.write(data)

    def writelines(self, list_of_data: Iterable[Any]) -> None:
        self.stamps.last_write = perf_counter()
        self._inner.writelines(list_of_data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class StampedProtocol(asyncio.Protocol):
    """Forwards every protocol call to aiohttp's handler; stamps the first read of a request."""

    def __init__(self, inner: web.RequestHandler) -> None:
        self._inner = inner
        self._stamps = Stamps()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._inner.connection_made(StampedTransport(transport, self._stamps))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self._stamps.unclaimed is None:
            self._stamps.unclaimed = perf_counter()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        self._inner.eof_received()
        return None  # the transport closes itself, as with aiohttp's protocol alone

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def stamps_of(request: web.BaseRequest) -> Stamps | None:
    """The stamps of the request's connection (None when it came through no stamped site)."""
    transport = request.transport
    return transport.stamps if isinstance(transport, StampedTransport) else None
