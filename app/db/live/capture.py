"""Change capture and the write guard, inside each database.

Both sides get the same three things, made idempotently:

- `_bookedbarber_live`: one row, which backend serves (`active`), a switch counter
  (`epoch`), the reason of the last switch and `frozen_until` (epoch seconds): the
  write freeze of a cut-over, lifted by time when its owner dies.
- `_bookedbarber_live_changes`: (seq, table, key, at) for every row an application
  write touched, in commit order (SQLite serializes writers; on PostgreSQL every
  writer holds a share lock on the state row, so a freeze waits for them all).
- `_bookedbarber_live_applied`: every key the sync wrote into this side, numbered in
  commit order: what changed here since two sides last agreed (app/db/live/agreement).
- `_bookedbarber_live_conflicts`: rows changed on both sides since a switch, with
  the version that was kept and the one that lost, for an operator to read.
- A guard on every application table: writes fail while this side is not the active
  one or is frozen. SQLite raises with SQLITE_CONSTRAINT_TRIGGER; PostgreSQL raises
  SQLSTATE BB503. The service answers either with 503 and Retry-After.

The sync's own writes pass both the guard and the capture: on SQLite by a row in
`_bookedbarber_live_applying` that only the applying transaction sees, on PostgreSQL
by the transaction-local setting `bookedbarber.applying`.
"""

from __future__ import annotations

from sqlalchemy import Table

from app.db.models import Base

STATE = "_bookedbarber_live"
CHANGES = "_bookedbarber_live_changes"
CURSOR = "_bookedbarber_live_cursor"
APPLIED = "_bookedbarber_live_applied"
CONFLICTS = "_bookedbarber_live_conflicts"
APPLYING = "_bookedbarber_live_applying"
APPLIED_MARK = f"SELECT coalesce(max(id), 0) FROM {APPLIED}"  # grows with every apply
FROZEN_SQLSTATE = "BB503"
SQLITE_CONSTRAINT_TRIGGER = 1811
FROZEN_MESSAGE = "writes are paused for a database switch"

SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
PG_NOW = "extract(epoch FROM clock_timestamp())"
# The state in which SQLite's guard refuses the service's writes, and a look at it.
SQLITE_REFUSING = f"active <> 'sqlite' OR frozen_until > {SQLITE_NOW}"
SQLITE_FROZEN = f"SELECT 1 FROM {STATE} WHERE id = 1 AND ({SQLITE_REFUSING})"


class Frozen(RuntimeError):
    """A write refused by what it read while writes are paused: after an automatic
    rollback SQLite may not hold yet a row the client wrote on PostgreSQL, so a 404 or a
    409 then would be wrong; the answer is the pause's own 503 (retry in a moment)."""


def tables() -> list[Table]:
    """The application's tables, parents before children."""
    return list(Base.metadata.sorted_tables)


def table(name: str) -> Table:
    return Base.metadata.tables[name]


def key_column(table: Table) -> str:
    (column,) = table.primary_key.columns
    return column.name


