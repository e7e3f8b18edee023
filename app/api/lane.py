"""The three hot reads, answered in front of FastAPI's request pipeline.

GET /api/v1/users/{user_id}, /api/v1/barbers/{barber_id}/appointments and
/api/v1/locations/{location_id}/revenue carry most of the traffic. On PostgreSQL the
application answers them here, before FastAPI sees them, with hand-written SQL on the
routed replica's asyncpg connection (app/queries/hot.py), skipping the framework's
middleware stack, route matching, dependency injection, pydantic validation and
serialization and the ORM. Under load that pipeline cost three times the CPU of the
database work (README, Performance).

The routes stay the contract. This layer answers a request only when it has read
every part of it exactly as the route would: the id in the path, the query
parameters, the consistency headers and the bearer token. Anything else, such as a
malformed, repeated or out-of-range parameter, a missing token, SQLite or PgBouncer,
goes on to FastAPI, which answers it as declared, errors included. The only answers
made here are the route's 200, its 404 for an unknown user and the database errors,
each rendered by the code the routes use (app/errors.py); HTTP metrics are recorded
into the same series. HOT_READS=false turns the lane off. tests/test_lane.py holds
both ways to the same status, headers and body for valid and invalid requests alike.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple
from urllib.parse import parse_qsl

import anyio
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import SecretStr
from starlette.types import Receive, Scope, Send

from app import errors, http_metrics
from app.api.analytics import MAX_REPORT_DAYS
from app.api.appointments import DEFAULT_SCHEDULE_STATUSES, MAX_SCHEDULE_DAYS
from app.api.deps import read_options, token_accepted
from app.api.users import INCLUDE_MAX_LENGTH, INCLUDE_PATTERN
from app.db.models import APPOINTMENT_STATUSES
from app.db.router import DatabaseRouter
from app.db.sessions import Intent, Reader
from app.queries import hot
from app.schemas import INT64_MAX

Query = dict[str, list[str]]
Work = Callable[[Reader], Awaitable[bytes | None]]

USER_ROUTE = "/api/v1/users/{user_id}"
SCHEDULE_ROUTE = "/api/v1/barbers/{barber_id}/appointments"
REVENUE_ROUTE = "/api/v1/locations/{location_id}/revenue"

# ASCII digits only: `\d` would also take other scripts' digits, which int() reads.
_PATH = re.compile(
    r"/api/v1/(?:users/([0-9]{1,19})|barbers/([0-9]{1,19})/appointments"
    r"|locations/([0-9]{1,19})/revenue)"
)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_INCLUDE = re.compile(INCLUDE_PATTERN)
_STATUSES = frozenset(APPOINTMENT_STATUSES)
_JSON = b"application/json"


class HotReadLane:
    """Answers the hot reads it is sure about; says False for everything else."""

    def __init__(self, service: FastAPI) -> None:
        self.service = service

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        if scope["type"] != "http" or scope["method"] != "GET":
            return False
        match = _PATH.fullmatch(scope["path"])
        if match is None:
            return False
        started = time.perf_counter()
        router: DatabaseRouter | None = getattr(self.service.state, "db", None)
        if router is None or not router.hot_reads:
            return False
        settings = router.settings
        plan = _plan(scope, match, settings.api_tokens)
        if plan is None:
            return False
        reader = router.reader(plan.intent, min_lsn=plan.min_lsn, force_primary=plan.force_primary)
        try:
            body = await plan.work(reader)
        except Exception as exc:
            wait = errors.retry_after(settings.effective_pool_timeout)
            response = errors.database_response(exc, wait)
            await _respond(scope, receive, send, plan, started, response)
            return True
        finally:
            # A cancelled request must still give its connection back.
            with anyio.CancelScope(shield=True):
                await reader.close()
        if body is None:
            response = errors.render(errors.NotFound(plan.missing))
            await _respond(scope, receive, send, plan, started, response)
            return True
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON)],
            }
        )
        await send({"type": "http.response.body", "body": body})
        _record(plan, 200, time.perf_counter() - started, len(body))
        return True


class Plan(NamedTuple):
    """What the route would do with a request."""

    route: str  # its template, the HTTP metrics' handler label
    intent: Intent
    min_lsn: int | None
    force_primary: bool
    work: Work
    missing: str  # the 404's detail when `work` finds nothing
    request_bytes: int


async def _respond(
    scope: Scope, receive: Receive, send: Send, plan: Plan, started: float, response: JSONResponse
) -> None:
    await response(scope, receive, send)
    elapsed = time.perf_counter() - started
    _record(plan, response.status_code, elapsed, len(response.body))


def _record(plan: Plan, status: int, seconds: float, size: int) -> None:
    """HTTP metrics, into the series the instrumented stack feeds (app/http_metrics.py)."""
    status_class = f"{status // 100}xx"
    http_metrics.observe("GET", status_class, plan.route, seconds, plan.request_bytes, size)


def _plan(scope: Scope, match: re.Match[str], tokens: Sequence[SecretStr]) -> Plan | None:
    """What the route would do with this request, or None where the lane is not sure."""
    authorization = token = consistency = None
    request_bytes = 0
    for name, value in scope["headers"]:
        # The first of each, as Starlette's Headers.get reads them.
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif name == b"x-consistency-token" and token is None:
            token = value.decode("latin-1")
        elif name == b"x-read-consistency" and consistency is None:
            consistency = value.decode("latin-1")
        elif name == b"content-length" and value.isdigit():
            request_bytes = int(value)
    if tokens:
        scheme, credentials = get_authorization_scheme_param(authorization)
        if not (authorization and credentials and scheme.lower() == "bearer"):
            return None
        if not token_accepted(tokens, credentials):
            return None
    try:
        min_lsn, force_primary = read_options(token, consistency)
    except errors.BadRequest:
        return None
    user, barber, location = match.groups()
    key = user or barber or location
    number = int(key)
    if not 0 < number <= INT64_MAX:
        return None
    query: Query = {}
    for name, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
        query.setdefault(name, []).append(value)
    if user is not None:
        relations = _relations(query)
        if relations is None:
            return None

        async def user_work(reader: Reader) -> bytes | None:
            return await hot.user_document(reader, number, relations)

        missing = f"user {number} does not exist"
        return Plan(USER_ROUTE, "read", min_lsn, force_primary, user_work, missing, request_bytes)
    span = MAX_SCHEDULE_DAYS if barber is not None else MAX_REPORT_DAYS
    days = _days(query, span)
    if days is None:
        return None
    start, end = days
    if barber is not None:
        statuses = query.get("status") or DEFAULT_SCHEDULE_STATUSES
        if not _STATUSES.issuperset(statuses):
            return None
        wanted = set(statuses)

        async def schedule_work(reader: Reader) -> bytes | None:
            return await hot.schedule_document(reader, number, start, end, wanted)

        return Plan(
            SCHEDULE_ROUTE, "read", min_lsn, force_primary, schedule_work, "", request_bytes
        )
    if end >= dt.date.max:
        return None

    async def revenue_work(reader: Reader) -> bytes | None:
        return await hot.revenue_document(reader, number, start, end)

    return Plan(REVENUE_ROUTE, "analytics", min_lsn, force_primary, revenue_work, "", request_bytes)


def _relations(query: Query) -> frozenset[str] | None:
    values = query.get("include")
    if values is None:
        return frozenset()
    if len(values) != 1 or len(values[0]) > INCLUDE_MAX_LENGTH or not _INCLUDE.fullmatch(values[0]):
        return None
    return frozenset(values[0].split(",")) - {""}


def _date(values: list[str] | None) -> dt.date | None:
    if values is None or len(values) != 1 or not _DATE.fullmatch(values[0]):
        return None
    try:
        return dt.date.fromisoformat(values[0])
    except ValueError:
        return None


def _days(query: Query, span: int) -> tuple[dt.date, dt.date] | None:
    start, end = _date(query.get("start")), _date(query.get("end"))
    if start is None or end is None or end < start or (end - start).days >= span:
        return None
    return start, end
