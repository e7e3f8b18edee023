"""POST /api/v1/appointments answered in front of FastAPI's request pipeline on PostgreSQL.

With the booking down to one statement (app/queries/booking.py), FastAPI's pipeline
(routing, dependency injection, body parsing and validation) was nearly all of a
booking's CPU. Behind the edge stack (app/edges.py: request id, token, body limit and
timeout, HTTP metrics, the consistency token out, the last-resort answer), its JSON is
parsed by the routes' own parser (read_json) and validated by the route's own model in
the mode FastAPI uses, and it is booked by the same use case as the route
(app/operations/booking.py), errors rendered by app/errors.py. Anything the lane is not
sure of (another content type, a query string, a body that does not parse or that the
model refuses, SQLite, HOT_READS=false) goes on to FastAPI, with the body
replayed where it was read, which answers it as declared. booking_lane_requests_total
counts who answered: the edges' refusals of a booking the lane takes count as the
lane's. tests/test_write_lane.py and the generated tests/test_write_lane_differential.py
hold both ways to the same status, headers, body, HTTP metrics and rows.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from app import errors
from app.db.models import utcnow
from app.db.router import DatabaseRouter
from app.guards import COMMITTED_LSN, read_json
from app.operations.booking import book
from app.schemas import AppointmentCreate

ROUTE = "/api/v1/appointments"
_JSON = b"application/json"
HANDED_ON = "booking_handed_on"  # scope["state"] key: the lane handed the booking on


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

    def takes(self, scope: Scope) -> bool:
        """Whether the lane answers this booking; one it does not is counted the route's."""
        router: DatabaseRouter | None = getattr(self.service.state, "db", None)
        if (
            router is None
            or not router.hot_reads
            or _header(scope, b"content-type") != _JSON
            or scope["query_string"]  # the route has no query parameters: its 422 names them
        ):
            self.count(handed_on=True)
            return False
        return True

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """The booking answered, by the lane or by the route it handed it on to."""
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return True  # the client left before its body was in
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            body = AppointmentCreate.model_validate(read_json(raw))
        # The route words the 422, for a body that does not parse (the same read_json) too.
        except (RequestValidationError, ValidationError):
            scope["state"][HANDED_ON] = True
            await self._fallback(scope, _replay(messages, receive), send)
            return True
        router: DatabaseRouter = self.service.state.db
        if not router.hot_reads:  # the backend switched while the body came in
            scope["state"][HANDED_ON] = True
            await self._fallback(scope, _replay(messages, receive), send)
            return True
        try:
            appointment, token, _ = await book(router, body, utcnow())
            payload = appointment.model_dump_json().encode()
        except errors.AppError as exc:
            await _respond(send, errors.render(exc))
            return True
        if token:
            scope["state"][COMMITTED_LSN] = token
        headers = [(b"content-length", str(len(payload)).encode()), (b"content-type", _JSON)]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return True

    async def _fallback(self, scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(self.service, scope, receive, send)

    def count(self, handed_on: bool) -> None:
        if self._answered:
            self._answered[handed_on].inc()


async def _respond(send: Send, response: JSONResponse) -> None:
    start = {"type": "http.response.start", "status": response.status_code}
    await send({**start, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


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
