"""SQLite's loose dates and times read as PostgreSQL's: instants, days and times of day.

A value read here is the one PostgreSQL would store, or Unfit (the column is then
widened and the value kept as it was written): naive times are UTC, offsets are applied,
numbers are Unix seconds, and nothing finer than a microsecond, outside the years 1 to
9999 once in UTC, or a time of day with an offset is bent to fit.
"""

from __future__ import annotations

import datetime as dt
import re

from app.db.transfer.types import Unfit

# Digits past a microsecond that are not all zeros: Python and PostgreSQL keep six.
_FINER = re.compile(r"[.,][0-9]{6}0*[1-9]")


def datetime_of(value: object) -> dt.datetime:
    result: dt.datetime
    if isinstance(value, dt.datetime):
        result = value
    elif isinstance(value, dt.date):
        result = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC)  # unix seconds
        except (OverflowError, OSError, ValueError) as exc:
            raise Unfit("not a date and time") from exc
    else:
        text = _to_the_microsecond(str(value).strip())
        try:
            result = dt.datetime.fromisoformat(text)
        except ValueError as exc:
            raise Unfit("not a date and time") from exc
    # Naive times in SQLite are UTC, as this service and most ORMs store them.
    if result.tzinfo is None:
        return result.replace(tzinfo=dt.UTC)
    try:
        return result.astimezone(dt.UTC)
    except OverflowError as exc:  # 0001-01-01 00:00+01:00 is in year 0 once in UTC
        raise Unfit("outside the years 1 to 9999 once in UTC") from exc


def _to_the_microsecond(text: str) -> str:
    """The text, if it names no finer fraction of a second than a microsecond (fromisoformat
    would drop the rest, and PostgreSQL round it, silently)."""
    if _FINER.search(text):
        raise Unfit("finer than a microsecond")
    return text


def date_of(value: object) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        moment = datetime_of(value)
        if moment.time() != dt.time(0):
            raise Unfit("a date with a time of day") from None
        return moment.date()


def time_of(value: object) -> dt.time:
    if isinstance(value, dt.time):
        return value
    text = _to_the_microsecond(str(value).strip())
    try:
        result = dt.time.fromisoformat(text)
    except ValueError as exc:
        raise Unfit("not a time of day") from exc
    if result.tzinfo is not None:
        raise Unfit("a time of day with an offset, which time without time zone drops")
    return result


def naive_datetime_of(value: object) -> dt.datetime:
    return datetime_of(value).replace(tzinfo=None)
