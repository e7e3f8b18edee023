"""The SQLite side: reflect any file, read it in key order, write a copy back."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.db.transfer.schema import Column, ForeignKey, Index, Table, quote
from app.db.transfer.types import from_sqlite

INTERNAL = re.compile(r"^(sqlite_|_bookedbarber_transfer)")
_WITHOUT_ROWID = re.compile(r"\)\s*WITHOUT\s+ROWID\s*;?\s*$", re.IGNORECASE | re.DOTALL)


def connect(path: Path, *, create: bool = False) -> sqlite3.Connection:
    if not create and not path.exists():
        raise FileNotFoundError(f"no SQLite database at {path}")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def reflect(conn: sqlite3.Connection) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"
    ).fetchall()
    for name, sql in rows:
        if INTERNAL.match(name) or sql is None or sql.upper().startswith("CREATE VIRTUAL"):
            continue
        info = conn.execute(f"PRAGMA table_info({quote(name)})").fetchall()
        columns = [
            Column(
                cname,
                from_sqlite(decl),
                not_null=bool(notnull),
                has_default=default is not None,
                declared=decl,
            )
            for _cid, cname, decl, notnull, default, _pk in info
        ]
        pk = [row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5])]
        table = Table(name, columns, pk, rowid=not _WITHOUT_ROWID.search(sql))
        fks: dict[int, ForeignKey] = {}
        for fid, _seq, parent, child, parent_col, _upd, on_delete, _m in conn.execute(
            f"PRAGMA foreign_key_list({quote(name)})"
        ):
            fk = fks.setdefault(fid, ForeignKey([], parent, [], on_delete=on_delete))
            fk.columns.append(child)
            fk.parent_columns.append(parent_col)
        table.foreign_keys = list(fks.values())
        for _s, iname, unique, origin, partial in conn.execute(
            f"PRAGMA index_list({quote(name)})"
        ).fetchall():
            if origin == "pk":
                continue
            parts = conn.execute(f"PRAGMA index_info({quote(iname)})").fetchall()
            if partial or any(cid < 0 for _n, cid, _c in parts):
                table.skipped_indexes.append(iname)
                continue
            cols = [c for _n, _cid, c in sorted(parts)]
            table.indexes.append(Index(iname, cols, bool(unique)))
        tables[name] = table
    # A foreign key naming no columns refers to the parent's primary key.
    for table in tables.values():
        for fk in table.foreign_keys:
            if any(c is None for c in fk.parent_columns) and fk.parent in tables:
                fk.parent_columns = list(tables[fk.parent].primary_key)
    return tables


def key_columns(table: Table) -> list[str]:
    """What the table is read in order of: the rowid where there is one, else its key."""
    if table.rowid:
        return ["rowid"]
    return table.primary_key


def _key_sql(keys: Sequence[str]) -> str:
    return ", ".join("rowid" if k == "rowid" else quote(k) for k in keys)


def count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {quote(table)}").fetchone()[0])


def read_batch(
    conn: sqlite3.Connection,
    table: Table,
    columns: Sequence[str],
    after: Sequence[Any] | None,
    size: int,
) -> list[tuple[Any, ...]]:
    """Rows after the given key, in key order: (key values..., column values...)."""
    keys = key_columns(table)
    select = ", ".join([_key_sql(keys), *(quote(c) for c in columns)])
    where = ""
    if after is not None:
        marks = ", ".join("?" for _ in keys)
        where = f"WHERE ({_key_sql(keys)}) > ({marks})"
    sql = f"SELECT {select} FROM {quote(table.name)} {where} ORDER BY {_key_sql(keys)} LIMIT ?"
    return conn.execute(sql, [*(after or ()), size]).fetchall()


@dataclass
class ColumnStats:
    integer: int = 0
    real: int = 0
    text: int = 0
    blob: int = 0
    fractional: int = 0  # reals that are not whole numbers
    non_integer_text: int = 0
    max_length: int = 0
    nul: int = 0
    unfit_numeric: int = 0


def column_stats(conn: sqlite3.Connection, table: Table) -> dict[str, ColumnStats]:
    """One pass in SQLite's own engine: what each column really holds."""
    parts: list[str] = []
    for column in table.columns:
        q = quote(column.name)
        t = column.type
        unfit = "0"
        if t.kind == "numeric" and t.precision is not None:
            scale = t.scale or 0
            unfit = (
                f"typeof({q}) = 'text' OR (typeof({q}) IN ('integer', 'real') AND "
                f"(round({q}, {scale}) <> {q} OR abs({q}) >= 1e{t.precision - scale}))"
            )
        parts += [
            f"sum(typeof({q}) = 'integer')",
            f"sum(typeof({q}) = 'real')",
            f"sum(typeof({q}) = 'text')",
            f"sum(typeof({q}) = 'blob')",
            f"sum(typeof({q}) = 'real' AND {q} <> CAST({q} AS INTEGER))",
            f"sum(typeof({q}) = 'text' AND CAST(CAST({q} AS INTEGER) AS TEXT) <> {q})",
            f"max(CASE WHEN typeof({q}) = 'text' THEN length({q}) END)",
            f"sum(typeof({q}) = 'text' AND instr(CAST({q} AS BLOB), x'00') > 0)",
            f"sum({unfit})",
        ]
    row = conn.execute(f"SELECT {', '.join(parts)} FROM {quote(table.name)}").fetchone()
    stats: dict[str, ColumnStats] = {}
    for i, column in enumerate(table.columns):
        stats[column.name] = ColumnStats(*(int(v or 0) for v in row[i * 9 : i * 9 + 9]))
    return stats


