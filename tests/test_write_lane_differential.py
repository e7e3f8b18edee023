"""Generated bookings, answered by the booking lane and by the route: the same, row for row.

Bookings change what the next one meets, so each service has a database of its own: the
shop is seeded once and its database cloned (CREATE DATABASE ... TEMPLATE), so all start
with the same rows and the same sequence positions. One service books with the lane
(app/api/write_lane.py), two with HOT_READS=false, where FastAPI's route answers: with
its one statement, as a named prepared statement and with PGBOUNCER=true as the unnamed
one a transaction pooler needs (app/db/sessions.py, unnamed).
Hypothesis draws requests (every field of the booking with good, bad, missing, extra and
wrong-typed values, ids of the wrong rows, past, far and overlapping times, JSON oddities,
raw bytes, content types, bearer tokens, headers the route ignores, query strings) and
each goes to all three in the same order: the same status, headers that matter and body,
the same HTTP metrics, and after it the same appointments, ids included, and the same id
sequence (a refusal that took an id on one path and not another shows there). The
lane's own counter (booking_lane_requests_total) shows it answered most of them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from app.db.migrate import upgrade_async
from app.db.models import Service
from app.main import create_app
from tests import factories
from tests.booking_requests import MAX_BODY, ROUTE, SEEDED, requests
from tests.conftest import (
    ConsistentClient,
    Postgres,
    _plain,
    create_database,
    drop_database,
    make_settings,
    unique,
)
from tests.test_booking_rules import DAY, shop

TOKENS = [SecretStr("book-a"), SecretStr("book-b")]  # booking_requests draws these
COMPARED_HEADERS = ("content-type", "www-authenticate", "retry-after", "connection")
STAMPS = ("created_at", "updated_at")  # now() on each side


@dataclass
class Side:
    app: Any
    client: httpx.AsyncClient
    db: asyncpg.Connection

    def lane_count(self, answered_by: str) -> float:
        registry = self.app.state.metrics_registry
        labels = {"answered_by": answered_by}
        return registry.get_sample_value("booking_lane_requests_total", labels) or 0.0

    def http_counts(self) -> dict[tuple[str, ...], float]:
        counts: dict[tuple[str, ...], float] = {}
        for family in self.app.state.metrics_registry.collect():
            for s in family.samples:
                if s.name == "http_requests_total" and s.labels["handler"] == ROUTE:
                    counts[(s.labels["method"], s.labels["status"])] = s.value
        return counts

    async def appointments(self) -> tuple[list[dict[str, Any]], tuple[Any, ...]]:
        rows = await self.db.fetch("SELECT * FROM appointments ORDER BY id")
        sequence = await self.db.fetchrow("SELECT last_value, is_called FROM appointments_id_seq")
        assert sequence is not None
        kept = [{k: v for k, v in r.items() if k not in STAMPS} for r in rows]
        return kept, tuple(sequence)


@dataclass
class World:
    ids: dict[str, int]
    lane: Side
    routes: list[Side]  # the route's one statement: named; unnamed (PGBOUNCER=true)
    sent: int = 0


async def _seed(url: str) -> dict[str, int]:
    app = create_app(make_settings(url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with ConsistentClient(transport=transport, base_url="http://t") as client:
            ids = await shop(app, client)
            async with factories.committed(app) as session:
                await factories.appointment(
                    session,
                    user_id=ids["other_client"],
                    barber_id=ids["other_barber"],
                    service_id=ids["service_id"],
                    location_id=ids["location_id"],
                    start=SEEDED,
                    status="pending",
                )
                far = await session.get(Service, ids["far_service"])
                assert far is not None
                ids["elsewhere"] = far.location_id
    return ids


async def _replica_has(postgres: Postgres, name: str) -> None:
    """The new database replayed on every replica, so each service starts with them all."""
    for url in postgres.replica_urls:
        for _ in range(300):
            try:
                conn = await asyncpg.connect(_plain(postgres.with_database(url, name)))
            except asyncpg.InvalidCatalogNameError:
                await asyncio.sleep(0.05)
                continue
            await conn.close()
            break
        else:
            raise AssertionError(f"{name} never reached the replica")


@pytest.fixture
async def world(postgres: Postgres) -> AsyncIterator[World]:
    first, *clones = (unique(n).replace("-", "_") for n in ("lane", "route", "unnamed"))
    url = await create_database(postgres, first)
    try:
        await upgrade_async(url)
        ids = await _seed(url)
        admin = await asyncpg.connect(_plain(postgres.with_database(url, "postgres")))
        try:
            for clone in clones:
                await admin.execute(f'CREATE DATABASE "{clone}" TEMPLATE "{first}"')
        finally:
            await admin.close()
        async with (
            _side(postgres, first) as lane,
            _side(postgres, clones[0], hot_reads=False) as route,
            _side(postgres, clones[1], hot_reads=False, pgbouncer=True) as unnamed,
        ):
            w = World(ids, lane, [route, unnamed])
            for side in w.routes:
                assert await lane.appointments() == await side.appointments()
            yield w
            # Worth something only if the lane answered most of them itself, and booked some.
            for side in w.routes:
                assert side.lane_count("lane") == 0
                assert side.lane_count("route") == w.sent
            assert lane.lane_count("lane") + lane.lane_count("route") == w.sent
            if w.sent >= 100:
                assert lane.lane_count("lane") >= 0.45 * w.sent, (lane.lane_count("lane"), w.sent)
                rows, _ = await lane.appointments()
                assert len(rows) >= 50, len(rows)
    finally:
        for name in (first, *clones):
            await drop_database(postgres, name)


@asynccontextmanager
async def _side(postgres: Postgres, name: str, **overrides: Any) -> AsyncIterator[Side]:
    await _replica_has(postgres, name)
    urls = [postgres.with_database(u, name) for u in (postgres.primary_url, *postgres.replica_urls)]
    app = create_app(
        make_settings(urls[0], urls[1:], api_tokens=TOKENS, max_body_bytes=MAX_BODY, **overrides)
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            db = await asyncpg.connect(_plain(urls[0]))
            try:
                yield Side(app, client, db)
            finally:
                await db.close()


async def _same_answer(world: World, url: str, headers: dict[str, str], body: bytes) -> None:
    world.sent += 1
    seen = (url, headers, body[:300])
    before = world.lane.http_counts()
    fast = await world.lane.client.post(url, content=body, headers=headers)
    grown = _grown(before, world.lane.http_counts())
    for side in world.routes:
        before = side.http_counts()
        slow = await side.client.post(url, content=body, headers=headers)
        _alike(seen, headers, fast, slow)
        assert _grown(before, side.http_counts()) == grown, seen
        assert await world.lane.appointments() == await side.appointments(), seen


def _alike(seen: Any, headers: dict[str, str], fast: httpx.Response, slow: httpx.Response) -> None:
    assert fast.status_code == slow.status_code, (seen, fast.text, slow.text)
    assert fast.status_code < 500, (seen, fast.text)
    for name in COMPARED_HEADERS:
        assert fast.headers.get(name) == slow.headers.get(name), (seen, name)
    for response in (fast, slow):
        assert response.headers["content-length"] == str(len(response.content)), seen
        echoed = response.headers["x-request-id"]  # the client's, or one made up
        assert echoed == headers["x-request-id"] if "x-request-id" in headers else echoed
    assert ("x-consistency-token" in fast.headers) == ("x-consistency-token" in slow.headers)
    mine, theirs = fast.json(), slow.json()
    if fast.status_code == 201:  # the same row: ids included, the insert's now() aside
        assert all(mine.pop(k) and theirs.pop(k) for k in STAMPS)
    assert mine == theirs, (seen, fast.text, slow.text)


def _grown(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


SETTINGS = settings(
    max_examples=700,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(data=st.data())
async def test_lane_and_route_book_alike(world: World, data: st.DataObject) -> None:
    url, headers, body = data.draw(requests(world.ids), label="request")
    await _same_answer(world, url, headers, body)


async def test_the_differences_found_stay_fixed(world: World) -> None:
    """What the generated requests found, held here as examples; the lane's share shown."""
    ids = world.ids
    good = {"content-type": "application/json", "authorization": "Bearer book-a"}
    start = DAY + dt.timedelta(days=200, hours=9)

    def booking(minutes_later: int) -> bytes:
        at = start + dt.timedelta(minutes=minutes_later)
        times = {"start_time": at.isoformat(), "end_time": (at + dt.timedelta(minutes=30))}
        fields = {k: ids[k] for k in ("user_id", "barber_id", "service_id", "location_id")}
        return json.dumps({**fields, **times}, default=dt.datetime.isoformat).encode()

    async def lane_answers(url: str, headers: dict[str, str], body: bytes) -> bool:
        before = world.lane.lane_count("lane")
        await _same_answer(world, url, headers, body)
        return world.lane.lane_count("lane") == before + 1

    assert await lane_answers(ROUTE, good, booking(0))  # booked
    assert await lane_answers(ROUTE, good, booking(0))  # taken: 409
    assert await lane_answers(ROUTE + "?", good, booking(60))  # an empty query is none
    # The route has no query parameters: it names the unknown one in its 422.
    assert not await lane_answers(ROUTE + "?x=1", good, booking(120))
    assert not await lane_answers(ROUTE + "?&", good, booking(180))  # the route books it
    # The lane's own edge refusals count in the HTTP metrics as the route's do.
    assert await lane_answers(ROUTE, {**good, "authorization": "Bearer wrong"}, b"")
    assert await lane_answers(ROUTE, good, json.dumps({"notes": "n" * MAX_BODY}).encode())
    # JSON nested past the parser's recursion limit: the route's 422, not a 500.
    assert not await lane_answers(ROUTE, good, b"[" * 2000 + b"]" * 2000)
