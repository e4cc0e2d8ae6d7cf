"""The server's own limits: how long a connection may take to send its headers, how many
connections may be open at once, and what a malformed request costs in the log.

aiohttp (3.9 and later) has no timeout of its own for a request's headers, but its keep-alive
timer is one in effect: it is armed when a connection opens and again when a response ends, is
not pushed back by incoming bytes, and closes the connection if no complete request has arrived
by then. So ``keepalive_timeout=HEADER_TIMEOUT`` bounds a connection that never finishes its
headers (or dribbles them) and an idle keep-alive connection alike. The price: a scraper's
keep-alive connection is closed after 10 s of idleness, so a scrape every 15 s or more opens
a new connection each time (a TCP handshake on a path that serves cached bytes). A TLS handshake
comes before the handler exists; ``app.listen`` gives it the same bound.

aiohttp has no connection limit either: ``ConnectionGuard`` wraps the protocol factory. When a
new connection would exceed ``MAX_CONNECTIONS`` it closes the oldest connections that are not
in the middle of a request (a request in flight is never cut); only when every connection is
busy is the newcomer closed at once. So idle or half-sent connections can never take the file
descriptors a scrape or SQLite needs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

HEADER_TIMEOUT: Final = 10.0  # seconds from connect (or the last response) to complete headers
MAX_CONNECTIONS: Final = 256  # open at once; far below the usual 1,024 file descriptors
_LOG_TEXT: Final = 120  # characters of a malformed request's error shown in the log

# aiohttp's server logger, given to the request handlers instead of aiohttp's own (see
# ``_ShortLines``): the exporter's name, and one short line per malformed request.
server_log = logging.getLogger("ometer_exporter.web.http")


class _ShortLines(logging.Filter):
    """A malformed request makes aiohttp log a traceback that repeats the request (twice over,
    before any auth). Here it is one line: the error's type and its first characters,
    ASCII-escaped, at most ``_LOG_TEXT`` long. Other errors (a bug in a handler) keep their
    traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            text = ascii(str(exc))[1:-1]
            if len(text) > _LOG_TEXT:
                text = text[:_LOG_TEXT] + "…"
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {text}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


server_log.addFilter(_ShortLines())


def handler_args(header_timeout: float = HEADER_TIMEOUT) -> dict[str, Any]:
    """Keyword arguments of aiohttp's request handlers (``web.AppRunner(app, **…)``)."""
    return {"keepalive_timeout": header_timeout, "logger": server_log}


class _Refused(asyncio.Protocol):
    """A connection over the limit when every other one is busy: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConnectionGuard:
    """At most ``limit`` open connections; the oldest idle ones make room for a new one.

    ``middleware`` marks the connections with a request in flight; ``factory`` is the protocol
    factory the listening socket uses (``app.listen``).
    """

    def __init__(self, limit: int = MAX_CONNECTIONS) -> None:
        self.limit = limit
        self.evicted = 0  # idle connections closed to make room
        self.refused = 0  # new connections closed because every other one was busy
        self._busy: dict[object, int] = {}  # protocol -> requests in flight

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        protocol = request.protocol
        self._busy[protocol] = self._busy.get(protocol, 0) + 1
        try:
            return await handler(request)
        finally:
            left = self._busy.pop(protocol) - 1
            if left:
                self._busy[protocol] = left

    def factory(self, server: web.Server) -> Callable[[], asyncio.BaseProtocol]:
        def make() -> asyncio.BaseProtocol:
            # ``connections`` is in the order they were made; closed ones have no transport.
            open_ = [h for h in server.connections if h.transport is not None]
            excess = len(open_) + 1 - self.limit
            if excess > 0:
                for handler in open_:
                    if excess <= 0:
                        break
                    if handler not in self._busy:
                        handler.force_close()
                        self.evicted += 1
                        excess -= 1
                if excess > 0:
                    self.refused += 1
                    return _Refused()
            return server()

        return make
