from __future__ import annotations

import datetime as dt
from typing import Any, Literal, cast

from sqlalchemy import Table, exists, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import ACTIVE_APPOINTMENT_STATUSES, Appointment
from app.db.statements import NOW, statement
from app.queries import moves, returning
from app.schemas import AppointmentRead

# status -> the statuses it may be reached from.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "confirmed": ("pending",),
    "cancelled": ("pending", "confirmed"),
    "in_progress": ("confirmed",),
    "no_show": ("confirmed",),
    "completed": ("in_progress",),
}
_TABLE = cast(Table, Appointment.__table__)
# Compare-and-set on version, the move allowed by TRANSITIONS; no row when either fails.
SET_STATUS = statement(
    f"""
UPDATE appointments SET status = $3::text, version = version + 1, updated_at = {{now}}
WHERE id = $1::bigint AND version = $2::bigint
  AND (status, $3::text) IN (VALUES {moves(TRANSITIONS)})
RETURNING {returning(AppointmentRead)}
""",
    columns=_TABLE.c,
    now=NOW,
)
CURRENT = statement(
    f"SELECT {returning(AppointmentRead)} FROM appointments WHERE id = $1", columns=_TABLE.c
)


class AppointmentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def clash(
        self,
        barber_id: int,
        user_id: int,
        start: dt.datetime,
        end: dt.datetime,
        *,
        besides: int | None = None,
    ) -> Literal["barber", "client"] | None:
        """Who is busy then with another active appointment ("barber", "client"), or None.

        For rows a live migration brings over to SQLite, where no constraint holds the
        rule (`besides`: the appointment itself); bookings hold it in app/queries/booking.py."""
        sides: tuple[tuple[Literal["barber", "client"], Any, int], ...] = (
            ("barber", Appointment.barber_id, barber_id),
            ("client", Appointment.user_id, user_id),
        )
        for who, column, key in sides:
            clash = exists().where(
                column == key,
                Appointment.status.in_(ACTIVE_APPOINTMENT_STATUSES),
                Appointment.start_time < end,
                Appointment.end_time > start,
                Appointment.id != besides if besides is not None else true(),
            )
            if await self.session.scalar(select(clash)):
                return who
        return None

    async def get(self, appointment_id: int) -> Appointment | None:
        return await self.session.get(Appointment, appointment_id)
