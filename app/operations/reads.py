"""The reads, one use case each, whatever the backend and whichever door.

A route (app/api/*.py) and the hot-read lane (app/api/lane.py) parse and authorize,
open the statements handle (app/db/statements.py) for the read's intent and call the
function here. The three hot reads (user, schedule, revenue) ask the handle for their
`Document` (app/queries/documents.py): one statement's rows written by the Shapes
(app/queries/shapes.py), or, for the revenue on PostgreSQL, the body PostgreSQL writes from
the same Shapes; one shape, byte for byte. The
other reads run their statements (app/queries/reads.py) and write the body with the Shape
of the response model. A missing parent (user, barber, location) is a NotFound.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from app.db.statements import Statements
from app.errors import NotFound
from app.queries import documents, reads
from app.queries.analytics import utc_days
from app.queries.shapes import body


def no_user(user_id: int) -> NotFound:
    return NotFound(f"user {user_id} does not exist")


def no_barber(barber_id: int) -> NotFound:
    return NotFound(f"barber {barber_id} does not exist")


def no_location(location_id: int) -> NotFound:
    return NotFound(f"location {location_id} does not exist")


async def read_user(db: Statements, user_id: int, relations: Collection[str]) -> bytes:
    """UserDetail: the user and the relations asked for (absent ones omitted)."""
    found = await db.document(documents.user(relations), user_id)
    if found is None:
        raise no_user(user_id)
    return found


async def read_schedule(
    db: Statements, barber_id: int, start: dt.date, end: dt.date, statuses: Collection[str]
) -> bytes:
    """list[ScheduledAppointment]: a barber's appointments in [start, end] with a status."""
    status = ",".join(sorted(statuses))
    found = await db.document(documents.SCHEDULE, barber_id, start, end, status)
    if found is None:
        raise no_barber(barber_id)
    return found


async def read_revenue(db: Statements, location_id: int, start: dt.date, end: dt.date) -> bytes:
    """RevenueReport: per UTC day of payment, completed payments and refunded ones apart."""
    found = await db.document(documents.REVENUE, location_id, *utc_days(start, end))
    if found is None:
        raise no_location(location_id)
    return found


async def read_appointment(db: Statements, appointment_id: int) -> bytes:
    """AppointmentRead."""
    row = await db.fetchrow(reads.APPOINTMENT, appointment_id)
    if row is None:
        raise NotFound(f"appointment {appointment_id} does not exist")
    return body(reads.APPOINTMENT_SHAPE(row))


async def read_payment(db: Statements, payment_id: int) -> bytes:
    """PaymentRead."""
    row = await db.fetchrow(reads.PAYMENT, payment_id)
    if row is None:
        raise NotFound(f"payment {payment_id} does not exist")
    return body(reads.PAYMENT_SHAPE(row))


async def list_user_payments(db: Statements, user_id: int, after: int, limit: int) -> bytes:
    """PaymentPage: a user's payments by id after `after`, `limit` at most."""
    rows = await db.fetch(reads.USER_PAYMENTS_PAGE, user_id, after, limit + 1)
    # A payment names its user (a foreign key): only an empty page can hide a missing one.
    if not rows and await db.fetchrow(reads.USER_EXISTS, user_id) is None:
        raise no_user(user_id)
    page = rows[:limit]
    next_after = page[-1]["id"] if len(rows) > limit else None
    return body({"items": reads.PAYMENT_SHAPE.rows(page), "next_after": next_after})
