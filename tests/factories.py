"""Plain async factories: the smallest valid rows, committed, with unique keys."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import (
    Appointment,
    BarbershopLocation,
    Organization,
    Payment,
    Service,
    User,
    UserOrganization,
)


async def location(session: AsyncSession) -> BarbershopLocation:
    row = BarbershopLocation(name=f"Shop {uuid.uuid4().hex[:8]}")
    session.add(row)
    await session.flush()
    return row


async def user(session: AsyncSession, role: str = "client", **fields: object) -> User:
    row = User(
        email=f"{uuid.uuid4().hex}@example.test",
        name=str(fields.pop("name", "Test User")),
        unified_role=role,
        **fields,
    )
    session.add(row)
    await session.flush()
    return row


async def service(session: AsyncSession, location_id: int, minutes: int = 30) -> Service:
    row = Service(
        location_id=location_id, name="Cut", duration_minutes=minutes, price=Decimal("25.00")
    )
    session.add(row)
    await session.flush()
    return row


async def appointment(
    session: AsyncSession,
    *,
    user_id: int,
    barber_id: int,
    service_id: int,
    location_id: int,
    start: dt.datetime,
    minutes: int = 30,
    status: str = "confirmed",
) -> Appointment:
    row = Appointment(
        user_id=user_id,
        barber_id=barber_id,
        service_id=service_id,
        location_id=location_id,
        appointment_date=start.date(),
        start_time=start,
        end_time=start + dt.timedelta(minutes=minutes),
        status=status,
    )
    session.add(row)
    await session.flush()
    return row


async def payment(
    session: AsyncSession,
    *,
    user_id: int,
    location_id: int,
    amount: str,
    appointment_id: int | None = None,
    status: str = "completed",
    created_at: dt.datetime | None = None,
) -> Payment:
    row = Payment(
        user_id=user_id,
        location_id=location_id,
        appointment_id=appointment_id,
        amount=Decimal(amount),
        status=status,
    )
    if created_at is not None:
        row.created_at = created_at
    session.add(row)
    await session.flush()
    return row


async def membership(session: AsyncSession, user_id: int, role: str = "member") -> UserOrganization:
    org = Organization(name="Org", slug=f"org-{uuid.uuid4().hex[:12]}")
    session.add(org)
    await session.flush()
    row = UserOrganization(user_id=user_id, organization_id=org.id, role=role)
    session.add(row)
    await session.flush()
    return row


@asynccontextmanager
async def committed(app: FastAPI, client: object = None) -> AsyncIterator[AsyncSession]:
    """A primary session, committed on exit; the client then reads what it wrote."""
    router = app.state.db
    session: AsyncSession = router.session("write")
    try:
        yield session
        await session.commit()
        token = await router.write_lsn()
        if token and client is not None:
            client.token = token  # type: ignore[attr-defined]
    finally:
        await session.close()
