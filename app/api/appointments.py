from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy.exc import IntegrityError

from app.api.contract import ContractRoute, PathId
from app.api.deps import ReadStatements, WriteSession, get_router
from app.api.reads import ScheduleQuery, schedule_body
from app.api.responses import errors_doc
from app.config import Settings
from app.db.errors import (
    EXCLUSION_VIOLATION,
    FOREIGN_KEY_VIOLATION,
    constraint_name,
    violation,
)
from app.db.lsn import WRITE_LSN
from app.db.models import utcnow
from app.db.router import DatabaseRouter
from app.errors import BadRequest, Conflict, NotFound, constraint_error
from app.operations.reads import read_appointment
from app.queries import booking
from app.queries.appointments import (
    OVERLAP_CONSTRAINTS,
    TRANSITIONS,
    AppointmentRepository,
    BookingFacts,
    Overlap,
)
from app.schemas import (
    AppointmentCreate,
    AppointmentRead,
    AppointmentUpdate,
    ScheduledAppointment,
)

router = APIRouter(tags=["appointments"], route_class=ContractRoute)

AppointmentId = PathId
BarberId = PathId
_OWN_BARBER = "a client cannot be their own barber"  # also ck_appointments_not_own_barber
JSON = "application/json"


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
) -> Response:
    settings: Settings = request.app.state.settings
    fields = booking_fields(body)
    router = get_router(request)
    if one_statement_writes(router):
        check_request(body, settings, utcnow())
        row, token = await book_in_one_statement(router, body, fields)
        if token:
            request.state.consistency_token = token
        return _created(AppointmentRead.model_validate(dict(row)))
    repository = AppointmentRepository(session)
    check_booking(
        body,
        await repository.booking_facts(body.user_id, body.barber_id, body.service_id),
        settings,
        utcnow(),
    )
    try:
        appointment = await repository.add(**fields)
    except IntegrityError as exc:
        raise constraint_error(
            exc,
            foreign_key=f"user {body.user_id} or location {body.location_id} does not exist",
            check=_OWN_BARBER,
        ) from None
    except Overlap as overlap:
        raise _conflict(body, overlap.who) from None
    return _created(AppointmentRead.model_validate(appointment))


def _created(appointment: AppointmentRead) -> Response:
    """201 with the body serialized once: FastAPI would validate and encode the model again."""
    return Response(appointment.model_dump_json(), status.HTTP_201_CREATED, media_type=JSON)


def booking_fields(body: AppointmentCreate) -> dict[str, Any]:
    """The appointment's columns from a booking request: UTC times, the UTC day."""
    start, end = body.start_time.astimezone(dt.UTC), body.end_time.astimezone(dt.UTC)
    return {
        **body.model_dump(exclude={"start_time", "end_time"}),
        "start_time": start,
        "end_time": end,
        "appointment_date": start.date(),
    }


def one_statement_writes(router: DatabaseRouter) -> bool:
    """PostgreSQL through asyncpg, statements in autocommit: not SQLite, not PgBouncer."""
    return router.primary.dialect.driver == "asyncpg" and not router.settings.pgbouncer


async def book_in_one_statement(
    router: DatabaseRouter, body: AppointmentCreate, fields: dict[str, Any]
) -> tuple[Mapping[str, Any], str | None]:
    """The booking in one statement (app/queries/booking.py), then the consistency token."""
    writer = router.reader("write")
    token: str | None = None
    try:
        try:
            row = await booking.book(writer, fields)
        except Exception as exc:
            who = OVERLAP_CONSTRAINTS.get(constraint_name(exc))
            if violation(exc) == EXCLUSION_VIOLATION and who is not None:
                raise _conflict(body, who) from None
            if violation(exc) == FOREIGN_KEY_VIOLATION:
                raise BadRequest(
                    f"user {body.user_id} or location {body.location_id} does not exist"
                ) from None
            raise
        if row is None:
            facts = await booking.facts(writer, body.barber_id, body.service_id)
            check_facts(body, BookingFacts(**facts))
            # Every rule passes on a second look: the barber or service changed meanwhile.
            raise Conflict("the barber or the service changed while booking; retry")
        if router.replicas:
            # After the statement's own commit, on the same connection: the token covers it.
            lsn = await writer.fetchrow(WRITE_LSN)
            token = str(lsn["lsn"]) if lsn is not None and lsn["lsn"] else None
    finally:
        # A cancelled request must still give its connection back.
        with anyio.CancelScope(shield=True):
            await writer.close()
    return row, token


def _conflict(body: AppointmentCreate, who: str) -> Conflict:
    name = f"barber {body.barber_id}" if who == "barber" else f"user {body.user_id}"
    return Conflict(f"{name} already has an appointment overlapping that time")


def check_booking(
    body: AppointmentCreate, facts: BookingFacts, settings: Settings, now: dt.datetime
) -> None:
    """The booking rules a caller must hear about by name (README, Booking rules)."""
    check_request(body, settings, now)
    check_facts(body, facts)


def check_request(body: AppointmentCreate, settings: Settings, now: dt.datetime) -> None:
    """The rules the request alone decides: no database needed."""
    skew = dt.timedelta(seconds=settings.booking_clock_skew_seconds)
    horizon = dt.timedelta(days=settings.booking_horizon_days)
    if body.start_time < now - skew:
        raise BadRequest("start_time is in the past")
    if body.start_time > now + horizon:
        raise BadRequest(f"start_time is more than {settings.booking_horizon_days} days ahead")
    if body.barber_id == body.user_id:
        raise BadRequest(_OWN_BARBER)


def check_facts(body: AppointmentCreate, facts: BookingFacts) -> None:
    """The rules on the barber and the service; app/queries/booking.py's BOOK holds the same."""
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
async def get_appointment(appointment_id: AppointmentId, db: ReadStatements) -> Response:
    return Response(await read_appointment(db, appointment_id), media_type=JSON)


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
    barber_id: BarberId, query: Annotated[ScheduleQuery, Query()], db: ReadStatements
) -> Response:
    return Response(await schedule_body(db, barber_id, query), media_type=JSON)
