"""The booking's rules, stated once, and the two statements built from them.

RULES holds every rule on the barber, the service and the overlaps: a predicate over
k (the request), b (the barber's users row) and s (the services row), and the words a
refused booking is told. BOOK inserts only when every rule holds and returns the row;
CHECK, run only after a refusal, evaluates each rule so the first that failed is named;
CLASH evaluates the overlap rules on an appointment a live migration brings to SQLite.

On PostgreSQL BOOK is one autocommit statement that first takes the booking locks of
the client and the barber, lower id first: two bookings that could overlap queue on
one lock instead of inserting side by side into the exclusion constraints, which
would wait on each other's uncommitted rows and end in deadlocks. The overlap rules
are the exclusion constraints there (migrations 0003, 0005), named by `constraint`.
On SQLite, which has no exclusion constraints, they are predicates of BOOK itself,
inside the writer's one BEGIN IMMEDIATE transaction.

bench/reference.py runs this same statement, so the benchmark compares everything else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import NamedTuple, cast

from sqlalchemy import Table

from app.db.models import ACTIVE_APPOINTMENT_STATUSES, Appointment
from app.db.statements import NOW, statement
from app.queries import returning
from app.schemas import AppointmentCreate, AppointmentRead


class BookingRule(NamedTuple):
    name: str
    holds: str  # SQL over k, b and s, true when the rule holds
    refusal: str  # formatted with the request's fields and CHECK's service_minutes
    conflict: bool = False  # 409 (the time is taken) rather than 422 (the request is wrong)
    constraint: str | None = None  # PostgreSQL: the constraint that holds it instead of BOOK


_ACTIVE = ", ".join(f"'{status}'" for status in ACTIVE_APPOINTMENT_STATUSES)


def _free(column: str) -> str:
    # k.id: the appointment itself, which a row brought back by a live migration must not
    # be counted against; a new booking's 0 is no row's (ids start at 1).
    return (
        f"NOT EXISTS (SELECT 1 FROM appointments o WHERE o.{column} = k.{column} "
        f"AND o.status IN ({_ACTIVE}) AND o.start_time < k.end_time "
        "AND o.end_time > k.start_time AND o.id <> k.id)"
    )


RULES: tuple[BookingRule, ...] = (
    BookingRule("barber_exists", "b.id IS NOT NULL", "barber {barber_id} does not exist"),
    BookingRule("is_barber", "b.unified_role = 'barber'", "user {barber_id} is not a barber"),
    BookingRule(
        "barber_at_location",
        "b.location_id = k.location_id",
        "barber {barber_id} does not work at location {location_id}",
    ),
    BookingRule("service_exists", "s.id IS NOT NULL", "service {service_id} does not exist"),
    BookingRule(
        "service_offered",
        "s.location_id = k.location_id AND s.is_active",
        "service {service_id} is not offered at location {location_id}",
    ),
    BookingRule(
        "service_length",
        "k.length_us = s.duration_minutes * 60000000.0",
        "service {service_id} lasts {service_minutes} minutes: "
        "end_time must be start_time plus that",
    ),
    BookingRule(
        "barber_free",
        _free("barber_id"),
        "barber {barber_id} already has an appointment overlapping that time",
        conflict=True,
        constraint="ex_appointments_barber_overlap",
    ),
    BookingRule(
        "client_free",
        _free("user_id"),
        "user {user_id} already has an appointment overlapping that time",
        conflict=True,
        constraint="ex_appointments_client_overlap",
    ),
)
# Where the database holds a rule as a constraint (PostgreSQL), BOOK leaves it to it.
_IN_STATEMENT = [rule for rule in RULES if rule.constraint is None]
BY_CONSTRAINT: dict[str | None, BookingRule] = {
    rule.constraint: rule for rule in RULES if rule.constraint is not None
}

# The advisory lock class of bookings (pg_advisory_xact_lock(class, id)); ids past
# 2**31 wrap, which only makes two unrelated users queue now and then.
BOOKING_LOCK = 0x424B  # "BK"

_TABLE = cast(Table, Appointment.__table__)
# The request as a row (no appointment yet: id 0); $9 is its length in microseconds
# (end_time - start_time).
_REQUEST = (
    "(SELECT 0 AS id, $1::bigint AS user_id, $2::bigint AS barber_id, $3::bigint AS service_id, "
    "$4::bigint AS location_id, $5::date AS appointment_date, $6::timestamptz AS start_time, "
    "$7::timestamptz AS end_time, $8::text AS notes, $9::bigint AS length_us) AS k"
)
_PARAMS = (*(None,) * 4, _TABLE.c.appointment_date, _TABLE.c.start_time, _TABLE.c.end_time)
_LOCKS = (
    "WITH locked AS MATERIALIZED (SELECT "
    + ", ".join(
        f"pg_advisory_xact_lock({BOOKING_LOCK}, ({side}($1::bigint, $2::bigint) % 2147483648)::int)"
        for side in ("least", "greatest")  # lower id first: no two bookings deadlock
    )
    + ")"
)


def _all(rules: list[BookingRule] | tuple[BookingRule, ...]) -> str:
    return " AND ".join(f"({rule.holds})" for rule in rules)


BOOK = statement(
    f"""
