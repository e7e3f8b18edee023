"""SQLite -> PostgreSQL: plan, load into a staging schema, constrain, verify, swap."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import sqlite3
from collections.abc import Awaitable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from app.config import redact
from app.db.transfer import lite, pg, probe
from app.db.transfer.constraints import finish_created, finish_filled
from app.db.transfer.digest import converted_digest, pg_digest
from app.db.transfer.load import Batch, convert_rows, progress, read_split
from app.db.transfer.options import CopyOptions, pg_connect, sqlite_path
from app.db.transfer.report import Finding, Report, TransferError
from app.db.transfer.schema import PG_NAME_BYTES, Table, load_order, quote
from app.db.transfer.state import read_state, resume, set_state
from app.db.transfer.values import Options
from app.db.transfer.verify import verify_staged


def _names(tables: dict[str, Table]) -> list[str]:
    """Names PostgreSQL would cut (63 bytes) refused by name before anything moves."""
    problems = []
    for table in tables.values():
        for name in [table.name, *(c.name for c in table.columns)]:
            if len(name.encode()) > PG_NAME_BYTES:
                problems.append(
                    f"{table.name}: the name {name!r} is longer than PostgreSQL's "
                    f"{PG_NAME_BYTES} bytes; rename it in the source first"
                )
    return problems


def _plan_created(
    src: sqlite3.Connection, table: Table, opts: CopyOptions, report: Report
) -> list[str]:
    """Types for a table the copy creates: each column's home for every value it holds."""
    problems: list[str] = []
    options = Options(opts.round_money, opts.strip_nul)
    for column in table.columns:
        if column.type.kind == "any":
            column.type = probe.initial_any(src, table, column.name)
    counts = probe.looks(src, table, [c.type for c in table.columns])
    for column, count in zip(table.columns, counts, strict=True):
        column.type, findings, refused, column.clean = probe.home(
            src, table, column.name, column.type, options, opts.strict, count
        )
        report.findings += findings
        problems += refused
    return problems


def _plan_filled(
    src: sqlite3.Connection, table: Table, target: Table, opts: CopyOptions
) -> list[str]:
    """Filling an existing table: every source column needs a home and every value must fit."""
    problems: list[str] = []
    for column in table.columns:
        if target.column(column.name) is None:
            problems.append(f"{table.name}.{column.name}: the target table has no such column")
    for column in target.columns:
        if column.not_null and not column.has_default and table.column(column.name) is None:
            problems.append(
                f"{table.name}.{column.name}: NOT NULL in the target, missing in the source"
            )
    options = Options(opts.round_money, opts.strip_nul)
    pairs = [(c, target.column(c.name)) for c in table.columns]
    counts = probe.looks(src, table, [o.type if o else c.type for c, o in pairs])
    for (column, other), count in zip(pairs, counts, strict=True):
        if other is not None:
            refused, column.clean = probe.fits(src, table, column.name, other.type, options, count)
            problems += refused
    return problems