def sample_keys(conn: sqlite3.Connection, table: Table, where: str, limit: int = 3) -> list[Any]:
    keys = table.primary_key or ["rowid"]
    rows = conn.execute(
        f"SELECT {_key_sql(keys)} FROM {quote(table.name)} WHERE {where} LIMIT {limit}"
    ).fetchall()
    return [row[0] if len(row) == 1 else tuple(row) for row in rows]


def create_table(conn: sqlite3.Connection, table: Table) -> None:
    """A SQLite table for a PostgreSQL one, with its keys (indexes come after the data)."""
    defs = []
    for column in table.columns:
        decl = column.type.sqlite()
        if table.primary_key == [column.name] and column.type.kind in ("int2", "int4", "int8"):
            decl = "INTEGER"  # the rowid alias SQLite autoincrements
        null = " NOT NULL" if column.not_null else ""
        defs.append(f"{quote(column.name)} {decl}{null}".rstrip())
    if table.primary_key:
        defs.append(f"PRIMARY KEY ({', '.join(quote(c) for c in table.primary_key)})")
    for fk in table.foreign_keys:
        on_delete = f" ON DELETE {fk.on_delete}" if fk.on_delete else ""
        defs.append(
            f"FOREIGN KEY ({', '.join(quote(c) for c in fk.columns)}) REFERENCES "
            f"{quote(fk.parent)} ({', '.join(quote(c) for c in fk.parent_columns)}){on_delete}"
        )
    conn.execute(f"CREATE TABLE {quote(table.name)} ({', '.join(defs)})")


def create_indexes(conn: sqlite3.Connection, table: Table) -> None:
    for index in table.indexes:
        unique = "UNIQUE " if index.unique else ""
        conn.execute(
            f"CREATE {unique}INDEX IF NOT EXISTS {quote(index.name)} ON {quote(table.name)} "
            f"({', '.join(quote(c) for c in index.columns)})"
        )


def orphans(conn: sqlite3.Connection) -> dict[tuple[str, str], tuple[int, list[Any]]]:
    """PRAGMA foreign_key_check, grouped per (table, parent): count and sample rowids."""
    found: dict[tuple[str, str], tuple[int, list[Any]]] = {}
    for table, rowid, parent, _fkid in conn.execute("PRAGMA foreign_key_check"):
        n, sample = found.get((table, parent), (0, []))
        if len(sample) < 5:
            sample.append(rowid)
        found[(table, parent)] = (n + 1, sample)
    return found
