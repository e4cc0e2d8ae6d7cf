"""Kept-alive connections that a server closed: tell them, and leave them.

Some servers close a kept-alive connection without saying so — llama.cpp's llama-server after a
streamed response — and the next request sent on it fails with "Server disconnected without
sending a response". Nothing reached the model then, so the client sends it again
(``OllamaClient._send``): a request that failed so on a connection it did not open itself
(httpcore's trace says) is sent again, until one goes out on a connection of its own. These
helpers read httpx's pool through its public ``connections`` list (httpcore); with any other
transport (tests' mocks) nothing is retried.

When a request is sent is read from httpcore's trace as well (:class:`Attempt`): the moment
its headers start out on the wire, after the pool has found or opened its connection.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

import httpx

# What httpx raises when a reused connection turns out closed before any response byte.
CLOSED_BEFORE_REPLY: tuple[type[Exception], ...] = (
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)


def _connections(http: httpx.AsyncClient) -> list[Any] | None:
    transport = getattr(http, "_transport", None)
    if not isinstance(transport, httpx.AsyncHTTPTransport):
        return None
    pool = getattr(transport, "_pool", None)
    connections = getattr(pool, "connections", None)
    return list(connections) if isinstance(connections, list) else None


def can_retry(http: httpx.AsyncClient) -> bool:
    """Whether this client's transport is httpx's own pool (the only one retried)."""
    return _connections(http) is not None


async def drop_idle(http: httpx.AsyncClient) -> None:
    """Close every idle kept-alive connection, so the retry opens a fresh one (a server that
    closed one has usually closed them all)."""
    for connection in _connections(http) or ():
        if connection.is_idle():
            await connection.aclose()


class Attempt:
    """What httpcore's trace tells of one send of a request: whether it opened a connection
    (a failure then is the server's answer, not a stale connection's) and the ``perf_counter``
    time its headers started out on the wire (a new connection's TCP and TLS set-up and the
    pool's work come before it, outside any TTFT)."""

    def __init__(self, request: httpx.Request) -> None:
        self.connected = False
        self.headers_at: float | None = None
        request.extensions = {**request.extensions, "trace": self._trace}

    async def _trace(self, event: str, info: dict[str, Any]) -> None:
        if event.startswith("connection.connect_tcp."):
            self.connected = True
        elif event.endswith("send_request_headers.started") and self.headers_at is None:
            self.headers_at = perf_counter()
