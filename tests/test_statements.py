"""app/db/statements.py: one handle, alike on both backends (types, unit of work, token)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal
from typing import cast

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.db.models import Money, Organization, UTCDateTime
from app.db.router import DatabaseRouter
from app.db.statements import statement
from app.main import create_app
from tests.conftest import make_settings

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
    for _ in range(20):
        await asyncio.sleep(0)
    order.append("first out")
    await first.commit()
    await first.__aexit__(None, None, None)
    await waiting
    assert order == ["first out", "second in"]
