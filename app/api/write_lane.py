"""POST /api/v1/appointments answered in front of FastAPI's request pipeline on PostgreSQL.

With the booking down to one statement (app/queries/booking.py), FastAPI's pipeline
(middleware stack, route matching, dependency injection, body parsing and validation)
was nearly all of a booking's CPU. Here the request passes the same token gate and body
guard as every request (app/guards.py), its JSON is validated by the route's own model
in the mode FastAPI uses, and it is booked by the route's own functions
(app/api/appointments.py), errors rendered by app/errors.py and HTTP metrics recorded
into the same series. Anything the lane is not sure of (another content type, a body
the model refuses, SQLite, PgBouncer, HOT_READS=false) goes on to FastAPI with the body
replayed, which answers it as declared. tests/test_write_lane.py holds both ways to the
same status, headers and body.
"""

from __future__ import annotations

import json
import time

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import errors
from app.api.appointments import (
    book_in_one_statement,
    booking_fields,
    check_request,
    one_statement_writes,
)
from app.db.models import utcnow
from app.db.router import DatabaseRouter
from app.guards import BodyGuard, TokenGate
from app.http_metrics import HttpMetrics
from app.schemas import AppointmentCreate, AppointmentRead

ROUTE = "/api/v1/appointments"
_JSON = b"application/json"


class BookingLane:
    """Books the requests it is sure about; hands the rest to FastAPI, body and all."""

    def __init__(self, service: FastAPI) -> None:
        self.service = service
        self._guarded: ASGIApp | None = None

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        if scope["method"] != "POST" or scope["path"] != ROUTE:
            return False
        router: DatabaseRouter | None = getattr(self.service.state, "db", None)
        if router is None or not router.hot_reads or not one_statement_writes(router):
            return False
        if _content_type(scope) != _JSON:
            return False
        if self._guarded is None:
            settings = router.settings
            guarded = BodyGuard(self._handle, settings.max_body_bytes, settings.body_timeout)
            self._guarded = TokenGate(guarded, tokens=settings.api_tokens)
        await self._guarded(scope, receive, send)
        return True

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return  # the client left before its body was in
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            body = AppointmentCreate.model_validate(json.loads(raw))
        except (ValueError, ValidationError):  # FastAPI words the 422
            await self._fallback(scope, _replay(messages, receive), send)
            return
        router: DatabaseRouter = self.service.state.db
        if not one_statement_writes(router):  # the backend switched while the body came in
            await self._fallback(scope, _replay(messages, receive), send)
            return
        settings = router.settings
        token: str | None = None
        try:
            check_request(body, settings, utcnow())
            row, token = await book_in_one_statement(router, body, booking_fields(body))
            payload = AppointmentRead.model_validate(dict(row)).model_dump_json().encode()
        except errors.AppError as exc:
            await self._respond(send, errors.render(exc), started, len(raw))
            return
        except Exception as exc:
            wait = errors.retry_after(settings.effective_pool_timeout)
            await self._respond(send, errors.database_response(exc, wait), started, len(raw))
            return
        headers = [(b"content-length", str(len(payload)).encode()), (b"content-type", _JSON)]
        if token:
            headers.append((b"x-consistency-token", token.encode()))
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        self._record(201, time.perf_counter() - started, len(raw), len(payload))

    async def _fallback(self, scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(self.service, scope, receive, send)

    async def _respond(
        self, send: Send, response: JSONResponse, started: float, request_bytes: int
    ) -> None:
        start = {"type": "http.response.start", "status": response.status_code}
        await send({**start, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})
        elapsed = time.perf_counter() - started
        self._record(response.status_code, elapsed, request_bytes, len(response.body))

    def _record(self, status: int, seconds: float, request_bytes: int, size: int) -> None:
        """HTTP metrics, into the series the instrumented stack feeds (app/http_metrics.py)."""
        http: HttpMetrics = self.service.state.http_metrics
        http.observe("POST", f"{status // 100}xx", ROUTE, seconds, request_bytes, size)


def _content_type(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bytes(value)
    return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """The messages already read, then the connection's own."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
