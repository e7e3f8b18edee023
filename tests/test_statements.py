"""app/db/statements.py: one handle, alike on both backends (types, unit of work, token)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path
from typing import cast

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.db.models import Money, Organization, UTCDateTime
from app.db.router import DatabaseRouter
from app.db.statements import statement
from app.main import create_app
from tests import pgcluster
from tests.conftest import Postgres, make_settings
from tests.test_booking_rules import API, DAY, booking, shop

ORGANIZATIONS = cast(sa.Table, Organization.__table__)
ECHO = statement(
    "SELECT $1::timestamptz AS at, $2::numeric AS amount, $3::text AS word",
    sqlite="SELECT ?1 AS at, ?2 AS amount, ?3 AS word",
    params=(UTCDateTime(), Money, None),
    columns={"at": UTCDateTime(), "amount": Money},
)
ADD = statement(
    "INSERT INTO organizations (name, slug, created_at) VALUES ($1, $2, $3) "
    "RETURNING id, slug, created_at",
    params=(None, None, ORGANIZATIONS.c.created_at),
    columns=ORGANIZATIONS.c,
)
FIND = statement(
    "SELECT id, created_at FROM organizations WHERE slug = $1", columns=ORGANIZATIONS.c
)


def _router(app: FastAPI) -> DatabaseRouter:
    router: DatabaseRouter = app.state.db
    return router


async def test_values_come_back_as_the_models_types(app: FastAPI) -> None:
    at = dt.datetime(2031, 5, 4, 12, 30, 15, 250000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    async with _router(app).statements("read") as db:
        row = await db.fetchrow(ECHO, at, Decimal("12.50"), "x")
    assert row is not None
    assert row["at"] == at
    assert row["at"].utcoffset() == dt.timedelta(0)
    assert isinstance(row["amount"], Decimal)
    assert row["amount"] == Decimal("12.50")
    assert row["word"] == "x"


async def test_a_write_counts_only_once_committed(app: FastAPI, backend: str) -> None:
    router = _router(app)
    kept, dropped = f"kept-{uuid.uuid4().hex}", f"dropped-{uuid.uuid4().hex}"
    now = dt.datetime.now(dt.UTC)
    async with router.statements("write") as db:
        made = await db.fetchrow(ADD, "Kept", kept, now)
        token = await db.commit()
    assert made is not None
    assert (made["slug"], made["created_at"]) == (kept, now)
    # The test cluster has a replica: on PostgreSQL the token is a WAL position.
    assert (token or "").count("/") == (backend == "postgresql")
    with pytest.raises(RuntimeError):
        await _fail_before_commit(router, dropped, now)
    async with router.statements("write") as db:
        found = await db.fetchrow(FIND, kept)
        left = await db.fetchrow(FIND, dropped)
    assert found is not None
    assert found["id"] == made["id"]
    # SQLite's transaction rolls back; PostgreSQL's autocommit statement was its own commit.
    assert (left is not None) == (backend == "postgresql")


async def _fail_before_commit(router: DatabaseRouter, slug: str, now: dt.datetime) -> None:
    async with router.statements("write") as db:
        await db.fetchrow(ADD, "Dropped", slug, now)
        raise RuntimeError("the unit of work fails before its commit")


async def test_sqlite_writers_take_turns(sqlite_url: str) -> None:
    app = create_app(make_settings(sqlite_url))
    async with app.router.lifespan_context(app):
        await _two_writers(_router(app))


async def _two_writers(router: DatabaseRouter) -> None:
    order: list[str] = []
    first = router.statements("write")
    await first.__aenter__()
    await first.fetchrow(ADD, "A", f"a-{uuid.uuid4().hex}", dt.datetime.now(dt.UTC))

    async def second() -> None:
        async with router.statements("write") as db:
            order.append("second in")
            await db.fetchrow(ADD, "B", f"b-{uuid.uuid4().hex}", dt.datetime.now(dt.UTC))
            await db.commit()

    waiting = asyncio.create_task(second())
    # Time enough for the second to open its connection and begin, were it not waiting
    # for its turn (aiosqlite opens a connection in a thread).
    await asyncio.sleep(0.5)
    assert order == [], "the second writer began while the first was still writing"
    order.append("first out")
    await first.commit()
    await first.__aexit__(None, None, None)
    await waiting
    assert order == ["first out", "second in"]


async def test_every_write_behind_pgbouncer(postgres: Postgres, tmp_path: Path) -> None:
    """Behind PgBouncer (transaction mode) each write is one transaction on one connection."""
    assert postgres.cluster is not None, "needs the test cluster's primary to put PgBouncer before"
    bouncer = pgcluster.start_pgbouncer(postgres.cluster.primary, tmp_path, pool_size=4)
    try:
        app = create_app(make_settings(bouncer.url(), pgbouncer=True, pool_size=8))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
        ):
            await _writes(app, c)
    finally:
        bouncer.stop()


async def _writes(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await shop(app, client)
    slots = [DAY + dt.timedelta(hours=hour) for hour in range(6)]
    made = await asyncio.gather(
        *(client.post(f"{API}/appointments", json=booking(ids, s)) for s in slots)
    )
    assert [m.status_code for m in made] == [201] * len(slots), [m.text for m in made]
    clash = await client.post(f"{API}/appointments", json=booking(ids, slots[0]))
    assert clash.status_code == 409, clash.text
    assert (
        clash.json()["detail"]
        == f"barber {ids['barber_id']} already has an appointment overlapping that time"
    )
    short = await client.post(
        f"{API}/appointments", json=booking(ids, DAY - dt.timedelta(hours=2), minutes=45)
    )
    assert short.status_code == 422, short.text
    assert "lasts 30 minutes" in short.json()["detail"]
    first = made[0].json()
    payment = {
        "user_id": ids["user_id"],
        "appointment_id": first["id"],
        "location_id": ids["location_id"],
        "amount": "25.00",
    }
    key = {"Idempotency-Key": uuid.uuid4().hex}
    paid = await client.post(f"{API}/payments", json=payment, headers=key)
    again = await client.post(f"{API}/payments", json=payment, headers=key)
    assert (paid.status_code, again.status_code) == (201, 200), (paid.text, again.text)
    assert again.json() == paid.json()
    moved = await client.patch(
        f"{API}/payments/{paid.json()['id']}", json={"status": "completed", "version": 1}
    )
    assert moved.json()["status"] == "completed", moved.text
    confirmed = await client.patch(
        f"{API}/appointments/{first['id']}", json={"status": "confirmed", "version": 1}
    )
    assert (confirmed.json()["status"], confirmed.json()["version"]) == ("confirmed", 2), (
        confirmed.text
    )
    email = f"{uuid.uuid4().hex}@example.com"
    user = await client.post(f"{API}/users", json={"email": email, "name": "Bo"})
    taken = await client.post(f"{API}/users", json={"email": email.upper(), "name": "Bo"})
    assert (user.status_code, taken.status_code) == (201, 409), (user.text, taken.text)