async def _plan(
    path: Path,
    conn: Any,
    tables: dict[str, Table],
    opts: CopyOptions,
    report: Report,
    source_id: str,
) -> None:
    public = await pg.reflect(conn, "public")
    problems = _names(tables)
    gate = asyncio.Semaphore(max(1, opts.jobs))

    def plan_one(table: Table) -> tuple[list[str], list[Finding]]:
        """On its own SQLite connection, so tables are probed side by side."""
        own = lite.connect(path)
        try:
            existing = public.get(table.name)
            if existing is not None:
                return _plan_filled(own, table, existing, opts), []
            found = Report()
            return _plan_created(own, table, opts, found), found.findings
        finally:
            own.close()

    async def planned(table: Table) -> tuple[list[str], list[Finding]]:
        async with gate:
            return await asyncio.to_thread(plan_one, table)

    # Biggest first, so the jobs finish together; gathered in the tables' own order,
    # so the report reads the same every run.
    src = lite.connect(path)
    try:
        sizes = {name: lite.count(src, name) for name in tables}
    finally:
        src.close()
    started = {
        t.name: asyncio.ensure_future(planned(t))
        for t in sorted(tables.values(), key=lambda t: -sizes[t.name])
    }
    results = [await started[name] for name in tables]
    for refused, findings in results:
        problems += refused
        report.findings += findings
    for name in tables:
        if name in public and not opts.truncate and await pg.count(conn, "public", name):
            problems.append(
                f"{name}: the target table already has rows (--truncate replaces them; "
                "the current schema is kept)"
            )
    if problems:
        raise TransferError("refused before copying any row:\n  " + "\n  ".join(problems))
    rules = opts.rules is not None and opts.rules.applies(public)
    async with conn.transaction():
        await conn.execute(f"DROP SCHEMA IF EXISTS {pg.STAGING} CASCADE")
        await conn.execute(f"DROP SCHEMA IF EXISTS {pg.STATE} CASCADE")
        await conn.execute(f"CREATE SCHEMA {pg.STAGING}")
        await conn.execute(f"CREATE SCHEMA {pg.STATE}")
        await conn.execute(f"CREATE TABLE {pg.STATE}.state (key text PRIMARY KEY, value text)")
        await conn.execute(
            f"CREATE TABLE {pg.STATE}.progress (table_name text PRIMARY KEY, "
            "last_key jsonb, rows bigint NOT NULL DEFAULT 0, done boolean NOT NULL DEFAULT false, "
            "digest numeric NOT NULL DEFAULT 0, staged_rows bigint, staged_digest numeric)"
        )
        for name, table in tables.items():
            if name in public:
                await pg.stage_like(conn, name)
                action = "filled"
            else:
                await pg.create_table(conn, pg.STAGING, table)
                action = "created"
            await set_state(conn, f"action:{name}", action)
            clean = [c.name for c in table.columns if c.clean]
            await set_state(conn, f"clean:{name}", json.dumps(clean))
            await conn.execute(f"INSERT INTO {pg.STATE}.progress (table_name) VALUES ($1)", name)
        # Tables only the target has (alembic_version, say) come along unchanged.
        for name in public:
            if name not in tables:
                await pg.stage_like(conn, name)
                await conn.execute(
                    f"INSERT INTO {pg.STAGING}.{quote(name)} SELECT * FROM public.{quote(name)}"
                )
                await set_state(conn, f"action:{name}", "kept")
        await set_state(conn, "source", source_id)
        await set_state(conn, "source_stat", lite.fingerprint(path))
        options = [opts.round_money, opts.strip_nul, opts.strict, rules]
        await set_state(conn, "options", json.dumps(options))
        await set_state(
            conn, "findings", json.dumps([asdict(f) for f in report.findings], default=str)
        )
        await set_state(conn, "phase", "load")


async def _load_table(
    path: Path,
    url: str,
    table: Table,
    target: Table,
    state: Any,
    opts: CopyOptions,
    advance: Any,
) -> int:
    """One table in key-range batches; each batch and its progress row commit together."""
    name = table.name
    types = []
    for c in table.columns:
        other = target.column(c.name)
        assert other is not None
        types.append((other.name, other.type))
    options = Options(opts.round_money, opts.strip_nul)
    nkeys = len(lite.key_columns(table))
    after = json.loads(state["last_key"]) if state["last_key"] else None
    columns = [t[0] for t in types]
    clean = {c.name for c in table.columns if c.clean}
    copied = 0
    src = lite.connect(path)
    conn = await pg_connect(url)
    # Each batch commits with its progress row; a lost tail after a server crash is
    # simply loaded again, so the commit need not wait for the disk.
    await conn.execute("SET synchronous_commit = off")

    def read(start: list[Any] | None) -> Awaitable[Batch]:
        return asyncio.to_thread(read_split, src, table, types, start, opts.batch_size, clean)

    reading = asyncio.ensure_future(read(after))
    try:
        while True:
            batch = await reading
            if not batch.done:  # the next range is read while this one travels
                reading = asyncio.ensure_future(read(batch.last))
            records = convert_rows(name, types, batch.slow, nkeys, options, target=True)
            rows = batch.fast_rows + len(records)
            digest = batch.digest + converted_digest(records, types)
            async with conn.transaction():
                if batch.text:
                    await conn.copy_to_table(
                        name,
                        source=io.BytesIO(batch.text),
                        columns=columns,
                        schema_name=pg.STAGING,
                        format="text",
                    )
                if records:
                    await conn.copy_records_to_table(
                        name, records=records, columns=columns, schema_name=pg.STAGING
                    )
                # The staged table's own checksum, computed by PostgreSQL over what it
                # stored, once the last rows are in (while other tables still load).
                staged = await pg_digest(conn, pg.STAGING, name, types) if batch.done else None
                await conn.execute(
                    f"UPDATE {pg.STATE}.progress SET last_key = coalesce($2::jsonb, last_key), "
                    "rows = rows + $3, done = $4, digest = digest + $5::numeric, "
                    "staged_rows = $6, staged_digest = $7::numeric WHERE table_name = $1",
                    name,
                    json.dumps(batch.last) if batch.last else None,
                    rows,
                    batch.done,
                    str(digest),
                    staged.rows if staged else None,
                    str(staged.total) if staged else None,
                )
            copied += rows
            advance(name, rows)
            if batch.done:
                return copied
    finally:
        if not reading.done():
            with contextlib.suppress(Exception):
                await reading  # the thread still reads from src
        src.close()
        await conn.close()


