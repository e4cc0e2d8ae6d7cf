"""Kept-alive connections that a server closed: tell them, and leave them.

Some servers close a kept-alive connection without saying so — llama.cpp's llama-server after a
streamed response — and the next request sent on it fails with "Server disconnected without
sending a response". Nothing reached the model then, so the client sends it again, once, on a
fresh connection (``OllamaClient._send``). These helpers read httpx's pool through its public
``connections`` list (httpcore); with any other transport (tests' mocks) nothing is retried.

When a request is sent is read from httpcore's trace as well (:func:`headers_sent`): the moment
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


def reuses_connection(http: httpx.AsyncClient) -> bool:
    """Whether a kept-alive connection is idle in the pool: the next request may go on it."""
    connections = _connections(http)
    return bool(connections) and any(c.is_idle() for c in connections or ())


async def drop_idle(http: httpx.AsyncClient) -> None:
    """Close every idle kept-alive connection, so the retry opens a fresh one (a server that
    closed one has usually closed them all)."""
    for connection in _connections(http) or ():
        if connection.is_idle():
            await connection.aclose()


def headers_sent(request: httpx.Request) -> list[float]:
    """A list that gets the ``perf_counter`` time the request's headers start out on the wire
    (httpcore's trace), once per attempt: a new connection's TCP (and TLS) set-up, and the
    pool's work, come before it, outside any TTFT."""
    sent: list[float] = []

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_headers.started"):
            sent.append(perf_counter())

    request.extensions = {**request.extensions, "trace": trace}
    return sent
