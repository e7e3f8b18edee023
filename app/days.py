"""The days and instants the API takes: those both backends store as themselves.

asyncpg sends (and reads back) Python's first and last day and instant as PostgreSQL's
-infinity and infinity, where SQLite keeps 0001-01-01 and 9999-12-31: the API stops a
day short of each end, so no input means one thing on one backend and another there.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime

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


Day = Annotated[dt.date, AfterValidator(_in_days)]
Instant = Annotated[AwareDatetime, AfterValidator(_in_utc_days)]  # converted to UTC
