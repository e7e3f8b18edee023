"""Row counts and content checksums computed where the data is: in SQLite and in PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.db.transfer import fastpath
from app.db.transfer.lite import key_columns
from app.db.transfer.schema import Table, quote
from app.db.transfer.types import Type, Unfit
from app.db.transfer.values import Converter, Options, to_python

if TYPE_CHECKING:
    import asyncpg


@dataclass
class Digest:
    rows: int
    total: int


def all_fast(types: list[tuple[str, Type]], clean: Set[str] = frozenset()) -> str:
    """Rows whose every value SQL vouches for; clean columns need no look at all."""
    return " AND ".join(fastpath.fast(quote(c), t, c in clean) for c, t in types) or "1"


def _slow_text(
    row: tuple[object, ...], funcs: list[Converter], forms: list[Callable[[object], str]]
) -> str:
    texts = []
    for value, func, form in zip(row, funcs, forms, strict=True):
        if value is None:
            texts.append(fastpath.NULL)
            continue
        try:
            texts.append(form(func(value)))
        except (Unfit, ValueError, OverflowError):
            texts.append(f"\\unfit {value!r}")  # never equal to a stored value's text
    return fastpath.SEP.join(texts)


def sqlite_digest(
    conn: sqlite3.Connection,
    table: Table,
    types: list[tuple[str, Type]],
    opts: Options,
    clean: Set[str] = frozenset(),
) -> Digest:
    """types: (SQLite column, the PostgreSQL type its values are read as)."""
    return sqlite_digests(conn, table, types, opts, clean).get(0, Digest(0, 0))


def sqlite_digests(
    conn: sqlite3.Connection,
    table: Table,
    types: list[tuple[str, Type]],
    opts: Options,
    clean: Set[str] = frozenset(),
    *,
    group: str = "0",
    where: str = "1",
) -> dict[int, Digest]:
    """Digests of the rows `where` picks, by the integer `group` gives each row."""
    name = quote(table.name)
    condition = all_fast(types, clean)
    texts = fastpath.joined([fastpath.digest_sqlite(quote(c), t) for c, t in types], fastpath.SEP)
    # One scan: every row counted, fast rows hashed in SQLite's own pass.
    found: dict[int, Digest] = {}
    slow = False
    for bucket, everything, summed in conn.execute(
        f"SELECT {group}, count(*), bb_sum(CASE WHEN {condition} THEN CAST({texts} AS BLOB) END) "
        f"FROM {name} WHERE {where} GROUP BY 1"
    ):
        rows, total = (int(v) for v in (summed or "0 0").split())
        found[int(bucket)] = Digest(rows, total)
        slow = slow or everything != rows
    if not slow:
        return found
    funcs = [to_python(t, Options(opts.round_money, opts.strip_nul)) for _c, t in types]
    forms = [fastpath.digest_python(t) for _c, t in types]
    select = ", ".join(quote(c) for c, _t in types) or "NULL"
    keys = ", ".join("rowid" if k == "rowid" else quote(k) for k in key_columns(table))
    cursor = conn.execute(
        f"SELECT {group}, {select} FROM {name} WHERE ({where}) AND NOT ({condition}) "
        f"ORDER BY {keys}"
    )
    while batch := cursor.fetchmany(5_000):
        for bucket, *row in batch:
            digest = found[int(bucket)]
            digest.rows += 1
            digest.total += fastpath.row_hash(_slow_text(tuple(row) if types else (), funcs, forms))
    return found


def converted_digest(records: list[tuple[object, ...]], types: list[tuple[str, Type]]) -> int:
    """The sum of the hashes of rows the Python converters made, as the target takes them."""
    forms = [fastpath.digest_python(t) for _c, t in types]
    null, sep, row_hash = fastpath.NULL, fastpath.SEP, fastpath.row_hash
    return sum(
        row_hash(sep.join(null if v is None else form(v) for v, form in zip(r, forms, strict=True)))
        for r in records
    )


async def pg_digest(
    conn: asyncpg.Connection, schema: str, table: str, types: list[tuple[str, Type]]
) -> Digest:
    """types: (PostgreSQL column, its type)."""
    return (await pg_digests(conn, schema, table, types)).get(0, Digest(0, 0))


async def pg_digests(
    conn: asyncpg.Connection,
    schema: str,
    table: str,
    types: list[tuple[str, Type]],
    *,
    group: str = "0",
    where: str = "TRUE",
) -> dict[int, Digest]:
    """Digests of the rows `where` picks, by the integer `group` gives each row."""
    texts = [fastpath.digest_pg(c, t) for c, t in types]
    rows = await conn.fetch(
        f"SELECT {group}, count(*), sum({fastpath.row_hash_pg(texts)})::text "
        f"FROM {quote(schema)}.{quote(table)} WHERE {where} GROUP BY 1"
    )
    return {int(r[0]): Digest(int(r[1]), int(r[2] or 0)) for r in rows}
