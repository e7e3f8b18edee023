"""Plain async factories: the smallest valid rows, committed, with unique keys."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Appointment, BarbershopLocation, Service, User


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
