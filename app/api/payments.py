from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query, Request, Response, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.appointments import one_statement_writes
from app.api.contract import ContractRoute, PathId
from app.api.deps import ReadStatements, WriteSession, get_router
from app.api.reads import JSON
from app.api.responses import errors_doc
from app.db.errors import FOREIGN_KEY_VIOLATION, UNIQUE_VIOLATION, violation
from app.db.lsn import WRITE_LSN
from app.db.models import PAYABLE_APPOINTMENT_STATUSES
from app.db.router import DatabaseRouter
from app.errors import BadRequest, Conflict, NotFound, constraint_error
from app.operations import reads
from app.operations.reads import read_payment
from app.queries import payments
from app.queries.payments import TRANSITIONS, PaymentRepository
from app.schemas import INT64_MAX, PaymentCreate, PaymentPage, PaymentRead, PaymentUpdate

router = APIRouter(tags=["payments"], route_class=ContractRoute)
_NO_SUCH = "the user, appointment or location does not exist"

PaymentId = PathId
UserId = PathId
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
        **errors_doc(
            409,
            conflict="The key was used with another body, the appointment is paid, "
            "or it is cancelled or a no-show",
        ),
    },
)
async def create_payment(
    body: PaymentCreate,
    idempotency_key: IdempotencyKey,
    session: WriteSession,
    request: Request,
    response: Response,
) -> PaymentRead:
    router = get_router(request)
    if one_statement_writes(router):
        payment, created = await _pay(router, body, idempotency_key, request)
    else:
        payment, created = await _pay_in_transaction(session, body, idempotency_key)
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
    return payment


async def _pay_in_transaction(
    session: AsyncSession, body: PaymentCreate, idempotency_key: str
) -> tuple[PaymentRead, bool]:
    repository = PaymentRepository(session)
    # A retry is answered by the first result even if the rules would now refuse it.
    earlier = await repository.get_by_idempotency_key(idempotency_key)
    if earlier is None and body.appointment_id is not None:
        check_payable(body, await repository.terms(body.appointment_id))
    try:
        payment, created = (
            (earlier, False)
            if earlier is not None
            else await repository.add_once(idempotency_key, **body.model_dump())
        )
    except IntegrityError as exc:
        raise constraint_error(
            exc,
            foreign_key=_NO_SUCH,
            unique=f"appointment {body.appointment_id} already has a payment",
        ) from None
    except LookupError:
        raise _removed() from None
    return PaymentRead.model_validate(payment), created


async def _pay(
    router: DatabaseRouter, body: PaymentCreate, key: str, request: Request
) -> tuple[PaymentRead, bool]:
    """One statement on PostgreSQL (app/queries/payments.py's PAY), then the token."""
    writer = router.reader("write")
    try:
        try:
            args = (body.user_id, body.appointment_id, body.location_id, body.amount)
            row = await payments.pay(writer, key, *args)
        except Exception as exc:
            code = violation(exc)
            if code == FOREIGN_KEY_VIOLATION:
                raise BadRequest(_NO_SUCH) from None
            if code == UNIQUE_VIOLATION:
                raise Conflict(f"appointment {body.appointment_id} already has a payment") from None
            raise
        if row is None:
            # The key was taken (a retry is answered by the first result, even if the
            # rules would now refuse it), or a payment rule refused: which one, in words.
            earlier = await payments.by_key(writer, key)
            if earlier is not None:
                return PaymentRead.model_validate(dict(earlier)), False
            if body.appointment_id is None:
                raise _removed()
            check_payable(body, await payments.terms(writer, body.appointment_id))
            raise Conflict(f"appointment {body.appointment_id} changed while paying; retry")
        if router.replicas:
            lsn = await writer.fetchrow(WRITE_LSN)
            if lsn is not None and lsn["lsn"]:
                request.state.consistency_token = str(lsn["lsn"])
    finally:
        # A cancelled request must still give its connection back.
        with anyio.CancelScope(shield=True):
            await writer.close()
    return PaymentRead.model_validate(dict(row)), True


def _removed() -> Conflict:
    return Conflict("the payment for this idempotency key was removed; retry")


def check_payable(body: PaymentCreate, terms: Any) -> None:
    """The payment rules for an appointment (README, Payments); terms as PaymentRepository's."""
    if terms is None:
        raise BadRequest(f"appointment {body.appointment_id} does not exist")
    user_id, location_id, appointment_status, price = tuple(terms)
    if (user_id, location_id) != (body.user_id, body.location_id):
        raise BadRequest(
            f"appointment {body.appointment_id} belongs to user {user_id} "
            f"at location {location_id}; a payment for it must too"
        )
    if appointment_status not in PAYABLE_APPOINTMENT_STATUSES:
        raise Conflict(
            f"appointment {body.appointment_id} is {appointment_status}; it cannot be paid"
        )
    if body.amount != price:
        raise BadRequest(f"the amount must be the service's price, {price:.2f}")


@router.patch(
    "/payments/{payment_id}",
    response_model=PaymentRead,
    responses=errors_doc(404, 409, conflict="Stale version or a transition that is not allowed"),
)
async def update_payment(
    payment_id: PaymentId, body: PaymentUpdate, session: WriteSession
) -> PaymentRead:
    """Move a payment: pending -> completed | failed, failed -> pending, completed -> refunded.

    Compare-and-set on version. A retry of a change already made (the payment is in
    the status asked for, one version on) answers 200 with the payment.
    """
    repository = PaymentRepository(session)
    updated = await repository.set_status(payment_id, body.status, body.version)
    if updated is not None:
        return PaymentRead.model_validate(updated)
    current = await repository.get(payment_id)
    if current is None:
        raise NotFound(f"payment {payment_id} does not exist")
    if current.status == body.status and current.version == body.version + 1:
        return PaymentRead.model_validate(current)
    if current.version != body.version:
        raise Conflict(
            f"payment {payment_id} is {current.status} at version {current.version}, "
            f"not {body.version}"
        )
    if current.status not in TRANSITIONS.get(body.status, ()):
        raise Conflict(f"a payment cannot go from {current.status} to {body.status}")
    raise Conflict(f"payment {payment_id} changed concurrently; retry")


@router.get("/payments/{payment_id}", response_model=PaymentRead, responses=errors_doc(404))
async def get_payment(payment_id: PaymentId, db: ReadStatements) -> Response:
    return Response(await read_payment(db, payment_id), media_type=JSON)


@router.get(
    "/users/{user_id}/payments",
    response_model=PaymentPage,
    responses=errors_doc(404, not_found="The user does not exist"),
)
async def list_user_payments(
    user_id: UserId,
    db: ReadStatements,
    after: Annotated[
        int, Query(ge=0, le=INT64_MAX, description="Last id of the previous page")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> Response:
    return Response(await reads.list_user_payments(db, user_id, after, limit), media_type=JSON)
