"""Basic auth and extra response headers of the web configuration file, as aiohttp middleware.

Passwords are checked with bcrypt in a worker thread (a check costs ~50-250 ms of CPU) and the
outcome is cached, as exporter-toolkit does, so a scraper sending the same credentials every
15 s pays for one check.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import bcrypt
from aiohttp import web

from ometer_exporter.config.web_file import WebConfig

_CACHE_SIZE: Final = 1024
_DEFAULT_COST: Final = 10
_CHECKSUM: Final = "." * 31  # bcrypt's base64 of zero bytes: matches no password


def cost(hashed: bytes) -> int | None:
    """The cost (log2 of the rounds) of a ``$2b$12$…`` hash; None when it is not one."""
    parts = hashed.split(b"$")
    if len(parts) < 4 or not parts[2].isdigit():
        return None
    value = int(parts[2])
    return value if 4 <= value <= 31 else None


def dummy_hash(users: Mapping[str, bytes]) -> bytes:
    """Checked when the user is unknown, so a wrong user costs as much as a wrong password of
    the costliest configured user (a fixed cost would tell a costlier user apart by timing).
    Made from a fresh salt without hashing: it takes no time to build and matches nothing."""
    costs = [c for hashed in users.values() if (c := cost(hashed)) is not None]
    salt = bcrypt.gensalt(rounds=max(costs, default=_DEFAULT_COST))
    return salt + _CHECKSUM.encode()


class BasicAuth:
    """Checks ``Authorization: Basic`` against the users; bcrypt off the loop, outcome cached."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self.users = dict(users)
        self._dummy = dummy_hash(self.users)
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._lock = asyncio.Lock()

    async def check(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        if not sep:
            return False
        hashed = self.users.get(user)
        # The cache key never holds the password itself.
        key = hashlib.sha256(b"\0".join([user.encode(), password.encode(), hashed or b""])).digest()
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        async with self._lock:  # one bcrypt at a time: a flood cannot take every core
            ok = await asyncio.to_thread(_verify, password.encode(), hashed, self._dummy)
        self._cache[key] = ok
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return ok


def _verify(password: bytes, hashed: bytes | None, dummy: bytes) -> bool:
    try:
        ok = bcrypt.checkpw(password, hashed or dummy)
    except ValueError:  # a malformed hash
        return False
    return ok and hashed is not None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middleware(config: Callable[[], WebConfig], auth: Callable[[], BasicAuth | None]) -> Any:
    """aiohttp middleware: basic auth (when users are configured) and extra headers."""

    @web.middleware
    async def protect(request: web.Request, handler: Handler) -> web.StreamResponse:
        checker = auth()
        if checker is not None and not await checker.check(request.headers.get("Authorization")):
            response: web.StreamResponse = web.Response(
                status=401,
                text="Unauthorized\n",
                headers={"WWW-Authenticate": 'Basic realm="ometer-exporter"'},
            )
        else:
            response = await handler(request)
        for name, value in config().headers.items():
            response.headers[name] = value
        return response

    return protect