async def _load(
    path: Path,
    url: str,
    conn: Any,
    tables: dict[str, Table],
    order: list[str],
    opts: CopyOptions,
    console: Console,
    report: Report,
) -> None:
    """Tables in parallel (opts.jobs at once), each on its own connections."""
    staged = await pg.reflect(conn, pg.STAGING)
    rows = {r["table_name"]: r for r in await conn.fetch(f"SELECT * FROM {pg.STATE}.progress")}
    src = lite.connect(path)
    try:
        totals = {name: lite.count(src, name) for name in order}
    finally:
        src.close()
    # Biggest first, so the long tables start early.
    pending = sorted((n for n in order if not rows[n]["done"]), key=lambda n: -totals[n])
    with progress(console, totals, {n: int(rows[n]["rows"]) for n in order}) as advance:

        async def worker() -> None:
            while pending:
                name = pending.pop(0)
                copied = await _load_table(
                    path, url, tables[name], staged[name], rows[name], opts, advance
                )
                report.rows_copied += copied

        await asyncio.gather(*(worker() for _ in range(max(1, opts.jobs))))


async def _swap(conn: Any, report: Report) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    kept = f"public_before_{stamp}"
    async with conn.transaction():
        extensions = await conn.fetch(
            "SELECT e.extname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE n.nspname = 'public'"
        )
        await conn.execute(f"ALTER SCHEMA public RENAME TO {kept}")
        await conn.execute(f"ALTER SCHEMA {pg.STAGING} RENAME TO public")
        for row in extensions:
            await conn.execute(f"ALTER EXTENSION {quote(row[0])} SET SCHEMA public")
        await conn.execute(f"DROP SCHEMA {pg.STATE} CASCADE")
    report.kept_schema = kept


async def to_pg(source_url: str, target_url: str, opts: CopyOptions, console: Console) -> Report:
    path = lite.require(sqlite_path(source_url))
    conn = await pg_connect(target_url)
    src = lite.connect(path)
    report = Report()
    try:
        tables = lite.reflect(src)
        if await conn.fetchval("SELECT to_regclass('public.alembic_version')") is not None:
            # The target's migrations made its schema: its revision stays.
            tables.pop("alembic_version", None)
        order, cycles = load_order(tables)
        for cycle in cycles:
            report.note(
                "cycle",
                cycle[0],
                f"foreign-key cycle {' -> '.join(cycle)}: constraints added after the load",
            )
        source_id = str(path.resolve())
        state = await read_state(conn)
        if state is not None and state.get("phase") in ("load", "loaded"):
            if state.get("source") != source_id:
                raise TransferError(
                    "the target holds an unfinished copy of another source; "
                    f"drop schemas {pg.STAGING} and {pg.STATE} to start over"
                )
            console.print(f"resuming the copy into {redact(target_url)}")
            rules = await resume(conn, state, tables, opts, report)
        else:
            await _plan(path, conn, tables, opts, report, source_id)
            state = await read_state(conn)
            assert state is not None
            rules = json.loads(state["options"])[3]
        actions = {k[7:]: v for k, v in state.items() if k.startswith("action:")}
        report.actions = actions
        if state.get("phase") == "load":
            await _load(path, target_url, conn, tables, order, opts, console, report)
            async with conn.transaction():
                # Index builds and key checks sort in memory (the server's memory, not ours).
                await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
                await finish_filled(conn, actions, report)
                await finish_created(conn, tables, actions, report)
                for table in (await pg.reflect(conn, pg.STAGING)).values():
                    await pg.reset_sequences(conn, pg.STAGING, table)
                await set_state(conn, "phase", "loaded")
                await set_state(
                    conn, "findings", json.dumps([asdict(f) for f in report.findings], default=str)
                )
        await verify_staged(path, target_url, conn, tables, order, opts, report)
        if rules and opts.rules is not None:
            report.findings += await opts.rules.check(src, conn, pg.STAGING)
        if not report.ok:
            raise TransferError(
                f"verification failed; the staged copy stays in schema {pg.STAGING}", report
            )
        await _swap(conn, report)
        return report
    finally:
        src.close()
        await conn.close()
