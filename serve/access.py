"""The ASGI middleware every request passes first: its request id, its count and latency in the metrics, and its
one access-log line.

The id is the client's ``X-Request-ID`` when it is a short printable token (so a caller can follow its own id
through the logs), else a new one; it is echoed in the response's ``X-Request-ID`` header and kept in
``scope["state"]["request_id"]`` for the routes, error bodies and Server-Sent Events.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from atman_onnx.serve.metrics import Metrics

log = logging.getLogger("atman_onnx.serve")
HEADER = "X-Request-ID"
_ACCEPTED_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_id(scope: dict) -> str:
    """The request's id, as the middleware set it."""
    return scope["state"]["request_id"]


def _given_or_new(scope: dict) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _ACCEPTED_ID.fullmatch(text):
                return text
    return uuid.uuid4().hex


class AccessLog:
    """Give every HTTP request an id, echo it as a header, count it by route template and status (``unmatched``: a
    refusal before any route matched), time it to its last byte (a stream's end), and log one line: method, path,
    status, request id, seconds."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = _given_or_new(scope)
        scope.setdefault("state", {})["request_id"] = rid
        started, status = time.perf_counter(), 500

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or (scope["path"] if status < 400 else "unmatched")
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            log.info("%s %s %d %s %.3fs", scope["method"], scope["path"], status, rid, seconds)
