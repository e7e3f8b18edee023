"""The days and instants the API takes: those both backends store as themselves.

asyncpg sends (and reads back) Python's first and last day and instant as PostgreSQL's
-infinity and infinity, where SQLite keeps 0001-01-01 and 9999-12-31: the API stops a
day short of each end, so no input means one thing on one backend and another there.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator

FIRST_DAY = dt.date(1, 1, 2)
LAST_DAY = dt.date(9999, 12, 30)
DAYS_TAKEN = f"a day from {FIRST_DAY.isoformat()} to {LAST_DAY.isoformat()}"


def _in_days(value: dt.date) -> dt.date:
    if not FIRST_DAY <= value <= LAST_DAY:
        raise ValueError(f"must be {DAYS_TAKEN}")
    return value


def _in_utc_days(value: dt.datetime) -> dt.datetime:
    try:
        utc = value.astimezone(dt.UTC)
    except OverflowError:
        utc = None
    if utc is None or not FIRST_DAY <= utc.date() <= LAST_DAY:
        raise ValueError(f"must fall on {DAYS_TAKEN} once in UTC")
    return utc


# As the OpenAPI document says (format date, date-time): pydantic alone would also take a
# number of seconds since 1970 for either, and a midnight's date-time for a day.
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_INSTANT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ]")


def _written_day(value: object) -> object:
    if isinstance(value, str) and _DAY.fullmatch(value):
        return value
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    raise ValueError("must be a day written YYYY-MM-DD")


def _written_instant(value: object) -> object:
    if (isinstance(value, str) and _INSTANT.match(value)) or isinstance(value, dt.datetime):
        return value
    raise ValueError("must be a date-time written YYYY-MM-DDTHH:MM:SS with an offset")


Day = Annotated[dt.date, BeforeValidator(_written_day), AfterValidator(_in_days)]
# Converted to UTC.
Instant = Annotated[AwareDatetime, BeforeValidator(_written_instant), AfterValidator(_in_utc_days)]
