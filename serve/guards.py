"""What a request must pass before its body is believed: the API key, the content type, the body's size (counted
while it streams in, so an oversized body is refused without reading it all), and being a JSON object."""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import Request

from atman_onnx.serve.errors import ApiError


def check_key(request: Request, key: str | None) -> None:
    """401 unless ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` carries the service's key (when one is set)."""
    if key is None:
        return
    auth = request.headers.get("authorization", "")
    given = auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise ApiError(
            "unauthorized",
            "missing or wrong API key: send `Authorization: Bearer KEY`",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def json_body(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object: 415 unless it is declared JSON, 413 past ``limit`` bytes, 422 unless it parses."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError("unsupported_media_type", f"content type must be application/json, got {kind or 'none'!r}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    try:
        data = json.loads(b"".join(chunks))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, and an integer past Python's digit limit
        raise ApiError("invalid_request", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError("invalid_request", "the body is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError("invalid_request", f"a request is a JSON object, got {type(data).__name__}")
    return data


def _too_large(limit: int, size: int | None = None) -> ApiError:
    """413; ``size`` is the declared length, or None when the streamed body ran past the limit."""
    have = f"more than {limit}" if size is None else str(size)
    return ApiError("too_large", f"the body has {have} bytes; this service takes at most {limit} (--max-body-bytes)")
