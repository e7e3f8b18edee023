"""The hot reads' documents: each read's rows statement and its body, one Shape for both.

A read (app/operations/reads.py) asks the handle for a `Document`: the handle runs its
`rows` (app/queries/reads.py) and `render` writes the body with the Shapes, on SQLite
and on PostgreSQL alike. The revenue's month also has a JSON statement, which
PostgreSQL runs instead: it wraps the rows statement and writes each value as the
Shape's model says (app/queries/json_sql.py), so both bodies are one shape, byte for
byte. Its days cost PostgreSQL no more as JSON than as rows, while rendering them in
Python (Decimals) costs the service more; the user's and the week's rows cost
PostgreSQL a quarter less than their JSON (README, Performance).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Collection, Sequence
from typing import cast

from app.db.statements import statement
from app.queries import reads
from app.queries.json_sql import Json, array, in_subquery, json_object
from app.queries.shapes import Document, Row, Shape, body
from app.schemas import RevenueReport


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

    return Document(reads.user_statement(relations), render)


def _schedule(rows: Sequence[Row], args: tuple[object, ...]) -> bytes:
    return body(reads.SCHEDULE_SHAPE.rows(rows))


# `[]` for a barber with no such appointments, None (404) when no such user exists.
SCHEDULE = Document(reads.SCHEDULE, _schedule, reads.USER_EXISTS)

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
    reads.REVENUE,
    _revenue,
    reads.LOCATION_EXISTS,
    statement(f"SELECT {_REPORT} AS body FROM barbershop_locations l WHERE l.id = $1"),
)


def user(relations: Collection[str]) -> Document:
    return user_document(frozenset(relations))
