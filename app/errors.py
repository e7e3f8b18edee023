"""One error family, rendered as {"error": code, "detail": message}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from app.db import metrics
from app.db.errors import is_connection_error, sqlstate
from app.db.live.backend import record_error
from app.db.live.capture import FROZEN_MESSAGE, is_frozen_error

log = logging.getLogger(__name__)


class AppError(Exception):
    status = 500
    code = "internal_error"
    headers: dict[str, str] | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(AppError):
    status, code = 422, "invalid_request"


class Unauthorized(AppError):
    status, code = 401, "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class NotFound(AppError):
    status, code = 404, "not_found"


class Conflict(AppError):
    status, code = 409, "conflict"


class Unavailable(AppError):
    status, code = 503, "unavailable"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}


def render(error: AppError) -> JSONResponse:
    return JSONResponse(
        {"error": error.code, "detail": error.detail},
        status_code=error.status,
        headers=error.headers,
    )


def retry_after(pool_timeout: float) -> int:
    """Seconds a 503 asks the client to wait: a tenth of POOL_TIMEOUT, at least one."""
    return max(1, round(pool_timeout / 10))


def database_response(exc: Exception, router: Any, wait: int) -> JSONResponse:
    """The answer to an exception a request's database work raised."""
    if is_frozen_error(exc):  # a live migration's switch (app/db/live): retry in a moment
        return render(Unavailable(FROZEN_MESSAGE, 1))
    record_error(router)
    if isinstance(exc, sa_exc.TimeoutError):
        log.warning("connection pool exhausted")
        metrics.pool_timeout(router)
        return render(Unavailable("the database connection pool is exhausted", wait))
    if is_connection_error(exc):
        log.warning("database unavailable", extra={"error": type(exc).__name__})
        return render(Unavailable("the database is unavailable", wait))
    if sqlstate(exc) in ("57014", "55P03", "40001", "40P01"):
        return render(Unavailable("the database is busy; retry", wait))
    # Never the exception text: it can carry a DSN or row data.
    log.error("unhandled error", extra={"error": type(exc).__name__}, exc_info=exc)
    return JSONResponse({"error": "internal_error", "detail": "internal error"}, status_code=500)


def install(app: FastAPI, pool_timeout: float) -> None:
    wait = retry_after(pool_timeout)

    @app.exception_handler(AppError)
    async def app_error(_: Request, exc: AppError) -> JSONResponse:
        return render(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse(
            {"error": "invalid_request", "detail": "the request is not valid", "errors": errors},
            status_code=422,
        )

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": code, "detail": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    async def database_failure(request: Request, exc: Exception) -> JSONResponse:
        return database_response(exc, getattr(request.app.state, "db", None), wait)

    # Registered per class (not only under Exception) so Starlette answers
    # without re-raising: a database outage is an expected 503, not a crash.
    app.add_exception_handler(sa_exc.SQLAlchemyError, database_failure)
    app.add_exception_handler(OSError, database_failure)
    app.add_exception_handler(Exception, database_failure)
