from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from app.db.models import Appointment
from app.db.statements import NOW, statement
from app.queries import moves, returning
from app.schemas import AppointmentRead

# status -> the statuses it may be reached from.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "confirmed": ("pending",),
    "cancelled": ("pending", "confirmed"),
    "in_progress": ("confirmed",),
    "no_show": ("confirmed",),
    "completed": ("in_progress",),
}
_TABLE = cast(Table, Appointment.__table__)
# Compare-and-set on version, the move allowed by TRANSITIONS; no row when either fails.
SET_STATUS = statement(
    f"""
UPDATE appointments SET status = $3::text, version = version + 1, updated_at = {{now}}
WHERE id = $1::bigint AND version = $2::bigint
  AND (status, $3::text) IN (VALUES {moves(TRANSITIONS)})
RETURNING {returning(AppointmentRead)}
""",
    columns=_TABLE.c,
    now=NOW,
)
CURRENT = statement(
    f"SELECT {returning(AppointmentRead)} FROM appointments WHERE id = $1", columns=_TABLE.c
)
