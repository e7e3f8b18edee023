from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from sqlalchemy.exc import IntegrityError

from app.api.deps import HotRead, ReadSession, WriteSession
from app.api.reads import MAX_SCHEDULE_DAYS, ScheduleQuery, no_barber, schedule_body
from app.db.models import User
from app.db.sessions import Reader
from app.errors import Conflict, NotFound, constraint_error
from app.queries import exists
from app.queries.appointments import TRANSITIONS, AppointmentRepository
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


@router.post(
    "/appointments",
    status_code=status.HTTP_201_CREATED,
    response_model=AppointmentRead,
    responses={409: {"description": "The barber is already booked at that time"}},
)
async def create_appointment(body: AppointmentCreate, session: WriteSession) -> AppointmentRead:
    start = body.start_time.astimezone(dt.UTC)
    try:
        appointment = await AppointmentRepository(session).add(
            **body.model_dump(exclude={"start_time", "end_time"}),
            start_time=start,
            end_time=body.end_time,
            appointment_date=start.date(),
        )
    except IntegrityError as exc:
        detail = "the user, barber, service or location does not exist"
        raise constraint_error(exc, foreign_key=detail) from None
    if appointment is None:
        raise Conflict(f"barber {body.barber_id} already has an appointment overlapping that time")
    return AppointmentRead.model_validate(appointment)


@router.get("/appointments/{appointment_id}", response_model=AppointmentRead)
async def get_appointment(appointment_id: AppointmentId, session: ReadSession) -> AppointmentRead:
    appointment = await AppointmentRepository(session).get(appointment_id)
    if appointment is None:
        raise NotFound(f"appointment {appointment_id} does not exist")
    return AppointmentRead.model_validate(appointment)


@router.patch(
    "/appointments/{appointment_id}",
    response_model=AppointmentRead,
    responses={409: {"description": "Stale version or a transition that is not allowed"}},
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
