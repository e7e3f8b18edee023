"""A route that answers with an error has given its connection back by then.

The session dependencies (app/api/deps.py) close what they opened when the route raises,
before the error goes out: not later, when the garbage collector finalizes a suspended
generator (a connection held past its request, SQLite's write turn held with it, and a
connection never closed at shutdown). The routes here, not the hot-read lane, answer:
HOT_READS=false.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import func, select

from app.api.deps import MethodSession
from app.db.models import Organization
from app.errors import NotFound
from app.main import create_app
from tests.conftest import Postgres, make_settings
from tests.test_routing import checked_out, db

MISSING = 10**12
DAY = dt.date(2031, 5, 5)
ANSWERED_BY_ROUTES = [
    # ReadStatements
    (f"/api/v1/users/{MISSING}", 404),
    (f"/api/v1/users/{MISSING}?include=appointments,payments", 404),
    (f"/api/v1/appointments/{MISSING}", 404),
    (f"/api/v1/payments/{MISSING}", 404),
    (f"/api/v1/users/{MISSING}/payments", 404),
    (f"/api/v1/barbers/{MISSING}/appointments?start={DAY}&end={DAY}", 404),
    # AnalyticsStatements
    (f"/api/v1/locations/{MISSING}/revenue?start={DAY}&end={DAY}", 404),
    # A read on a session (MethodSession's GET, as ReadSession), refused after its query
    ("/_probe/fails-after-a-statement", 404),
]


@dataclass
class Routes:
    app: FastAPI
    client: httpx.AsyncClient
    tag: str  # the slug prefix of the organizations the probe route adds


@pytest.fixture
async def routes(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Routes]:
    if backend == "sqlite":
        settings = make_settings(request.getfixturevalue("sqlite_url"), hot_reads=False)
    else:
        pg: Postgres = request.getfixturevalue("postgres")
        settings = make_settings(pg.primary_url, pg.replica_urls, hot_reads=False)
    app = create_app(settings)
    tag = f"probe-{uuid.uuid4().hex[:12]}"

    # Test scaffolding, not product API: routes whose rule refuses after a statement.
    @app.api_route("/_probe/fails-after-a-statement", methods=["GET", "PUT"])
    async def fails_after_a_statement(http: Request, session: MethodSession) -> None:
        if http.method == "PUT":
            session.add(Organization(name="Probe", slug=f"{tag}-{uuid.uuid4().hex[:8]}"))
            await session.flush()
        else:
            await session.scalar(select(func.count()).select_from(Organization))
        raise NotFound("refused after the statement")

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Routes(app, client, tag)


@pytest.mark.parametrize(("path", "status"), ANSWERED_BY_ROUTES)
async def test_an_error_answer_has_given_its_connection_back(
    routes: Routes, path: str, status: int
) -> None:
    for _ in range(3):
        response = await routes.client.get(path)
        assert response.status_code == status, response.text
        assert checked_out(routes.app) == 0, path


async def test_a_refused_write_has_rolled_back_and_given_its_turn_back(
    routes: Routes,
) -> None:
    router = db(routes.app)
    for _ in range(3):
        response = await routes.client.put("/_probe/fails-after-a-statement")
        assert response.status_code == 404, response.text
        assert checked_out(routes.app) == 0
        turn = router._sqlite_writer
        assert turn is None or not turn.locked()
    async with router.session("write") as session:
        probes = select(func.count()).where(Organization.slug.startswith(routes.tag))
        assert await session.scalar(probes) == 0
