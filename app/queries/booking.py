"""The booking on PostgreSQL in one statement: the locks, the rules and the insert together.

The ORM path (AppointmentRepository.booking_facts, then add, in a transaction) costs
BEGIN, the facts and locks SELECT, the INSERT and COMMIT: four round trips before the
consistency token. Here one autocommit statement takes the booking locks of the client
and the barber (in id order, as booking_facts does), inserts only when the barber and
the service pass the booking rules (README, Booking rules) and returns the row; the
exclusion constraints still decide overlaps, and the foreign keys the client and
the location. No row back means a rule refused it: the caller reads the facts again
(the rare path) to say which rule, with the route's own words.

bench/reference.py runs this same statement, so the benchmark compares everything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.db.sessions import Reader
from app.queries.appointments import BOOKING_LOCK
from app.queries.reads import APPOINTMENT_SHAPE

APPOINTMENT_COLUMNS = ", ".join(APPOINTMENT_SHAPE.fields())

# The INSERT comes first so the query metrics count it as what it is.
BOOK = f"""
INSERT INTO appointments (user_id, barber_id, service_id, location_id, appointment_date,
                          start_time, end_time, status, notes, version, created_at, updated_at)
WITH locked AS MATERIALIZED (
    SELECT pg_advisory_xact_lock({BOOKING_LOCK}, $9::int) AS first,
           pg_advisory_xact_lock({BOOKING_LOCK}, $10::int) AS second
)
SELECT $1::bigint, $2::bigint, $3::bigint, $4::bigint, $5::date, $6::timestamptz,
       $7::timestamptz, 'pending', $8::text, 1, now(), now()
FROM locked
JOIN users b ON b.id = $2::bigint
JOIN services s ON s.id = $3::bigint
WHERE b.unified_role = 'barber' AND b.location_id = $4::bigint AND s.location_id = $4::bigint
  AND s.is_active AND $7::timestamptz - $6::timestamptz = make_interval(mins => s.duration_minutes)
RETURNING {APPOINTMENT_COLUMNS}
"""

# What a refused booking is told from (AppointmentRepository.booking_facts, without locks).
FACTS = """
SELECT (SELECT unified_role FROM users WHERE id = $1) AS barber_role,
       (SELECT location_id FROM users WHERE id = $1) AS barber_location_id,
       (SELECT location_id FROM services WHERE id = $2) AS service_location_id,
       (SELECT duration_minutes FROM services WHERE id = $2) AS service_minutes,
       (SELECT is_active FROM services WHERE id = $2) AS service_active
"""


def lock_keys(user_id: int, barber_id: int) -> tuple[int, int]:
    """The two booking lock keys, lower id first; the same key twice when the ids are one."""
    first, *rest = sorted({user_id, barber_id})
    second = rest[0] if rest else first
    return first % 2**31, second % 2**31


def book_arguments(fields: Mapping[str, Any]) -> tuple[Any, ...]:
    """BOOK's parameters from the insert's fields (those AppointmentRepository.add takes)."""
    return (
        fields["user_id"],
        fields["barber_id"],
        fields["service_id"],
        fields["location_id"],
        fields["appointment_date"],
        fields["start_time"],
        fields["end_time"],
        fields.get("notes"),
        *lock_keys(fields["user_id"], fields["barber_id"]),
    )


async def book(reader: Reader, fields: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The new appointment's row, or None when a booking rule refused it."""
    return await reader.fetchrow(BOOK, *book_arguments(fields))


async def facts(reader: Reader, barber_id: int, service_id: int) -> Mapping[str, Any]:
    row = await reader.fetchrow(FACTS, barber_id, service_id)
    assert row is not None  # scalar subqueries: always one row
    return row
