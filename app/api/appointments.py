from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status
from sqlalchemy.exc import IntegrityError

from app.api.deps import HotRead, ReadSession, WriteSession
from app.api.reads import MAX_SCHEDULE_DAYS, ScheduleQuery, no_barber, schedule_body
from app.api.responses import errors_doc
from app.config import Settings
from app.db.models import User, utcnow
from app.db.sessions import Reader
from app.errors import BadRequest, Conflict, NotFound, constraint_error
from app.queries import exists
from app.queries.appointments import TRANSITIONS, AppointmentRepository, BookingFacts, Overlap
from app.schemas import (
    INT64_MAX,
    AppointmentCreate,
    AppointmentRead,
    AppointmentUpdate,
    ScheduledAppointment,
)

router = APIRouter(tags=["appointments"])

AppointmentId = Annotated[int, Path(gt=0, le=INT64_MAX)]
BarberId = Annotated[int, Path(gt=0, le=INT64_MAX)]
_OWN_BARBER = "a client cannot be their own barber"  # also ck_appointments_not_own_barber


@router.post(
    "/appointments",
    status_code=status.HTTP_201_CREATED,
    response_model=AppointmentRead,
    responses=errors_doc(
        409, 422, conflict="The barber or the client is already booked at that time"
    ),
)
async def create_appointment(
    body: AppointmentCreate, session: WriteSession, request: Request
) -> AppointmentRead:
    start, end = body.start_time.astimezone(dt.UTC), body.end_time.astimezone(dt.UTC)
    repository = AppointmentRepository(session)
    check_booking(
        body,
        await repository.booking_facts(body.user_id, body.barber_id, body.service_id),
        request.app.state.settings,
        utcnow(),
    )
    try:
        appointment = await repository.add(
            **body.model_dump(exclude={"start_time", "end_time"}),
            start_time=start,
            end_time=end,
            appointment_date=start.date(),
        )
    except IntegrityError as exc:
        raise constraint_error(
            exc,
            foreign_key=f"user {body.user_id} or location {body.location_id} does not exist",
            check=_OWN_BARBER,
        ) from None
    except Overlap as overlap:
        who = f"barber {body.barber_id}" if overlap.who == "barber" else f"user {body.user_id}"
        raise Conflict(f"{who} already has an appointment overlapping that time") from None
    return AppointmentRead.model_validate(appointment)


def check_booking(
    body: AppointmentCreate, facts: BookingFacts, settings: Settings, now: dt.datetime
) -> None:
    """The booking rules a caller must hear about by name (README, Booking rules)."""
    skew = dt.timedelta(seconds=settings.booking_clock_skew_seconds)
    horizon = dt.timedelta(days=settings.booking_horizon_days)
    if body.start_time < now - skew:
        raise BadRequest("start_time is in the past")
    if body.start_time > now + horizon:
        raise BadRequest(f"start_time is more than {settings.booking_horizon_days} days ahead")
    if body.barber_id == body.user_id:
        raise BadRequest(_OWN_BARBER)
    if facts.barber_role is None:
        raise BadRequest(f"barber {body.barber_id} does not exist")
    if facts.barber_role != "barber":
        raise BadRequest(f"user {body.barber_id} is not a barber")
    if facts.barber_location_id != body.location_id:
        raise BadRequest(f"barber {body.barber_id} does not work at location {body.location_id}")
    if facts.service_location_id is None:
        raise BadRequest(f"service {body.service_id} does not exist")
    if facts.service_location_id != body.location_id or not facts.service_active:
        raise BadRequest(f"service {body.service_id} is not offered at location {body.location_id}")
    minutes = facts.service_minutes
    if body.end_time - body.start_time != dt.timedelta(minutes=minutes or 0):
        raise BadRequest(
            f"service {body.service_id} lasts {minutes} minutes: "
            "end_time must be start_time plus that"
        )


@router.get(
    "/appointments/{appointment_id}", response_model=AppointmentRead, responses=errors_doc(404)
)
async def get_appointment(appointment_id: AppointmentId, session: ReadSession) -> AppointmentRead:
    appointment = await AppointmentRepository(session).get(appointment_id)
    if appointment is None:
        raise NotFound(f"appointment {appointment_id} does not exist")
    return AppointmentRead.model_validate(appointment)


@router.patch(
    "/appointments/{appointment_id}",
    response_model=AppointmentRead,
    responses=errors_doc(404, 409, conflict="Stale version or a transition that is not allowed"),
)
async def update_appointment(
    appointment_id: AppointmentId, body: AppointmentUpdate, session: WriteSession
) -> AppointmentRead:
    repository = AppointmentRepository(session)
    updated = await repository.set_status(appointment_id, body.status, body.version)
    if updated is not None:
        return AppointmentRead.model_validate(updated)
    current = await repository.get(appointment_id)
    if current is None:
        raise NotFound(f"appointment {appointment_id} does not exist")
    if current.version != body.version:
        raise Conflict(
            f"appointment {appointment_id} is at version {current.version}, not {body.version}"
        )
    if current.status not in TRANSITIONS.get(body.status, ()):
        raise Conflict(f"an appointment cannot go from {current.status} to {body.status}")
    raise Conflict(f"appointment {appointment_id} changed concurrently; retry")


@router.get(
    "/barbers/{barber_id}/appointments",
    response_model=list[ScheduledAppointment],
    responses=errors_doc(404, not_found="The barber does not exist"),
)
async def list_barber_appointments(
    barber_id: BarberId, query: Annotated[ScheduleQuery, Query()], reads: HotRead
) -> list[ScheduledAppointment] | Response:
    if isinstance(reads, Reader):
        body = await schedule_body(reads, barber_id, query)
        return Response(body, media_type="application/json")
    start, end = query.days(MAX_SCHEDULE_DAYS)
    appointments = await AppointmentRepository(reads).list_for_barber(
        barber_id, start, end, query.statuses
    )
    if not appointments and not await exists(reads, User, barber_id):
        raise no_barber(barber_id)
    return [ScheduledAppointment.model_validate(a) for a in appointments]
