"""The three hot reads on PostgreSQL: one statement each, the JSON written by PostgreSQL.

The one set of statements for these reads on PostgreSQL (app/queries/hot_sql.py), used
by the routes and by the lane in front of them (app/api/reads.py calls them for both).
Each read is one round trip on its pooled connection, and its body comes back as the
JSON document itself: nothing per row in Python. On SQLite the routes answer through
the repositories and pydantic, whose documents the API tests hold equal to these on
both backends. Statements run through a routed `Reader`, so routing, retry on a dead
replica and the query metrics stay as they are. None means the parent (user, barber,
location) does not exist.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any

from app.db.sessions import Reader
from app.queries import hot_sql
from app.queries.analytics import utc_days


async def _document(reader: Reader, statement: str, *args: Any) -> bytes | None:
    row = await reader.fetchrow(statement, *args)
    text: str | None = row["body"] if row is not None else None
    return text.encode() if text is not None else None


async def user_document(reader: Reader, user_id: int, relations: Collection[str]) -> bytes | None:
    return await _document(reader, hot_sql.user_statement(frozenset(relations)), user_id)


async def schedule_document(
    reader: Reader, barber_id: int, start: dt.date, end: dt.date, statuses: Collection[str]
) -> bytes | None:
    return await _document(reader, hot_sql.SCHEDULE, barber_id, start, end, sorted(statuses))


async def revenue_document(
    reader: Reader, location_id: int, start: dt.date, end: dt.date
) -> bytes | None:
    since, until = utc_days(start, end)
    return await _document(reader, hot_sql.REVENUE, location_id, since, until, start, end)
