from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import errors, logs
from app.api import analytics, appointments, docs, health, payments, users
from app.api.contract import head_as_get, strict_query
from app.api.deps import require_token
from app.api.lane import HotReadLane
from app.api.write_lane import BookingLane
from app.config import Settings, load_settings
from app.db import metrics
from app.db.budget import check_budget
from app.db.live.backend import LiveBackend
from app.db.router import DatabaseRouter
from app.guards import BodyGuard, TokenGate
from app.http_metrics import HttpMetrics

log = logging.getLogger(__name__)
# Generation-1 collections between two full ones (CPython's default 10). Each full
# collection walks every object not frozen: at 10,000 open connections their protocol,
# parser and last request objects, a pause of 0.3 to 0.7 s every few seconds while the
# connections arrive (bench/tails.py). Cyclic garbage that reached the oldest generation
# waits a little longer for its collection.
FULL_COLLECTION_EVERY = 100


class Service(FastAPI):
    """FastAPI with the hot reads' lane in front of it (app/api/lane.py).

    Every request gets its id here, before the lane, so the lane's answers carry it too.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lane = HotReadLane(self)
        self.booking_lane = BookingLane(self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if scope["method"] == "HEAD":
            scope, send = head_as_get(scope, send)
        request_id = logs.request_id(scope["headers"])
        header = (b"x-request-id", request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        reset = logs.REQUEST_ID.set(request_id)
        try:
            answered = await self.lane.answer(scope, receive, send_with_id)
            if not answered and not await self.booking_lane.answer(scope, receive, send_with_id):
                await super().__call__(scope, receive, send_with_id)
        except Exception as exc:
            # Starlette re-raises what its last-resort handler logged (app/errors.py) and
            # answered: passed on, uvicorn would log it a second time. Anything else is
            # logged and answered here, once.
            if not started:
                wait = errors.retry_after(self.state.settings.effective_pool_timeout)
                response = errors.database_response(exc, wait)
                await response(scope, receive, send_with_id)
        finally:
            logs.REQUEST_ID.reset(reset)


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


def freeze_startup_heap() -> None:
    """Keep what start-up built (modules, routes, models, engines) out of full collections.

    Those objects live as long as the process, yet every full (generation 2) collection
    walked them all: under load a pause of about 200 ms every few seconds, which every
    request in flight waited out (the p99.9 of bench/tails.py). Once per process.
    """
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()
        gen0, gen1, _ = gc.get_threshold()
        gc.set_threshold(gen0, gen1, FULL_COLLECTION_EVERY)


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
        freeze_startup_heap()  # before the probes start: its collection must not delay them
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
    errors.install(app, settings.effective_pool_timeout)
    app.add_middleware(ConsistencyTokenMiddleware)
    # Outermost last: the token, then the body (counted and timed while it is read).
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout)
    app.add_middleware(TokenGate, tokens=settings.api_tokens)
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
