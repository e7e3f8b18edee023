from __future__ import annotations

import datetime as dt
from typing import Any, Literal, NamedTuple, cast

from sqlalchemy import Row, Table, exists, func, insert, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.errors import EXCLUSION_VIOLATION, constraint_name
from app.db.models import ACTIVE_APPOINTMENT_STATUSES, Appointment, Service, User, utcnow
from app.queries import dialect_name, violation

# The booking is the busiest write. A Core INSERT ... RETURNING with the values as
# parameters skips the ORM's bulk-insert and instance machinery and the per-call cache
# key that .values(...) costs: 0.34 instead of 0.50 ms of CPU per booking.
_TABLE = cast(Table, Appointment.__table__)
_INSERT = insert(_TABLE).returning(*_TABLE.c)

# status -> the statuses it may be reached from.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "confirmed": ("pending",),
    "cancelled": ("pending", "confirmed"),
    "in_progress": ("confirmed",),
    "no_show": ("confirmed",),
    "completed": ("in_progress",),
}


class Overlap(Exception):
    """The booking overlaps an active appointment of its barber or of its client."""

    def __init__(self, who: Literal["barber", "client"]) -> None:
        super().__init__(who)
        self.who = who


# The database's names for the two overlap rules on PostgreSQL (migrations 0003, 0005).
OVERLAP_CONSTRAINTS: dict[str | None, Literal["barber", "client"]] = {
    "ex_appointments_barber_overlap": "barber",
    "ex_appointments_client_overlap": "client",
}


# The advisory lock class of bookings (pg_advisory_xact_lock(class, id)); ids past
# 2**31 wrap, which only makes two unrelated users queue now and then.
BOOKING_LOCK = 0x424B  # "BK"


class BookingFacts(NamedTuple):
    """What the booking rules read about a barber and a service; None where absent."""

    barber_role: str | None
    barber_location_id: int | None
    service_location_id: int | None
    service_minutes: int | None
    service_active: bool | None


class AppointmentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def booking_facts(self, user_id: int, barber_id: int, service_id: int) -> BookingFacts:
        """One round trip: the barber's role and location, the service's location and length.

        On PostgreSQL it also takes the booking locks of the client and the barber
        (transaction advisory locks, in id order): two bookings that could overlap
        share one, so they queue instead of inserting side by side. Concurrent inserts
        into an exclusion constraint otherwise wait on each other's uncommitted rows
        and end in deadlocks (a second each, then 40P01); with the lock the loser's
        insert meets a committed row and fails at once. The constraints still decide.
        """

        def barber(column: Any) -> Any:
            return select(column).where(User.id == barber_id).scalar_subquery()

        def service(column: Any) -> Any:
            return select(column).where(Service.id == service_id).scalar_subquery()

        columns = [
            barber(User.unified_role),
            barber(User.location_id),
            service(Service.location_id),
            service(Service.duration_minutes),
            service(Service.is_active),
        ]
        if dialect_name(self.session) == "postgresql":
            # Evaluated left to right: the lower id first, so no two bookings deadlock.
            columns += [
                func.pg_advisory_xact_lock(BOOKING_LOCK, user % 2**31)
                for user in sorted({user_id, barber_id})
            ]
        row = (await self.session.execute(select(*columns))).one()
        return BookingFacts(*row[:5])

    async def add(self, **fields: Any) -> Row[Any]:
        """Book a slot; Overlap when the barber or the client is busy at that time.

        PostgreSQL's exclusion constraints decide. SQLite has none, but its write
        transactions begin IMMEDIATE, so the checks and the insert are serialized.
        The row has the Appointment's columns as attributes.
        """
        if dialect_name(self.session) != "postgresql":
            who = await self.clash(
                fields["barber_id"], fields["user_id"], fields["start_time"], fields["end_time"]
            )
            if who is not None:
                raise Overlap(who)
        try:
            return (await self.session.execute(_INSERT, fields)).one()
        except IntegrityError as exc:
            who = OVERLAP_CONSTRAINTS.get(constraint_name(exc))
            if violation(exc) == EXCLUSION_VIOLATION and who is not None:
                raise Overlap(who) from None
            raise

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

        The rule where no constraint holds it (SQLite): bookings, and rows a live
        migration brings over (`besides`: the appointment itself)."""
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

    async def set_status(
        self, appointment_id: int, status: str, version: int
    ) -> Appointment | None:
        """Compare-and-set on version; None when the row, version or transition does not match."""
        stmt = (
            update(Appointment)
            .where(
                Appointment.id == appointment_id,
                Appointment.version == version,
                Appointment.status.in_(TRANSITIONS.get(status, ())),
            )
            .values(status=status, version=Appointment.version + 1, updated_at=utcnow())
            .returning(Appointment)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.scalars(stmt)).one_or_none()
