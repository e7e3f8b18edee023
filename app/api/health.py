"""Probes for Kubernetes and the scrape endpoint for Prometheus: open, no auth."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.api.contract import ContractRoute
from app.boot import ALIVE
from app.db import health, metrics
from app.db.router import DatabaseRouter
from app.errors import retry_after

router = APIRouter(prefix="/health", tags=["health"], route_class=ContractRoute)
metrics_router = APIRouter(tags=["metrics"], route_class=ContractRoute)

_NO_STORE = {"Cache-Control": "no-store"}


def _router(request: Request) -> DatabaseRouter | None:
    # None while the lifespan has not started (or failed to): probes still answer.
    db: DatabaseRouter | None = getattr(request.app.state, "db", None)
    return db


def _starting(request: Request) -> bool:
    """True until the lifespan's first probe round (which runs in the background) is done."""
    startup: asyncio.Task[None] | None = getattr(request.app.state, "startup", None)
    return startup is None or not startup.done()


def _json(request: Request, body: dict[str, object], ok: bool) -> JSONResponse:
    if ok:
        return JSONResponse(body, headers=_NO_STORE)
    # A 503 says when to ask again, as every other 503 of the service does.
    wait = retry_after(request.app.state.settings.effective_pool_timeout)
    return JSONResponse(body, status_code=503, headers={**_NO_STORE, "Retry-After": str(wait)})


@router.get("/live")
async def live() -> dict[str, str]:
    """The process answers; no database call (answered by app/boot.py while loading)."""
    return ALIVE


@router.get("/ready", responses={503: {"description": "Not ready: the primary does not answer"}})
async def ready(request: Request) -> JSONResponse:
    """Ready once the first probe round is done and while the primary answers SELECT 1."""
    db = _router(request)
    if db is None or _starting(request):
        return _json(request, {"status": "not_ready", "error": "starting"}, False)
    primary = await health.check_primary(db)
    ok = primary["status"] == "healthy"
    body: dict[str, object] = {"status": "ready" if ok else "not_ready", "primary": primary}
    return _json(request, body, ok)


@router.get("/db", responses={503: {"description": "The primary is unhealthy"}})
async def database(request: Request) -> JSONResponse:
    """The primary: status, response_time, timestamp."""
    db = _router(request)
    if db is None:
        return _json(request, {"status": "unhealthy", "error": "starting"}, False)
    primary = await health.check_primary(db)
    live = getattr(request.app.state, "live", None)
    body = {**primary, "backend": live.health()} if live is not None else primary
    return _json(request, body, primary["status"] == "healthy")


@router.get(
    "/replicas", responses={503: {"description": "No replica can serve reads within the lag limit"}}
)
async def replicas(request: Request) -> JSONResponse:
    """The replica monitor's view; 503 when no replica can serve reads within the lag limit."""
    db = _router(request)
    if db is None:
        return _json(request, {"status": "unavailable", "replicas": [], "error": "starting"}, False)
    report = health.replicas_report(db)
    return _json(request, report, report["status"] != "unavailable")


@router.get("/integrity", responses={503: {"description": "The checks could not run"}})
async def integrity(request: Request) -> JSONResponse:
    """The seed's orphan and consistency checks on a replica, cached briefly."""
    db = _router(request)
    if db is None:
        return _json(request, {"status": "error", "error": "starting"}, False)
    check: health.IntegrityCheck | None = getattr(request.app.state, "integrity", None)
    if check is None or check.router is not db:
        check = request.app.state.integrity = health.IntegrityCheck(db)
    report = await check.result()
    return _json(request, report, report["status"] != "error")


@metrics_router.get("/metrics", include_in_schema=False)
def scrape(request: Request) -> Response:
    """Prometheus text format; every worker's numbers in multiprocess mode."""
    db = _router(request)
    collected: metrics.DatabaseMetrics = request.app.state.db_metrics
    body = collected.exposition(db.engines if db is not None else list)
    return Response(body, media_type=metrics.CONTENT_TYPE, headers=_NO_STORE)
