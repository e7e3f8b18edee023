"""performance indexes from the optimization strategy

Revision ID: 0002
Revises: 0001

On PostgreSQL each index is built CONCURRENTLY, outside a transaction, so a
live database keeps taking writes while it builds.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (name, table, columns, partial-index predicate by dialect)
INDEXES: list[tuple[str, str, list[str], dict[str, str]]] = [
    (
        "idx_users_email_active",
        "users",
        ["email"],
        {"postgresql": "is_active = true", "sqlite": "is_active = 1"},
    ),
    ("idx_users_role_unified", "users", ["unified_role"], {}),
    ("idx_users_location_role", "users", ["location_id", "unified_role"], {}),
    ("idx_users_trial_status", "users", ["trial_active", "trial_expires_at"], {}),
    ("idx_appointments_user_status", "appointments", ["user_id", "status"], {}),
    ("idx_appointments_barber_date", "appointments", ["barber_id", "appointment_date"], {}),
    ("idx_appointments_location_date", "appointments", ["location_id", "appointment_date"], {}),
    (
        "idx_appointments_datetime_range",
        "appointments",
        ["appointment_date", "start_time", "end_time"],
        {},
    ),
    ("idx_appointments_status_created", "appointments", ["status", "created_at"], {}),
    ("idx_payments_user_status", "payments", ["user_id", "status"], {}),
    ("idx_payments_stripe_session", "payments", ["stripe_session_id"], {}),
    ("idx_payments_created_amount", "payments", ["created_at", "amount"], {}),
    ("idx_appointments_location_user", "appointments", ["location_id", "user_id"], {}),
    ("idx_payments_location", "payments", ["location_id"], {}),
    # Not in the strategy: the per-day revenue query needs both columns.
    ("idx_payments_location_created", "payments", ["location_id", "created_at"], {}),
]


def drop_invalid(name: str) -> None:
    """A CONCURRENTLY build that failed leaves an INVALID index behind; retry cleanly."""
    invalid = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = :name AND NOT i.indisvalid"
            ),
            {"name": name},
        )
        .scalar()
    )
    if invalid:
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect != "postgresql":
        for name, table, columns, where in INDEXES:
            predicate = where.get(dialect)
            op.create_index(
                name, table, columns, sqlite_where=sa.text(predicate) if predicate else None
            )
        return
    with op.get_context().autocommit_block():
        for name, table, columns, where in INDEXES:
            drop_invalid(name)
            predicate = where.get(dialect)
            op.create_index(
                name,
                table,
                columns,
                postgresql_concurrently=True,
                postgresql_where=sa.text(predicate) if predicate else None,
                if_not_exists=True,
            )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for name, table, _, _ in reversed(INDEXES):
            op.drop_index(name, table_name=table)
        return
    with op.get_context().autocommit_block():
        for name, table, _, _ in reversed(INDEXES):
            op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
