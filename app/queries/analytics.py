from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Date, Integer, cast, func, select, type_coerce
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

    @property
    def average_transaction(self) -> Decimal:
        return (self.total_revenue / self.transaction_count).quantize(CENT, ROUND_HALF_UP)


class AnalyticsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def daily_revenue(
        self, location_id: int, start: dt.datetime, end: dt.datetime
    ) -> list[DailyRevenue]:
        """Completed payments of a location in [start, end), grouped by UTC day.

        Exact on both backends: PostgreSQL sums numeric; SQLite keeps money with
        REAL affinity, so there the sum is taken over whole cents as integers.
        """
        if dialect_name(self.session) == "postgresql":
            day: Any = cast(func.timezone("UTC", Payment.created_at), Date)
            total: Any = func.sum(Payment.amount)
        else:
            day = type_coerce(func.date(Payment.created_at), Date)
            total = func.sum(cast(func.round(Payment.amount * 100), Integer))
        stmt = (
            select(day, total, func.count())
            .where(
                Payment.location_id == location_id,
                Payment.status == "completed",
                Payment.created_at >= start,
                Payment.created_at < end,
            )
            .group_by(day)
            .order_by(day)
        )
        rows = (await self.session.execute(stmt)).all()
        if dialect_name(self.session) == "postgresql":
            return [DailyRevenue(d, Decimal(t), n) for d, t, n in rows]
        return [DailyRevenue(d, Decimal(t).scaleb(-2), n) for d, t, n in rows]
