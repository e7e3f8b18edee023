from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from app.api.contract import ContractRoute, PathId
from app.api.deps import ReadStatements, answered, get_router
from app.api.reads import ScheduleQuery, schedule_body
from app.api.responses import errors_doc
from app.db.models import utcnow
from app.operations.booking import book, change_appointment_status
from app.operations.reads import read_appointment
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
async def get_appointment(appointment_id: AppointmentId, db: ReadStatements) -> Response:
    return Response(await read_appointment(db, appointment_id), media_type=JSON)


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
    barber_id: BarberId, query: Annotated[ScheduleQuery, Query()], db: ReadStatements
) -> Response:
    return Response(await schedule_body(db, barber_id, query), media_type=JSON)
