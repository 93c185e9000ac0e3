"""Prometheus metrics of one service, in a registry of its own (``access.AccessLog`` counts the requests)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """Requests by route and status, latency, queue depth, in flight, perturbation passes, rejections and
    cancellations by reason, and the process's memory and CPU."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes and CPU seconds, as a default registry has
        self.requests = Counter(
            "atman_http_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "atman_http_request_duration_seconds",
            "HTTP request latency, to the last byte",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queued = Gauge("atman_queue_depth", "explanations admitted and waiting for a slot", registry=r)
        self.in_flight = Gauge("atman_in_flight", "explanations running", registry=r)
        self.passes = Counter("atman_perturbation_passes", "perturbation passes run, by model", ["model"], registry=r)
        self.rejections = Counter(
            "atman_rejections", "requests refused before running, by reason", ["reason"], registry=r
        )
        self.cancellations = Counter(
            "atman_cancellations", "explanations stopped between batches, by reason", ["reason"], registry=r
        )

    def exposition(self) -> tuple[bytes, str]:
        """The text format Prometheus scrapes, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
