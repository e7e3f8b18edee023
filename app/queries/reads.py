"""The reads' statements: rows only, their columns read off the response models.

Each read is one statement structure (FROM, JOIN, WHERE, ORDER) written once, its select
list taken from the `Shape` of the model it answers (app/queries/shapes.py), its SQLite
text rendered from the PostgreSQL one ($1 -> ?1) except where the dialects differ (the
revenue's UTC day and exact money sums). app/operations/reads.py runs them through
app/db/statements.py on every backend and writes the body with the same Shape.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from pydantic import BaseModel
from sqlalchemy import Column, Table
from sqlalchemy.dialects import registry
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from app.db.models import (
    Appointment,
    Base,
    Organization,
    Payment,
    Service,
    StripeAccount,
    User,
    UserOrganization,
)
from app.db.statements import Statement, statement
from app.queries.shapes import Shape, select_list
from app.schemas import (
    AppointmentRead,
    DailyRevenueRead,
    OrganizationMembership,
    PaymentRead,
    ScheduledAppointment,
    StripeAccountRead,
    UserDetail,
)

_PLACEHOLDER = re.compile(r"\$(\d+)")
USER_SHAPE = Shape(UserDetail, apart=("stripe_account",))
APPOINTMENT_SHAPE = Shape(AppointmentRead)
PAYMENT_SHAPE = Shape(PaymentRead)
SCHEDULE_SHAPE = Shape(ScheduledAppointment)
DAY_SHAPE = Shape(DailyRevenueRead)


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)  # declared with columns: a Table, not any FromClause


def _types(table: Table, fields: tuple[str, ...], prefix: str = "") -> dict[str, TypeEngine[Any]]:
    """Result column -> the table column's type, so rows decode alike on both backends."""
    return {prefix + name: table.c[name].type for name in fields}


def _of(
    table: Table, alias: str, shape: Shape, prefix: str = ""
) -> tuple[str, dict[str, TypeEngine[Any]]]:
    fields = shape.fields()
    return select_list(alias, fields, prefix), _types(table, fields, prefix)


_APPOINTMENTS, _APPOINTMENT_TYPES = _of(_table(Appointment), "a", APPOINTMENT_SHAPE)
_PAYMENTS, _PAYMENT_TYPES = _of(_table(Payment), "p", PAYMENT_SHAPE)

USER_PAYMENTS_PAGE = statement(
    f"SELECT {_PAYMENTS} FROM payments p WHERE p.user_id = $1 AND p.id > $2 ORDER BY p.id LIMIT $3",
    columns=_PAYMENT_TYPES,
)
APPOINTMENT = statement(
    f"SELECT {_APPOINTMENTS} FROM appointments a WHERE a.id = $1", columns=_APPOINTMENT_TYPES
)
PAYMENT = statement(f"SELECT {_PAYMENTS} FROM payments p WHERE p.id = $1", columns=_PAYMENT_TYPES)


@dataclass(frozen=True)
class UserPart:
    """One part of GET /users/{id}'s one statement: the user's row, or a relation's rows.

    `columns`: field -> the table column it is (its alias.name in `source`); `order`:
    the expressions its rows sort by (a timestamp, an id); `many`: a list, else one
    object or null.
    """

    name: str
    source: str
    columns: Mapping[str, tuple[str, Column[Any]]]
    order: tuple[str, str]
    many: bool
    shape: Shape


def _columns(
    shape: Shape, tables: tuple[tuple[str, Table], ...]
) -> dict[str, tuple[str, Column[Any]]]:
    """field -> (alias, column) for a shape's fields, each from the first table that has it."""
    out: dict[str, tuple[str, Column[Any]]] = {}
    for name in shape.fields():
        alias, table = next((a, t) for a, t in tables if name in t.c)
        out[name] = (alias, table.c[name])
    return out


def _part(
    name: str,
    model: type[BaseModel],
    tables: tuple[tuple[str, Table], ...],
    source: str,
    order: tuple[str, str],
) -> UserPart:
    shape = Shape(model, f"{name}__") if name else USER_SHAPE
    many = name != "stripe_account"
    return UserPart(name, source, _columns(shape, tables), order, many, shape)


