"""The PostgreSQL side: reflect a schema, stage tables, load, constrain, swap."""

from __future__ import annotations

import re
from collections.abc import Sequence

import asyncpg

from app.db.transfer.schema import Column, ForeignKey, Index, Table, quote
from app.db.transfer.types import Type, Unfit, comparable_as, from_pg

STAGING = "bookedbarber_staging"
STATE = "bookedbarber_transfer"
ON_DELETE = {"c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT", "r": "RESTRICT"}


async def reflect(conn: asyncpg.Connection, schema: str) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    rows = await conn.fetch(
        """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS type,
               a.attnotnull, a.atthasdef OR a.attidentity <> '' AS has_default,
               pg_get_expr(d.adbin, d.adrelid) AS default_expr
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
        WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
        ORDER BY c.relname, a.attnum
        """,
        schema,
    )
    for row in rows:
        table = tables.setdefault(row["relname"], Table(row["relname"], []))
        try:
            t = from_pg(row["type"])
        except Unfit:
            t = Type("any")
        table.columns.append(
            Column(
                row["attname"],
                t,
                row["attnotnull"],
                row["has_default"],
                row["type"],
                row["default_expr"],
            )
        )
    constraints = await conn.fetch(
        """
        SELECT c.relname, k.contype::text AS contype, k.conname, p.relname AS parent,
               k.confdeltype::text AS confdeltype,
               ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
                     JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n
                     ORDER BY u.i) AS cols,
               ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
                     JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n
                     ORDER BY u.i) AS parent_cols
        FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_class p ON p.oid = k.confrelid
        WHERE n.nspname = $1 AND k.contype IN ('p', 'f', 'u')
        ORDER BY k.conname
        """,
        schema,
    )
    for row in constraints:
        owner = tables.get(row["relname"])
        if owner is None:
            continue
        table = owner
        if row["contype"] == "p":
            table.primary_key = list(row["cols"])
            table.pk_name = row["conname"]
        elif row["contype"] == "u":
            table.uniques.append(Index(row["conname"], list(row["cols"]), True))
        else:
            table.foreign_keys.append(
                ForeignKey(
                    list(row["cols"]),
                    row["parent"],
                    list(row["parent_cols"]),
                    row["conname"],
                    ON_DELETE.get(row["confdeltype"]),
                )
            )
    indexes = await conn.fetch(
        """
        SELECT t.relname AS table, i.relname AS name, x.indisunique, x.indexprs IS NULL
               AND x.indpred IS NULL AS simple,
               ARRAY(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY u(n, o)
                     JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = u.n
                     ORDER BY u.o) AS cols
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = $1
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)
        """,
        schema,
    )
    for row in indexes:
        owner = tables.get(row["table"])
        if owner is None:
            continue
        table = owner
        if row["simple"]:
            table.indexes.append(Index(row["name"], list(row["cols"]), row["indisunique"]))
        else:
            table.skipped_indexes.append(row["name"])
    return tables


async def count(conn: asyncpg.Connection, schema: str, table: str) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {quote(schema)}.{quote(table)}"))


def key_columns(table: Table) -> list[str]:
    return table.primary_key or ["ctid"]


async def read_batch(
    conn: asyncpg.Connection,
    schema: str,
    table: Table,
    columns: Sequence[str],
    after: Sequence[object] | None,
    size: int,
    *,
    exprs: Sequence[str] | None = None,
) -> list[tuple[object, ...]]:
    """Rows after the given key, in key order: (key values..., column values...).

    exprs: SQL to select instead of the columns (for values PostgreSQL writes out)."""
    keys = key_columns(table)
    key_sql = ", ".join(k if k == "ctid" else quote(k) for k in keys)
    select = ", ".join([key_sql, *(exprs if exprs is not None else map(quote, columns))])
    args: list[object] = []
    where = ""
    if after is not None:
        # A ctid travels as its text: asyncpg would want a tid parameter as a tuple.
        casts = [f"${i + 1}::text::tid" if k == "ctid" else f"${i + 1}" for i, k in enumerate(keys)]
        if len(keys) == 1:
            where = f"WHERE {key_sql} > {casts[0]}"
        else:
            where = f"WHERE ({key_sql}) > ({', '.join(casts)})"
        args = [str(a) if k == "ctid" else a for k, a in zip(keys, after, strict=True)]
    sql = (
        f"SELECT {select} FROM {quote(schema)}.{quote(table.name)} {where} "
        f"ORDER BY {key_sql} LIMIT {int(size)}"
    )
    rows = await conn.fetch(sql, *args)
    if keys == ["ctid"]:
        return [(f"({r[0][0]},{r[0][1]})", *tuple(r)[1:]) for r in rows]
    return [tuple(r) for r in rows]


