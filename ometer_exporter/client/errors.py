"""Every way an Ollama call fails, as a typed error with a fixed ``error_type`` label value."""

from __future__ import annotations

from enum import StrEnum


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
