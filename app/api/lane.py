"""The three hot reads, answered in front of FastAPI's request pipeline.

GET /api/v1/users/{user_id}, /api/v1/barbers/{barber_id}/appointments and
/api/v1/locations/{location_id}/revenue carry most of the traffic. On PostgreSQL the
application answers them here, before FastAPI sees them, skipping the framework's
routing, dependency injection and exception middleware. Under load that pipeline
cost three times the CPU of the database work (README, Performance).

The lane is plumbing only: behind the edge stack (app/edges.py: request id, token,
consistency headers, HTTP metrics) it matches the path, parses the query string into
the route's own query model and calls the route's own answer (app/api/reads.py: the same
use case, app/operations/reads.py, and errors). It answers a request only when it has
read every part of it exactly as the route would; anything else (an unknown, repeated or
invalid parameter, an id out of range, a bad consistency header, SQLite) goes on to
FastAPI, which answers as declared. HOT_READS=false turns the lane off;
tests/test_lane_differential.py holds both ways to the same answers.
"""

from __future__ import annotations

import re
from typing import NamedTuple, cast
from urllib.parse import parse_qsl

from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from app import errors
from app.api import reads
from app.api.contract import QueryContract
from app.db.router import DatabaseRouter
from app.db.statements import open_statements
from app.guards import READ_CONSISTENCY
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
MATCH = "hot_read"  # scope["state"] key: the path's match, when the edge stack chose the lane
# Validated query models by (model, raw query string): the same weeks and months come back
# request after request, and parsing and validating one cost more than the lane's other
# work. The models are frozen and their validation reads nothing but the string. Bounded:
# so many entries, each of a string so long at most (a week's is about 30 bytes).
_QUERIES: dict[tuple[type[BaseModel], bytes], BaseModel] = {}
_QUERIES_LIMIT = 4096
_QUERY_KEPT_BYTES = 256


def match(path: str) -> re.Match[str] | None:
    """Whether the path is one of the hot reads' (the lane may still hand it on)."""
    return _PATH.fullmatch(path)


def route_of(found: re.Match[str]) -> str:
    """The route template of a matched path: the HTTP metrics' handler label."""
    return _READS[(found.lastindex or 0) - 1].route


class HotReadLane:
    """Answers the hot reads it is sure about; says False for everything else."""

    def __init__(self, service: FastAPI) -> None:
        self.service = service

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        router: DatabaseRouter | None = getattr(self.service.state, "db", None)
        if router is None or not router.hot_reads:
            return False
        plan = _plan(scope, scope["state"][MATCH])
        if plan is None:
            return False
        read = plan.read
        db = open_statements(
            router, read.intent, min_lsn=plan.min_lsn, force_primary=plan.force_primary
        )
        try:
            body = await read.body(db, plan.key, plan.query)
        except errors.AppError as exc:
            await errors.render(exc)(scope, receive, send)
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
        return True


class Plan(NamedTuple):
    """A request read exactly as its route would read it."""

    read: reads.HotEndpoint
    key: int  # the id in the path
    query: BaseModel  # the route's query model, validated
    min_lsn: int | None
    force_primary: bool


def _plan(scope: Scope, found: re.Match[str]) -> Plan | None:
    """What the route would do with this request, or None where the lane is not sure."""
    options = scope["state"][READ_CONSISTENCY]
    if isinstance(options, errors.BadRequest):  # the route words the 422
        return None
    min_lsn, force_primary = options
    group = found.lastindex or 0
    read = _READS[group - 1]
    key = int(found[group])
    if not 0 < key <= INT64_MAX:
        return None
    query = _query(scope["query_string"], read.query, _CONTRACTS[read])
    if query is None:
        return None
    return Plan(read, key, query, min_lsn, force_primary)


def _query(raw: bytes, model: type[BaseModel], contract: QueryContract) -> BaseModel | None:
    """The query string as FastAPI reads it into `model`, or None if it breaks the contract."""
    found = _QUERIES.get((model, raw))
    if found is None:
        found = _parse_query(raw, model, contract)
        if found is not None and len(raw) <= _QUERY_KEPT_BYTES:
            if len(_QUERIES) >= _QUERIES_LIMIT:
                _QUERIES.clear()
            _QUERIES[model, raw] = found
    return found


def _parse_query(raw: bytes, model: type[BaseModel], contract: QueryContract) -> BaseModel | None:
    values: dict[str, str | list[str]] = {}
    # As Starlette parses it (Request.query_params).
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if name in contract.repeatable:
            cast("list[str]", values.setdefault(name, [])).append(value)
        elif name in contract.names and name not in values:
            values[name] = value
        else:  # unknown or repeated: the route's 422
            return None
    try:
        return model.model_validate(values)
    except ValidationError:
        return None