# Staged tables are loaded with autovacuum off: it would vacuum and analyze them while
# they load (taking CPU from the copy) and hold a lock the keys then wait for (one
# deadlock_timeout each). The swap turns it back on (autovacuum_back).
_LOADING = " WITH (autovacuum_enabled = false)"


async def autovacuum_back(conn: asyncpg.Connection, schema: str) -> None:
    """Autovacuum again for the tables the copy loaded with it off (it analyzes them soon)."""
    names = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relkind = 'r' "
        "AND c.reloptions @> ARRAY['autovacuum_enabled=false']",
        schema,
    )
    for row in names:
        await conn.execute(
            f"ALTER TABLE {quote(schema)}.{quote(row[0])} RESET (autovacuum_enabled)"
        )


async def create_table(conn: asyncpg.Connection, schema: str, table: Table) -> None:
    """Columns only: keys, constraints and indexes come after the data."""
    defs = []
    for column in table.columns:
        decl = column.type.pg()
        if (
            table.primary_key == [column.name]
            and column.type.kind in ("int2", "int4", "int8")
            and table.rowid
        ):
            decl += " GENERATED BY DEFAULT AS IDENTITY"
        defs.append(f"{quote(column.name)} {decl}")
    await conn.execute(
        f"CREATE TABLE {quote(schema)}.{quote(table.name)} ({', '.join(defs)}){_LOADING}"
    )


async def stage_like(conn: asyncpg.Connection, table: str) -> None:
    """An empty twin of an existing public table, with its own sequences, no constraints yet."""
    await conn.execute(
        f"CREATE TABLE {STAGING}.{quote(table)} (LIKE public.{quote(table)} "
        "INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING GENERATED INCLUDING STORAGE "
        f"INCLUDING COMMENTS){_LOADING}"
    )
    serials = await conn.fetch(
        """
        SELECT a.attname, s.relname AS seq, pg_get_expr(d.adbin, d.adrelid) AS expr
        FROM pg_attrdef d
        JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
        JOIN pg_depend p ON p.refobjid = d.adrelid AND p.refobjsubid = d.adnum
             AND p.classid = 'pg_class'::regclass AND p.deptype = 'a'
        JOIN pg_class s ON s.oid = p.objid AND s.relkind = 'S'
        WHERE d.adrelid = ('public.' || quote_ident($1))::regclass
        """,
        table,
    )
    for row in serials:
        seq = f"{STAGING}.{quote(row['seq'])}"
        await conn.execute(f"CREATE SEQUENCE {seq}")
        await conn.execute(
            f"ALTER TABLE {STAGING}.{quote(table)} ALTER COLUMN {quote(row['attname'])} "
            f"SET DEFAULT nextval('{seq}'::regclass)"
        )
        await conn.execute(
            f"ALTER SEQUENCE {seq} OWNED BY {STAGING}.{quote(table)}.{quote(row['attname'])}"
        )


