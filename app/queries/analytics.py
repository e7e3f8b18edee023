from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Date, Integer, case, cast, func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Payment
from app.queries import dialect_name

CENT = Decimal("0.01")


def utc_days(start: dt.date, end: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The instants [start 00:00 UTC, the day after end 00:00 UTC) of an inclusive day range."""
    return (
        dt.datetime.combine(start, dt.time(), dt.UTC),
        dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC),
    )


@dataclass(frozen=True, slots=True)
class DailyRevenue:
    date: dt.date
    total_revenue: Decimal
    transaction_count: int
    refunded_total: Decimal
    refund_count: int

    @property
    def average_transaction(self) -> Decimal:
        if not self.transaction_count:
            return Decimal("0.00")
        return (self.total_revenue / self.transaction_count).quantize(CENT, ROUND_HALF_UP)


class AnalyticsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def daily_revenue(
        self, location_id: int, start: dt.datetime, end: dt.datetime
    ) -> list[DailyRevenue]:
        """Completed and refunded payments of a location in [start, end), by UTC day.

        The rule (README, Revenue): a payment counts on the UTC day it was created;
        completed payments make the revenue, refunded ones are out of it and shown
        apart; pending and failed ones count nowhere.
        Exact on both backends: PostgreSQL sums numeric; SQLite keeps money with
        REAL affinity, so there the sum is taken over whole cents as integers.
        """
        postgres = dialect_name(self.session) == "postgresql"
        cents: Any = Payment.amount if postgres else cast(func.round(Payment.amount * 100), Integer)
        if postgres:
            day: Any = cast(func.timezone("UTC", Payment.created_at), Date)
        else:
            day = type_coerce(func.date(Payment.created_at), Date)

        def of(status: str) -> tuple[Any, Any]:
            chosen = Payment.status == status
            return (
                func.coalesce(func.sum(case((chosen, cents))), 0),
                func.count(case((chosen, 1))),
            )

        stmt = (
            select(day, *of("completed"), *of("refunded"))
            .where(
                Payment.location_id == location_id,
                Payment.status.in_(("completed", "refunded")),
                Payment.created_at >= start,
                Payment.created_at < end,
            )
            .group_by(day)
            .order_by(day)
        )
        rows = (await self.session.execute(stmt)).all()

        def money(value: Any) -> Decimal:
            return Decimal(value) if postgres else Decimal(value).scaleb(-2)

        return [DailyRevenue(d, money(t), n, money(r), k) for d, t, n, r, k in rows]
