"""The hot reads' lane (app/api/lane.py) against the routes it stands in front of.

Two services on the same PostgreSQL primary and replica: one with the lane, one with
HOT_READS=false, where every request goes through FastAPI's routing, dependencies and
validation. Every request here gets the same status, content type and JSON from both;
valid hot reads are answered by the lane, everything it is unsure of is left to the
routes (the lane's verdict on each request is recorded to tell which).
tests/test_lane_differential.py does the same with generated requests.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr, TypeAdapter

from app.api import reads
from app.config import Settings
from app.db.router import DatabaseRouter, RoutedConnection
from app.main import create_app
from app.queries import shapes
from app.queries.reads import REVENUE
from tests import factories
from tests.conftest import ConsistentClient, Postgres, make_settings

API = "/api/v1"


@dataclass
class Side:
    app: FastAPI
    client: ConsistentClient
    readers: list[RoutedConnection]
    answered: list[bool]  # the lane's verdict on each request it saw


@asynccontextmanager
async def _side(settings: Settings) -> AsyncIterator[Side]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        router: DatabaseRouter = app.state.db
        readers: list[RoutedConnection] = []
        handed_out = router.routed_connection

        def counted(*args: Any, **kwargs: Any) -> RoutedConnection:
            reader = handed_out(*args, **kwargs)
            readers.append(reader)
            return reader

        router.routed_connection = counted  # type: ignore[method-assign]
        answered: list[bool] = []
        lane_answer = app.lane.answer  # type: ignore[attr-defined]

        async def watched(*args: Any) -> bool:
            verdict: bool = await lane_answer(*args)
            answered.append(verdict)
            return verdict

        app.lane.answer = watched  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=app)
        async with ConsistentClient(transport=transport, base_url="http://test") as client:
            yield Side(app, client, readers, answered)


@dataclass
class Pair:
    lane: Side
    routes: Side

    async def get(self, url: str, **kwargs: Any) -> tuple[httpx.Response, bool]:
        """Both answers, held equal; and whether the lane answered (not the routes)."""
        self.routes.client.token = self.lane.client.token
        seen = len(self.lane.answered)
        fast = await self.lane.client.get(url, **kwargs)
        slow = await self.routes.client.get(url, **kwargs)
        # Not reached (the edge stack refused it first) is not answered either.
        answered = len(self.lane.answered) > seen and self.lane.answered[-1]
        assert not any(self.routes.answered)
        assert fast.status_code == slow.status_code, (url, kwargs, fast.text, slow.text)
        assert fast.headers["content-type"] == slow.headers["content-type"]
        assert fast.headers.get("www-authenticate") == slow.headers.get("www-authenticate")
        assert fast.content == slow.content, (url, kwargs)
        return fast, answered


async def _pair(postgres: Postgres, **overrides: Any) -> AsyncIterator[Pair]:
    urls = postgres.primary_url, postgres.replica_urls
    async with (
        _side(make_settings(*urls, **overrides)) as fast,
        _side(make_settings(*urls, hot_reads=False, **overrides)) as slow,
    ):
        assert fast.app.state.db.hot_reads
        assert not slow.app.state.db.hot_reads
        yield Pair(fast, slow)


@pytest.fixture
async def pair(postgres: Postgres) -> AsyncIterator[Pair]:
    async for p in _pair(postgres):
        yield p


async def _shop(pair: Pair) -> dict[str, Any]:
    """A client with paid and unpaid appointments at odd times, money with cents, an org."""
    start = dt.datetime(2033, 3, 1, 9, 0, 0, 123456, tzinfo=dt.UTC) + dt.timedelta(
        days=uuid.uuid4().int % 3000
    )
    async with factories.committed(pair.lane.app, pair.lane.client) as session:
        loc = await factories.location(session)
        barber = await factories.user(session, "barber")
        user = await factories.user(session, phone="+15550001111")
        svc = await factories.service(session, loc.id, minutes=45)
        ids = {"user_id": user.id, "barber_id": barber.id, "service_id": svc.id}
        appointments = []
        for i, state in enumerate(["confirmed", "in_progress", "completed", "cancelled"]):
            a = await factories.appointment(
                session,
                **ids,
                location_id=loc.id,
                start=start + dt.timedelta(hours=i, microseconds=i),
                status=state,
            )
            appointments.append(a)
        for a, amount in zip(appointments[:3], ("19.99", "0.10", "0.20"), strict=True):
            await factories.payment(
                session,
                user_id=user.id,
                location_id=loc.id,
                amount=amount,
                appointment_id=a.id,
                created_at=a.start_time,
            )
        await factories.membership(session, user.id, role="owner")
        await factories.membership(session, user.id)
    return {"user": user.id, "barber": barber.id, "location": loc.id, "day": start.date()}


async def test_the_lane_answers_valid_reads_as_the_routes_do(pair: Pair) -> None:
    shop = await _shop(pair)
    user, day = f"{API}/users/{shop['user']}", shop["day"]
    includes = [
        None,
        "",
        "appointments",
        "stripe_account,organizations",
        "appointments,payments,organizations,stripe_account",
        "payments,payments",
    ]
    for include in includes:
        params = {} if include is None else {"include": include}
        response, answered = await pair.get(user, params=params)
        assert response.status_code == 200, include
        assert answered, include
        body = response.json()
        assert set(body) >= {"id", "email", "name", "created_at"}
        relations = set((include or "").split(",")) - {""}
        assert relations <= set(body), include
        if "stripe_account" in relations:
            assert body["stripe_account"] is None
    assert response.headers["content-length"] == str(len(response.content))

    missing, answered = await pair.get(f"{API}/users/{2**62}", params={"include": "payments"})
    assert missing.status_code == 404
    assert answered
    assert missing.json() == {"error": "not_found", "detail": f"user {2**62} does not exist"}
    assert (await pair.get(f"{API}/users/0007"))[1]  # what int() and pydantic both read as 7

    schedule = f"{API}/barbers/{shop['barber']}/appointments"
    week = {"start": str(day), "end": str(day + dt.timedelta(days=6))}
    for statuses in (None, ["completed", "cancelled"], ["confirmed", "completed", "completed"]):
        params: dict[str, Any] = {**week, **({"status": statuses} if statuses else {})}
        response, answered = await pair.get(schedule, params=params)
        assert response.status_code == 200
        assert answered
        assert response.json(), statuses
    paid = (await pair.get(schedule, params={**week, "status": ["confirmed", "completed"]}))[0]
    assert [a["payment"]["amount"] if a["payment"] else None for a in paid.json()] == [
        "19.99",
        "0.20",
    ]
    assert paid.json()[0]["start_time"].endswith(".123456Z")

    revenue = f"{API}/locations/{shop['location']}/revenue"
    params = {"start": str(day - dt.timedelta(days=1)), "end": str(day + dt.timedelta(days=1))}
    response, answered = await pair.get(revenue, params=params)
    assert response.status_code == 200
    assert answered
    [today] = response.json()["days"]
    assert Decimal(today["total_revenue"]) == Decimal("20.29")
    assert today["average_transaction"] == "6.76"
    for parent in (f"barbers/{2**62}/appointments", f"locations/{2**62}/revenue"):
        unknown, answered = await pair.get(f"{API}/{parent}", params=week)
        assert answered
        assert unknown.status_code == 404
        assert unknown.json()["detail"].endswith(f"{2**62} does not exist")


async def test_what_the_lane_is_unsure_of_goes_to_the_routes(pair: Pair) -> None:
    shop = await _shop(pair)
    day = shop["day"]
    week = {"start": str(day), "end": str(day + dt.timedelta(days=6))}
    user = f"{API}/users/{shop['user']}"
    schedule = f"{API}/barbers/{shop['barber']}/appointments"
    revenue = f"{API}/locations/{shop['location']}/revenue"
    cases: list[tuple[str, Any, dict[str, str]]] = [
        (f"{API}/users/0", {}, {}),
        (f"{API}/users/-1", {}, {}),
        (f"{API}/users/abc", {}, {}),
        (f"{API}/users/{2**63}", {}, {}),  # 19 digits, past BIGINT
        (f"{API}/users/{10**19}", {}, {}),
        (f"{API}/users/%D9%A1%D9%A2", {}, {}),  # Arabic-Indic digits: int() reads them
        (user, {"include": "bogus"}, {}),
        (user, {"include": "appointments\n"}, {}),
        (user, {"include": ",".join(["payments"] * 30)}, {}),  # over 200 characters
        (schedule, {}, {}),
        (schedule, {**week, "start": "2033-02-30"}, {}),
        (schedule, {**week, "start": "20330301"}, {}),
        (schedule, {**week, "status": "bogus"}, {}),
        (schedule, {**week, "status": ""}, {}),
        (revenue, {"start": week["start"]}, {}),
        (revenue, {"start": "9999-12-30", "end": "9999-12-31"}, {}),  # past the API's days
        (schedule, {"start": "0001-01-01", "end": "0001-01-07"}, {}),
        (user, {}, {"X-Consistency-Token": "not-an-lsn"}),
        (user, {}, {"X-Read-Consistency": "strong"}),
        (user, {"includes": "payments"}, {}),  # unknown: the route names it in its 422
        (schedule, {**week, "statuses": "pending"}, {}),
        (revenue, [("start", "2033-01-01"), ("start", "2033-01-01"), ("end", "2033-01-02")], {}),
        (user, [("include", "payments"), ("include", "appointments")], {}),
    ]
    for url, params, headers in cases:
        response, answered = await pair.get(url, params=params, headers=headers)
        assert not answered, (url, params, headers)
        assert 400 <= response.status_code < 500, (url, params, response.text)
    # Valid parameters the shared code refuses: the lane renders the route's own error.
    refused = [
        (schedule, {"start": week["end"], "end": week["start"]}),
        (schedule, {"start": "2033-01-01", "end": "2034-01-02"}),  # 367 days
        (revenue, {"start": "9999-12-30", "end": "9999-12-29"}),
        (revenue, {"start": "2033-01-01", "end": "2035-01-02"}),  # 732 days
    ]
    for url, params in refused:
        response, answered = await pair.get(url, params=params)
        assert answered, (url, params)
        assert response.status_code == 422, (url, params, response.text)
    # A day is YYYY-MM-DD only (pydantic alone takes a midnight's date-time): the lane hands
    # it on and the route refuses it.
    midnight = {**week, "start": f"{week['start']}T00:00:00"}
    response, answered = await pair.get(schedule, params=midnight)
    assert response.status_code == 422
    assert not answered
    # HEAD is the GET without its body, on both ways.
    heads = [await side.client.head(user) for side in (pair.lane, pair.routes)]
    assert [h.status_code for h in heads] == [200, 200]
    assert heads[0].headers["content-length"] == heads[1].headers["content-length"] != "0"
    assert heads[0].content == heads[1].content == b""
    assert pair.lane.answered[-1]


async def test_tokens_are_checked_as_the_routes_check_them(postgres: Postgres) -> None:
    async for pair in _pair(postgres, api_tokens=[SecretStr("s3cret-a"), SecretStr("s3cret-b")]):
        url = f"{API}/users/{2**62}"
        refused = [
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Basic s3cret-a"},
            {"Authorization": "Bearer"},
            {"Authorization": "s3cret-a"},
        ]
        for headers in refused:
            response, answered = await pair.get(url, headers=headers)
            assert response.status_code == 401, headers
            assert not answered, headers
            assert "s3cret" not in response.text
        for headers in (
            {"Authorization": "Bearer s3cret-b"},
            {"Authorization": "bearer s3cret-a"},
            {"Authorization": "Bearer  s3cret-a "},
        ):
            response, answered = await pair.get(url, headers=headers)
            assert response.status_code == 404, headers
            assert answered, headers


async def test_consistency_headers_route_the_lane_as_the_routes(pair: Pair) -> None:
    def forced() -> float:
        labels = {"reason": "forced"}
        return sum(
            side.app.state.metrics_registry.get_sample_value("database_primary_reads_total", labels)
            or 0
            for side in (pair.lane, pair.routes)
        )

    before = forced()
    response, answered = await pair.get(
        f"{API}/users/{2**62}", headers={"X-Read-Consistency": "primary"}
    )
    assert response.status_code == 404
    assert answered
    assert forced() == before + 2  # one read each way
    # A token from the future: no replica has it, so the primary answers.
    future = await pair.get(f"{API}/users/{2**62}", headers={"X-Consistency-Token": "FF/0"})
    assert future[1]
    assert pair.lane.readers[-1].target.replica is None


async def test_the_lane_feeds_the_route_templates_http_metrics(pair: Pair) -> None:
    def requests(handler: str, status: str) -> float:
        labels = {"handler": handler, "method": "GET", "status": status}
        return sum(
            side.app.state.metrics_registry.get_sample_value("http_requests_total", labels) or 0
            for side in (pair.lane, pair.routes)
        )

    ok, missing = requests(reads.USER.route, "2xx"), requests(reads.USER.route, "4xx")
    shop = await _shop(pair)
    assert (await pair.get(f"{API}/users/{shop['user']}"))[1]
    assert (await pair.get(f"{API}/users/{2**62}"))[1]
    # One by the lane, one by the instrumented route: the template the middleware found.
    assert requests(reads.USER.route, "2xx") == ok + 2
    assert requests(reads.USER.route, "4xx") == missing + 2
    exposition = (await pair.lane.client.get("/metrics")).text
    assert 'http_request_duration_seconds_bucket{handler="/api/v1/users/{user_id}"' in exposition


async def test_a_database_down_is_a_503_from_the_lane_too() -> None:
    from tests.pgcluster import free_port

    url = f"postgresql+asyncpg://bookedbarber:pw-nothing@127.0.0.1:{free_port()}/bookedbarber"
    settings = make_settings(url, [url], connect_timeout=2)
    async with _side(settings) as side:
        response = await side.client.get(f"{API}/users/1")
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"]
        assert response.json() == {"error": "unavailable", "detail": "the database is unavailable"}
        assert "pw-nothing" not in response.text
        assert side.readers, "the lane answered"


async def test_revenue_is_an_index_only_scan(postgres: Postgres) -> None:
    """The revenue statement is answered from idx_payments_location_revenue alone."""
    conn = await asyncpg.connect(postgres.primary_url.replace("+asyncpg", ""))
    try:
        await conn.execute("VACUUM payments")  # index-only scans need the visibility map
        await conn.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        since = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
        until = since + dt.timedelta(days=31)
        rows = await conn.fetch("EXPLAIN " + REVENUE.postgresql, 1, since, until)
    finally:
        await conn.close()
    plan = "\n".join(r[0] for r in rows)
    assert "Index Only Scan using idx_payments_location_revenue" in plan, plan


def test_bodies_write_timestamps_like_pydantic() -> None:
    """The reads' bodies (app/queries/shapes.py) write an instant as FastAPI's models do."""
    plus_two = dt.timezone(dt.timedelta(hours=2))
    moments = [
        dt.datetime(2033, 3, 1, 9, 0, 0, 123456, tzinfo=dt.UTC),
        dt.datetime(2033, 3, 1, 9, 0, 0, tzinfo=dt.UTC),
        dt.datetime(2033, 3, 1, 9, 0, 0, 1, tzinfo=dt.UTC),
        dt.datetime(2033, 3, 1, 9, 0, 0, 500000, tzinfo=plus_two).astimezone(dt.UTC),
        dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=plus_two).astimezone(dt.UTC),
        dt.datetime(2, 1, 1, 0, 0, tzinfo=dt.UTC),
    ]
    adapter = TypeAdapter(dt.datetime)
    for moment in moments:
        assert shapes.body(moment) == adapter.dump_json(moment), moment


def test_the_lane_keeps_only_frozen_query_models() -> None:
    """The lane hands one validated query model to every request with the same string."""
    from app.api import lane

    for read in (reads.USER, reads.SCHEDULE, reads.REVENUE):
        assert read.query.model_config.get("frozen"), read.route
        contract = read.contract
        first = lane._query(b"start=2030-01-01&end=2030-01-07", read.query, contract)
        again = lane._query(b"start=2030-01-01&end=2030-01-07", read.query, contract)
        assert first is again or first is None
    assert lane._query(b"start=2030-01-01&start=2030-01-02", reads.REVENUE.query, contract) is None
