"""Error replies: every failure is ``{"error": message, "type": kind}`` with one status, the message the command
line would print after ``atman-onnx: error:``."""

from __future__ import annotations

from typing import Any

from atman_onnx.core.errors import AtmanError

# kinds that refuse a request before it runs (counted as rejections), with their status
STATUS = {
    "invalid_request": 422,
    "too_large": 413,
    "unauthorized": 401,
    "unsupported_media_type": 415,
    "not_found": 404,
    "overloaded": 503,
    "draining": 503,
    "not_ready": 503,
}
# why an explanation was cancelled: the reason (a metric label) and how the error message says it
REASONS = {
    "disconnected": "the client disconnected",
    "timeout": "it ran past the request timeout",
    "shutdown": "the service is shutting down",
}


class Cancelled(Exception):
    """An explanation stopped between batches: its client went away, it ran past the timeout, or the service is
    shutting down."""

    def __init__(self, reason: str):
        super().__init__(f"explanation cancelled: {REASONS.get(reason, reason)}")
        self.reason = reason


class ApiError(Exception):
    """A reply other than success: its kind decides the status unless ``status`` is given."""

    def __init__(self, kind: str, message: str, status: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.kind, self.message = kind, message
        self.status = status or STATUS[kind]
        self.headers = headers or {}

    @property
    def body(self) -> dict[str, Any]:
        return {"error": self.message, "type": self.kind}


def as_api_error(exc: BaseException) -> ApiError:
    """What to reply for an exception raised while running an explanation."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Cancelled):
        if exc.reason == "timeout":
            return ApiError("timeout", str(exc), 504)
        return ApiError("cancelled", str(exc), 503)
    if isinstance(exc, AtmanError):
        return ApiError("invalid_request", str(exc))
    return ApiError("internal", f"internal error: {type(exc).__name__}", 500)
