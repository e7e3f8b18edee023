from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Appointment, Payment, Service
from app.queries import insert_for

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

    async def list_for_user(self, user_id: int, *, after: int, limit: int) -> Sequence[Payment]:
        stmt = (
            select(Payment)
            .where(Payment.user_id == user_id, Payment.id > after)
            .order_by(Payment.id)
            .limit(limit)
        )
        return (await self.session.scalars(stmt)).all()
