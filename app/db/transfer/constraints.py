"""Keys, NOT NULL, defaults, unique constraints, indexes and foreign keys after the data."""

from __future__ import annotations

import asyncio

import asyncpg

from app.db.transfer import pg
from app.db.transfer.defaults import sqlite_to_pg
from app.db.transfer.report import Report
from app.db.transfer.schema import ForeignKey, Table, quote, shorten
from app.db.transfer.types import family

FK_VIOLATION = "23503"


async def _orphans(
    conn: asyncpg.Connection,
    child: Table,
    parent: Table,
    fk: ForeignKey,
    key: list[str],
    report: Report,
) -> str:
    """Orphaned rows are kept and reported by their own keys; the constraint guards new rows."""
    n, sample = await pg.orphan_rows(conn, pg.STAGING, child, parent, fk, key)
    if not n:
        return ""
    report.note(
        "orphans",
        child.name,
        f"({', '.join(fk.columns)}) -> {fk.parent}: {n} orphaned rows kept; constraint added "
        "NOT VALID, so it guards new rows; clean them and run VALIDATE CONSTRAINT",
        count=n,
        keys=sample,
    )
    return " NOT VALID"


async def finish_filled(conn: asyncpg.Connection, actions: dict[str, str], report: Report) -> None:
    """Tables the target's migrations made get their own constraints and indexes back."""
    staged = await pg.reflect(conn, pg.STAGING)
    filled = [n for n, a in actions.items() if a != "created"]
    definitions = {n: await pg.public_definitions(conn, n) for n in filled}
    public = await pg.reflect(conn, "public")
    await conn.execute(f"SET LOCAL search_path = {pg.STAGING}, public")
    # Keys first, everywhere; foreign keys once every table has its keys.
    for foreign in (False, True):
        for name, (constraints, indexes) in definitions.items():
            fks = {fk.name: fk for fk in public[name].foreign_keys}
            for contype, cname, definition in constraints:
                if (contype == "f") != foreign:
                    continue
                sql = (
                    f"ALTER TABLE {pg.STAGING}.{quote(name)} ADD CONSTRAINT {quote(cname)} "
                    f"{definition}"
                )
                failed = await _try(conn, sql)
                fk = fks.get(cname)
                if failed and failed.startswith(FK_VIOLATION) and fk and fk.parent in staged:
                    key = public[name].primary_key
                    suffix = await _orphans(conn, staged[name], staged[fk.parent], fk, key, report)
                    failed = await _try(conn, sql + suffix)
                if failed:
                    # The target's own rule refuses the data: the copy must not go live.
                    report.note("schema", name, f"constraint {cname} refuses the data: {failed}")
            if not foreign:
                for definition in indexes:
                    if failed := await _try(conn, definition):
                        report.note("schema", name, f"index refuses the data: {failed}")


async def _try(conn: asyncpg.Connection, sql: str) -> str | None:
    """One DDL statement in a savepoint: None, or PostgreSQL's reason (SQLSTATE and message)."""
    try:
        async with conn.transaction():
            await conn.execute(sql)
    except asyncpg.PostgresError as exc:
        return f"{exc.sqlstate}: {exc}"
    return None


async def _unique(
    conn: asyncpg.Connection,
    table: Table,
    name: str,
    columns: list[str],
    constraint: bool,
    report: Report,
) -> None:
    """Tried first (PostgreSQL checks as it builds); repeats are found only when it refuses."""
    qualified = f"{pg.STAGING}.{quote(table.name)}"
    cols = ", ".join(quote(c) for c in columns)
    index = quote(shorten(name))
    if constraint:
        sql = f"ALTER TABLE {qualified} ADD CONSTRAINT {index} UNIQUE ({cols})"
    else:
        sql = f"CREATE UNIQUE INDEX {index} ON {qualified} ({cols})"
    if await _try(conn, sql) is None:
        return
    dups = await pg.duplicates(conn, pg.STAGING, table, columns)
    report.note(
        "unique-skipped",
        table.name,
        f"({', '.join(columns)}) repeats once converted; {name} created as a plain index",
        count=len(dups),
        keys=dups,
    )
    await conn.execute(f"CREATE INDEX {index} ON {qualified} ({cols})")


