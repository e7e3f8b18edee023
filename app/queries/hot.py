"""The three hot reads on PostgreSQL: hand-written SQL on the asyncpg connection, orjson out.

The one set of statements and row-to-JSON shapes for these reads on PostgreSQL, used
by the routes and by the lane in front of them (app/api/reads.py calls them for both).
On SQLite the routes answer through the repositories and pydantic, whose shapes the
API tests hold equal to these on both backends. Here each row costs a tuple and a dict
instead of an ORM identity, a pydantic model and a second validation. Statements run
through a routed `Reader`, so routing, retry on a dead replica and the query metrics
stay as they are. None means the parent (user, barber, location) does not exist.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import orjson

from app.db.sessions import Reader
from app.queries.analytics import utc_days

_APPOINTMENT = """a.id, a.user_id, a.barber_id, a.service_id, a.location_id, a.appointment_date,
    a.start_time, a.end_time, a.status, a.notes, a.version, a.created_at, a.updated_at"""
_APPOINTMENT_FIELDS = tuple(c.strip().removeprefix("a.") for c in _APPOINTMENT.split(","))
_PAYMENT = """p.id, p.user_id, p.appointment_id, p.location_id, p.amount::text AS amount,
    p.currency, p.status, p.version, p.created_at"""

USER = """
SELECT id, email, name, phone, unified_role, location_id, is_active, created_at
FROM users WHERE id = $1
"""
USER_APPOINTMENTS = (
    f"SELECT {_APPOINTMENT} FROM appointments a WHERE a.user_id = $1 ORDER BY a.start_time, a.id"
)
USER_PAYMENTS = f"SELECT {_PAYMENT} FROM payments p WHERE p.user_id = $1 ORDER BY p.id"
USER_ORGANIZATIONS = """
SELECT m.organization_id, o.name, o.slug, m.role
FROM user_organizations m JOIN organizations o ON o.id = m.organization_id
WHERE m.user_id = $1 ORDER BY m.id
"""
USER_STRIPE_ACCOUNT = """
SELECT stripe_account_id, charges_enabled, payouts_enabled FROM stripe_accounts WHERE user_id = $1
"""
_RELATIONS = {
    "appointments": USER_APPOINTMENTS,
    "payments": USER_PAYMENTS,
    "organizations": USER_ORGANIZATIONS,
}

SCHEDULE = f"""
SELECT {_APPOINTMENT},
       u.name AS u_name, u.email AS u_email, u.phone AS u_phone,
       s.name AS s_name, s.duration_minutes AS s_minutes, s.price::text AS s_price,
       p.id AS p_id, p.user_id AS p_user_id, p.location_id AS p_location_id,
       p.amount::text AS p_amount, p.currency AS p_currency, p.status AS p_status,
       p.version AS p_version, p.created_at AS p_created_at
FROM appointments a
JOIN users u ON u.id = a.user_id
JOIN services s ON s.id = a.service_id
LEFT JOIN payments p ON p.appointment_id = a.id
WHERE a.barber_id = $1 AND a.appointment_date >= $2 AND a.appointment_date <= $3
  AND a.status = ANY($4::text[])
ORDER BY a.appointment_date, a.start_time, a.id
"""
USER_EXISTS = "SELECT 1 FROM users WHERE id = $1"
LOCATION_EXISTS = "SELECT 1 FROM barbershop_locations WHERE id = $1"
# The same days and sums as AnalyticsRepository.daily_revenue; PostgreSQL's round()
# on numeric rounds halves away from zero, as ROUND_HALF_UP does there.
REVENUE = """
SELECT (created_at AT TIME ZONE 'UTC')::date AS date,
       coalesce(sum(amount) FILTER (WHERE status = 'completed'), 0.00)::text AS total_revenue,
       count(*) FILTER (WHERE status = 'completed') AS transaction_count,
       coalesce(round(sum(amount) FILTER (WHERE status = 'completed')
                      / nullif(count(*) FILTER (WHERE status = 'completed'), 0), 2), 0.00)::text
         AS average_transaction,
       coalesce(sum(amount) FILTER (WHERE status = 'refunded'), 0.00)::text AS refunded_total,
       count(*) FILTER (WHERE status = 'refunded') AS refund_count
FROM payments
WHERE location_id = $1 AND status IN ('completed', 'refunded')
  AND created_at >= $2 AND created_at < $3
GROUP BY 1 ORDER BY 1
"""


def dumps(value: Any) -> bytes:
    # Naive datetimes never occur (timestamptz, TimeZone=UTC); UTC renders as Z, like pydantic.
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)


async def user_document(reader: Reader, user_id: int, relations: Collection[str]) -> bytes | None:
    row = await reader.fetchrow(USER, user_id)
    if row is None:
        return None
    user = dict(row)
    for name, statement in _RELATIONS.items():
        if name in relations:
            user[name] = [dict(r) for r in await reader.fetch(statement, user_id)]
    if "stripe_account" in relations:
        account = await reader.fetchrow(USER_STRIPE_ACCOUNT, user_id)
        user["stripe_account"] = dict(account) if account is not None else None
    return dumps(user)


async def schedule_document(
    reader: Reader, barber_id: int, start: dt.date, end: dt.date, statuses: Collection[str]
) -> bytes | None:
    rows = await reader.fetch(SCHEDULE, barber_id, start, end, sorted(statuses))
    # Only an empty schedule costs the second look: is there such a barber at all?
    if not rows and await reader.fetchrow(USER_EXISTS, barber_id) is None:
        return None
    return dumps(schedule_items(rows))


def schedule_items(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """SCHEDULE's flat rows as ScheduledAppointment's nested shape."""
    items = []
    for r in rows:
        payment = None
        if r["p_id"] is not None:
            payment = {
                "id": r["p_id"],
                "user_id": r["p_user_id"],
                "appointment_id": r["id"],
                "location_id": r["p_location_id"],
                "amount": r["p_amount"],
                "currency": r["p_currency"],
                "status": r["p_status"],
                "version": r["p_version"],
                "created_at": r["p_created_at"],
            }
        items.append(
            {
                **{name: r[name] for name in _APPOINTMENT_FIELDS},
                "user": {
                    "id": r["user_id"],
                    "name": r["u_name"],
                    "email": r["u_email"],
                    "phone": r["u_phone"],
                },
                "service": {
                    "id": r["service_id"],
                    "name": r["s_name"],
                    "duration_minutes": r["s_minutes"],
                    "price": r["s_price"],
                },
                "payment": payment,
            }
        )
    return items


async def revenue_document(
    reader: Reader, location_id: int, start: dt.date, end: dt.date
) -> bytes | None:
    rows = await reader.fetch(REVENUE, location_id, *utc_days(start, end))
    if not rows and await reader.fetchrow(LOCATION_EXISTS, location_id) is None:
        return None
    report = {"location_id": location_id, "start": start, "end": end}
    return dumps({**report, "days": [dict(r) for r in rows]})
