"""The revenue report's days as instants (the statement is app/queries/reads.py's REVENUE)."""

from __future__ import annotations

import datetime as dt


def utc_days(start: dt.date, end: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The instants [start 00:00 UTC, the day after end 00:00 UTC) of an inclusive day range."""
    return (
        dt.datetime.combine(start, dt.time(), dt.UTC),
        dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC),
    )
