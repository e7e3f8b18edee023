"""POST /api/v1/appointments answered in front of FastAPI's request pipeline on PostgreSQL.

With the booking down to one statement (app/queries/booking.py), FastAPI's pipeline
(middleware stack, route matching, dependency injection, body parsing and validation)
was nearly all of a booking's CPU. Here the request passes the same token gate and body
guard as every request (app/guards.py), its JSON is parsed by the routes' own parser
(read_json) and validated by the route's own model in the mode FastAPI uses, and it is
booked by the same use case as the route (app/operations/booking.py), errors rendered by
app/errors.py and HTTP metrics recorded into the same series. Anything the lane is not
sure of (another content type, a query string, a body that does not parse or that the
model refuses, SQLite, PgBouncer, HOT_READS=false) goes on to FastAPI,
with the body replayed where it was read, which answers it as declared. Its refusals at
the edges (401, 413, 408) are recorded as the instrumented stack records them, and
booking_lane_requests_total counts who answered. tests/test_write_lane.py and the
generated tests/test_write_lane_differential.py hold both ways to the same status,
headers, body, HTTP metrics and rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from app import errors
from app.db.models import utcnow
from app.db.router import DatabaseRouter
from app.guards import BodyGuard, TokenGate, read_json
from app.http_metrics import HttpMetrics
from app.operations.booking import book
from app.schemas import AppointmentCreate

ROUTE = "/api/v1/appointments"
_JSON = b"application/json"


class BookingLane:
    """Books the requests it is sure about; hands the rest to FastAPI, body and all."""

    def __init__(self, service: FastAPI) -> None:
        self.service = service
        self._answered: dict[bool, Counter] = {}

    def instrument(self, registry: CollectorRegistry) -> None:
        """booking_lane_requests_total, in the service's registry: who answered each booking."""
        counter = Counter(
            "booking_lane_requests_total",
            "POST /api/v1/appointments by what answered it: the booking lane, or the route "
            "it handed the request on to",
            ["answered_by"],
            registry=registry,
        )
        self._answered = {False: counter.labels("lane"), True: counter.labels("route")}

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        if scope["method"] != "POST" or scope["path"] != ROUTE:
            return False
        router: DatabaseRouter | None = getattr(self.service.state, "db", None)
        if (
            router is None
            or not router.hot_reads
            or _header(scope, b"content-type") != _JSON
            or scope["query_string"]  # the route has no query parameters: its 422 names them
        ):
            self._count(handed_on=True)
            return False
        started = time.perf_counter()
        settings = router.settings
        outcome = _Outcome()
        handle = partial(self._handle, outcome)
        guarded = BodyGuard(handle, settings.max_body_bytes, settings.body_timeout)
        # The guards' refusals (401, 413, 408) are the lane's answers too: counted alike.
        await TokenGate(guarded, tokens=settings.api_tokens)(scope, receive, outcome.watch(send))
        self._count(outcome.handed_on)
        if not outcome.handed_on and outcome.status is not None:
            seconds = time.perf_counter() - started
            self._record(
                outcome.status, seconds, _request_bytes(scope, outcome), outcome.response_bytes
            )
        return True

    async def _handle(self, outcome: _Outcome, scope: Scope, receive: Receive, send: Send) -> None:
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
        outcome.request_bytes = len(raw)
        try:
            body = AppointmentCreate.model_validate(read_json(raw))
        # The route words the 422, for a body that does not parse (the same read_json) too.
        except (RequestValidationError, ValidationError):
            outcome.handed_on = True
            await self._fallback(scope, _replay(messages, receive), send)
            return
        router: DatabaseRouter = self.service.state.db
        if not router.hot_reads:  # the backend switched while the body came in
            outcome.handed_on = True
            await self._fallback(scope, _replay(messages, receive), send)
            return
        settings = router.settings
        try:
            appointment, token, _ = await book(router, body, utcnow())
            payload = appointment.model_dump_json().encode()
        except errors.AppError as exc:
            await _respond(send, errors.render(exc))
            return
        except Exception as exc:
            wait = errors.retry_after(settings.effective_pool_timeout)
            await _respond(send, errors.database_response(exc, wait))
            return
        headers = [(b"content-length", str(len(payload)).encode()), (b"content-type", _JSON)]
        if token:
            headers.append((b"x-consistency-token", token.encode()))
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _fallback(self, scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(self.service, scope, receive, send)

    def _count(self, handed_on: bool) -> None:
        if self._answered:
            self._answered[handed_on].inc()

    def _record(self, status: int, seconds: float, request_bytes: int, size: int) -> None:
        """HTTP metrics, into the series the instrumented stack feeds (app/http_metrics.py)."""
        http: HttpMetrics = self.service.state.http_metrics
        http.observe("POST", f"{status // 100}xx", ROUTE, seconds, request_bytes, size)


async def _respond(send: Send, response: JSONResponse) -> None:
    start = {"type": "http.response.start", "status": response.status_code}
    await send({**start, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


@dataclass
class _Outcome:
    """One request's way through the lane: handed on, or what the lane answered."""

    handed_on: bool = False  # to the route, body and all
    status: int | None = None
    request_bytes: int | None = None  # the body read, when it was
    response_bytes: int = 0

    def watch(self, send: Send) -> Send:
        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body":
                self.response_bytes += len(message.get("body", b""))
            await send(message)

        return watched


def _request_bytes(scope: Scope, outcome: _Outcome) -> int:
    """The body read; for a refusal before it, its Content-Length, as the stack counts it."""
    if outcome.request_bytes is not None:
        return outcome.request_bytes
    length = _header(scope, b"content-length") or b""
    return int(length) if length.isdigit() else 0


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
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
