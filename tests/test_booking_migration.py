"""Migration 0005 meets rows that break its rules: it reports them and rewrites nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from app.db.engine import create_engine
from app.db.migrate import upgrade_async
from tests.conftest import database_at, make_settings


@pytest.fixture
async def old_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """A new database at the revision before the booking rules."""
    async with database_at("0004", backend, request, tmp_path) as url:
        yield url


async def run(url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(url, make_settings(url))
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(sql), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


async def revision(url: str) -> str:
    [(version,)] = await run(url, "SELECT version_num FROM alembic_version")
    return str(version)


async def add_user(url: str, email: str, role: str = "client") -> int:
    await run(
        url,
        "INSERT INTO users (email, name, unified_role) VALUES (:e, 'Someone', :r)",
        e=email,
        r=role,
    )
    [(user_id,)] = await run(url, "SELECT id FROM users WHERE email = :e", e=email)
    return int(user_id)


async def add_appointment(url: str, user: int, barber: int, service: int, start: str) -> int:
    begins = dt.datetime.fromisoformat(start)
    await run(
        url,
        "INSERT INTO appointments (user_id, barber_id, service_id, location_id, "
        "appointment_date, start_time, end_time, status) "
        "VALUES (:u, :b, :s, 1, :day, :start, :end, 'confirmed')",
        u=user,
        b=barber,
        s=service,
        day=begins.date(),
        start=begins,
        end=begins + dt.timedelta(minutes=30),
    )
    [(appointment_id,)] = await run(url, "SELECT max(id) FROM appointments")
    return int(appointment_id)


async def test_case_duplicate_emails_stop_the_migration(old_url: str) -> None:
    ids = [
        await add_user(old_url, email)
        for email in ("Ana@Example.com", "ana@example.com", "bo@example.com", "BO@example.com")
    ]
    await add_user(old_url, "cy@example.com")
    with pytest.raises(Exception, match="differ only in case") as refused:
        await upgrade_async(old_url)
    report = str(refused.value)
    assert f"user {ids[0]} <Ana@Example.com>, user {ids[1]} <ana@example.com>" in report
    assert f"user {ids[2]} <bo@example.com>, user {ids[3]} <BO@example.com>" in report
    assert "cy@example.com" not in report
    assert await revision(old_url) == "0004"
    emails = await run(old_url, "SELECT email FROM users ORDER BY id")
    assert [e for (e,) in emails] == [
        "Ana@Example.com",
        "ana@example.com",
        "bo@example.com",
        "BO@example.com",
        "cy@example.com",
    ]


async def _shop(url: str) -> tuple[int, int, int, int]:
    await run(url, "INSERT INTO barbershop_locations (id, name) VALUES (1, 'Shop')")
    await run(
        url,
        "INSERT INTO services (location_id, name, duration_minutes, price) "
        "VALUES (1, 'Cut', 30, 25.00)",
    )
    client = await add_user(url, "client@example.com")
    barbers = [await add_user(url, f"b{i}@example.com", "barber") for i in (1, 2)]
    return client, barbers[0], barbers[1], 1


@pytest.mark.postgres_only
@pytest.mark.parametrize("backend", ["postgresql"])
async def test_client_overlaps_stop_the_migration(old_url: str) -> None:
    client, first, second, service = await _shop(old_url)
    a = await add_appointment(old_url, client, first, service, "2031-01-06T10:00:00+00:00")
    b = await add_appointment(old_url, client, second, service, "2031-01-06T10:15:00+00:00")
    await add_appointment(old_url, client, first, service, "2031-01-06T10:45:00+00:00")
    with pytest.raises(Exception, match="overlapping active appointments") as refused:
        await upgrade_async(old_url)
    assert f"user {client}: appointments {a} and {b}" in str(refused.value)
    assert str(refused.value).count("appointments ") == 1
    assert await revision(old_url) == "0004"
    assert len(await run(old_url, "SELECT id FROM appointments")) == 3


@pytest.mark.postgres_only
@pytest.mark.parametrize("backend", ["postgresql"])
async def test_own_barber_rows_are_reported_and_kept(
    old_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, barber, _, service = await _shop(old_url)
    own = await add_appointment(old_url, barber, barber, service, "2031-01-06T10:00:00+00:00")
    await add_appointment(old_url, client, barber, service, "2031-01-06T11:00:00+00:00")
    with caplog.at_level("WARNING"):
        await upgrade_async(old_url, "0005")
    assert f"appointments {own} have the client as their own barber" in caplog.text
    assert await revision(old_url) == "0005"
    [(validated,)] = await run(
        old_url,
        "SELECT convalidated FROM pg_constraint WHERE conname = 'ck_appointments_not_own_barber'",
    )
    assert validated is False
    assert len(await run(old_url, "SELECT id FROM appointments WHERE id = :i", i=own)) == 1
    # New rows are held to the rule at once.
    with pytest.raises(Exception, match="ck_appointments_not_own_barber"):
        await add_appointment(old_url, client, client, service, "2031-01-07T10:00:00+00:00")