_NONE = ("NULL", "NULL")
# The user first (part 0), then the relations ?include= may name, in UserDetail's order.
USER_PARTS = (
    _part("", UserDetail, (("u", _table(User)),), "FROM users u WHERE u.id = $1", _NONE),
    _part(
        "appointments",
        AppointmentRead,
        (("a", _table(Appointment)),),
        "FROM appointments a WHERE a.user_id = $1",
        ("a.start_time", "a.id"),
    ),
    _part(
        "payments",
        PaymentRead,
        (("p", _table(Payment)),),
        "FROM payments p WHERE p.user_id = $1",
        ("NULL", "p.id"),
    ),
    _part(
        "organizations",
        OrganizationMembership,
        (("m", _table(UserOrganization)), ("o", _table(Organization))),
        "FROM user_organizations m JOIN organizations o ON o.id = m.organization_id"
        " WHERE m.user_id = $1",
        ("NULL", "m.id"),
    ),
    _part(
        "stripe_account",
        StripeAccountRead,
        (("s", _table(StripeAccount)),),
        "FROM stripe_accounts s WHERE s.user_id = $1",
        _NONE,
    ),
)
USER_RELATIONS = {part.name: part for part in USER_PARTS[1:]}
assert tuple(USER_RELATIONS) == USER_SHAPE.apart
_POSTGRES: Dialect = registry.load("postgresql")()
_SORT = (_table(Appointment).c.start_time, _table(Appointment).c.id)


def _null(column: Column[Any], dialect: str) -> str:
    # PostgreSQL types a UNION's column by its first branch: a NULL there needs its type.
    if dialect == "sqlite":
        return "NULL"
    return f"NULL::{column.type.compile(dialect=_POSTGRES)}"


def _branch(index: int, parts: tuple[UserPart, ...], dialect: str) -> str:
    own = parts[index]
    values = [f"{USER_PARTS.index(own)} AS part"]
    for key, column, expression in zip(("s1", "s2"), _SORT, own.order, strict=True):
        values.append(f"{expression if expression != 'NULL' else _null(column, dialect)} AS {key}")
    for part in parts:
        for field, (alias, column) in part.columns.items():
            sql = f"{alias}.{column.name}" if part is own else _null(column, dialect)
            values.append(f"{sql} AS {part.shape.prefix}{field}")
    return f"SELECT {', '.join(values)} {own.source}"


@functools.cache
def user_statement(relations: frozenset[str]) -> Statement:
    """The user (part 0) and the relations asked for (parts 1..4) as rows of one statement.

    Every row has every part's columns (named as its Shape reads them, NULL in the other
    parts' rows) and sorts by part, then by that part's order: one round trip.
    """
    parts = tuple(p for p in USER_PARTS if not p.name or p.name in relations)
    types: dict[str, TypeEngine[Any]] = {}
    for part in parts:
        types.update({part.shape.prefix + f: c.type for f, (_, c) in part.columns.items()})

    def text(dialect: str) -> str:
        branches = [_branch(i, parts, dialect) for i in range(len(parts))]
        return "\nUNION ALL\n".join(branches) + "\nORDER BY part, s1, s2"

    return statement(
        text("postgresql"), sqlite=_PLACEHOLDER.sub(r"?\1", text("sqlite")), columns=types
    )


def _schedule() -> Statement:
    nested = SCHEDULE_SHAPE.nested()
    sources = {
        "user": ("u", _table(User)),
        "service": ("s", _table(Service)),
        "payment": ("p", _table(Payment)),
    }
    parts, types = [_APPOINTMENTS], dict(_APPOINTMENT_TYPES)
    for key, shape in nested.items():
        alias, table = sources[key]
        columns, column_types = _of(table, alias, shape, shape.prefix)
        parts.append(columns)
        types.update(column_types)
    text = f"""SELECT {", ".join(parts)}
FROM appointments a
JOIN users u ON u.id = a.user_id
JOIN services s ON s.id = a.service_id
LEFT JOIN payments p ON p.appointment_id = a.id
WHERE a.barber_id = $1 AND a.appointment_date >= $2 AND a.appointment_date <= $3
  AND {{status}}
ORDER BY a.appointment_date, a.start_time, a.id"""
    # The one clause the dialects write apart: a status among $4's (SQLite has no arrays).
    postgresql = text.format(status="a.status = ANY(string_to_array($4, ','))")
    sqlite = text.format(status="instr(',' || $4 || ',', ',' || a.status || ',') > 0")
    day = _table(Appointment).c.appointment_date
    return statement(
        postgresql,
        sqlite=_PLACEHOLDER.sub(r"?\1", sqlite),
        params=(None, day, day, None),
        columns=types,
    )


