"""HTTP metrics: the series prometheus-fastapi-instrumentator's default set defines.

Same names, labels, help and buckets, so dashboards built for that library work, and
recorded as its middleware records them (handler: the route template, "none" for a
path no route serves; status: its class; sizes: the Content-Length headers; probes and
scrapes left out), by one layer of the edge stack (app/edges.py) that every door's
answers pass. The series are declared here rather than taken from the library's
`metrics.default()`: that hides them in a closure that wants a Starlette request and
response per call and resolves five label children each time, where `observe` below
takes plain values and caches the children.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, Summary
from prometheus_fastapi_instrumentator.routing import get_route_name
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from app.adapters.prometheus_values import counting, observing

_Record = Callable[[float], None]
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
        self._latency_highr = observing(self.latency_highr)
        self._children: dict[tuple[str, str, str], tuple[_Record, _Record, _Record, _Record]] = {}

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
                counting(self.requests.labels(method, status, handler)),
                observing(self.request_size.labels(handler)),
                observing(self.response_size.labels(handler)),
                observing(self.latency.labels(method, handler)),
            )
        requests, request_size, response_size, latency = children
        requests(1)
        request_size(request_bytes)
        response_size(response_bytes)
        self._latency_highr(seconds)
        latency(seconds)


# Not recorded: scrapes and probes would only drown the real traffic.
EXCLUDED = re.compile("^/metrics$|^/health/")
HANDLER = "handler"  # scope["state"] key: the route template, when a door knows it first
ANSWER = "answer"  # scope["state"] key: the request's Answer (app/edges.py)


def content_length(headers: Iterable[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


class RecordHttpMetrics:
    """Every answer into HttpMetrics, by the route template of the request."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        state = scope["state"]
        handler = state.get(HANDLER) or self._handler(scope)
        if handler is None:
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            seconds = time.perf_counter() - started
            # Its status and Content-Length as sent (app/edges.py Answer.outcome).
            answer = state[ANSWER]
            self.metrics.observe(
                scope["method"],
                f"{answer.outcome // 100}xx",
                handler,
                seconds,
                content_length(scope["headers"]),
                answer.size,
            )

    @staticmethod
    def _handler(scope: Scope) -> str | None:
        """The route template as the library names it, "none" if no route; None: not recorded."""
        name = get_route_name(HTTPConnection(scope), should_include_root_path=False)
        if EXCLUDED.search(name or scope["path"]):
            return None
        return name or "none"
