"""Booking an appointment and moving it through its statuses."""

from __future__ import annotations

import datetime as dt

from app.config import Settings
from app.db.errors import (
    CHECK_VIOLATION,
    EXCLUSION_VIOLATION,
    FOREIGN_KEY_VIOLATION,
    constraint_name,
)
from app.db.router import DatabaseRouter
from app.errors import AppError, BadRequest, Conflict, NotFound
from app.operations import Written, refusal
from app.queries import booking
from app.queries.appointments import CURRENT, SET_STATUS, TRANSITIONS
from app.queries.booking import BookingRule
from app.schemas import AppointmentCreate, AppointmentRead, AppointmentUpdate

# Also ck_appointments_not_own_barber on PostgreSQL.
OWN_BARBER = "a client cannot be their own barber"


def check_request(body: AppointmentCreate, settings: Settings, now: dt.datetime) -> None:
    """The rules the request alone decides: no database needed."""
    skew = dt.timedelta(seconds=settings.booking_clock_skew_seconds)
    horizon = dt.timedelta(days=settings.booking_horizon_days)
    if body.start_time < now - skew:
        raise BadRequest("start_time is in the past")
    if body.start_time > now + horizon:
        raise BadRequest(f"start_time is more than {settings.booking_horizon_days} days ahead")
    if body.barber_id == body.user_id:
        raise BadRequest(OWN_BARBER)


async def book(
    router: DatabaseRouter, body: AppointmentCreate, now: dt.datetime
) -> Written[AppointmentRead]:
    """Book the slot: the request's rules, then one statement that holds the others."""
    check_request(body, router.settings, now)
    arguments = booking.arguments(body)
    async with router.statements("write") as db:
        try:
            row = await db.fetchrow(booking.BOOK, *arguments)
        except Exception as exc:
            error = _refusal(exc, body)
            if error is None:
                raise
            raise error from None
        if row is None:
            verdicts = await db.fetchrow(booking.CHECK, *arguments)
            assert verdicts is not None  # a FROM of one row, outer joins: always one row
            rule = booking.first_broken(dict(verdicts))
            if rule is None:  # every rule holds on a second look: a row changed meanwhile
                raise Conflict("the barber or the service changed while booking; retry")
            raise _refused(rule, body, verdicts.get("service_minutes"))
        token = await db.commit()
    return Written(AppointmentRead.model_validate(dict(row)), token)


def _refused(rule: BookingRule, body: AppointmentCreate, minutes: object) -> AppError:
    words = rule.refusal.format(**body.model_dump(), service_minutes=minutes)
    return Conflict(words) if rule.conflict else BadRequest(words)


def _refusal(exc: BaseException, body: AppointmentCreate) -> AppError | None:
    overlap = booking.BY_CONSTRAINT.get(constraint_name(exc))
    missing = f"user {body.user_id} or location {body.location_id} does not exist"
    return refusal(
        exc,
        {
            EXCLUSION_VIOLATION: lambda: _refused(overlap, body, None) if overlap else None,
            FOREIGN_KEY_VIOLATION: lambda: BadRequest(missing),
            CHECK_VIOLATION: lambda: BadRequest(OWN_BARBER),
        },
    )


async def change_appointment_status(
    router: DatabaseRouter, appointment_id: int, body: AppointmentUpdate
) -> Written[AppointmentRead]:
    """Compare-and-set on version, along TRANSITIONS; a refusal says which check failed."""
    async with router.statements("write") as db:
        row = await db.fetchrow(SET_STATUS, appointment_id, body.version, body.status)
        if row is None:
            current = await db.fetchrow(CURRENT, appointment_id)
            if current is None:
                raise NotFound(f"appointment {appointment_id} does not exist")
            if current["version"] != body.version:
                raise Conflict(
                    f"appointment {appointment_id} is at version {current['version']}, "
                    f"not {body.version}"
                )
            if current["status"] not in TRANSITIONS.get(body.status, ()):
                raise Conflict(
                    f"an appointment cannot go from {current['status']} to {body.status}"
                )
            raise Conflict(f"appointment {appointment_id} changed concurrently; retry")
        token = await db.commit()
    return Written(AppointmentRead.model_validate(dict(row)), token)
