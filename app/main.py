from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import errors
from app.api import analytics, appointments, health, payments, users
from app.api.contract import head_as_get, strict_query
from app.api.deps import require_token
from app.api.lane import HotReadLane
from app.config import Settings
from app.db import metrics
from app.db.router import DatabaseRouter
from app.http_metrics import HttpMetrics

log = logging.getLogger(__name__)


class Service(FastAPI):
    """FastAPI with the hot reads' lane in front of it (app/api/lane.py)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lane = HotReadLane(self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope, send = head_as_get(scope, send)
        if not await self.lane.answer(scope, receive, send):
            await super().__call__(scope, receive, send)


class ConsistencyTokenMiddleware:
    """Adds X-Consistency-Token, known only once the write dependency has committed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_token(message: Message) -> None:
            if message["type"] == "http.response.start":
                token = scope.get("state", {}).get("consistency_token")
                if token:
                    headers = list(message.get("headers", []))
                    headers.append((b"x-consistency-token", token.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_token)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        router = DatabaseRouter(settings, db_metrics)
        app.state.db = router
        db_metrics.instrument(router.engines(), settings.slow_query_seconds)
        for role, engine in router.monitor_engines():
            db_metrics.instrument_engine(engine, role, settings.slow_query_seconds)
        try:
            await router.start_monitor()
        except Exception as exc:  # the service must start even when a database is down
            log.warning("replica monitor failed to start", extra={"error": type(exc).__name__})
        try:
            yield
        finally:
            await router.dispose()
            metrics.worker_exited()

    app = Service(
        title="BookedBarber data service",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    # The app's own metrics, made after the multiprocess directory is settled: no global
    # registry, so every app (and test) starts from zero.
    app.state.metrics_registry = registry = metrics.app_registry()
    app.state.db_metrics = db_metrics = metrics.DatabaseMetrics(registry)
    app.state.http_metrics = http_metrics = HttpMetrics(registry)
    errors.install(app, settings.effective_pool_timeout)
    app.add_middleware(ConsistencyTokenMiddleware)
    # The query contract is checked after the token: a stranger learns nothing of it.
    strict = Depends(strict_query)
    app.include_router(health.router, dependencies=[strict])
    app.include_router(health.metrics_router, dependencies=[strict])
    for api in (users, appointments, payments, analytics):
        app.include_router(
            api.router, prefix="/api/v1", dependencies=[Depends(require_token), strict]
        )
    # Latency by route template; probes and scrapes would only drown the real traffic.
    Instrumentator(excluded_handlers=["^/metrics$", "^/health/"], registry=registry).add(
        http_metrics.instrumentation
    ).instrument(app)
    return app
