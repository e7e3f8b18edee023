"""HTTP metrics: the series prometheus-fastapi-instrumentator's default set defines.

Same names, labels, help and buckets, so dashboards built for that library work.
They are declared here rather than taken from `metrics.default()` so that requests
answered outside FastAPI's stack (app/api/lane.py) are recorded into the very same
series, cheaply: label children are cached, where the library's closure resolves
five of them and builds request and response objects on every request.
"""

from __future__ import annotations

from functools import cache

from prometheus_client import Counter, Histogram, Summary
from prometheus_fastapi_instrumentator.metrics import Info

REQUESTS = Counter(
    "http_requests_total",
    "Total number of requests by method, status and handler.",
    ["method", "status", "handler"],
)
REQUEST_SIZE = Summary(
    "http_request_size_bytes",
    "Content length of incoming requests by handler. "
    "Only value of header is respected. Otherwise ignored. No percentile calculated. ",
    ["handler"],
)
RESPONSE_SIZE = Summary(
    "http_response_size_bytes",
    "Content length of outgoing responses by handler. "
    "Only value of header is respected. Otherwise ignored. No percentile calculated. ",
    ["handler"],
)
LATENCY_HIGHR = Histogram(
    "http_request_duration_highr_seconds",
    "Latency with many buckets but no API specific labels. "
    "Made for more accurate percentile calculations. ",
    buckets=(
        *(0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5),
        *(4, 4.5, 5, 7.5, 10, 30, 60),
    ),
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Latency with only few buckets by handler. "
    "Made to be only used if aggregation by handler is important. ",
    ["method", "handler"],
    buckets=(0.1, 0.5, 1),
)


@cache
def _children(
    method: str, status: str, handler: str
) -> tuple[Counter, Summary, Summary, Histogram]:
    return (
        REQUESTS.labels(method, status, handler),
        REQUEST_SIZE.labels(handler),
        RESPONSE_SIZE.labels(handler),
        LATENCY.labels(method, handler),
    )


def observe(
    method: str, status: str, handler: str, seconds: float, request_bytes: int, response_bytes: int
) -> None:
    """One request: `handler` is the route template, `status` the class ("2xx", "4xx", ...)."""
    requests, request_size, response_size, latency = _children(method, status, handler)
    requests.inc()
    request_size.observe(request_bytes)
    response_size.observe(response_bytes)
    LATENCY_HIGHR.observe(seconds)
    latency.observe(seconds)


def instrumentation(info: Info) -> None:
    """For Instrumentator.add(): what its middleware measured, into the series above."""
    response = info.response
    observe(
        info.method,
        info.modified_status,
        info.modified_handler,
        info.modified_duration,
        int(info.request.headers.get("Content-Length", 0)),
        int(response.headers.get("Content-Length", 0)) if response is not None else 0,
    )
