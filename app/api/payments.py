from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response, status
from sqlalchemy.exc import IntegrityError

from app.api.deps import ReadSession, WriteSession
from app.errors import BadRequest, Conflict, NotFound, constraint_error
from app.queries.appointments import AppointmentRepository
from app.queries.payments import PaymentRepository
from app.schemas import INT64_MAX, PaymentCreate, PaymentPage, PaymentRead

router = APIRouter(tags=["payments"])

PaymentId = Annotated[int, Path(gt=0, le=INT64_MAX)]
UserId = Annotated[int, Path(gt=0, le=INT64_MAX)]
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Printable ASCII, unique per intended payment; a retry with the same "
        "key and body returns the first result",
    ),
]


@router.post(
    "/payments",
    status_code=status.HTTP_201_CREATED,
    response_model=PaymentRead,
    responses={
        200: {"model": PaymentRead, "description": "A retry: the payment made by the first call"},
        409: {"description": "The key was used with another body, or the appointment is paid"},
    },
)
async def create_payment(
    body: PaymentCreate,
    idempotency_key: IdempotencyKey,
    session: WriteSession,
    response: Response,
) -> PaymentRead:
    if body.appointment_id is not None:
        appointment = await AppointmentRepository(session).get(body.appointment_id)
        if appointment is None:
            raise BadRequest(f"appointment {body.appointment_id} does not exist")
        if (appointment.user_id, appointment.location_id) != (body.user_id, body.location_id):
            raise BadRequest(
                f"appointment {body.appointment_id} belongs to user {appointment.user_id} "
                f"at location {appointment.location_id}; a payment for it must too"
            )
    try:
        payment, created = await PaymentRepository(session).add_once(
            idempotency_key, **body.model_dump()
        )
    except IntegrityError as exc:
        raise constraint_error(
            exc,
            foreign_key="the user, appointment or location does not exist",
            unique=f"appointment {body.appointment_id} already has a payment",
        ) from None
    except LookupError:
        raise Conflict("the payment for this idempotency key was removed; retry") from None
    same = (
        payment.user_id == body.user_id
        and payment.appointment_id == body.appointment_id
        and payment.location_id == body.location_id
        and payment.amount == body.amount
    )
    if not same:
        raise Conflict("this Idempotency-Key was used with a different request body")
    if not created:
        response.status_code = status.HTTP_200_OK
    return PaymentRead.model_validate(payment)


@router.get("/payments/{payment_id}", response_model=PaymentRead)
async def get_payment(payment_id: PaymentId, session: ReadSession) -> PaymentRead:
    payment = await PaymentRepository(session).get(payment_id)
    if payment is None:
        raise NotFound(f"payment {payment_id} does not exist")
    return PaymentRead.model_validate(payment)


@router.get("/users/{user_id}/payments", response_model=PaymentPage)
async def list_user_payments(
    user_id: UserId,
    session: ReadSession,
    after: Annotated[
        int, Query(ge=0, le=INT64_MAX, description="Last id of the previous page")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> PaymentPage:
    payments = await PaymentRepository(session).list_for_user(user_id, after=after, limit=limit + 1)
    page = payments[:limit]
    return PaymentPage(
        items=[PaymentRead.model_validate(p) for p in page],
        next_after=page[-1].id if len(payments) > limit else None,
    )
