"""The three hot reads, answered in front of FastAPI's request pipeline.

GET /api/v1/users/{user_id}, /api/v1/barbers/{barber_id}/appointments and
/api/v1/locations/{location_id}/revenue carry most of the traffic. On PostgreSQL the
application answers them here, before FastAPI sees them, skipping the framework's
middleware stack, route matching and dependency injection. Under load that pipeline
cost three times the CPU of the database work (README, Performance).

The lane is plumbing only: it matches the path, reads the headers, parses the query
string into the route's own query model and calls the route's own answer
(app/api/reads.py: the same use case, app/operations/reads.py, and errors). It answers
a request only when it has read every part of it exactly as the route would; anything
else (an unknown, repeated or invalid parameter, an id out of range, a missing token, a
bad consistency header, SQLite or PgBouncer) goes on to FastAPI, which answers as
declared.
HTTP metrics are recorded into the same series. HOT_READS=false turns the lane off;
tests/test_lane_differential.py holds both ways to the same answers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel, SecretStr, ValidationError
from starlette.types import Receive, Scope, Send

from app import errors
from app.api import reads
from app.api.contract import QueryContract
from app.api.deps import read_options, token_accepted
from app.db.router import DatabaseRouter
from app.db.statements import open_statements
from app.http_metrics import HttpMetrics
from app.schemas import INT64_MAX

# ASCII digits only: `\d` would also take other scripts' digits, which int() reads.
_PATH = re.compile(
    r"/api/v1/(?:users/([0-9]{1,19})|barbers/([0-9]{1,19})/appointments"
    r"|locations/([0-9]{1,19})/revenue)"
)
# The hot reads by the group of _PATH that matched.
_READS = (reads.USER, reads.SCHEDULE, reads.REVENUE)
_CONTRACTS = {read: read.contract for read in _READS}
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
        read = plan.read
        db = open_statements(
            router, read.intent, min_lsn=plan.min_lsn, force_primary=plan.force_primary
        )
        try:
            body = await read.body(db, plan.key, plan.query)
        except errors.AppError as exc:
            await self._respond(scope, receive, send, plan, started, errors.render(exc))
            return True
        except Exception as exc:
            wait = errors.retry_after(settings.effective_pool_timeout)
            response = errors.database_response(exc, wait)
            await self._respond(scope, receive, send, plan, started, response)
            return True
        finally:
            await db.close()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON)],
            }
        )
        await send({"type": "http.response.body", "body": body})
        self._record(plan, 200, time.perf_counter() - started, len(body))
        return True

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        plan: Plan,
        started: float,
        response: JSONResponse,
    ) -> None:
        await response(scope, receive, send)
        elapsed = time.perf_counter() - started
        self._record(plan, response.status_code, elapsed, len(response.body))

    def _record(self, plan: Plan, status: int, seconds: float, size: int) -> None:
        """HTTP metrics, into the series the instrumented stack feeds (app/http_metrics.py)."""
        http: HttpMetrics = self.service.state.http_metrics
        status_class = f"{status // 100}xx"
        http.observe("GET", status_class, plan.read.route, seconds, plan.request_bytes, size)


class Plan(NamedTuple):
    """A request read exactly as its route would read it."""

    read: reads.HotEndpoint
    key: int  # the id in the path
    query: BaseModel  # the route's query model, validated
    min_lsn: int | None
    force_primary: bool
    request_bytes: int


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
    group = match.lastindex or 0
    read = _READS[group - 1]
    key = int(match[group])
    if not 0 < key <= INT64_MAX:
        return None
    query = _query(scope["query_string"], read.query, _CONTRACTS[read])
    if query is None:
        return None
    return Plan(read, key, query, min_lsn, force_primary, request_bytes)


def _query(raw: bytes, model: type[BaseModel], contract: QueryContract) -> BaseModel | None:
    """The query string as FastAPI reads it into `model`, or None if it breaks the contract."""
    values: dict[str, Any] = {}
    # As Starlette parses it (Request.query_params).
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if name in contract.repeatable:
            values.setdefault(name, []).append(value)
        elif name in contract.names and name not in values:
            values[name] = value
        else:  # unknown or repeated: the route's 422
            return None
    try:
        return model.model_validate(values)
    except ValidationError:
        return None
