"""SQLite keys that are never handed out twice, and can be moved on to a block

Revision ID: 0006
Revises: 0005

SQLite gives a new row max(id) + 1 unless the key is declared AUTOINCREMENT: the
key of a deleted newest row came back, and nothing could make a table start its new
keys higher. A live migration (app/db/live) needs both: each serving period draws
keys from a block the other database never hands out, and a block starts where
sqlite_sequence says. Every application table is rebuilt with
`id INTEGER PRIMARY KEY AUTOINCREMENT` (SQLite's documented twelve steps: a new table,
the rows, the old one dropped, the new one renamed, its indexes made again), with
foreign keys off so that dropping a parent deletes nothing. PostgreSQL already has
sequences: nothing changes there.
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "organizations",
    "barbershop_locations",
    "services",
    "users",
    "appointments",
    "stripe_accounts",
    "user_organizations",
    "payments",
    "payouts",
    "reviews",
)
_KEY = re.compile(r"\bid INTEGER NOT NULL,")
_KEY_AUTO = re.compile(r"\bid INTEGER NOT NULL CONSTRAINT (\w+) PRIMARY KEY AUTOINCREMENT,")


def _table_sql(name: str) -> str:
    sql = op.get_bind().execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :n"), {"n": name}
    )
    return str(sql.scalar_one())


def _rebuild(name: str, sql: str) -> None:
    """SQLite's twelve steps, foreign keys off (a migration's connection has them off)."""
    bind = op.get_bind()
    indexes = [
        str(r[0])
        for r in bind.execute(
            sa.text(
                "SELECT sql FROM sqlite_master WHERE tbl_name = :n AND type IN ('index', 'trigger') "
                "AND sql IS NOT NULL"
            ),
            {"n": name},
        )
    ]
    new = f"_new_{name}"
    created = re.sub(rf"^CREATE TABLE \"?{name}\"?", f"CREATE TABLE {new}", sql.strip())
    op.execute(created)
    op.execute(f"INSERT INTO {new} SELECT * FROM {name}")
    op.execute(f"DROP TABLE {name}")
    op.execute(f"ALTER TABLE {new} RENAME TO {name}")
    for statement in indexes:
        op.execute(statement)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    assert op.get_bind().exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
    for name in TABLES:
        sql = _table_sql(name)
        constraint = re.search(r",\s*CONSTRAINT (\w+) PRIMARY KEY \(id\)", sql)
        if constraint is None or not _KEY.search(sql):
            raise RuntimeError(f"{name}: unexpected key declaration; not rebuilt:\n{sql}")
        sql = sql.replace(constraint.group(0), "", 1)
        sql = _KEY.sub(
            f"id INTEGER NOT NULL CONSTRAINT {constraint.group(1)} PRIMARY KEY AUTOINCREMENT,",
            sql,
            count=1,
        )
        _rebuild(name, sql)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    assert op.get_bind().exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
    for name in TABLES:
        sql = _table_sql(name)
        found = _KEY_AUTO.search(sql)
        if found is None:
            raise RuntimeError(f"{name}: unexpected key declaration; not rebuilt:\n{sql}")
        sql = _KEY_AUTO.sub("id INTEGER NOT NULL,", sql, count=1)
        sql = re.sub(r"\n\)\s*$", f", \n\tCONSTRAINT {found.group(1)} PRIMARY KEY (id)\n)", sql)
        _rebuild(name, sql)
