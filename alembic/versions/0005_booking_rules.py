"""booking rules: case-insensitive emails, one client in one place, payment versions

Revision ID: 0005
Revises: 0004

- users: a unique index on lower(email) (PostgreSQL) or email COLLATE NOCASE (SQLite,
  whose lower() and NOCASE both fold ASCII only, and whose reflection cannot read an
  expression index). Existing accounts whose
  emails differ only in case stop the migration with a report naming them: which
  account keeps the address is a decision for a person, never for a migration.
- appointments (PostgreSQL): an exclusion constraint makes overlapping active
  appointments of one client impossible, as ex_appointments_barber_overlap does for
  barbers. PostgreSQL cannot add an exclusion constraint NOT VALID, so existing
  overlaps stop the migration with a report naming them; nothing is rewritten.
  On SQLite the rule holds inside the serialized (BEGIN IMMEDIATE) booking transaction.
- appointments (PostgreSQL): CHECK (barber_id <> user_id), added NOT VALID so it
  guards new rows at once; existing rows that break it are reported (a warning) and
  kept, to be fixed and then validated with VALIDATE CONSTRAINT.
- payments: a version column for compare-and-set status changes.
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

EMAIL_INDEX = "uq_users_email_lower"
CLIENT_OVERLAP = "ex_appointments_client_overlap"
NOT_OWN_BARBER = "ck_appointments_not_own_barber"
ACTIVE = "status IN ('pending', 'confirmed', 'in_progress')"
REPORT_LIMIT = 50


class MigrationRefused(RuntimeError):
    """Existing rows break a rule this migration adds; the message lists them."""


def _rows(sql: str) -> list[sa.Row[tuple[object, ...]]]:
    return list(op.get_bind().execute(sa.text(sql)).all())


def _refuse_case_duplicates() -> None:
    duplicates = _rows(
        "SELECT lower(email), count(*) FROM users GROUP BY lower(email) HAVING count(*) > 1 "
        f"ORDER BY 1 LIMIT {REPORT_LIMIT}"
    )
    if not duplicates:
        return
    lines = []
    for email, _ in duplicates:
        accounts = op.get_bind().execute(
            sa.text("SELECT id, email FROM users WHERE lower(email) = :e ORDER BY id"),
            {"e": email},
        )
        lines.append(", ".join(f"user {i} <{e}>" for i, e in accounts))
    raise MigrationRefused(
        f"{len(duplicates)} email address(es) belong to several accounts that differ only "
        "in case; merge or change them, then migrate again:\n  " + "\n  ".join(lines)
    )


def _refuse_client_overlaps() -> None:
    overlaps = _rows(
        "SELECT a.user_id, a.id, b.id FROM appointments a JOIN appointments b "
        "ON a.user_id = b.user_id AND a.id < b.id "
        "AND a.start_time < b.end_time AND b.start_time < a.end_time "
        f"WHERE a.{ACTIVE} AND b.{ACTIVE} ORDER BY 1, 2, 3 LIMIT {REPORT_LIMIT}"
    )
    if overlaps:
        pairs = "\n  ".join(f"user {u}: appointments {a} and {b}" for u, a, b in overlaps)
        raise MigrationRefused(
            "clients hold overlapping active appointments; cancel or move one of each "
            f"pair, then migrate again (first {REPORT_LIMIT} shown):\n  {pairs}"
        )


def _report_own_barber() -> None:
    own = _rows(
        f"SELECT id FROM appointments WHERE barber_id = user_id ORDER BY id LIMIT {REPORT_LIMIT}"
    )
    if own:
        log.warning(
            "%s added NOT VALID: appointments %s have the client as their own barber; "
            "fix them, then ALTER TABLE appointments VALIDATE CONSTRAINT %s",
            NOT_OWN_BARBER,
            ", ".join(str(i) for (i,) in own),
            NOT_OWN_BARBER,
        )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    _refuse_case_duplicates()
    if postgres:
        _refuse_client_overlaps()
        _report_own_barber()
    op.add_column(
        "payments", sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False)
    )
    key = "lower(email)" if postgres else "email COLLATE NOCASE"
    op.create_index(EMAIL_INDEX, "users", [sa.text(key)], unique=True)
    if postgres:
        op.execute(
            f"ALTER TABLE appointments ADD CONSTRAINT {CLIENT_OVERLAP} EXCLUDE USING gist "
            f"(user_id WITH =, tstzrange(start_time, end_time, '[)') WITH &&) WHERE ({ACTIVE})"
        )
        op.execute(
            f"ALTER TABLE appointments ADD CONSTRAINT {NOT_OWN_BARBER} "
            "CHECK (barber_id <> user_id) NOT VALID"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE appointments DROP CONSTRAINT IF EXISTS {NOT_OWN_BARBER}")
        op.execute(f"ALTER TABLE appointments DROP CONSTRAINT IF EXISTS {CLIENT_OVERLAP}")
    op.drop_index(EMAIL_INDEX, table_name="users")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("version")
