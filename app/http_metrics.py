"""HTTP metrics: the series prometheus-fastapi-instrumentator's default set defines.

Same names, labels, help and buckets, so dashboards built for that library work.
They are declared here rather than taken from the library's `metrics.default()`
because requests answered outside FastAPI's stack (app/api/lane.py) must be recorded
into the very same series, cheaply: `default()` hides its series inside a closure that
wants a Starlette request and response per call and resolves five label children each
time, where `observe` below takes plain values and caches the children.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Summary
from prometheus_fastapi_instrumentator.metrics import Info

_SIZE_HELP = "Only value of header is respected. Otherwise ignored. No percentile calculated. "


class HttpMetrics:
    """The HTTP series of one application's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "http_requests_total",
            "Total number of requests by method, status and handler.",
            ["method", "status", "handler"],
            registry=registry,
        )
        self.request_size = Summary(
            "http_request_size_bytes",
            "Content length of incoming requests by handler. " + _SIZE_HELP,
            ["handler"],
            registry=registry,
        )
        self.response_size = Summary(
            "http_response_size_bytes",
            "Content length of outgoing responses by handler. " + _SIZE_HELP,
            ["handler"],
            registry=registry,
        )
        self.latency_highr = Histogram(
            "http_request_duration_highr_seconds",
            "Latency with many buckets but no API specific labels. "
            "Made for more accurate percentile calculations. ",
            buckets=(
                *(0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5),
                *(4, 4.5, 5, 7.5, 10, 30, 60),
            ),
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Latency with only few buckets by handler. "
            "Made to be only used if aggregation by handler is important. ",
            ["method", "handler"],
            buckets=(0.1, 0.5, 1),
            registry=registry,
        )
        self._children: dict[tuple[str, str, str], tuple[Any, Any, Any, Any]] = {}

    def observe(
        self,
        method: str,
        status: str,
        handler: str,
        seconds: float,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        """One request: `handler` is the route template, `status` the class ("2xx", ...)."""
        key = (method, status, handler)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(method, status, handler),
                self.request_size.labels(handler),
                self.response_size.labels(handler),
                self.latency.labels(method, handler),
            )
        requests, request_size, response_size, latency = children
        requests.inc()
        request_size.observe(request_bytes)
        response_size.observe(response_bytes)
        self.latency_highr.observe(seconds)
        latency.observe(seconds)

    def instrumentation(self, info: Info) -> None:
        """For Instrumentator.add(): what its middleware measured, into the series above."""
        response = info.response
        self.observe(
            info.method,
            info.modified_status,
            info.modified_handler,
            info.modified_duration,
            int(info.request.headers.get("Content-Length", 0)),
            int(response.headers.get("Content-Length", 0)) if response is not None else 0,
        )