# A barber's appointments in the days [$2, $3] with a status in $4 (comma-separated
# statuses), each with its client, service and payment (columns user__*, service__*,
# payment__*, as ScheduledAppointment nests them).
SCHEDULE = _schedule()

USER_EXISTS = statement("SELECT 1 AS found FROM users WHERE id = $1")
LOCATION_EXISTS = statement("SELECT 1 AS found FROM barbershop_locations WHERE id = $1")

_MONEY = _table(Payment).c.amount.type
_DAY_TYPES = {
    "date": _table(Appointment).c.appointment_date.type,
    **dict.fromkeys(("total_revenue", "average_transaction", "refunded_total"), _MONEY),
}
# A location's completed (revenue) and refunded payments by UTC day of creation, for
# payments created in [$2, $3) (midnights UTC). PostgreSQL bins each payment by its UTC
# day with date_bin (arithmetic on the timestamp instead of a time zone conversion per
# payment) and names each day's date once. It sums numeric and
# its round() takes halves away from zero; SQLite keeps money as REAL, so there the sums
# are of whole cents as integers and the average's half-up rounding is integer arithmetic.
REVENUE = statement(
    f"""SELECT {", ".join(DAY_SHAPE.fields())} FROM (
  SELECT (date_bin('1 day', created_at, '2000-01-01 00:00+00') AT TIME ZONE 'UTC')::date AS date,
         coalesce(sum(amount) FILTER (WHERE status = 'completed'), 0) AS total_revenue,
         count(*) FILTER (WHERE status = 'completed') AS transaction_count,
         coalesce(round(sum(amount) FILTER (WHERE status = 'completed')
                        / nullif(count(*) FILTER (WHERE status = 'completed'), 0), 2), 0)
           AS average_transaction,
         coalesce(sum(amount) FILTER (WHERE status = 'refunded'), 0) AS refunded_total,
         count(*) FILTER (WHERE status = 'refunded') AS refund_count
  FROM payments
  WHERE location_id = $1 AND status IN ('completed', 'refunded')
    AND created_at >= $2 AND created_at < $3
  GROUP BY date_bin('1 day', created_at, '2000-01-01 00:00+00')
) d ORDER BY date""",
    sqlite=f"""SELECT {", ".join(DAY_SHAPE.fields())} FROM (
  SELECT date, c / 100.0 AS total_revenue, n AS transaction_count,
         CASE WHEN n > 0 THEN ((2 * c + n) / (2 * n)) / 100.0 ELSE 0 END
           AS average_transaction,
         r / 100.0 AS refunded_total, k AS refund_count
  FROM (
    SELECT date(created_at) AS date,
           coalesce(sum(CASE WHEN status = 'completed' THEN cents END), 0) AS c,
           count(CASE WHEN status = 'completed' THEN 1 END) AS n,
           coalesce(sum(CASE WHEN status = 'refunded' THEN cents END), 0) AS r,
           count(CASE WHEN status = 'refunded' THEN 1 END) AS k
    FROM (SELECT created_at, status, CAST(round(amount * 100) AS INTEGER) AS cents
          FROM payments
          WHERE location_id = ?1 AND status IN ('completed', 'refunded')
            AND date(created_at) >= date(?2) AND date(created_at) < date(?3))
    GROUP BY 1
  )
) ORDER BY date""",
    params=(None, _table(Payment).c.created_at, _table(Payment).c.created_at),
    columns=_DAY_TYPES,
)
