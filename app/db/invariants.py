"""This service's own rules on its data, checked by `db copy` before a copy goes live.

The copier is generic (counts, checksums, keys, orphans); these rules are about
BookedBarber's schema and run only when the target is that schema."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import asyncpg

from app.db.models import ACTIVE_APPOINTMENT_STATUSES as ACTIVE
from app.db.transfer import Finding
from app.db.transfer.schema import Table

NEEDED = {
    "appointments": ("id", "user_id", "barber_id", "start_time", "end_time", "status"),
    "payments": ("appointment_id", "amount"),
    "users": ("id",),
}


def _exact(value: object) -> Decimal:
    """SQLite money as the decimal it was written as (floats by their shortest repr)."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())


class ServiceRules:
    def applies(self, target: dict[str, Table]) -> bool:
        """The target's migrations made the service's tables (alembic_version present)."""
        if "alembic_version" not in target:
            return False
        return all(
            name in target and all(target[name].column(c) is not None for c in columns)
            for name, columns in NEEDED.items()
        )

    async def check(
        self, source: sqlite3.Connection, conn: asyncpg.Connection, schema: str
    ) -> list[Finding]:
        failures: list[Finding] = []
        s = f'"{schema}"'
        overlaps = await conn.fetch(
            f"""SELECT a.id, b.id FROM {s}.appointments a JOIN {s}.appointments b
            ON a.barber_id = b.barber_id AND a.id < b.id
            AND a.start_time < b.end_time AND b.start_time < a.end_time
            WHERE a.status = ANY($1) AND b.status = ANY($1) ORDER BY 1, 2 LIMIT 5""",
            list(ACTIVE),
        )
        if overlaps:
            failures.append(
                Finding(
                    "invariant",
                    "appointments",
                    None,
                    "overlapping active bookings of one barber",
                    len(overlaps),
                    [tuple(r) for r in overlaps],
                )
            )
        missing = await conn.fetch(
            f"SELECT a.id FROM {s}.appointments a LEFT JOIN {s}.users u ON u.id = a.user_id "
            "WHERE a.user_id IS NOT NULL AND u.id IS NULL ORDER BY a.id LIMIT 5"
        )
        if missing:
            failures.append(
                Finding(
                    "invariant",
                    "appointments",
                    "user_id",
                    "user missing",
                    len(missing),
                    [r[0] for r in missing],
                )
            )
        totals: dict[int, Decimal] = {}
        has_payments = source.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'payments'"
        ).fetchone()
        for appointment, amount in source.execute(
            "SELECT appointment_id, amount FROM payments "
            "WHERE appointment_id IS NOT NULL AND amount IS NOT NULL"
            if has_payments
            else "SELECT 1, 1 WHERE 0"
        ):
            totals[appointment] = totals.get(appointment, Decimal(0)) + _exact(amount)
        copied = {
            r[0]: Decimal(r[1])
            for r in await conn.fetch(
                f"SELECT appointment_id, sum(amount::numeric)::text FROM {s}.payments "
                "WHERE appointment_id IS NOT NULL AND amount IS NOT NULL GROUP BY 1"
            )
        }
        wrong = sorted(k for k in totals.keys() | copied.keys() if totals.get(k) != copied.get(k))
        if wrong:
            failures.append(
                Finding(
                    "invariant",
                    "payments",
                    "amount",
                    "payment totals per appointment differ",
                    len(wrong),
                    wrong[:5],
                )
            )
        return failures
