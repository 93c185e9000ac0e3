"""Prometheus metrics of one service, in a registry of its own, and the ASGI middleware that counts requests."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """Requests by route and status, latency, queue depth, in flight, perturbation passes, rejections and
    cancellations by reason."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("atman_http_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("atman_http_request_duration_seconds", "HTTP request latency, to the last byte",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.queued = Gauge("atman_queue_depth", "explanations admitted and waiting for a slot", registry=r)
        self.in_flight = Gauge("atman_in_flight", "explanations running", registry=r)
        self.passes = Counter("atman_perturbation_passes", "perturbation passes run, by model", ["model"], registry=r)
        self.rejections = Counter("atman_rejections", "requests refused before running, by reason", ["reason"],
                                  registry=r)
        self.cancellations = Counter("atman_cancellations", "explanations stopped between batches, by reason",
                                     ["reason"], registry=r)

    def exposition(self) -> tuple[bytes, str]:
        """The text format Prometheus scrapes, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class CountRequests:
    """ASGI middleware: every HTTP request counted by its route template and status (``unmatched``: a refusal
    before any route matched), and timed to its last byte (a stream's end)."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or (scope["path"] if status < 400 else "unmatched")
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
