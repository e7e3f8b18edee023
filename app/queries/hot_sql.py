"""The hot reads' documents, written as JSON by PostgreSQL in one statement each.

Each statement returns the whole response body (or NULL where the route answers 404),
so a read is one round trip on its pooled connection and Python passes the bytes on:
no rows to decode, no dicts to build, no JSON to encode. The JSON is the API's shape
(app/schemas.py): timestamps in UTC with `Z` and microseconds only when not zero, as
pydantic and orjson write them; money as strings with its scale; dates ISO 8601.
The bytes are the routes' too: compact (`{"id":1,"name":"Ana"}`, no space after `:` or
`,`, as FastAPI renders a model). PostgreSQL's json_build_object and json_agg write
`"id" : 1` and `}, \n {`, so objects and arrays are put together here as text: numbers
and booleans by their ::text, times and money quoted, other text by to_json (whose
escapes are those of Python's json module). tests/test_same_bytes.py holds the bytes
equal to SQLite's; bench/hot_json.py times the statements.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

APPOINTMENT_FIELDS = (
    "id",
    "user_id",
    "barber_id",
    "service_id",
    "location_id",
    "appointment_date",
    "start_time",
    "end_time",
    "status",
    "notes",
    "version",
    "created_at",
    "updated_at",
)
_TIMESTAMPS = frozenset({"start_time", "end_time", "created_at", "updated_at"})


def ts(column: str) -> str:
    """A timestamptz as the API writes it: 2024-05-01T09:30:00Z, or ...09:30:00.000123Z."""
    return (
        f"replace(to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
        "'.000000Z', 'Z')"
    )


class Json(str):
    """An SQL expression whose text is already a JSON document (an object or an array)."""


class Plain(str):
    """An SQL expression whose ::text is its JSON: a number or a boolean (true, false)."""


class Quoted(str):
    """An SQL text expression that needs quotes and nothing escaped: times, money."""


def _value(sql: str) -> str:
    # Each value its cheapest way: to_json (which looks up the type's output function on
    # every call) only for text that may need escapes.
    if isinstance(sql, Json):
        return f"coalesce({sql}, 'null')"
    if isinstance(sql, Plain):
        return f"coalesce(({sql})::text, 'null')"
    if isinstance(sql, Quoted):
        return f"coalesce('\"' || {sql} || '\"', 'null')"
    return f"coalesce(to_json({sql})::text, 'null')"


def obj(pairs: Iterable[tuple[str, str]]) -> Json:
    """A compact JSON object over (key, SQL expression) pairs, in their order.

    Keys are the code's own identifiers (no quoting needed); a value is written as its
    kind says (`Json`, `Plain`, `Quoted`, else by to_json); NULL is `null`.
    """
    parts: list[str] = []
    for i, (key, sql) in enumerate(pairs):
        assert key.isidentifier(), key
        parts += [f"'{',' if i else '{'}\"{key}\":'", _value(sql)]
    return Json("(" + " || ".join(parts) + " || '}')")


_NUMBERS = frozenset(
    {"id", "user_id", "barber_id", "service_id", "location_id", "appointment_id", "version"}
)


def _column(alias: str, name: str) -> str:
    column = f"{alias}.{name}"
    if name in _TIMESTAMPS:
        return Quoted(ts(column))
    if name in _NUMBERS:
        return Plain(column)
    if name == "amount":
        return Quoted(f"{column}::text")
    return column


def array(element: Json, order: str) -> Json:
    """The aggregate: a compact JSON array of `element` in `order`, NULL over no rows."""
    return Json(f"'[' || string_agg({element}, ',' ORDER BY {order}) || ']'")


def agg(element: Json, rest: str, order: str) -> Json:
    """A JSON array of `element` over `rest` (FROM ... WHERE ...), `[]` when empty."""
    return Json(f"(SELECT coalesce({array(element, order)}, '[]') {rest})")


APPOINTMENT = obj((name, _column("a", name)) for name in APPOINTMENT_FIELDS)
PAYMENT_FIELDS = (
    "id",
    "user_id",
    "appointment_id",
    "location_id",
    "amount",
    "currency",
    "status",
    "version",
    "created_at",
)
PAYMENT = obj((name, _column("p", name)) for name in PAYMENT_FIELDS)

_USER: list[tuple[str, str]] = [
    ("id", Plain("u.id")),
    ("email", "u.email"),
    ("name", "u.name"),
    ("phone", "u.phone"),
    ("unified_role", "u.unified_role"),
    ("location_id", Plain("u.location_id")),
    ("is_active", Plain("u.is_active")),
    ("created_at", Quoted(ts("u.created_at"))),
]
_RELATIONS = {
    "appointments": agg(
        APPOINTMENT, "FROM appointments a WHERE a.user_id = u.id", "a.start_time, a.id"
    ),
    "payments": agg(PAYMENT, "FROM payments p WHERE p.user_id = u.id", "p.id"),
    "organizations": agg(
        obj(
            [
                ("organization_id", Plain("m.organization_id")),
                ("name", "o.name"),
                ("slug", "o.slug"),
                ("role", "m.role"),
            ]
        ),
        "FROM user_organizations m JOIN organizations o ON o.id = m.organization_id "
        "WHERE m.user_id = u.id",
        "m.id",
    ),
    "stripe_account": Json(
        "(SELECT "
        + obj(
            [
                ("stripe_account_id", "s.stripe_account_id"),
                ("charges_enabled", Plain("s.charges_enabled")),
                ("payouts_enabled", Plain("s.payouts_enabled")),
            ]
        )
        + " FROM stripe_accounts s WHERE s.user_id = u.id)"
    ),
}


@functools.cache
def user_statement(relations: frozenset[str]) -> str:
    """The user and the relations asked for, as one JSON object (no row: no such user)."""
    pairs = _USER + [(name, sql) for name, sql in _RELATIONS.items() if name in relations]
    return f"SELECT {obj(pairs)} AS body FROM users u WHERE u.id = $1"


_SCHEDULE_ITEM = obj(
    [
        *((name, _column("a", name)) for name in APPOINTMENT_FIELDS),
        (
            "user",
            obj(
                [
                    ("id", Plain("a.user_id")),
                    ("name", "u.name"),
                    ("email", "u.email"),
                    ("phone", "u.phone"),
                ]
            ),
        ),
        (
            "service",
            obj(
                [
                    ("id", Plain("a.service_id")),
                    ("name", "s.name"),
                    ("duration_minutes", Plain("s.duration_minutes")),
                    ("price", Quoted("s.price::text")),
                ]
            ),
        ),
        ("payment", Json(f"CASE WHEN p.id IS NULL THEN NULL ELSE {PAYMENT} END")),
    ]
)
_SCHEDULE_ITEMS = array(_SCHEDULE_ITEM, "a.appointment_date, a.start_time, a.id")
# A barber's appointments in [$2, $3] with a status in $4, each with its client, service
# and payment; `[]` for a barber with none, NULL (404) when no such user exists.
SCHEDULE = f"""
SELECT coalesce(
    (SELECT {_SCHEDULE_ITEMS}
     FROM appointments a
     JOIN users u ON u.id = a.user_id
     JOIN services s ON s.id = a.service_id
     LEFT JOIN payments p ON p.appointment_id = a.id
     WHERE a.barber_id = $1 AND a.appointment_date >= $2 AND a.appointment_date <= $3
       AND a.status = ANY($4::text[])),
    CASE WHEN EXISTS (SELECT 1 FROM users WHERE id = $1) THEN '[]' END
) AS body
"""

_DAY = obj(
    [
        ("date", "d.date"),
        ("total_revenue", Quoted("d.total_revenue")),
        ("transaction_count", Plain("d.transaction_count")),
        ("average_transaction", Quoted("d.average_transaction")),
        ("refunded_total", Quoted("d.refunded_total")),
        ("refund_count", Plain("d.refund_count")),
    ]
)
_REPORT = obj(
    [
        ("location_id", Plain("l.id")),
        ("start", "$4::date"),
        ("end", "$5::date"),
        ("days", Json(f"(SELECT coalesce({array(_DAY, 'd.date')}, '[]') FROM d)")),
    ]
)
# The same days and sums as AnalyticsRepository.daily_revenue, for payments created in
# [$2, $3) (the report's UTC days $4..$5); PostgreSQL's round() on numeric rounds halves
# away from zero, as ROUND_HALF_UP does there. NULL (404) when no such location exists.
REVENUE = f"""
WITH d AS (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS date,
           coalesce(sum(amount) FILTER (WHERE status = 'completed'), 0.00)::text
             AS total_revenue,
           count(*) FILTER (WHERE status = 'completed') AS transaction_count,
           coalesce(round(sum(amount) FILTER (WHERE status = 'completed')
                          / nullif(count(*) FILTER (WHERE status = 'completed'), 0), 2),
                    0.00)::text AS average_transaction,
           coalesce(sum(amount) FILTER (WHERE status = 'refunded'), 0.00)::text
             AS refunded_total,
           count(*) FILTER (WHERE status = 'refunded') AS refund_count
    FROM payments
    WHERE location_id = $1 AND status IN ('completed', 'refunded')
      AND created_at >= $2 AND created_at < $3
    GROUP BY 1
)
SELECT {_REPORT} AS body
FROM barbershop_locations l WHERE l.id = $1
"""
