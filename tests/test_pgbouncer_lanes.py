"""The lanes through a real PgBouncer in transaction mode, its server connections shared.

One service reaches the primary and the replica each through its own PgBouncer (pool
mode transaction, two server connections per pool) with PGBOUNCER=true and a pool of 20,
so requests sent 60 at a time share two server connections, each statement landing on
whichever PgBouncer lends. Another service on the same databases, connected directly
with HOT_READS=false, answers through the routes. The bookings and payments through
PgBouncer are answered by the booking lane and the one-statement payment (their
counters and rows say so); the hot reads by the lane, one statement each (the
service's statement counts say so), with the routes' status, content type and bytes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests import pgcluster
from tests.conftest import ConsistentClient, make_settings
from tests.test_booking_rules import DAY, booking, shop

API = "/api/v1"
CONCURRENCY = 60  # requests in flight at once: 20 pooled connections, 2 server ones
SERVER_CONNECTIONS = 2


@pytest.fixture(scope="module")
def cluster() -> Iterator[pgcluster.PgCluster]:
    from app.db.migrate import upgrade

    with pgcluster.start_cluster(replicas=1) as started:
        upgrade(started.primary.url())
        started.wait_replica_caught_up(started.replicas[0])
        yield started


@pytest.fixture(scope="module")
def bouncers(
    cluster: pgcluster.PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[pgcluster.PgBouncer, pgcluster.PgBouncer]]:
    base = tmp_path_factory.mktemp("bouncers")
    primary = pgcluster.start_pgbouncer(cluster.primary, base, pool_size=SERVER_CONNECTIONS)
    try:
        replica = pgcluster.start_pgbouncer(cluster.replicas[0], base, pool_size=SERVER_CONNECTIONS)
        try:
            yield primary, replica
        finally:
            replica.stop()
    finally:
        primary.stop()


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, ConsistentClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with ConsistentClient(transport=transport, base_url="http://t") as client:
            yield app, client


def _sample(app: FastAPI, name: str, **labels: str) -> float:
    value = app.state.metrics_registry.get_sample_value(name, labels)
    return float(value or 0.0)


def _statements(app: FastAPI) -> dict[str, float]:
    """database_queries_total on the application's tables, by outcome (the monitor's apart)."""
    counts: dict[str, float] = {}
    for family in app.state.metrics_registry.collect():
        for s in family.samples:
            if s.name == "database_queries_total" and s.labels["table"] != "other":
                counts[s.labels["outcome"]] = counts.get(s.labels["outcome"], 0.0) + s.value
    return counts


async def _gather(*calls: Any) -> list[httpx.Response]:
    """At most CONCURRENCY requests in flight, all of them started together."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(call: Any) -> httpx.Response:
        async with limit:
            response: httpx.Response = await call
            return response

    return list(await asyncio.gather(*(one(c) for c in calls)))


async def test_lanes_answer_through_pgbouncer(
    cluster: pgcluster.PgCluster,
    bouncers: tuple[pgcluster.PgBouncer, pgcluster.PgBouncer],
) -> None:
    await lanes_through(cluster, bouncers)


