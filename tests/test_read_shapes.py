"""Every read's bytes against a judge that shares no code with the service.

On each backend, a new database gets test_same_bytes' rows (messy text, money with
cents, times with and without microseconds). Each read is then asked of the lane (the
service as deployed) and of the routes (HOT_READS=false); on SQLite the lane stays out
of the way, so the routes answer both. Both bodies must be byte for byte the judge's:
the response built by this test from its own SQL (sent through the bare driver,
asyncpg or sqlite3, not the service's engine or statements), validated into the
pydantic response model and written by `model_dump_json`, as FastAPI writes a model.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, TypeAdapter

from app.db.migrate import upgrade_async
from app.main import create_app
from app.schemas import (
    AppointmentRead,
    PaymentPage,
    PaymentRead,
    RevenueReport,
    ScheduledAppointment,
    UserDetail,
)
from tests.conftest import ConsistentClient, Postgres, create_database, drop_database
from tests.conftest import make_settings as settings_for
from tests.test_same_bytes import T0, Shop, Side, _seed

API = "/api/v1"
_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?$")
_PLACEHOLDER = re.compile(r"\$\d+")


@dataclass
class Door:
    app: FastAPI
    client: ConsistentClient
    answered: list[bool]  # the lane's verdict on each request it saw


class Judge:
    """The test's own SQL on the bare driver, its values as a driver-neutral Python."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        if self.url.startswith("sqlite"):
            with sqlite3.connect(self.url.split("///", 1)[1]) as conn:
                cursor = conn.execute(_PLACEHOLDER.sub("?", sql), args)
                names = [column[0] for column in cursor.description]
                return [
                    {k: _value(v) for k, v in zip(names, row, strict=True)}
                    for row in cursor.fetchall()
                ]
        conn = await asyncpg.connect(self.url.replace("+asyncpg", ""))
        try:
            return [{k: _value(v) for k, v in r.items()} for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    async def user(self, user_id: int, relations: tuple[str, ...]) -> bytes | None:
        [user] = await self.rows("SELECT * FROM users WHERE id = $1", user_id) or [None]
        if user is None:
            return None
        sql = {
            "appointments": "SELECT * FROM appointments WHERE user_id = $1 ORDER BY start_time, id",
            "payments": "SELECT * FROM payments WHERE user_id = $1 ORDER BY id",
            "organizations": "SELECT m.organization_id, o.name, o.slug, m.role "
            "FROM user_organizations m JOIN organizations o ON o.id = m.organization_id "
            "WHERE m.user_id = $1 ORDER BY m.id",
        }
        for name in relations:
            if name == "stripe_account":
                found = await self.rows("SELECT * FROM stripe_accounts WHERE user_id = $1", user_id)
                user[name] = found[0] if found else None
            else:
                user[name] = await self.rows(sql[name], user_id)
        return UserDetail.model_validate(user).model_dump_json(exclude_unset=True).encode()

    async def schedule(
        self, barber_id: int, start: dt.date, end: dt.date, statuses: tuple[str, ...]
    ) -> bytes | None:
        if not await self.rows("SELECT id FROM users WHERE id = $1", barber_id):
            return None
        items = []
        for a in await self.rows(
            "SELECT * FROM appointments WHERE barber_id = $1 "
            "ORDER BY appointment_date, start_time, id",
            barber_id,
        ):
            day = dt.date.fromisoformat(str(a["appointment_date"]))
            if not start <= day <= end or a["status"] not in statuses:
                continue
            [a["user"]] = await self.rows("SELECT * FROM users WHERE id = $1", a["user_id"])
            [a["service"]] = await self.rows(
                "SELECT * FROM services WHERE id = $1", a["service_id"]
            )
            paid = await self.rows("SELECT * FROM payments WHERE appointment_id = $1", a["id"])
            a["payment"] = paid[0] if paid else None
            items.append(a)
        return _json(list[ScheduledAppointment], items)

    async def revenue(self, location_id: int, start: dt.date, end: dt.date) -> bytes | None:
        if not await self.rows("SELECT id FROM barbershop_locations WHERE id = $1", location_id):
            return None
        days: dict[dt.date, dict[str, list[Decimal]]] = {}
        for p in await self.rows("SELECT * FROM payments WHERE location_id = $1", location_id):
            day = p["created_at"].astimezone(dt.UTC).date()
            if start <= day <= end and p["status"] in ("completed", "refunded"):
                sums = days.setdefault(day, {"completed": [], "refunded": []})
                sums[p["status"]].append(p["amount"])
        report = {"location_id": location_id, "start": start, "end": end, "days": []}
        for day in sorted(days):
            done, back = days[day]["completed"], days[day]["refunded"]
            total = sum(done, Decimal(0))
            average = total / len(done) if done else Decimal(0)
            report["days"].append(
                {
                    "date": day,
                    "total_revenue": total,
                    "transaction_count": len(done),
                    "average_transaction": average.quantize(Decimal("0.01"), ROUND_HALF_UP),
                    "refunded_total": sum(back, Decimal(0)),
                    "refund_count": len(back),
                }
            )
        return _json(RevenueReport, report)

    async def one(self, table: str, model: type[BaseModel], key: int) -> bytes | None:
        found = await self.rows(f"SELECT * FROM {table} WHERE id = $1", key)
        return model.model_validate(found[0]).model_dump_json().encode() if found else None

    async def payments(self, user_id: int, after: int, limit: int) -> bytes | None:
        if not await self.rows("SELECT id FROM users WHERE id = $1", user_id):
            return None
        every = await self.rows("SELECT * FROM payments WHERE user_id = $1 ORDER BY id", user_id)
        later = [p for p in every if p["id"] > after]
        page = later[:limit]
        more = len(later) > limit
        document = {"items": page, "next_after": page[-1]["id"] if more else None}
        return _json(PaymentPage, document)


def _value(raw: Any) -> Any:
    """A driver's value as the schema takes it: SQLite's text times aware UTC, REAL money."""
    if isinstance(raw, str) and _STAMP.match(raw):
        return dt.datetime.fromisoformat(raw).replace(tzinfo=dt.UTC)
    if isinstance(raw, float):
        return Decimal(repr(raw)).quantize(Decimal("0.01"))
    return raw


def _json(kind: Any, document: Any) -> bytes:
    adapter: TypeAdapter[Any] = TypeAdapter(kind)
    return adapter.dump_json(adapter.validate_python(document))


@dataclass
class World:
    judge: Judge
    shop: Shop
    doors: list[Door]
    lane_on: bool


async def _door(url: str, **overrides: Any) -> AsyncIterator[Door]:
    app = create_app(settings_for(url, **overrides))
    async with app.router.lifespan_context(app):
        answered: list[bool] = []
        lane_answer = app.lane.answer  # type: ignore[attr-defined]

        async def watched(*args: Any) -> bool:
            verdict: bool = await lane_answer(*args)
            answered.append(verdict)
            return verdict

        app.lane.answer = watched  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=app)
        async with ConsistentClient(transport=transport, base_url="http://test") as client:
            yield Door(app, client, answered)


