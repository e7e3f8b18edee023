"""The hand-written hot reads (app/queries/hot.py) against the repositories they stand for.

On PostgreSQL the three hot endpoints answer from asyncpg rows; the repositories and
the pydantic models still define the JSON. Same data, same request: the same value.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import TypeAdapter

from app.queries import hot
from app.queries.analytics import AnalyticsRepository
from app.queries.appointments import AppointmentRepository
from app.queries.users import USER_RELATIONS, UserRepository
from app.schemas import DailyRevenueRead, RevenueReport, ScheduledAppointment, UserDetail
from tests import factories
from tests.conftest import Postgres

pytestmark = pytest.mark.parametrize("backend", ["postgresql"])
API = "/api/v1"


async def _shop(app: FastAPI, client: httpx.AsyncClient) -> dict[str, Any]:
    """A client with paid and unpaid appointments at odd times, money with cents, an org."""
    start = dt.datetime(2033, 3, 1, 9, 0, 0, 123456, tzinfo=dt.UTC) + dt.timedelta(
        days=uuid.uuid4().int % 3000
    )
    async with factories.committed(app, client) as session:
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


async def test_user_document_equals_the_repository_and_model(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    shop = await _shop(app, client)
    for include in ["", "appointments", "stripe_account,organizations", ",".join(USER_RELATIONS)]:
        response = await client.get(f"{API}/users/{shop['user']}", params={"include": include})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        relations = set(include.split(",")) - {""}
        session = app.state.db.session("read", force_primary=True)
        assert hot.available(session)
        try:
            user = await UserRepository(session).get_with(shop["user"], relations)
        finally:
            await session.close()
        expected = UserDetail.model_validate(user).model_dump(mode="json", exclude_unset=True)
        assert response.json() == expected, include

    missing = await client.get(f"{API}/users/{2**62}", params={"include": "appointments"})
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"


async def test_schedule_document_equals_the_repository_and_model(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    shop = await _shop(app, client)
    day = shop["day"]
    for statuses in (None, ["completed", "cancelled"], ["confirmed", "completed", "no_show"]):
        params: dict[str, Any] = {"start": str(day), "end": str(day + dt.timedelta(days=1))}
        if statuses:
            params["status"] = statuses
        response = await client.get(f"{API}/barbers/{shop['barber']}/appointments", params=params)
        assert response.status_code == 200
        session = app.state.db.session("read", force_primary=True)
        try:
            rows = await AppointmentRepository(session).list_for_barber(
                shop["barber"],
                day,
                day + dt.timedelta(days=1),
                statuses or {"confirmed", "in_progress"},
            )
        finally:
            await session.close()
        expected = TypeAdapter(list[ScheduledAppointment]).dump_python(
            [ScheduledAppointment.model_validate(a) for a in rows], mode="json"
        )
        assert response.json() == expected
        assert expected, statuses
    paid = response.json()
    assert [a["payment"]["amount"] if a["payment"] else None for a in paid] == ["19.99", "0.20"]


async def test_revenue_document_equals_the_repository_and_model(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    shop = await _shop(app, client)
    start, end = shop["day"] - dt.timedelta(days=1), shop["day"] + dt.timedelta(days=1)
    response = await client.get(
        f"{API}/locations/{shop['location']}/revenue", params={"start": str(start), "end": str(end)}
    )
    assert response.status_code == 200
    session = app.state.db.session("analytics", force_primary=True)
    try:
        days = await AnalyticsRepository(session).daily_revenue(
            shop["location"],
            dt.datetime.combine(start, dt.time(), dt.UTC),
            dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC),
        )
    finally:
        await session.close()
    expected = RevenueReport(
        location_id=shop["location"],
        start=start,
        end=end,
        days=[DailyRevenueRead.model_validate(d) for d in days],
    ).model_dump(mode="json")
    assert response.json() == expected
    [today] = expected["days"]
    assert Decimal(today["total_revenue"]) == Decimal("20.29")
    assert today["average_transaction"] == "6.76"


async def test_revenue_is_an_index_only_scan(app: FastAPI, postgres: Postgres) -> None:
    """The revenue statement is answered from idx_payments_location_revenue alone."""
    conn = await asyncpg.connect(postgres.primary_url.replace("+asyncpg", ""))
    try:
        await conn.execute("VACUUM payments")  # index-only scans need the visibility map
        await conn.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        since = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
        rows = await conn.fetch("EXPLAIN " + hot.REVENUE, 1, since, since + dt.timedelta(days=31))
    finally:
        await conn.close()
    plan = "\n".join(r[0] for r in rows)
    assert "Index Only Scan using idx_payments_location_revenue" in plan, plan
