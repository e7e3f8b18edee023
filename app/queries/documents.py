"""The hot reads' documents: each read's JSON statement and its rows, one Shape for both.

A read (app/operations/reads.py) asks the handle for a `Document`: on PostgreSQL the
handle runs `json`, one statement whose result is the body (one round trip, nothing per
row in Python); on SQLite it runs `rows` (app/queries/reads.py) and `render` writes the
body with the Shapes. The JSON statements wrap or reuse the rows statements' FROM and
WHERE and write each value as the Shape's model says (app/queries/json_sql.py), so both
bodies are one shape, byte for byte.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Collection, Sequence
from typing import cast

from app.db.statements import statement
from app.queries import reads
from app.queries.json_sql import Json, agg, array, in_subquery, json_object
from app.queries.shapes import Document, Row, Shape, body
from app.schemas import RevenueReport


def _user_json(relations: frozenset[str]) -> str:
    apart: dict[str, Json] = {}
    for part in reads.USER_PARTS[1:]:
        if part.name not in relations:
            continue
        columns = {part.shape.prefix + f: f"{a}.{c.name}" for f, (a, c) in part.columns.items()}
        element = json_object(part.shape, columns.__getitem__)
        if part.many:
            order = ", ".join(o for o in part.order if o != "NULL")
            apart[part.name] = agg(element, part.source, order)
        else:
            apart[part.name] = Json(f"(SELECT {element} {part.source})")
    user = reads.USER_PARTS[0]
    columns = {f: f"{a}.{c.name}" for f, (a, c) in user.columns.items()}
    document = json_object(reads.USER_SHAPE, columns.__getitem__, apart)
    return f"SELECT {document} AS body {user.source}"


@functools.cache
def user_document(relations: frozenset[str]) -> Document:
    """UserDetail: the user and the relations asked for (absent ones omitted)."""
    asked = [p for p in reads.USER_PARTS[1:] if p.name in relations]

    def render(rows: Sequence[Row], args: tuple[object, ...]) -> bytes | None:
        if not rows:
            return None
        document = reads.USER_SHAPE(rows[0])
        many: dict[str, list[dict[str, object]]] = {}
        for part in asked:
            document[part.name] = many.setdefault(part.name, []) if part.many else None
        for row in rows[1:]:
            part = reads.USER_PARTS[cast(int, row["part"])]
            if part.many:
                many[part.name].append(part.shape(row))
            else:
                document[part.name] = part.shape(row)
        return body(document)

    return Document(statement(_user_json(relations)), reads.user_statement(relations), render)


def _schedule(rows: Sequence[Row], args: tuple[object, ...]) -> bytes:
    return body(reads.SCHEDULE_SHAPE.rows(rows))


_ITEMS = array(
    json_object(reads.SCHEDULE_SHAPE, in_subquery), "r.appointment_date, r.start_time, r.id"
)
# `[]` for a barber with no such appointments, NULL (404) when no such user exists.
SCHEDULE = Document(
    statement(
        f"""SELECT coalesce(
    (SELECT {_ITEMS} FROM ({reads.SCHEDULE.postgresql}) r),
    CASE WHEN EXISTS (SELECT 1 FROM users WHERE id = $1) THEN '[]' END
) AS body"""
    ),
    reads.SCHEDULE,
    _schedule,
    reads.USER_EXISTS,
)

REPORT_SHAPE = Shape(RevenueReport)
_DAY = json_object(reads.DAY_SHAPE, in_subquery)
_DAYS = Json(
    f"(SELECT coalesce({array(_DAY, 'r.date')}, '[]') FROM ({reads.REVENUE.postgresql}) r)"
)
# The report's days: [$2, $3) are the UTC midnights of its first day and of the day after
# its last (app/queries/analytics.py utc_days).
_REPORT_COLUMNS = {
    "location_id": "l.id",
    "start": "($2::timestamptz AT TIME ZONE 'UTC')::date",
    "end": "($3::timestamptz AT TIME ZONE 'UTC')::date - 1",
}
_REPORT = json_object(REPORT_SHAPE, _REPORT_COLUMNS.__getitem__, {"days": _DAYS})


def _revenue(rows: Sequence[Row], args: tuple[object, ...]) -> bytes:
    # read_revenue's arguments (app/operations/reads.py)
    location_id, since, until = cast(tuple[int, dt.datetime, dt.datetime], args)
    start, end = since.date(), (until - dt.timedelta(days=1)).date()
    days = reads.DAY_SHAPE.rows(rows)
    return body({"location_id": location_id, "start": start, "end": end, "days": days})


# A location's days of revenue for payments created in [$2, $3); NULL (404) when no such
# location exists.
REVENUE = Document(
    statement(f"SELECT {_REPORT} AS body FROM barbershop_locations l WHERE l.id = $1"),
    reads.REVENUE,
    _revenue,
    reads.LOCATION_EXISTS,
)


def user(relations: Collection[str]) -> Document:
    return user_document(frozenset(relations))