async def _columns(conn: asyncpg.Connection, table: Table, report: Report) -> None:
    qualified = f"{pg.STAGING}.{quote(table.name)}"
    for column in table.columns:
        if column.default is not None:
            expr = sqlite_to_pg(column.default, column.type)
            failed = None
            if expr is not None:
                failed = await _try(
                    conn,
                    f"ALTER TABLE {qualified} ALTER COLUMN {quote(column.name)} SET DEFAULT {expr}",
                )
            if expr is None or failed:
                report.note(
                    "default-skipped",
                    table.name,
                    f"default {column.default} has no PostgreSQL form for {column.type.pg()}",
                    column=column.name,
                )
    required = [c for c in table.columns if c.not_null]
    if not required:
        return
    every = ", ".join(f"ALTER COLUMN {quote(c.name)} SET NOT NULL" for c in required)
    if await _try(conn, f"ALTER TABLE {qualified} {every}") is None:
        return  # one scan for all of them, the usual case
    for column in required:
        failed = await _try(
            conn, f"ALTER TABLE {qualified} ALTER COLUMN {quote(column.name)} SET NOT NULL"
        )
        if failed:
            missing = await pg.nulls(conn, pg.STAGING, table, column.name, table.primary_key)
            report.note(
                "not-null-skipped",
                table.name,
                "declared NOT NULL but holds NULLs; created nullable",
                column=column.name,
                keys=missing,
            )


async def keys(conn: asyncpg.Connection, table: Table, report: Report) -> None:
    """A table the copy made (its types those staged): the source's NOT NULL, defaults,
    primary key, unique constraints and indexes."""
    name = table.name
    qualified = f"{pg.STAGING}.{quote(name)}"
    await _columns(conn, table, report)
    if table.primary_key:
        named = f"CONSTRAINT {quote(shorten(table.pk_name))} " if table.pk_name else ""
        cols = ", ".join(quote(c) for c in table.primary_key)
        if await _try(conn, f"ALTER TABLE {qualified} ADD {named}PRIMARY KEY ({cols})"):
            report.note(
                "key-skipped",
                name,
                f"primary key ({', '.join(table.primary_key)}) holds NULLs or repeats once "
                "converted; kept as an index",
            )
            pk = table.pk_name or f"pk_{name}"
            await _unique(conn, table, pk, table.primary_key, False, report)
    for unique in table.uniques:
        await _unique(conn, table, unique.name, unique.columns, True, report)
    for index in table.indexes:
        if index.unique:
            await _unique(conn, table, index.name, index.columns, False, report)
        else:
            cols = ", ".join(quote(c) for c in index.columns)
            await conn.execute(f"CREATE INDEX {quote(shorten(index.name))} ON {qualified} ({cols})")
    for skipped in table.skipped_indexes:
        report.note(
            "index-skipped", name, f"index {skipped} (partial or on expressions) not recreated"
        )


async def foreign_keys(
    conn: asyncpg.Connection,
    tables: dict[str, Table],
    staged: dict[str, Table],
    actions: dict[str, str],
    report: Report,
) -> None:
    """The foreign keys of the tables the copy made, once every table has its keys."""
    for name in tables:
        if actions.get(name) == "created":
            for fk in tables[name].foreign_keys:
                await _foreign_key(conn, tables[name], staged, fk, report)