@pytest.fixture(params=["sqlite", "postgresql"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    name = f"shapes_{uuid.uuid4().hex[:8]}"
    postgres: Postgres | None = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'shapes.db'}"
    else:
        postgres = request.getfixturevalue("postgres")
        url = await create_database(postgres, name)
    try:
        await upgrade_async(url)
        lane = _door(url)
        routes = _door(url, hot_reads=False)
        fast = await anext(lane)
        slow = await anext(routes)
        try:
            shop = await _seed(Side("lane", fast.app, fast.client))
            lane_on = bool(fast.app.state.db.hot_reads)
            yield World(Judge(url), shop, [fast, slow], lane_on)
        finally:
            for door in (routes, lane):
                await door.aclose()
    finally:
        if postgres is not None:
            await drop_database(postgres, name)


async def _same(world: World, path: str, expected: bytes | None, hot: bool = False) -> None:
    """Both doors answer `expected` (None: 404), the lane itself when `hot` on PostgreSQL."""
    for door in world.doors:
        response = await door.client.get(f"{API}/{path}")
        if expected is None:
            assert response.status_code == 404, (path, response.text)
            continue
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"] == "application/json"
        assert response.content == expected, (path, response.text, expected.decode())
    lane, routes = world.doors
    assert not any(routes.answered)
    if hot and world.lane_on:
        assert lane.answered[-1], path


ALL = ("appointments", "payments", "organizations", "stripe_account")


async def test_users_with_and_without_relations(world: World) -> None:
    ids = world.shop.ids
    for key in ("client", "barber", "idle"):
        for relations in ((), ALL, ("payments",), ("stripe_account", "appointments")):
            expected = await world.judge.user(ids[key], tuple(sorted(relations)))
            query = f"?include={','.join(relations)}" if relations else ""
            await _same(world, f"users/{ids[key]}{query}", expected, hot=True)
    assert await world.judge.user(10**12, ()) is None
    await _same(world, f"users/{10**12}?include=payments", None, hot=True)


async def test_schedules_full_and_empty(world: World) -> None:
    ids = world.shop.ids
    day = T0.date()
    cases = [
        ("barber", day, day + dt.timedelta(days=6), ("confirmed", "in_progress")),
        ("barber", day, day + dt.timedelta(days=6), ("completed", "cancelled", "pending")),
        ("barber", day + dt.timedelta(days=1), day + dt.timedelta(days=1), ("in_progress",)),
        ("barber", day + dt.timedelta(days=300), day + dt.timedelta(days=306), ("confirmed",)),
        ("idle", day, day + dt.timedelta(days=6), ("confirmed", "in_progress")),
    ]
    for key, start, end, statuses in cases:
        expected = await world.judge.schedule(ids[key], start, end, statuses)
        assert expected is not None
        default = statuses == ("confirmed", "in_progress")
        query = f"start={start}&end={end}" + "".join(
            "" if default else f"&status={s}" for s in statuses
        )
        path = f"barbers/{ids[key]}/appointments?{query}"
        await _same(world, path, expected, hot=True)
    week = f"start={day}&end={day + dt.timedelta(days=6)}"
    await _same(world, f"barbers/{10**12}/appointments?{week}", None, hot=True)


async def test_revenue_with_cents_and_without_payments(world: World) -> None:
    ids = world.shop.ids
    day = T0.date()
    for key, start, end in (
        ("north", day, day),
        ("north", day - dt.timedelta(days=3), day + dt.timedelta(days=40)),
        ("south", day, day + dt.timedelta(days=30)),
    ):
        expected = await world.judge.revenue(ids[key], start, end)
        path = f"locations/{ids[key]}/revenue?start={start}&end={end}"
        await _same(world, path, expected, hot=True)
    await _same(world, f"locations/{10**12}/revenue?start={day}&end={day}", None, hot=True)


async def test_appointments_payments_and_pages(world: World) -> None:
    ids = world.shop.ids
    for key in ("a_done", "a_refunded", "a_confirmed", "a_progress"):
        expected = await world.judge.one("appointments", AppointmentRead, ids[key])
        await _same(world, f"appointments/{ids[key]}", expected)
    for key in ("p_done", "p_refunded", "p_walkin", "p_walkin2"):
        expected = await world.judge.one("payments", PaymentRead, ids[key])
        await _same(world, f"payments/{ids[key]}", expected)
    await _same(world, f"appointments/{10**12}", None)
    await _same(world, f"payments/{10**12}", None)
    for key, after, limit in (("client", 0, 50), ("client", 0, 2), ("client", ids["p_done"], 2)):
        expected = await world.judge.payments(ids[key], after, limit)
        await _same(world, f"users/{ids[key]}/payments?after={after}&limit={limit}", expected)
    for key in ("idle", "barber"):
        await _same(
            world, f"users/{ids[key]}/payments", await world.judge.payments(ids[key], 0, 50)
        )
    await _same(world, f"users/{10**12}/payments", None)
