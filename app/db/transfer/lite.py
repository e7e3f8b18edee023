"""The SQLite side: reflect any file, read it in key order, write a copy back."""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from app.db.transfer import fastpath
from app.db.transfer.report import TransferError
from app.db.transfer.schema import Column, ForeignKey, Index, Table, quote
from app.db.transfer.types import from_sqlite

INTERNAL = re.compile(r"^(sqlite_|_bookedbarber_transfer|_bookedbarber_live)")
_WITHOUT_ROWID = re.compile(r"\)\s*WITHOUT\s+ROWID\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_NAME = r'"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[\w$]+'
_NAMED = re.compile(
    rf"CONSTRAINT\s+({_NAME})\s+(PRIMARY\s+KEY|UNIQUE|FOREIGN\s+KEY)\s*\(([^)]*)\)",
    re.IGNORECASE,
)
# Text SQLite holds as invalid UTF-8 reads as str with surrogate escapes (never an error);
# encoding it back with "surrogateescape" gives the stored bytes exactly.
SAFE_TEXT = functools.partial(str, encoding="utf-8", errors="surrogateescape")


def _suspect(raw: bytes | None) -> int:
    """1 for text PostgreSQL's text cannot take as it is: NUL bytes or invalid UTF-8."""
    if raw is None or (raw.isascii() and b"\x00" not in raw):
        return 0
    if b"\x00" in raw:
        return 1
    try:
        raw.decode()
    except UnicodeDecodeError:
        return 1
    return 0


def fingerprint(path: Path) -> str:
    """Size and modification time of the file and its write-ahead log: changed by any write."""
    parts = []
    for file in (path, path.with_name(path.name + "-wal")):
        if file.exists():
            stat = file.stat()
            parts.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return " ".join(parts)


def require(path: Path) -> Path:
    """The absolute path of an existing SQLite file, or the one-line error."""
    if not path.exists():
        raise TransferError(f"no SQLite database at {path}")
    return path.resolve()


# unixepoch() (3.38) gives the instants' digests (app/db/transfer/fastpath.py).
SQLITE_NEEDED = (3, 38, 0)


def supported(version: tuple[int, int, int] = sqlite3.sqlite_version_info) -> None:
    """The one-line error when Python's SQLite library is older than the copy needs."""
    if version < SQLITE_NEEDED:
        raise TransferError(
            f"the copy needs SQLite {'.'.join(map(str, SQLITE_NEEDED))} or later; "
            f"this Python's sqlite3 module uses {'.'.join(map(str, version))}"
        )


def connect(path: Path, *, create: bool = False) -> sqlite3.Connection:
    supported()
    if not create:
        require(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.text_factory = SAFE_TEXT
    conn.create_function("bb_suspect", 1, _suspect, deterministic=True)
    conn.create_function("bb_f8", 1, fastpath.f8, deterministic=True)
    conn.create_function("bb_repr", 1, repr, deterministic=True)
    conn.create_function("bb_jsonb", 1, fastpath.jsonb_text, deterministic=True)
    conn.create_aggregate("bb_sum", 1, fastpath.Sum)  # type: ignore[arg-type]
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _unquote(name: str) -> str:
    name = name.strip()
    if name[:1] in '"`[' and len(name) > 1:
        return name[1:-1].replace('""', '"') if name[0] == '"' else name[1:-1]
    return name


def _named(sql: str) -> dict[tuple[str, tuple[str, ...]], str]:
    """Declared constraint names by (kind, columns): what PRAGMAs do not tell."""
    found: dict[tuple[str, tuple[str, ...]], str] = {}
    for name, kind, cols in _NAMED.findall(sql):
        columns = tuple(_unquote(c.split()[0]).lower() for c in cols.split(",") if c.strip())
        found[(kind.split()[0].upper(), columns)] = _unquote(name)
    return found


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
                default=default,
            )
            for _cid, cname, decl, notnull, default, _pk in info
        ]
        pk = [row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5])]
        table = Table(name, columns, pk, rowid=not _WITHOUT_ROWID.search(sql))
        named = _named(sql)
        table.pk_name = named.get(("PRIMARY", tuple(c.lower() for c in pk)))
        fks: dict[int, ForeignKey] = {}
        for fid, _seq, parent, child, parent_col, _upd, on_delete, _m in conn.execute(
            f"PRAGMA foreign_key_list({quote(name)})"
        ):
            fk = fks.setdefault(fid, ForeignKey([], parent, [], on_delete=on_delete))
            fk.columns.append(child)
            fk.parent_columns.append(parent_col)
        for fk in fks.values():
            fk.name = named.get(("FOREIGN", tuple(c.lower() for c in fk.columns)))
        table.foreign_keys = [fks[i] for i in sorted(fks, reverse=True)]
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
            if origin == "u":
                declared = named.get(("UNIQUE", tuple(c.lower() for c in cols)))
                table.uniques.append(Index(declared or unique_name(name, cols), cols, True))
            else:
                table.indexes.append(Index(iname, cols, bool(unique)))
        tables[name] = table
    # A foreign key naming no columns refers to the parent's primary key.
    for table in tables.values():
        for fk in table.foreign_keys:
            if any(c is None for c in fk.parent_columns) and fk.parent in tables:
                fk.parent_columns = list(tables[fk.parent].primary_key)
    return tables


