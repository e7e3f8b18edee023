from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import PAYABLE_APPOINTMENT_STATUSES, Appointment, Payment, Service
from app.db.sessions import Reader
from app.queries import insert_for

PAYMENT_COLUMNS = (
    "id, user_id, appointment_id, location_id, amount, currency, status, version, "
    "stripe_session_id, idempotency_key, created_at"
)
_PAYABLE = ", ".join(f"'{s}'" for s in PAYABLE_APPOINTMENT_STATUSES)

# A payment on PostgreSQL in one autocommit statement: the appointment's terms checked
# and share-locked (it cannot be cancelled before the insert commits), the insert, and
# the idempotency key's race settled by ON CONFLICT, as add_once does in a transaction.
# No row back: the key was taken (a retry) or a payment rule refused; the caller looks.
PAY = f"""
INSERT INTO payments (user_id, appointment_id, location_id, amount, currency, status, version,
                      idempotency_key, created_at)
WITH payable AS MATERIALIZED (
    SELECT a.id FROM appointments a JOIN services s ON s.id = a.service_id
    WHERE a.id = $2::bigint AND a.user_id = $1::bigint AND a.location_id = $3::bigint
      AND a.status IN ({_PAYABLE}) AND s.price = $4::numeric
    FOR SHARE OF a
)
SELECT $1::bigint, $2::bigint, $3::bigint, $4::numeric, 'usd', 'pending', 1, $5::text, now()
WHERE $2::bigint IS NULL OR EXISTS (SELECT FROM payable)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING {PAYMENT_COLUMNS}
"""
BY_KEY = f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE idempotency_key = $1"
TERMS = """
SELECT a.user_id, a.location_id, a.status, s.price
FROM appointments a JOIN services s ON s.id = a.service_id WHERE a.id = $1
"""


async def pay(
    reader: Reader,
    key: str,
    user_id: int,
    appointment_id: int | None,
    location_id: int,
    amount: Decimal,
) -> Mapping[str, Any] | None:
    """The new payment's row; None when the key was taken or a payment rule refused."""
    return await reader.fetchrow(PAY, user_id, appointment_id, location_id, amount, key)


async def by_key(reader: Reader, key: str) -> Mapping[str, Any] | None:
    return await reader.fetchrow(BY_KEY, key)


async def terms(reader: Reader, appointment_id: int) -> Mapping[str, Any] | None:
    return await reader.fetchrow(TERMS, appointment_id)


# status -> the statuses a payment may reach it from. A failed payment may be tried
# again (back to pending): an appointment keeps one payment row, attempts included.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "completed": ("pending",),
    "failed": ("pending",),
    "refunded": ("completed",),
    "pending": ("failed",),
}


class PaymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_once(self, idempotency_key: str, **fields: Any) -> tuple[Payment, bool]:
        """The payment for this key, and whether this call created it.

        Concurrent retries race on the unique key, never on a prior SELECT: the
        loser's insert does nothing (on PostgreSQL after waiting for the winner to
        commit) and then reads the winner's row.
        """
        stmt = (
            insert_for(self.session, Payment)
            .values(idempotency_key=idempotency_key, **fields)
            .on_conflict_do_nothing(index_elements=[Payment.idempotency_key])
            .returning(Payment)
        )
        created = (await self.session.scalars(stmt)).one_or_none()
        if created is not None:
            return created, True
        existing = await self.get_by_idempotency_key(idempotency_key)
        if existing is None:  # the winner's row vanished: only a concurrent delete does that
            raise LookupError("the payment for this idempotency key was removed")
        return existing, False

    async def get(self, payment_id: int) -> Payment | None:
        return await self.session.get(Payment, payment_id)

    async def terms(self, appointment_id: int) -> Row[int, int, str, Decimal] | None:
        """(user_id, location_id, status, service price) of the appointment to be paid.

        On PostgreSQL the row is share-locked until commit, so the appointment cannot
        be cancelled between this check and the payment's insert; SQLite's write
        transaction is serialized anyway.
        """
        stmt = (
            select(Appointment.user_id, Appointment.location_id, Appointment.status, Service.price)
            .join(Service, Service.id == Appointment.service_id)
            .where(Appointment.id == appointment_id)
            .with_for_update(read=True, of=Appointment)
        )
        return (await self.session.execute(stmt)).one_or_none()

    async def set_status(self, payment_id: int, status: str, version: int) -> Payment | None:
        """Compare-and-set on version; None when the row, version or transition does not match."""
        stmt = (
            update(Payment)
            .where(
                Payment.id == payment_id,
                Payment.version == version,
                Payment.status.in_(TRANSITIONS.get(status, ())),
            )
            .values(status=status, version=Payment.version + 1)
            .returning(Payment)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.scalars(stmt)).one_or_none()

    async def get_by_idempotency_key(self, key: str) -> Payment | None:
        stmt = select(Payment).where(Payment.idempotency_key == key)
        return (await self.session.scalars(stmt)).one_or_none()