async def public_definitions(
    conn: asyncpg.Connection, table: str
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The public table's constraints (type, name, definition) and its other indexes."""
    await conn.execute("SET LOCAL search_path = public")
    constraints = await conn.fetch(
        """
        SELECT contype::text AS contype, conname, pg_get_constraintdef(oid) AS def
        FROM pg_constraint
        WHERE conrelid = ('public.' || quote_ident($1))::regclass AND contype <> 'n'
        ORDER BY array_position(ARRAY['p', 'u', 'x', 'c', 'f', 't'], contype::text), conname
        """,
        table,
    )
    indexes = await conn.fetch(
        """
        SELECT pg_get_indexdef(x.indexrelid) FROM pg_index x
        WHERE x.indrelid = ('public.' || quote_ident($1))::regclass
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)
        """,
        table,
    )
    on_public = re.compile(r" ON (ONLY )?public\.")
    defs = [on_public.sub(lambda m: f" ON {m.group(1) or ''}{STAGING}.", r[0]) for r in indexes]
    return [(r["contype"], r["conname"], r["def"]) for r in constraints], defs


def _join(fk: ForeignKey, child: Table, parent: Table) -> str:
    """The orphan check's join, cast where the two sides' types differ."""
    parts = []
    for cc, pc in zip(fk.columns, fk.parent_columns, strict=True):
        a, b = child.column(cc), parent.column(pc)
        cast = comparable_as(a.type, b.type) if a and b else "text"
        suffix = f"::{cast}" if cast else ""
        parts.append(f"p.{quote(pc)}{suffix} = c.{quote(cc)}{suffix}")
    return " AND ".join(parts)


async def orphan_rows(
    conn: asyncpg.Connection,
    schema: str,
    child: Table,
    parent: Table,
    fk: ForeignKey,
    key: list[str],
) -> tuple[int, list[object]]:
    """Rows whose key has no parent: counted, and named by their own keys."""
    c_sql = f"{quote(schema)}.{quote(child.name)}"
    p_sql = f"{quote(schema)}.{quote(parent.name)}"
    not_null = " AND ".join(f"c.{quote(cc)} IS NOT NULL" for cc in fk.columns)
    where = f"{not_null} AND NOT EXISTS (SELECT 1 FROM {p_sql} p WHERE {_join(fk, child, parent)})"
    key_sql = ", ".join(f"c.{quote(k)}" for k in key or fk.columns)
    n = await conn.fetchval(f"SELECT count(*) FROM {c_sql} c WHERE {where}")
    if not n:
        return 0, []
    sample = await conn.fetch(
        f"SELECT {key_sql} FROM {c_sql} c WHERE {where} ORDER BY {key_sql} LIMIT 5"
    )
    return int(n), [r[0] if len(r) == 1 else tuple(r) for r in sample]


async def duplicates(
    conn: asyncpg.Connection, schema: str, table: Table, columns: list[str]
) -> list[object]:
    """Values that repeat (NULLs aside) once converted: a unique key PostgreSQL would refuse."""
    cols = ", ".join(quote(c) for c in columns)
    not_null = " AND ".join(f"{quote(c)} IS NOT NULL" for c in columns)
    rows = await conn.fetch(
        f"SELECT {cols} FROM {quote(schema)}.{quote(table.name)} WHERE {not_null} "
        f"GROUP BY {cols} HAVING count(*) > 1 LIMIT 3"
    )
    return [r[0] if len(r) == 1 else tuple(r) for r in rows]


async def nulls(
    conn: asyncpg.Connection, schema: str, table: Table, column: str, key: list[str]
) -> list[object]:
    key_sql = ", ".join(quote(k) for k in key) or "ctid::text"
    rows = await conn.fetch(
        f"SELECT {key_sql} FROM {quote(schema)}.{quote(table.name)} "
        f"WHERE {quote(column)} IS NULL LIMIT 3"
    )
    return [r[0] if len(r) == 1 else tuple(r) for r in rows]


async def reset_sequences(conn: asyncpg.Connection, schema: str, table: Table) -> int:
    """Every serial or identity column's sequence moves past the highest value."""
    n = 0
    for column in table.columns:
        seq = await conn.fetchval(
            "SELECT pg_get_serial_sequence($1, $2)",
            f"{quote(schema)}.{quote(table.name)}",
            column.name,
        )
        if seq is None:
            continue
        top = await conn.fetchval(
            f"SELECT max({quote(column.name)}) FROM {quote(schema)}.{quote(table.name)}"
        )
        if top is None:
            await conn.execute("SELECT setval($1::text::regclass, 1, false)", seq)
        else:
            await conn.execute("SELECT setval($1::text::regclass, $2::bigint, true)", seq, int(top))
        n += 1
    return n


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url, server_settings={"timezone": "UTC"})
