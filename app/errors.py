"""One error family, rendered as {"error": code, "detail": message}."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from app.db.errors import (
    CHECK_VIOLATION,
    EXCLUSION_VIOLATION,
    FOREIGN_KEY_VIOLATION,
    NOT_NULL_VIOLATION,
    UNIQUE_VIOLATION,
    failure,
    violation,
)
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


# nginx's "client closed request": the status of a request whose client left before its
# body was in (HTTP metrics; nothing is sent).
CLIENT_CLOSED = 499


class Answered(Exception):
    """Raised into the application once the client has its answer (a guard's refusal,
    app/guards.py): the application stops, says nothing and logs nothing."""


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


# Which constraint said no -> the client's error, with a detail a route may word better.
_CONSTRAINTS: dict[str | None, tuple[str, type[AppError], str]] = {
    FOREIGN_KEY_VIOLATION: ("foreign_key", BadRequest, "a referenced row does not exist"),
    UNIQUE_VIOLATION: ("unique", Conflict, "a row with these values already exists"),
    EXCLUSION_VIOLATION: ("exclusion", Conflict, "the request overlaps an existing row"),
    CHECK_VIOLATION: ("check", BadRequest, "a value is outside its allowed range"),
    NOT_NULL_VIOLATION: ("not_null", BadRequest, "a required value is missing"),
}
_OTHER_CONSTRAINT = ("other", Conflict, "the request conflicts with the stored data")


def constraint_error(exc: sa_exc.IntegrityError, **details: str) -> AppError:
    """The client's error behind a constraint failure.

    `details` words it per kind (foreign_key=..., unique=..., exclusion=..., check=...,
    not_null=...); a kind the caller did not word gets a generic detail.
    """
    if is_frozen_error(exc):  # SQLite says it with a trigger's constraint error
        return Unavailable(FROZEN_MESSAGE, 1)
    kind, error, detail = _CONSTRAINTS.get(violation(exc), _OTHER_CONSTRAINT)
    return error(details.get(kind, detail))


def database_response(exc: Exception, wait: int) -> JSONResponse:
    """The answer to an exception a request's database work raised (or any other)."""
    if is_frozen_error(exc):  # a live migration's switch (app/db/live): retry in a moment
        return render(Unavailable(FROZEN_MESSAGE, 1))
    kind = failure(exc)
    if kind == "refused":  # logged once when it began (app/db/access.py), not per request
        return render(Unavailable("the database refuses the service's connections", wait))
    if kind == "pool_timeout":
        log.warning("connection pool exhausted")
        return render(Unavailable("the database connection pool is exhausted", wait))
    if kind == "connection":
        log.warning("database unavailable", extra={"error": type(exc).__name__})
        return render(Unavailable("the database is unavailable", wait))
    if kind == "busy":
        return render(Unavailable("the database is busy; retry", wait))
    if isinstance(exc, sa_exc.IntegrityError):
        return render(constraint_error(exc))
    # Never the exception text: it can carry a DSN or row data.
    log.error("unhandled error", extra={"error": type(exc).__name__}, exc_info=exc)
    return JSONResponse({"error": "internal_error", "detail": "internal error"}, status_code=500)


def database_fault(exc: Exception) -> bool:
    """Whether a request's failure says something of the database's health.

    A constraint is the client's mistake; a live migration's freeze is the switch itself.
    """
    return not is_frozen_error(exc) and failure(exc) != "constraint"


def failure_response(exc: Exception, wait: int, on_fault: Callable[[], None]) -> JSONResponse:
    """database_response, telling `on_fault` of a database fault (a live migration counts them)."""
    if database_fault(exc):
        on_fault()
    return database_response(exc, wait)


def install(app: FastAPI, pool_timeout: float, on_fault: Callable[[], None]) -> None:
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

    @app.exception_handler(Answered)
    async def answered(_: Request, exc: Answered) -> Response:
        return Response(status_code=500)  # not sent: the guard that raised it answered

    @app.exception_handler(ClientDisconnect)
    async def gone(_: Request, exc: ClientDisconnect) -> Response:
        return Response(status_code=CLIENT_CLOSED)  # to nobody: HTTP metrics count it

    async def database_error_or_internal(_: Request, exc: Exception) -> JSONResponse:
        """503 for an unavailable or busy database, 4xx for a constraint, else a bare 500."""
        return failure_response(exc, wait, on_fault)

    # Registered per class (not only under Exception) so Starlette answers
    # without re-raising: a database outage is an expected 503, not a crash.
    app.add_exception_handler(sa_exc.SQLAlchemyError, database_error_or_internal)
    app.add_exception_handler(OSError, database_error_or_internal)
    app.add_exception_handler(Exception, database_error_or_internal)
