"""The edges: one stack every HTTP request passes, whichever door answers it.

Outermost first (edge_stack below):

    request id          the client's X-Request-ID or a new one, for the logs; the answer
                        gets it, and a write's X-Consistency-Token, from the one
                        send wrapper a request has (Answer), which notes its status
    HEAD as GET         the GET's status and headers, without its body
    door chosen         on the request line and headers: the hot-read lane, the booking
                        lane or FastAPI's routes; the booking lane's counter once answered
    HTTP metrics        every answer below, refusals included, by route template
    last resort         an exception no door answered: the database's 503, or a bare 500
    token               API_TOKENS on every /api/ path, before its body is read
    body                MAX_BODY_BYTES and BODY_TIMEOUT while the body is read
    consistency in      X-Consistency-Token and X-Read-Consistency parsed once
    the door            app/api/lane.py | app/api/write_lane.py | FastAPI's routes

The doors only match, parse and call their operation: nothing of the above is theirs.
A write's operation leaves the LSN it committed in scope["state"][COMMITTED_LSN].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import errors, logs
from app.api import lane, write_lane
from app.config import Settings
from app.guards import COMMITTED_LSN, BodyGuard, ConsistencyHeaders, TokenGate
from app.http_metrics import ANSWER, HANDLER, HttpMetrics, RecordHttpMetrics, content_length

if TYPE_CHECKING:
    from app.main import Service

DOOR = "door"  # scope["state"] key: the lane chosen, if one was
READ_LANE, BOOKING_LANE = "read lane", "booking lane"


def edge_stack(service: Service, settings: Settings, http_metrics: HttpMetrics) -> ASGIApp:
    """The stack in front of the doors, in the order the module's docstring draws."""
    app: ASGIApp = Doors(service)
    app = ConsistencyHeaders(app)
    app = BodyGuard(app, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout)
    app = TokenGate(app, tokens=settings.api_tokens)
    app = LastResort(app, errors.retry_after(settings.effective_pool_timeout), service.on_fault)
    app = RecordHttpMetrics(app, http_metrics)
    app = ChooseDoor(app, service)
    app = HeadAsGet(app)
    return RequestId(app)


class Answer:
    """A request's one send wrapper: the headers the edges add, and what was sent.

    One wrapper rather than one per layer that adds or watches: each costs a call per
    message. The layers inside read `started`, `status` and `size` from it.
    """

    __slots__ = ("gone", "headers", "send", "size", "started", "state", "status")

    def __init__(self, send: Send, request_id: str, state: dict[str, object]) -> None:
        self.send, self.state = send, state
        self.headers = [(b"x-request-id", request_id.encode())]
        self.started, self.status, self.size = False, 500, 0
        self.gone = False  # the client left before its body was in (app/guards.py)

    @property
    def outcome(self) -> int:
        """The status as sent; nothing sent: 499 if the client left first, else 500."""
        if not self.started and self.gone:
            return errors.CLIENT_CLOSED
        return self.status

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            self.started, self.status = True, message["status"]
            self.size = content_length(headers)
            # Known only once the write committed (app/operations: the token, a str).
            token = cast("str | None", self.state.get(COMMITTED_LSN))
            if token:
                headers.append((b"x-consistency-token", token.encode()))
            message = {**message, "headers": headers + self.headers}
        await self.send(message)


class RequestId:
    """The client's X-Request-ID when sane, else a new one: on the answer and in the logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = logs.request_id(scope["headers"])
        answer = scope["state"][ANSWER] = Answer(send, request_id, scope["state"])
        reset = logs.REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, answer)
        finally:
            logs.REQUEST_ID.reset(reset)


def head_as_get(scope: Scope, send: Send) -> tuple[Scope, Send]:
    """HEAD wherever GET works: the GET's status and headers, without its body (RFC 9110)."""

    async def without_body(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return {**scope, "method": "GET"}, without_body


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "HEAD":
            scope, send = head_as_get(scope, send)
        await self.app(scope, receive, send)


class ChooseDoor:
    """Which door answers, from the method, path and headers: before the guards, so that
    the booking lane counts their refusals of the bookings it would have taken."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["state"]
        method = scope["method"]
        if method == "GET":
            match = lane.match(scope["path"])
            if match is not None:
                state[DOOR], state[lane.MATCH] = READ_LANE, match
                state[HANDLER] = lane.route_of(match)
        elif method == "POST" and scope["path"] == write_lane.ROUTE:
            state[HANDLER] = write_lane.ROUTE
            booking = self.service.booking_lane
            if booking.takes(scope):
                state[DOOR] = BOOKING_LANE
                await self.app(scope, receive, send)
                booking.count(handed_on=state.get(write_lane.HANDED_ON, False))
                return
        await self.app(scope, receive, send)


class LastResort:
    """An exception that escaped the door, answered once, here, if nothing was sent yet.

    Starlette re-raises what its last-resort handler (app/errors.py) logged and answered:
    passed on, uvicorn would log it a second time.
    """

    def __init__(self, app: ASGIApp, wait: int, on_fault: Callable[[], None]) -> None:
        self.app = app
        self.wait = wait
        self.on_fault = on_fault

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            if not scope["state"][ANSWER].started:
                response = errors.failure_response(exc, self.wait, self.on_fault)
                await response(scope, receive, send)


class Doors:
    """The door ChooseDoor chose; the read lane hands to the routes what it is unsure of."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        door = scope["state"].get(DOOR)
        if door == READ_LANE and await self.service.lane.answer(scope, receive, send):
            return
        if door == BOOKING_LANE:  # it hands on to the routes itself, with the body it read
            await self.service.booking_lane.answer(scope, receive, send)
            return
        await FastAPI.__call__(self.service, scope, receive, send)
