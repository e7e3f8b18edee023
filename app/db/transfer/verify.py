"""Row counts and order-independent content checksums, computed on both sides."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.db.transfer import lite, pg
from app.db.transfer.digest import Digest, pg_digest, sqlite_digest
from app.db.transfer.options import CopyOptions, backend, pg_connect, sqlite_path
from app.db.transfer.probe import fits
from app.db.transfer.report import Check, Report, TransferError
from app.db.transfer.schema import Table, quote
from app.db.transfer.types import Type
from app.db.transfer.values import Options, canonical

if TYPE_CHECKING:
    import asyncpg

BUCKETS = 1024
MASK = 2**64 - 1
SAMPLE_CAP = 100_000
BATCH = 5_000


@dataclass
class Side:
    """One end of a comparison: a SQLite connection or a PostgreSQL schema."""

    sqlite: sqlite3.Connection | None = None
    pg: asyncpg.Connection | None = None
    schema: str = "public"

    async def rows(self, table: Table, columns: list[str]) -> AsyncIterator[tuple[object, ...]]:
        after: list[object] | None = None
        nkeys = len(lite.key_columns(table) if self.sqlite else pg.key_columns(table))
        while True:
            if self.sqlite is not None:
                batch = await asyncio.to_thread(
                    lite.read_batch, self.sqlite, table, columns, after, BATCH
                )
            else:
                assert self.pg is not None  # a side is SQLite or PostgreSQL
                exprs = _pg_exprs(table, columns)
                batch = await pg.read_batch(
                    self.pg, self.schema, table, columns, after, BATCH, exprs=exprs
                )
            for row in batch:
                yield row[nkeys:]
            if len(batch) < BATCH:
                return
            after = list(batch[-1][:nkeys])


def _pg_exprs(table: Table, columns: list[str]) -> list[str]:
    """What to read of each column: a type the copy has no kind for as PostgreSQL writes
    it (as the way back stores it, and as the digests take it), not as asyncpg's object."""
    exprs = []
    for name in columns:
        column = table.column(name)
        any_kind = column is not None and column.type.kind == "any"
        exprs.append(f"{quote(name)}::text" if any_kind else quote(name))
    return exprs


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


async def _digest(
    side: Side,
    table: Table,
    columns: list[str],
    forms: list[Callable[[object], str]],
    key_at: list[int],
    wanted: set[int] | None,
) -> tuple[int, int, list[int], dict[str, int]]:
    n = 0
    total = 0
    buckets = [0] * BUCKETS
    found: dict[str, int] = {}
    async for row in side.rows(table, columns):
        texts = [form(value) for form, value in zip(forms, row, strict=True)]
        line = "\x1f".join(texts)
        h = _hash(line)
        key = "|".join(texts[i] for i in key_at) if key_at else line
        bucket = hash(key) % BUCKETS  # both sides digest in this one process
        n += 1
        total = (total + h) & MASK
        buckets[bucket] = (buckets[bucket] + h) & MASK
        if wanted is not None and bucket in wanted and len(found) < SAMPLE_CAP:
            found[key] = (found.get(key, 0) + h) & MASK
    return n, total, buckets, found


def _types(source: Table, target: Table, typed: Table) -> list[tuple[str, str, Type]]:
    """(source column, target column, the typed side's type) for columns both have."""
    pairs = []
    for column in source.columns:
        other = target.column(column.name)
        if other is None:
            continue
        typed_column = typed.column(column.name)
        assert typed_column is not None
        pairs.append((column.name, other.name, typed_column.type))
    return pairs