INSERT INTO appointments (user_id, barber_id, service_id, location_id, appointment_date,
                          start_time, end_time, status, notes, version, created_at, updated_at)
{{locks}}
SELECT k.user_id, k.barber_id, k.service_id, k.location_id, k.appointment_date,
       k.start_time, k.end_time, 'pending', k.notes, 1, {{now}}, {{now}}
FROM {{locked}}{_REQUEST}
JOIN users b ON b.id = k.barber_id
JOIN services s ON s.id = k.service_id
WHERE {{rules}}
RETURNING {returning(AppointmentRead)}
""",
    params=_PARAMS,
    columns=_TABLE.c,
    locks=(_LOCKS, ""),
    locked=("locked, ", ""),
    now=NOW,
    rules=(_all(_IN_STATEMENT), _all(RULES)),
)


def _verdicts(rules: list[BookingRule] | tuple[BookingRule, ...]) -> str:
    return ", ".join(f"({rule.holds}) AS {rule.name}" for rule in rules)


# Each rule's verdict on the request (NULL, as false, where b or s is missing).
CHECK = statement(
    f"""
SELECT {{verdicts}}, s.duration_minutes AS service_minutes
FROM {_REQUEST}
LEFT JOIN users b ON b.id = k.barber_id
LEFT JOIN services s ON s.id = k.service_id
""",
    params=_PARAMS,
    verdicts=(_verdicts(_IN_STATEMENT), _verdicts(RULES)),
)


# The rules PostgreSQL holds as constraints and SQLite only in BOOK: the overlaps.
_OVERLAPS = [rule for rule in RULES if rule.constraint is not None]
# Their verdicts on an appointment already made ($1: its id), for the rows a live
# migration brings to a serving SQLite, where no constraint would refuse them.
CLASH = statement(
    f"""
SELECT {_verdicts(_OVERLAPS)}
FROM (SELECT $1::bigint AS id, $2::bigint AS user_id, $3::bigint AS barber_id,
             $4::timestamptz AS start_time, $5::timestamptz AS end_time) AS k
""",
    params=(None, None, None, _TABLE.c.start_time, _TABLE.c.end_time),
)


def arguments(body: AppointmentCreate) -> tuple[object, ...]:
    """BOOK's and CHECK's parameters: UTC times, the UTC day, the length."""
    start, end = body.start_time.astimezone(dt.UTC), body.end_time.astimezone(dt.UTC)
    length = (end - start) // dt.timedelta(microseconds=1)
    fields = (body.user_id, body.barber_id, body.service_id, body.location_id)
    return (*fields, start.date(), start, end, body.notes, length)


def first_broken(verdicts: Mapping[str, object]) -> BookingRule | None:
    """The first rule CHECK found broken, or None when all hold now."""
    return next((rule for rule in RULES if rule.name in verdicts and not verdicts[rule.name]), None)
