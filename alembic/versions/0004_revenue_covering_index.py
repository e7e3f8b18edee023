"""a covering index for the per-day revenue of a location

Revision ID: 0004
Revises: 0003

EXPLAIN (ANALYZE, BUFFERS) of the revenue query at scale 1 (a month of one
location, ~600 payments) showed a bitmap heap scan over idx_payments_location_created:
every matching payment's heap page is read to check its status and sum its amount.
With status and amount in the index (key columns, the same on SQLite) the query
is an index-only scan. The new index is built (CONCURRENTLY on PostgreSQL) before
the one it replaces is dropped.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW = "idx_payments_location_revenue"
OLD = "idx_payments_location_created"


COLUMNS = ["location_id", "created_at", "status", "amount"]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(NEW, "payments", COLUMNS)
        op.drop_index(OLD, table_name="payments")
        return
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NEW}")  # a failed earlier build
        op.create_index(NEW, "payments", COLUMNS, postgresql_concurrently=True)
        op.drop_index(OLD, table_name="payments", postgresql_concurrently=True, if_exists=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(OLD, "payments", ["location_id", "created_at"])
        op.drop_index(NEW, table_name="payments")
        return
    with op.get_context().autocommit_block():
        op.create_index(
            OLD,
            "payments",
            ["location_id", "created_at"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.drop_index(NEW, table_name="payments", postgresql_concurrently=True, if_exists=True)
