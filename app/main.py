from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app import errors
from app.api import analytics, appointments, docs, health, payments, users
from app.api.contract import strict_query
from app.api.deps import bearer_scheme
from app.api.lane import HotReadLane
from app.api.write_lane import BookingLane
from app.config import Settings, load_settings
from app.db import metrics
from app.db.budget import check_budget
from app.db.live.backend import LiveBackend
from app.db.router import DatabaseRouter
from app.edges import edge_stack
from app.http_metrics import HttpMetrics

log = logging.getLogger(__name__)


class Service(FastAPI):
    """FastAPI behind the edge stack (app/edges.py), with the lanes beside its routes."""

    # FastAPI's own keyword arguments, passed on as they are (its signature types them
    # loosely: restating it here would only copy that).
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lane = HotReadLane(self)
        self.booking_lane = BookingLane(self)
        self.edges: ASGIApp  # create_app builds it, once the settings are known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # as Starlette sets it: the routes' names are read from it
        scope.setdefault("state", {})
        await self.edges(scope, receive, send)

    def on_fault(self) -> None:
        """A request answered a database fault: a live migration counts them (app/db/live)."""
        live: LiveBackend | None = getattr(self.state, "live", None)
        if live is not None:
            live.record_error()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # With MIGRATION_TARGET_URL, the backend a live migration switched to (app/db/live).
        live = app.state.live = LiveBackend.create(settings, db_metrics, registry)
        router = live.first_router() if live else DatabaseRouter(settings, db_metrics)
        app.state.db = router
        db_metrics.instrument(router.engines(), settings.slow_query_seconds)
        for role, engine in router.monitor_engines():
            db_metrics.instrument_engine(engine, role, settings.slow_query_seconds)

        async def first_probe() -> None:
            try:
                await router.start_monitor()
            except Exception as exc:  # the service must run even when a database is down
                log.warning("replica monitor failed to start", extra={"error": type(exc).__name__})

        # The first probe round may take CONNECT_TIMEOUT per database: the process answers
        # meanwhile (liveness), and readiness says "starting" until the round is done.
        startup = app.state.startup = asyncio.create_task(first_probe(), name="first-probe")
        # Off the start-up path: a slow database must not delay liveness. Waited for as long
        # as the first probe round, so its connection is back in the pool when serving starts.
        budget = asyncio.create_task(
            check_budget(router.engines(), router.monitor_engines(), settings), name="pool-budget"
        )
        await asyncio.wait({startup, budget}, timeout=settings.startup_probe_wait_seconds)
        if live:
            live.start(app)
        try:
            yield
        finally:
            startup.cancel()
            budget.cancel()
            await asyncio.gather(startup, budget, return_exceptions=True)
            if live:
                await live.stop()
            await app.state.db.dispose()
            metrics.worker_exited()

    app = Service(
        title="BookedBarber data service",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served from local files instead of a CDN (app/api/docs.py)
        redoc_url=None,
    )
    docs.install(app)
    app.state.settings = settings
    # The app's own metrics, made after the multiprocess directory is settled: no global
    # registry, so every app (and test) starts from zero.
    app.state.metrics_registry = registry = metrics.app_registry()
    app.state.db_metrics = db_metrics = metrics.DatabaseMetrics(registry)
    app.state.http_metrics = http_metrics = HttpMetrics(registry)
    app.booking_lane.instrument(registry)
    errors.install(app, settings.effective_pool_timeout, app.on_fault)
    # The token, the body's limits, the consistency headers, the request id and the HTTP
    # metrics: the edge stack's, for the routes and the lanes alike.
    app.edges = edge_stack(app, settings, http_metrics)
    # The query contract is checked after the token: a stranger learns nothing of it.
    strict = Depends(strict_query)
    app.include_router(health.router, dependencies=[strict])
    app.include_router(health.metrics_router, dependencies=[strict])
    for api in (users, appointments, payments, analytics):
        app.include_router(
            api.router, prefix="/api/v1", dependencies=[Depends(bearer_scheme), strict]
        )
    return app