def sqlite_install(active: str = "sqlite") -> list[str]:
    statements = [
        f"CREATE TABLE IF NOT EXISTS {STATE} (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "active TEXT NOT NULL, epoch INTEGER NOT NULL DEFAULT 0, reason TEXT, "
        "frozen_until REAL NOT NULL DEFAULT 0, owner TEXT, switched_at REAL, "
        "block_end INTEGER NOT NULL DEFAULT 0, left_on TEXT, left_count INTEGER, left_at REAL)",
        f"INSERT OR IGNORE INTO {STATE} (id, active) VALUES (1, '{active}')",
        f"CREATE TABLE IF NOT EXISTS {CHANGES} (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "tbl TEXT NOT NULL, key INTEGER NOT NULL, at REAL NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {CURSOR} (direction TEXT PRIMARY KEY, "
        "last_seq INTEGER NOT NULL, applied_at REAL)",
        f"CREATE TABLE IF NOT EXISTS {APPLYING} (id INTEGER PRIMARY KEY)",
        f"CREATE TABLE IF NOT EXISTS {APPLIED} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "tbl TEXT NOT NULL, key INTEGER NOT NULL, at REAL NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {CONFLICTS} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "at REAL NOT NULL, tbl TEXT NOT NULL, key INTEGER NOT NULL, kept TEXT NOT NULL, "
        "kept_row TEXT, lost TEXT NOT NULL, lost_row TEXT, reason TEXT NOT NULL)",
    ]
    passing = f"NOT EXISTS (SELECT 1 FROM {APPLYING})"
    guard = f"{passing} AND EXISTS (SELECT 1 FROM {STATE} WHERE {SQLITE_REFUSING})"
    for table in tables():
        name, key = table.name, key_column(table)
        for op in ("INSERT", "UPDATE", "DELETE"):
            statements.append(
                f"CREATE TRIGGER IF NOT EXISTS {STATE}_guard_{op.lower()}_{name} "
                f"BEFORE {op} ON {name} WHEN {guard} "
                f"BEGIN SELECT RAISE(ABORT, '{FROZEN_MESSAGE}'); END"
            )
        record = f"INSERT INTO {CHANGES} (tbl, key, at) VALUES ('{name}', %s, {SQLITE_NOW});"
        statements += [
            f"CREATE TRIGGER IF NOT EXISTS {STATE}_capture_insert_{name} "
            f"AFTER INSERT ON {name} WHEN {passing} BEGIN {record % f'NEW.{key}'} END",
            f"CREATE TRIGGER IF NOT EXISTS {STATE}_capture_update_{name} "
            f"AFTER UPDATE ON {name} WHEN {passing} BEGIN {record % f'NEW.{key}'} "
            f"INSERT INTO {CHANGES} (tbl, key, at) SELECT '{name}', OLD.{key}, {SQLITE_NOW} "
            f"WHERE OLD.{key} IS NOT NEW.{key}; END",
            f"CREATE TRIGGER IF NOT EXISTS {STATE}_capture_delete_{name} "
            f"AFTER DELETE ON {name} WHEN {passing} BEGIN {record % f'OLD.{key}'} END",
        ]
    return statements


def sqlite_remove() -> list[str]:
    statements = []
    for table in tables():
        for kind in ("guard", "capture"):
            for op in ("insert", "update", "delete"):
                statements.append(f"DROP TRIGGER IF EXISTS {STATE}_{kind}_{op}_{table.name}")
    kept = (CHANGES, CURSOR, APPLYING, APPLIED, STATE)  # conflicts stay for their reader
    return statements + [f"DROP TABLE IF EXISTS {t}" for t in kept]


_PG_GUARD = f"""
CREATE OR REPLACE FUNCTION {STATE}_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  state record;
BEGIN
  IF current_setting('bookedbarber.applying', true) = 'on' THEN
    RETURN NULL;
  END IF;
  SELECT active, frozen_until INTO state FROM {STATE} WHERE id = 1 FOR SHARE;
  IF state.active <> 'postgresql' OR state.frozen_until > {PG_NOW} THEN
    RAISE EXCEPTION '{FROZEN_MESSAGE}' USING ERRCODE = '{FROZEN_SQLSTATE}';
  END IF;
  RETURN NULL;
END $$
"""
_PG_CAPTURE = f"""
CREATE OR REPLACE FUNCTION {STATE}_capture() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('bookedbarber.applying', true) = 'on' THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.id IS DISTINCT FROM NEW.id) THEN
    INSERT INTO {CHANGES} (tbl, key, at) VALUES (TG_TABLE_NAME, OLD.id, {PG_NOW});
  END IF;
  IF TG_OP <> 'DELETE' THEN
    INSERT INTO {CHANGES} (tbl, key, at) VALUES (TG_TABLE_NAME, NEW.id, {PG_NOW});
  END IF;
  RETURN NULL;
END $$
"""


def pg_install(active: str = "sqlite") -> list[str]:
    statements = [
        f"CREATE TABLE IF NOT EXISTS {STATE} (id integer PRIMARY KEY CHECK (id = 1), "
        "active text NOT NULL, epoch integer NOT NULL DEFAULT 0, reason text, "
        "frozen_until double precision NOT NULL DEFAULT 0, owner text, "
        "switched_at double precision, block_end bigint NOT NULL DEFAULT 0, left_on text, "
        "left_count bigint, left_at double precision)",
        f"INSERT INTO {STATE} (id, active) VALUES (1, '{active}') ON CONFLICT DO NOTHING",
        f"CREATE TABLE IF NOT EXISTS {CHANGES} (seq bigserial PRIMARY KEY, "
        "tbl text NOT NULL, key bigint NOT NULL, at double precision NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {CURSOR} (direction text PRIMARY KEY, "
        "last_seq bigint NOT NULL, applied_at double precision)",
        f"CREATE TABLE IF NOT EXISTS {APPLIED} (id bigserial PRIMARY KEY, "
        "tbl text NOT NULL, key bigint NOT NULL, at double precision NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {CONFLICTS} (id bigserial PRIMARY KEY, "
        "at double precision NOT NULL, tbl text NOT NULL, key bigint NOT NULL, "
        "kept text NOT NULL, kept_row jsonb, lost text NOT NULL, lost_row jsonb, "
        "reason text NOT NULL)",
        _PG_GUARD,
        _PG_CAPTURE,
    ]
    for table in tables():
        name = table.name
        assert key_column(table) == "id", name  # the capture function reads NEW.id
        statements += [
            f"DROP TRIGGER IF EXISTS {STATE}_guard ON {name}",
            f"CREATE TRIGGER {STATE}_guard BEFORE INSERT OR UPDATE OR DELETE ON {name} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {STATE}_guard()",
            f"DROP TRIGGER IF EXISTS {STATE}_capture ON {name}",
            f"CREATE TRIGGER {STATE}_capture AFTER INSERT OR UPDATE OR DELETE ON {name} "
            f"FOR EACH ROW EXECUTE FUNCTION {STATE}_capture()",
        ]
    return statements


def pg_remove() -> list[str]:
    statements = []
    for table in tables():
        statements += [
            f"DROP TRIGGER IF EXISTS {STATE}_guard ON {table.name}",
            f"DROP TRIGGER IF EXISTS {STATE}_capture ON {table.name}",
        ]
    return [
        *statements,
        f"DROP TABLE IF EXISTS {CHANGES}, {CURSOR}, {APPLIED}, {STATE}",
        f"DROP FUNCTION IF EXISTS {STATE}_guard(), {STATE}_capture()",
    ]


def is_frozen_error(exc: BaseException) -> bool:
    """A write refused by the guard: by SQLite's extended code or PostgreSQL's SQLSTATE."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, Frozen):
            return True
        if getattr(current, "sqlite_errorcode", None) == SQLITE_CONSTRAINT_TRIGGER:
            return True
        if getattr(current, "sqlstate", None) == FROZEN_SQLSTATE:
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False
