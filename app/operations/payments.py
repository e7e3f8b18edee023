"""Paying (once per Idempotency-Key) and moving a payment through its statuses."""

from __future__ import annotations

from collections.abc import Mapping

from app.db.errors import FOREIGN_KEY_VIOLATION, UNIQUE_VIOLATION
from app.db.router import DatabaseRouter
from app.db.statements import Statements
from app.errors import BadRequest, Conflict, NotFound
from app.operations import Written, refusal
from app.queries import payments
from app.queries.payments import BY_KEY, CURRENT, PAY, SET_STATUS, TRANSITIONS
from app.schemas import PaymentCreate, PaymentRead, PaymentUpdate

NO_SUCH = "the user, appointment or location does not exist"


async def pay(router: DatabaseRouter, body: PaymentCreate, key: str) -> Written[PaymentRead]:
    """The payment for `key`: made now (created), or the first call's (a retry).

    A retry is answered by the first result, the payment as it was made, even if the
    rules would now refuse it, but only for the same request: the key with another body
    is a conflict.
    """
    arguments = (body.user_id, body.appointment_id, body.location_id, body.amount, key)
    async with router.statements("write") as db:
        created = True
        try:
            row = await db.fetchrow(PAY, *arguments)
        except Exception as exc:
            error = refusal(
                exc,
                {
                    FOREIGN_KEY_VIOLATION: lambda: BadRequest(NO_SUCH),
                    UNIQUE_VIOLATION: lambda: Conflict(
                        f"appointment {body.appointment_id} already has a payment"
                    ),
                },
            )
            if error is None:
                raise
            # ON CONFLICT settles the key's own race, not that of the appointment's one
            # payment: a retry racing the first call with this key can find the first's
            # payment on the appointment instead. Then it is the first call's result.
            row = await db.fetchrow(BY_KEY, key) if isinstance(error, Conflict) else None
            if row is None:
                raise error from None
            created = False
        if row is None:
            created = False
            row = await _earlier(db, body, key, arguments)
        payment = PaymentRead.model_validate(dict(row))
        same = (payment.user_id, payment.appointment_id, payment.location_id, payment.amount)
        if same != (body.user_id, body.appointment_id, body.location_id, body.amount):
            raise Conflict("this Idempotency-Key was used with a different request body")
        if not created:
            # The first call's answer, as it was made: what happened to the payment since
            # (completed, refunded) is GET /payments/{id}'s to say.
            payment = payment.model_copy(update=payments.MADE)
        token = await db.commit()
    return Written(payment, token, created)


async def _earlier(
    db: Statements, body: PaymentCreate, key: str, arguments: tuple[object, ...]
) -> Mapping[str, object]:
    """PAY made nothing: the key's earlier payment, or the payment rule that refused."""
    earlier = await db.fetchrow(BY_KEY, key)
    if earlier is not None:
        return earlier
    if body.appointment_id is None:  # no rule to break: the key's payment was just deleted
        raise Conflict("the payment for this idempotency key was removed; retry")
    verdicts = await db.fetchrow(payments.CHECK, *arguments)
    assert verdicts is not None  # a FROM of one row, outer joins: always one row
    rule = payments.first_broken(dict(verdicts))
    if rule is None:
        raise Conflict(f"appointment {body.appointment_id} changed while paying; retry")
    words = rule.refusal.format(**body.model_dump(), **verdicts)
    raise Conflict(words) if rule.conflict else BadRequest(words)


async def change_payment_status(
    router: DatabaseRouter, payment_id: int, body: PaymentUpdate
) -> Written[PaymentRead]:
    """Move a payment: pending -> completed | failed, failed -> pending, completed -> refunded.

    Compare-and-set on version. A retry of a change already made (the payment is in
    the status asked for, one version on) answers 200 with the payment.
    """
    async with router.statements("write") as db:
        row = await db.fetchrow(SET_STATUS, payment_id, body.version, body.status)
        if row is None:
            row = await db.fetchrow(CURRENT, payment_id)
            if row is None:
                raise NotFound(f"payment {payment_id} does not exist")
            status, version = row["status"], row["version"]
            if not (status == body.status and version == body.version + 1):
                raise _not_moved(payment_id, body, status, version)
        token = await db.commit()
    return Written(PaymentRead.model_validate(dict(row)), token)


def _not_moved(payment_id: int, body: PaymentUpdate, status: object, version: object) -> Conflict:
    if version != body.version:
        return Conflict(
            f"payment {payment_id} is {status} at version {version}, not {body.version}"
        )
    if status not in TRANSITIONS.get(body.status, ()):
        return Conflict(f"a payment cannot go from {status} to {body.status}")
    return Conflict(f"payment {payment_id} changed concurrently; retry")
