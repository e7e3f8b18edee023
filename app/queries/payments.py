from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, cast

from sqlalchemy import Table

from app.db.models import PAYABLE_APPOINTMENT_STATUSES, Payment
from app.db.statements import NOW, statement
from app.queries import moves, returning
from app.schemas import PaymentRead

_TABLE = cast(Table, Payment.__table__)
_PAYABLE = ", ".join(f"'{s}'" for s in PAYABLE_APPOINTMENT_STATUSES)


class PaymentRule(NamedTuple):
    name: str
    holds: str  # SQL over k (the request), a (the appointment) and s (its service)
    refusal: str  # formatted with the request's fields and CHECK's appointment terms
    conflict: bool = False  # 409 (the appointment's state) rather than 422 (the request)


# The rules for paying an appointment (a payment without one has none), in the order
# a refusal names them.
RULES: tuple[PaymentRule, ...] = (
    PaymentRule(
        "appointment_exists", "a.id IS NOT NULL", "appointment {appointment_id} does not exist"
    ),
    PaymentRule(
        "same_parties",
        "a.user_id = k.user_id AND a.location_id = k.location_id",
        "appointment {appointment_id} belongs to user {appointment_user_id} at location "
        "{appointment_location_id}; a payment for it must too",
    ),
    PaymentRule(
        "payable",
        f"a.status IN ({_PAYABLE})",
        "appointment {appointment_id} is {appointment_status}; it cannot be paid",
        conflict=True,
    ),
    PaymentRule(
        "amount_is_price",
        "s.price = k.amount",
        "the amount must be the service's price, {price:.2f}",
    ),
)
_RULES = " AND ".join(f"({rule.holds})" for rule in RULES)
_REQUEST = (
    "(SELECT $1::bigint AS user_id, $2::bigint AS appointment_id, $3::bigint AS location_id, "
    "$4::numeric AS amount, $5::text AS idempotency_key) AS k"
)
_PARAMS = (None, None, None, _TABLE.c.amount, None)

# What a payment is made as: the first call's answer, which a retry with its key repeats.
MADE = {"status": "pending", "version": 1}

# A payment in one statement: the appointment's terms checked (on PostgreSQL
# share-locked: it cannot be cancelled before the insert commits), the insert, and the
# idempotency key's race settled by ON CONFLICT: the loser's insert does nothing (on
# PostgreSQL after waiting for the winner to commit) and reads the winner's row (BY_KEY).
# No row back: the key was taken (a retry) or a payment rule refused; CHECK says which.
PAY = statement(
    f"""
INSERT INTO payments (user_id, appointment_id, location_id, amount, currency, status, version,
                      idempotency_key, created_at)
SELECT k.user_id, k.appointment_id, k.location_id, k.amount, 'usd', '{MADE["status"]}',
       {MADE["version"]},
       k.idempotency_key, {{now}}
FROM {_REQUEST}
WHERE k.appointment_id IS NULL OR EXISTS (
    SELECT 1 FROM appointments a JOIN services s ON s.id = a.service_id
    WHERE a.id = k.appointment_id AND {_RULES}{{share}}
)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING {returning(PaymentRead)}
""",
    params=_PARAMS,
    columns=_TABLE.c,
    now=NOW,
    share=(" FOR SHARE OF a", ""),
)
CHECK = statement(
    f"""
SELECT {", ".join(f"({rule.holds}) AS {rule.name}" for rule in RULES)},
       a.user_id AS appointment_user_id, a.location_id AS appointment_location_id,
       a.status AS appointment_status, s.price
FROM {_REQUEST}
LEFT JOIN appointments a ON a.id = k.appointment_id
LEFT JOIN services s ON s.id = a.service_id
""",
    params=_PARAMS,
    columns={"price": _TABLE.c.amount.type},
)
BY_KEY = statement(
    f"SELECT {returning(PaymentRead)} FROM payments WHERE idempotency_key = $1",
    columns=_TABLE.c,
)
CURRENT = statement(
    f"SELECT {returning(PaymentRead)} FROM payments WHERE id = $1", columns=_TABLE.c
)


def first_broken(verdicts: Mapping[str, object]) -> PaymentRule | None:
    """The first rule CHECK found broken, or None when all hold now."""
    return next((rule for rule in RULES if not verdicts[rule.name]), None)


# status -> the statuses a payment may reach it from. A failed payment may be tried
# again (back to pending): an appointment keeps one payment row, attempts included.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "completed": ("pending",),
    "failed": ("pending",),
    "refunded": ("completed",),
    "pending": ("failed",),
}
# Compare-and-set on version, the move allowed by TRANSITIONS; no row when either fails.
SET_STATUS = statement(
    f"""
UPDATE payments SET status = $3::text, version = version + 1
WHERE id = $1::bigint AND version = $2::bigint
  AND (status, $3::text) IN (VALUES {moves(TRANSITIONS)})
RETURNING {returning(PaymentRead)}
""",
    columns=_TABLE.c,
)
