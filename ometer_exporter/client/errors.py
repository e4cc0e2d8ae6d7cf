"""Every way an Ollama call fails, as a typed error with a fixed ``error_type`` label value."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from typing import Final


class ErrorType(StrEnum):
    """The fixed set of ``error_type`` label values."""

    TIMEOUT = "timeout"
    CONNECT = "connect"
    AUTH = "auth"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "not_found"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    STREAM_INCOMPLETE = "stream_incomplete"
    STREAM_ERROR = "stream_error"
    BAD_RESPONSE = "bad_response"


class OllamaError(Exception):
    """A failed call. ``str(error)`` is safe to show: bounded, no secrets, no control chars."""

    error_type: ErrorType = ErrorType.BAD_RESPONSE

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


class OllamaTimeout(OllamaError):
    """A phased deadline passed; ``phase`` is connect, first_byte, idle or total."""

    error_type = ErrorType.TIMEOUT

    def __init__(self, message: str, *, phase: str) -> None:
        super().__init__(message)
        self.phase = phase


class OllamaConnectError(OllamaError):
    error_type = ErrorType.CONNECT


class OllamaAuthError(OllamaError):
    """401 (bad or missing key) or 403 (e.g. cloud disabled on the server)."""

    error_type = ErrorType.AUTH


class OllamaRateLimited(OllamaError):
    """429. ``usage_limit`` is true for Ollama Cloud's session/weekly usage windows."""

    error_type = ErrorType.RATE_LIMITED

    @property
    def usage_limit(self) -> bool:
        return "usage limit" in self.message


class OllamaNotFound(OllamaError):
    """404 (model not installed) or 410 (retired cloud model)."""

    error_type = ErrorType.NOT_FOUND


class OllamaHTTPError(OllamaError):
    """Any other HTTP error status; the type says 4xx or 5xx."""

    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message, status=status, retry_after=retry_after)
        self.error_type = ErrorType.HTTP_5XX if status >= 500 else ErrorType.HTTP_4XX


class OllamaStreamIncomplete(OllamaError):
    """The stream ended (EOF or reset) before its ``done`` line."""

    error_type = ErrorType.STREAM_INCOMPLETE


class OllamaStreamError(OllamaError):
    """The server sent ``{"error": ...}`` after streaming had begun (status 200)."""

    error_type = ErrorType.STREAM_ERROR


class OllamaBadResponse(OllamaError):
    error_type = ErrorType.BAD_RESPONSE


REDACTED: Final = "<redacted>"
_SLICE: Final = 8  # any run of this many characters of the key is taken as the key
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def redact(text: str, secret: str | None) -> str:
    """`text` without `secret`: case-insensitively, and without any 8-character or longer slice
    of it (a server that echoes part of a key, or changes its case, must not leak it either).

    The one redaction: every message the client builds from server text goes through it.
    """
    if not secret or not text:
        return text
    width, windows = _windows(secret)
    # Keys are ASCII: lowering ASCII letters only keeps every position of `text` in place.
    low = text.lower() if text.isascii() else text.translate(_ASCII_LOWER)
    if len(windows) <= len(low) and not any(w in low for w in windows):
        return text  # the usual case, in a few substring searches
    covered = [False] * len(text)
    found = False
    for i in range(len(low) - width + 1):
        if low[i : i + width] in windows:
            covered[i : i + width] = [True] * width
            found = True
    if not found:
        return text
    out: list[str] = []
    for i, ch in enumerate(text):
        if not covered[i]:
            out.append(ch)
        elif i == 0 or not covered[i - 1]:
            out.append(REDACTED)
    return "".join(out)


@lru_cache(maxsize=16)
def _windows(secret: str) -> tuple[int, frozenset[str]]:
    """The width of a slice that counts as the key, and every such slice, lowered."""
    width = min(_SLICE, len(secret))
    key = secret.translate(_ASCII_LOWER)
    return width, frozenset(key[i : i + width] for i in range(len(key) - width + 1))