async def _foreign_key(
    conn: asyncpg.Connection, table: Table, staged: dict[str, Table], fk: ForeignKey, report: Report
) -> None:
    name = table.name
    parent = staged.get(fk.parent)
    if parent is None:
        report.note("fk-skipped", name, f"foreign key to missing table {fk.parent} skipped")
        return
    child = staged[name]
    pairs = [
        (child.column(c), parent.column(p))
        for c, p in zip(fk.columns, fk.parent_columns, strict=True)
    ]
    if any(a is None or b is None for a, b in pairs):
        report.note(
            "fk-skipped", name, f"foreign key to {fk.parent} names missing columns; skipped"
        )
        return
    kinds = [(a.type, b.type) for a, b in pairs if a and b]
    if any(family(a) != family(b) for a, b in kinds):
        await _orphans(conn, child, parent, fk, table.primary_key, report)
        shown = ", ".join(f"{a.pg()} -> {b.pg()}" for a, b in kinds)
        report.note(
            "fk-skipped",
            name,
            f"({', '.join(fk.columns)}) -> {fk.parent}: types differ ({shown}); orphans checked "
            "by value, constraint not added",
        )
        return
    cname = _fk_name(table, fk)
    on_delete = f" ON DELETE {fk.on_delete}" if fk.on_delete not in (None, "NO ACTION") else ""
    # Checked afterwards, side by side (validate_foreign_keys).
    sql = (
        f"ALTER TABLE {pg.STAGING}.{quote(name)} ADD CONSTRAINT {quote(cname)} FOREIGN KEY "
        f"({', '.join(quote(c) for c in fk.columns)}) REFERENCES {pg.STAGING}.{quote(fk.parent)} "
        f"({', '.join(quote(c) for c in fk.parent_columns)}){on_delete} NOT VALID"
    )
    if failed := await _try(conn, sql):
        report.note("fk-skipped", name, f"foreign key {cname} not added: {failed}")


def _fk_name(table: Table, fk: ForeignKey) -> str:
    return shorten(fk.name or f"fk_{table.name}_{'_'.join(fk.columns)}")


async def validate_foreign_keys(
    dsn: str, conn: asyncpg.Connection, tables: dict[str, Table], jobs: int, report: Report
) -> None:
    """The copy's foreign keys not yet validated, checked on `jobs` connections at once (a
    check locks its own table against other checks, its parent only against changes). A
    key with orphans stays NOT VALID, guarding new rows; its orphans are reported by their
    own keys. Reports follow the tables' order, whichever check ends first."""
    pending = {
        (r["child"], r["conname"])
        for r in await conn.fetch(
            "SELECT cl.relname AS child, co.conname FROM pg_constraint co "
            "JOIN pg_class cl ON cl.oid = co.conrelid "
            "JOIN pg_namespace n ON n.oid = cl.relnamespace "
            "WHERE n.nspname = $1 AND co.contype = 'f' AND NOT co.convalidated",
            pg.STAGING,
        )
    }
    # Per table, its keys still to check (a table's checks run one after the other).
    work: dict[str, tuple[Table, list[ForeignKey]]] = {}
    for table in tables.values():
        fks = [fk for fk in table.foreign_keys if (table.name, _fk_name(table, fk)) in pending]
        if fks:
            work[table.name] = (table, fks)
    if not work:
        return
    staged = await pg.reflect(conn, pg.STAGING)
    found = {name: Report() for name in work}
    waiting = list(work)

    async def checker() -> None:
        own = await pg.connect(dsn)
        try:
            while waiting:
                table, fks = work[waiting.pop(0)]
                child, notes = staged[table.name], found[table.name]
                for fk in fks:
                    cname = quote(_fk_name(table, fk))
                    failed = await _try(
                        own,
                        f"ALTER TABLE {pg.STAGING}.{quote(child.name)} VALIDATE CONSTRAINT {cname}",
                    )
                    if failed and failed.startswith(FK_VIOLATION):
                        parent = staged[fk.parent]
                        await _orphans(own, child, parent, fk, table.primary_key, notes)
                    elif failed:
                        notes.note(
                            "fk-skipped", child.name, f"foreign key {cname} not valid: {failed}"
                        )
        finally:
            await own.close()

    await asyncio.gather(*(checker() for _ in range(max(1, min(jobs, len(work))))))
    for notes in found.values():
        report.findings += notes.findings