async def compare(
    source: Side,
    source_table: Table,
    target: Side,
    target_table: Table,
    opts: Options,
) -> Check:
    typed = target_table if target.pg is not None else source_table
    pairs = _types(source_table, target_table, typed)
    # NUL bytes count unless the copy was told to store text without them (--strip-nul).
    forms = [canonical(t, opts) for _s, _t, t in pairs]
    key_names = source_table.primary_key or target_table.primary_key
    key_at = [i for i, (s, _t, _ty) in enumerate(pairs) if s in key_names]
    scols = [s for s, _t, _ty in pairs]
    tcols = [t for _s, t, _ty in pairs]
    sn, ssum, sb, _ = await _digest(source, source_table, scols, forms, key_at, None)
    tn, tsum, tb, _ = await _digest(target, target_table, tcols, forms, key_at, None)
    check = Check(source_table.name, sn, tn, ssum, tsum)
    if check.ok:
        return check
    wanted = {i for i in range(BUCKETS) if sb[i] != tb[i]}
    *_, sfound = await _digest(source, source_table, scols, forms, key_at, wanted)
    *_, tfound = await _digest(target, target_table, tcols, forms, key_at, wanted)
    differing = sorted(k for k in sfound.keys() | tfound.keys() if sfound.get(k) != tfound.get(k))
    check.differing_keys = differing[:5]
    return check


async def digests(
    db: sqlite3.Connection,
    lite_table: Table,
    conn: asyncpg.Connection,
    pg_table: Table,
    opts: Options,
    lite_first: bool = True,
) -> Check:
    """Counts and checksums computed in each database (the PostgreSQL side types the values)."""
    pairs = [(c.name, pg_table.column(c.name)) for c in lite_table.columns]
    types = [(n, other.type) for n, other in pairs if other is not None]
    pg_types = [(other.name, other.type) for _n, other in pairs if other is not None]
    # Each database computes its own at the same time.
    theirs, mine = await asyncio.gather(
        pg_digest(conn, "public", pg_table.name, pg_types),
        asyncio.to_thread(sqlite_digest, db, lite_table, types, opts),
    )
    if lite_first:
        return Check(lite_table.name, mine.rows, theirs.rows, mine.total, theirs.total)
    return Check(lite_table.name, theirs.rows, mine.rows, theirs.total, mine.total)


def _schema_differences(lite_table: Table, pg_table: Table, report: Report) -> None:
    """Columns one side lacks are differences, never skipped silently."""
    for a, b, side in ((lite_table, pg_table, "PostgreSQL"), (pg_table, lite_table, "SQLite")):
        for column in a.columns:
            if b.column(column.name) is None:
                report.note(
                    "schema",
                    a.name,
                    f"column missing on the {side} side",
                    column=column.name,
                )


async def verify(source_url: str, target_url: str, opts: CopyOptions | None = None) -> Report:
    opts = opts or CopyOptions()
    options = Options(opts.round_money, opts.strip_nul)
    pair = (backend(source_url), backend(target_url))
    if "sqlite" not in pair or "postgresql" not in pair:
        raise TransferError("verify compares a SQLite database with a PostgreSQL one")
    lite_url, pg_url = (source_url, target_url) if pair[0] == "sqlite" else (target_url, source_url)
    path = lite.require(sqlite_path(lite_url))
    conn = await pg_connect(pg_url)
    db = lite.connect(path)
    report = Report()
    try:
        lite_tables = lite.reflect(db)
        pg_tables = await pg.reflect(conn, "public")
        for name in sorted(lite_tables.keys() | pg_tables.keys()):
            if name not in lite_tables or name not in pg_tables:
                side = "SQLite" if name in lite_tables else "PostgreSQL"
                report.note("schema", name, f"table exists on the {side} side only")
                continue
            a, b = Side(sqlite=db), Side(pg=conn)
            ta, tb = lite_tables[name], pg_tables[name]
            _schema_differences(ta, tb, report)
            check = await digests(db, ta, conn, tb, options, pair[0] == "sqlite")
            if not check.ok and pair[0] == "sqlite":
                check = await compare(a, ta, b, tb, options)
            elif not check.ok:
                check = await compare(b, tb, a, ta, options)
            report.checks.append(check)
            if not check.ok and check.differing_keys:
                await _unfit_note(db, ta, tb, report)
        return report
    finally:
        db.close()
        await conn.close()


