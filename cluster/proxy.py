"""Middleware for Ray Serve's HTTP proxy: its back-pressure refusal made the service's own ``overloaded`` reply.

Ray Serve refuses a request beyond ``max_queued_requests`` in its proxy, before any replica sees it, with a 503 whose
body is text (``Request dropped due to backpressure (...)``). Ray loads proxy middleware from the import path in
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` (set in the proxy's environment); ``middlewares`` is that callback.
Ray's own request-id middleware runs inside this one, so the reply's ``X-Request-ID`` is already set.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.middleware import Middleware

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "atman_onnx.cluster.proxy:middlewares"
REFUSAL = b"Request dropped due to backpressure"


def middlewares() -> list[Middleware]:
    """What Ray's proxy calls (through ``CALLBACK_ENV``) for its middleware."""
    return [Middleware(OverloadedReply)]


class OverloadedReply:
    """Turn the proxy's back-pressure 503 into ``{"error", "type": "overloaded", "request_id"}`` as JSON, keeping its
    ``Retry-After``; one ``X-Request-ID`` on every reply (Ray adds its own beside the replica's)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: dict | None = None

        async def rewrite(message: dict) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                message = {**message, "headers": _unique_ids(message.get("headers", []))}
                if message["status"] == 503 and _header(message, b"content-type").startswith(b"text/plain"):
                    held = message  # decided by the body, which Ray sends whole in the next message
                    return
            elif held is not None:
                start, held = held, None
                if message.get("body", b"").startswith(REFUSAL):
                    start, message = _overloaded(start, message["body"].decode())
                await send(start)
            await send(message)

        await self.app(scope, receive, rewrite)


def _header(message: dict, name: bytes) -> bytes:
    return next((value for key, value in message["headers"] if key.lower() == name), b"")


def _unique_ids(headers: list) -> list:
    """The headers with only the first ``X-Request-ID``."""
    seen, kept = False, []
    for key, value in headers:
        if key.lower() == b"x-request-id":
            if seen:
                continue
            seen = True
        kept.append((key, value))
    return kept


def _overloaded(start: dict, text: str) -> tuple[dict, dict]:
    request_id = _header(start, b"x-request-id").decode()
    message = f"the service is busy: {text.strip().rstrip('.')}; retry later"
    body = json.dumps({"error": message, "type": "overloaded", "request_id": request_id}).encode()
    headers = [(k, v) for k, v in start["headers"] if k.lower() not in (b"content-type", b"content-length")]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {**start, "headers": headers}, {"type": "http.response.body", "body": body}
