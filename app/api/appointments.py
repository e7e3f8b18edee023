from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from app.api.contract import ContractRoute, PathId
from app.api.deps import HotRead, ReadSession, answered, get_router
from app.api.reads import MAX_SCHEDULE_DAYS, ScheduleQuery, no_barber, schedule_body
from app.api.responses import errors_doc
from app.db.models import User, utcnow
from app.db.sessions import Reader
from app.errors import NotFound
from app.operations.booking import book, change_appointment_status
from app.queries import exists
from app.queries.appointments import AppointmentRepository
from app.schemas import (
    AppointmentCreate,
    AppointmentRead,
    AppointmentUpdate,
    ScheduledAppointment,
)

router = APIRouter(tags=["appointments"], route_class=ContractRoute)

AppointmentId = PathId
BarberId = PathId
JSON = "application/json"


@router.post(
    "/appointments",
    status_code=status.HTTP_201_CREATED,
    response_model=AppointmentRead,
    responses=errors_doc(
        409, 422, conflict="The barber or the client is already booked at that time"
    ),
)
async def create_appointment(body: AppointmentCreate, request: Request) -> Response:
    appointment = answered(request, await book(get_router(request), body, utcnow()))
    # The body serialized once: FastAPI would validate and encode the model again.
    return Response(appointment.model_dump_json(), status.HTTP_201_CREATED, media_type=JSON)


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
    appointment_id: AppointmentId, body: AppointmentUpdate, request: Request
) -> AppointmentRead:
    router = get_router(request)
    return answered(request, await change_appointment_status(router, appointment_id, body))


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
