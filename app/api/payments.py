from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status

from app.api.contract import DECIMAL, ContractRoute, PathId
from app.api.deps import ReadStatements, answered, get_router
from app.api.reads import JSON
from app.api.responses import errors_doc
from app.operations import reads
from app.operations.payments import change_payment_status, pay
from app.operations.reads import read_payment
from app.schemas import INT64_MAX, PaymentCreate, PaymentPage, PaymentRead, PaymentUpdate

router = APIRouter(tags=["payments"], route_class=ContractRoute)

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
    body: PaymentCreate, idempotency_key: IdempotencyKey, request: Request, response: Response
) -> PaymentRead:
    written = await pay(get_router(request), body, idempotency_key)
    if not written.created:
        response.status_code = status.HTTP_200_OK
    return answered(request, written)


@router.patch(
    "/payments/{payment_id}",
    response_model=PaymentRead,
    responses=errors_doc(404, 409, conflict="Stale version or a transition that is not allowed"),
)
async def update_payment(
    payment_id: PaymentId, body: PaymentUpdate, request: Request
) -> PaymentRead:
    """Move a payment: pending -> completed | failed, failed -> pending, completed -> refunded.

    Compare-and-set on version. A retry of a change already made (the payment is in
    the status asked for, one version on) answers 200 with the payment.
    """
    router = get_router(request)
    return answered(request, await change_payment_status(router, payment_id, body))


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
        int, Query(ge=0, le=INT64_MAX, description="Last id of the previous page"), DECIMAL
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=100), DECIMAL] = 50,
) -> Response:
    return Response(await reads.list_user_payments(db, user_id, after, limit), media_type=JSON)