async def _unfit_note(
    db: sqlite3.Connection, lite_table: Table, pg_table: Table, report: Report
) -> None:
    """A PostgreSQL column too narrow for SQLite's values: say which, as a difference."""
    for column in lite_table.columns:
        other = pg_table.column(column.name)
        if other is None:
            continue
        problems, _clean = await asyncio.to_thread(
            fits, db, lite_table, column.name, other.type, Options(strip_nul=True)
        )
        for problem in problems:
            report.note("unfit", lite_table.name, problem)


async def verify_staged(
    path: Path,
    url: str,
    conn: asyncpg.Connection,
    tables: dict[str, Table],
    order: list[str],
    opts: CopyOptions,
    report: Report,
) -> None:
    """Counts and checksums on both sides, computed in each database, tables side by side;
    on a mismatch the values are compared to name the keys.

    The source's checksum was taken by the load's own read of each row (committed with
    each batch); it is computed again here only when the source file changed since the
    copy began or its row count is not the one the load read. PostgreSQL's checksum of
    each staged table was computed over the stored rows when its last batch went in
    (nothing after the load changes a value)."""
    staged = await pg.reflect(conn, pg.STAGING)
    options = Options(opts.round_money, opts.strip_nul)
    gate = asyncio.Semaphore(max(1, opts.jobs))
    stat = await conn.fetchval(f"SELECT value FROM {pg.STATE}.state WHERE key = 'source_stat'")
    unchanged = stat is not None and stat == lite.fingerprint(path)
    loaded = {
        r["table_name"]: r
        for r in await conn.fetch(
            f"SELECT table_name, rows, digest::text, staged_rows, staged_digest::text "
            f"FROM {pg.STATE}.progress"
        )
    }

    def source_digest(
        src: sqlite3.Connection, name: str, types: list[tuple[str, Type]], clean: set[str]
    ) -> Digest:
        if unchanged and name in loaded:
            rows = lite.count(src, name)
            if rows == loaded[name]["rows"]:
                return Digest(rows, int(loaded[name]["digest"]))
        return sqlite_digest(src, tables[name], types, options, clean)

    async def staged_digest(
        db: Callable[[], Awaitable[asyncpg.Connection]], name: str, types: list[tuple[str, Type]]
    ) -> Digest:
        row = loaded.get(name)
        if row is not None and row["staged_rows"] is not None:
            return Digest(int(row["staged_rows"]), int(row["staged_digest"]))
        return await pg_digest(await db(), pg.STAGING, name, types)

    async def check(name: str) -> Check:
        pairs = [(c.name, staged[name].column(c.name)) for c in tables[name].columns]
        types = [(c, other.type) for c, other in pairs if other is not None]
        pg_types = [(other.name, other.type) for _c, other in pairs if other is not None]
        clean = {c.name for c in tables[name].columns if c.clean}
        async with gate:
            src = lite.connect(path)
            # A connection of its own only when PostgreSQL has something to compute (a
            # table whose checksum the load took needs none: 33 connections were 0.15 s).
            own: asyncpg.Connection | None = None

            async def db() -> asyncpg.Connection:
                nonlocal own
                if own is None:
                    own = await pg_connect(url)
                return own

            try:
                theirs, mine = await asyncio.gather(
                    staged_digest(db, name, pg_types),
                    asyncio.to_thread(source_digest, src, name, types, clean),
                )
                result = Check(name, mine.rows, theirs.rows, mine.total, theirs.total)
                if not result.ok:
                    result = await compare(
                        Side(sqlite=src),
                        tables[name],
                        Side(pg=await db(), schema=pg.STAGING),
                        staged[name],
                        options,
                    )
                return result
            finally:
                src.close()
                if own is not None:
                    await own.close()

    report.checks += await asyncio.gather(*(check(name) for name in order))