def unique_name(table: str, columns: Sequence[str]) -> str:
    return f"uq_{table}_{'_'.join(columns)}"


def key_columns(table: Table) -> list[str]:
    """What the table is read in order of: the rowid where there is one, else its key."""
    if table.rowid:
        return ["rowid"]
    return table.primary_key


def _key_sql(keys: Sequence[str]) -> str:
    return ", ".join("rowid" if k == "rowid" else quote(k) for k in keys)


def count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {quote(table)}").fetchone()[0])


def size(conn: sqlite3.Connection, table: Table) -> int:
    """About how many rows: the highest rowid (one b-tree descent, where count() reads
    the whole table), or the count of a table without rowids."""
    if not table.rowid:
        return count(conn, table.name)
    return int(conn.execute(f"SELECT max(rowid) FROM {quote(table.name)}").fetchone()[0] or 0)


def read_batch(
    conn: sqlite3.Connection,
    table: Table,
    columns: Sequence[str],
    after: Sequence[object] | None,
    size: int,
) -> list[tuple[object, ...]]:
    """Rows after the given key, in key order: (key values..., column values...)."""
    keys = key_columns(table)
    select = ", ".join([_key_sql(keys), *(quote(c) for c in columns)])
    where = ""
    if after is not None:
        marks = ", ".join("?" for _ in keys)
        where = f"WHERE ({_key_sql(keys)}) > ({marks})"
    sql = f"SELECT {select} FROM {quote(table.name)} {where} ORDER BY {_key_sql(keys)} LIMIT ?"
    return conn.execute(sql, [*(after or ()), size]).fetchall()


def _sqlite_name(name: str | None, fallback: str) -> str:
    """SQLite keeps the sqlite_ prefix for itself (sqlite_autoindex_* are its own names)."""
    return fallback if not name or name.lower().startswith("sqlite_") else name


def create_table(conn: sqlite3.Connection, table: Table, defaults: dict[str, str]) -> None:
    """A SQLite table for a PostgreSQL one: NOT NULL, defaults and named constraints kept;
    indexes come after the data."""
    defs = []
    for column in table.columns:
        decl = column.type.sqlite()
        if table.primary_key == [column.name] and column.type.kind in ("int2", "int4", "int8"):
            decl = "INTEGER"  # the rowid alias SQLite autoincrements
        null = " NOT NULL" if column.not_null else ""
        default = f" DEFAULT {defaults[column.name]}" if column.name in defaults else ""
        defs.append(f"{quote(column.name)} {decl}{null}{default}".replace("  ", " ").strip())
    if table.primary_key:
        name = _sqlite_name(table.pk_name, f"pk_{table.name}")
        cols = ", ".join(quote(c) for c in table.primary_key)
        defs.append(f"CONSTRAINT {quote(name)} PRIMARY KEY ({cols})")
    for unique in table.uniques:
        name = _sqlite_name(unique.name, unique_name(table.name, unique.columns))
        cols = ", ".join(quote(c) for c in unique.columns)
        defs.append(f"CONSTRAINT {quote(name)} UNIQUE ({cols})")
    for fk in table.foreign_keys:
        on_delete = f" ON DELETE {fk.on_delete}" if fk.on_delete else ""
        name = f"CONSTRAINT {quote(fk.name)} " if fk.name else ""
        defs.append(
            f"{name}FOREIGN KEY ({', '.join(quote(c) for c in fk.columns)}) REFERENCES "
            f"{quote(fk.parent)} ({', '.join(quote(c) for c in fk.parent_columns)}){on_delete}"
        )
    conn.execute(f"CREATE TABLE {quote(table.name)} ({', '.join(defs)})")


def create_indexes(conn: sqlite3.Connection, table: Table) -> None:
    for index in table.indexes:
        unique = "UNIQUE " if index.unique else ""
        name = _sqlite_name(index.name, f"ix_{table.name}_{'_'.join(index.columns)}")
        conn.execute(
            f"CREATE {unique}INDEX IF NOT EXISTS {quote(name)} ON {quote(table.name)} "
            f"({', '.join(quote(c) for c in index.columns)})"
        )


def orphans(
    conn: sqlite3.Connection, tables: dict[str, Table]
) -> dict[tuple[str, str], tuple[int, list[object]]]:
    """PRAGMA foreign_key_check per (table, parent): count and the orphaned rows' own keys."""
    found: dict[tuple[str, str], tuple[int, list[object]]] = {}
    for table, rowid, parent, _fkid in conn.execute("PRAGMA foreign_key_check").fetchall():
        n, sample = found.get((table, parent), (0, []))
        if len(sample) < 5:
            key = tables[table].primary_key if table in tables else []
            if key and rowid is not None:
                row = conn.execute(
                    f"SELECT {', '.join(quote(k) for k in key)} FROM {quote(table)} "
                    "WHERE rowid = ?",
                    (rowid,),
                ).fetchone()
                sample.append(row[0] if len(row) == 1 else tuple(row))
            else:
                sample.append(rowid)
        found[(table, parent)] = (n + 1, sample)
    return found
