"""full-text search indexes and the no-double-booking constraint (PostgreSQL)

Revision ID: 0003
Revises: 0002

SQLite has neither GIN nor exclusion constraints: there the repositories
check overlaps inside a serialized (BEGIN IMMEDIATE) transaction and search
falls back to LIKE.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_INDEXES = {
    "idx_users_name_search": "users USING gin (to_tsvector('english', name))",
    "idx_appointments_notes_search": "appointments USING gin (to_tsvector('english', notes))",
}

OVERLAP = "ex_appointments_barber_overlap"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    op.execute(
        f"ALTER TABLE appointments ADD CONSTRAINT {OVERLAP} EXCLUDE USING gist "
        "(barber_id WITH =, tstzrange(start_time, end_time, '[)') WITH &&) "
        "WHERE (status IN ('pending', 'confirmed', 'in_progress'))"
    )
    with op.get_context().autocommit_block():
        for name, definition in SEARCH_INDEXES.items():
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {definition}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    with op.get_context().autocommit_block():
        for name in SEARCH_INDEXES:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    op.execute(f"ALTER TABLE appointments DROP CONSTRAINT IF EXISTS {OVERLAP}")