async def lanes_through(
    cluster: pgcluster.PgCluster,
    bouncers: tuple[pgcluster.PgBouncer, pgcluster.PgBouncer],
    **overrides: Any,
) -> None:
    """Also run by hand against PgBouncer 1.21+ with PGBOUNCER_PREPARED_STATEMENTS."""
    primary, replica = bouncers
    direct = make_settings(cluster.primary.url(), [cluster.replicas[0].url()], hot_reads=False)
    pooled = make_settings(
        primary.url(),
        [replica.url()],
        pgbouncer=True,
        pool_size=20,
        replica_pool_size=20,
        **overrides,
    )
    async with serving(direct) as (route_app, routes), serving(pooled) as (app, lanes):
        ids = await shop(route_app, routes)
        lanes.token = routes.token

        # Bookings: 40 apart, and 10 for one slot of which exactly one may win.
        apart = [booking(ids, DAY + dt.timedelta(minutes=30 * i)) for i in range(40)]
        rival = {**ids, "user_id": ids["other_client"], "barber_id": ids["other_barber"]}
        slot = [booking(rival, DAY + dt.timedelta(hours=1)) for _ in range(10)]
        booked = await _gather(*(lanes.post(f"{API}/appointments", json=b) for b in apart + slot))
        assert [r.status_code for r in booked[:40]] == [201] * 40, booked[0].text
        assert sorted(r.status_code for r in booked[40:]) == [201] + [409] * 9
        assert _sample(app, "booking_lane_requests_total", answered_by="lane") == 50
        assert _sample(app, "booking_lane_requests_total", answered_by="route") == 0
        assert all(r.headers["x-consistency-token"] for r in booked if r.status_code == 201)
        made = [r for r in booked if r.status_code == 201]
        lanes.token = max(made, key=lambda r: r.headers["x-consistency-token"]).headers[
            "x-consistency-token"
        ]
        routes.token = lanes.token
        for response in made:  # what the lane answered is the row the route reads back
            again = await routes.get(f"{API}/appointments/{response.json()['id']}")
            assert again.json() == response.json()

        # Payments, one statement each; a retry answers the first payment.
        def pay(appointment: httpx.Response) -> Any:
            body = {
                "user_id": appointment.json()["user_id"],
                "appointment_id": appointment.json()["id"],
                "location_id": ids["location_id"],
                "amount": "25.00",
            }
            key = f"pgb-{appointment.json()['id']}"
            return lanes.post(f"{API}/payments", json=body, headers={"Idempotency-Key": key})

        paid = await _gather(*(pay(a) for a in made[:20]))
        assert [p.status_code for p in paid] == [201] * 20, paid[0].text
        again = await _gather(*(pay(a) for a in made[:20]))
        assert [p.status_code for p in again] == [200] * 20
        assert [p.content for p in again] == [p.content for p in paid]
        cluster.wait_replica_caught_up(cluster.replicas[0])

        # The hot reads, ten times each, 80 in flight: the routes' bytes.
        paths = [
            f"{API}/users/{ids['user_id']}?include=appointments,payments,organizations",
            f"{API}/users/{ids['user_id']}",
            f"{API}/users/{ids['other_client']}?include=appointments",
            f"{API}/users/999999",
            f"{API}/barbers/{ids['barber_id']}/appointments?start={DAY:%Y-%m-%d}"
            f"&end={DAY + dt.timedelta(days=6):%Y-%m-%d}&status=pending",
            f"{API}/barbers/{ids['other_barber']}/appointments?start={DAY:%Y-%m-%d}"
            f"&end={DAY:%Y-%m-%d}&status=pending&status=confirmed",
            f"{API}/locations/{ids['location_id']}/revenue?start={DAY:%Y-%m-01}"
            f"&end={DAY + dt.timedelta(days=27):%Y-%m-%d}",
            f"{API}/locations/{ids['location_id']}/revenue"
            f"?start={dt.date.today():%Y-%m-%d}&end={dt.date.today():%Y-%m-%d}",
        ] * 10
        before = _statements(app)
        fast = await _gather(*(lanes.get(p) for p in paths))
        counted = _statements(app)
        slow = [await routes.get(p) for p in paths]
        for path, lane, route in zip(paths, fast, slow, strict=True):
            assert lane.status_code == route.status_code, (path, lane.text, route.text)
            assert lane.headers["content-type"] == route.headers["content-type"], path
            assert lane.content == route.content, path
        assert {r.status_code for r in fast} == {200, 404}
        assert b'"status":"pending"' in fast[0].content  # the reads saw the bookings
        # Every read ran its statements (one or two: a missing parent is told apart) there.
        assert counted.get("success", 0) - before.get("success", 0) >= len(paths)
        assert counted.get("error", 0) == before.get("error", 0)
    for bouncer in bouncers:  # nor did PgBouncer see a client or a server misbehave
        assert bouncer.is_running()
        assert "ERROR" not in bouncer.logfile.read_text(errors="replace"), bouncer.log_tail(20)
