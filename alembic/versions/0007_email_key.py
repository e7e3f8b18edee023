"""one folding of emails on both backends: users.email_key

Revision ID: 0007
Revises: 0006

0005 made emails unique whatever their case with lower(email) on PostgreSQL and
COLLATE NOCASE on SQLite: SQLite folds ASCII only (`zoë@x.com` and `ZOË@X.COM` were two
accounts there, one on PostgreSQL), and PostgreSQL's lower() follows the database's
locale. Now Python folds (app.db.models.email_key: NFC, case folding, NFC) into
users.email_key, unique on both backends, and uq_users_email_lower goes.

Accounts whose emails are one under the new folding (differing in a non-ASCII letter's
case, in Unicode normalization, or as ß and ss) stop the migration with a report naming
them, before anything changes: which account keeps the address is a person's decision.
On SQLite the users table is then rebuilt (SQLite's twelve steps, as 0006) to make the
column NOT NULL; its sqlite_sequence entry, which a live migration may have moved past
max(id), is kept.
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from app.db.models import email_key

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_INDEX = "uq_users_email_lower"
INDEX = "uq_users_email_key"
BATCH = 10_000
REPORT_LIMIT = 50


class MigrationRefused(RuntimeError):
    """Existing rows break a rule this migration adds; the message lists them."""


def _accounts() -> dict[str, list[tuple[int, str]]]:
    """Every account by its key, in id order."""
    by_key: dict[str, list[tuple[int, str]]] = {}
    rows = op.get_bind().execute(sa.text("SELECT id, email FROM users ORDER BY id"))
    for user_id, email in rows:
        by_key.setdefault(email_key(email), []).append((user_id, email))
    return by_key


def _refuse_duplicates(by_key: dict[str, list[tuple[int, str]]]) -> None:
    shared = [accounts for accounts in by_key.values() if len(accounts) > 1]
    if not shared:
        return
    lines = [", ".join(f"user {i} <{e}>" for i, e in accounts) for accounts in shared]
    raise MigrationRefused(
        f"{len(shared)} email address(es) belong to several accounts under Unicode case "
        "folding (app.db.models.email_key); merge or change them, then migrate again "
        f"(first {REPORT_LIMIT} shown):\n  " + "\n  ".join(lines[:REPORT_LIMIT])
    )


def _fill(by_key: dict[str, list[tuple[int, str]]]) -> None:
    pairs = [(accounts[0][0], key) for key, accounts in by_key.items()]
    bind = op.get_bind()
    for start in range(0, len(pairs), BATCH):
        batch = pairs[start : start + BATCH]
        if bind.dialect.name == "postgresql":  # one statement per batch, not a row each
            ids, keys = zip(*batch, strict=True)
            bind.execute(
                sa.text(
                    "UPDATE users AS u SET email_key = v.k FROM "
                    "unnest(CAST(:ids AS bigint[]), CAST(:keys AS text[])) AS v(i, k) "
                    "WHERE u.id = v.i"
                ),
                {"ids": list(ids), "keys": list(keys)},
            )
        else:
            update = sa.text("UPDATE users SET email_key = :k WHERE id = :i")
            bind.execute(update, [{"i": i, "k": k} for i, k in batch])


def _sqlite_not_null() -> None:
    """users.email_key NOT NULL: SQLite's twelve steps, foreign keys off, as in 0006."""
    bind = op.get_bind()
    assert bind.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
    sql = str(
        bind.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'users'")
        ).scalar_one()
    )
    column = re.compile(r"\bemail_key TEXT\b(?! NOT NULL)")
    if not column.search(sql):
        raise RuntimeError(f"users: unexpected email_key declaration; not rebuilt:\n{sql}")
    sql = column.sub("email_key TEXT NOT NULL", sql, count=1)
    indexes = [
        str(r[0])
        for r in bind.execute(
            sa.text(
                "SELECT sql FROM sqlite_master WHERE tbl_name = 'users' "
                "AND type IN ('index', 'trigger') AND sql IS NOT NULL"
            )
        )
    ]
    sequence = bind.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'users'"))
    seq = sequence.scalar_one_or_none()
    op.execute(re.sub(r'^CREATE TABLE "?users"?', "CREATE TABLE _new_users", sql.strip()))
    op.execute("INSERT INTO _new_users SELECT * FROM users")
    op.execute("DROP TABLE users")
    op.execute("ALTER TABLE _new_users RENAME TO users")
    for statement in indexes:
        op.execute(statement)
    if seq is not None:
        op.execute(sa.text(f"UPDATE sqlite_sequence SET seq = {int(seq)} WHERE name = 'users'"))


def upgrade() -> None:
    by_key = _accounts()
    _refuse_duplicates(by_key)
    op.add_column("users", sa.Column("email_key", sa.Text(), nullable=True))
    _fill(by_key)
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index(OLD_INDEX, table_name="users")
        _sqlite_not_null()
    else:
        op.alter_column("users", "email_key", nullable=False)
        op.drop_index(OLD_INDEX, table_name="users")
    op.create_index(INDEX, "users", ["email_key"], unique=True)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_index(INDEX, table_name="users")
    key = "lower(email)" if postgres else "email COLLATE NOCASE"
    op.create_index(OLD_INDEX, "users", [sa.text(key)], unique=True)
    # SQLite (3.35+) drops an unindexed column in place: no rebuild, AUTOINCREMENT kept.
    op.execute("ALTER TABLE users DROP COLUMN email_key")
