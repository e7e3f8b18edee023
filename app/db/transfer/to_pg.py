"""SQLite -> PostgreSQL: plan, load into a staging schema, constrain, verify, swap."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from app.db.transfer import lite, pg, workers
from app.db.transfer.constraints import finish_filled, foreign_keys, validate_foreign_keys
from app.db.transfer.load import progress
from app.db.transfer.options import CopyOptions, pg_connect, sqlite_path
from app.db.transfer.report import Finding, Report, TransferError
from app.db.transfer.schema import PG_NAME_BYTES, Table, load_order, quote
from app.db.transfer.state import PROGRESS, read_state, resume, set_state
from app.db.transfer.values import Options
from app.db.transfer.verify import verify_staged
from app.urls import asyncpg_dsn, redact

if TYPE_CHECKING:
    import asyncpg
    from rich.console import Console


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


async def _begin(
    path: Path,
    conn: asyncpg.Connection,
    tables: dict[str, Table],
    public: dict[str, Table],
    opts: CopyOptions,
    source_id: str,
) -> None:
    """What can be refused without reading a row, then the staging and state schemas: a
    progress row per table; tables the target already has are staged empty as they are."""
    problems = _names(tables)
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
        await conn.execute(PROGRESS)
        for name in tables:
            action = "created"
            if name in public:
                await pg.stage_like(conn, name)
                action = "filled"
            await set_state(conn, f"action:{name}", action)
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
        chosen = [opts.round_money, opts.strip_nul, opts.strict, rules]
        await set_state(conn, "options", json.dumps(chosen))
        await set_state(conn, "phase", "load")


async def _run(
    path: Path,
    url: str,
    conn: asyncpg.Connection,
    tables: dict[str, Table],
    public: dict[str, Table],
    actions: dict[str, str],
    opts: CopyOptions,
    console: Console,
    report: Report,
    executor: ProcessPoolExecutor,
) -> None:
    """Every table's remaining steps (probe, create, load, keys) by the workers, biggest
    table first, so the workers finish together."""
    rows = {r["table_name"]: r for r in await conn.fetch(f"SELECT * FROM {pg.STATE}.progress")}
    src = lite.connect(path)
    try:
        # The order needs only sizes; the bars (on a terminal) exact counts, which read
        # every table in full.
        if console.is_terminal:
            totals = {name: lite.count(src, name) for name in tables}
        else:
            totals = {name: lite.size(src, table) for name, table in tables.items()}
    finally:
        src.close()
    options = Options(opts.round_money, opts.strip_nul)
    dsn = asyncpg_dsn(url)
    jobs = [
        workers.Job(
            tables[name],
            public[name] if actions[name] == "filled" else None,
            r["planned"],
            r["done"],
            r["keyed"],
            r["last_key"],
        )
        for name, r in sorted(rows.items(), key=lambda item: -totals[item[0]])
    ]
    pending = [job for job in jobs if not job.finished]
    refused: dict[str, list[str]] = {}
    shown = {n: int(rows[n]["rows"]) for n in tables}
    with progress(console, totals, shown) as advance:

        async def worker() -> None:
            while pending:
                job = pending.pop(0)
                outcome = await workers.run(
                    executor,
                    workers.copy_table,
                    path,
                    dsn,
                    job,
                    opts.batch_size,
                    options,
                    opts.strict,
                )
                tables[job.table.name] = outcome.table
                report.rows_copied += outcome.rows
                if outcome.refused:
                    refused[job.table.name] = outcome.refused
                    await set_state(conn, "refused", "true")

        async def watch() -> None:
            """The bars follow the committed progress rows (what a resume would find),
            read on a connection of their own."""
            own = await pg_connect(url)
            try:
                while True:
                    await asyncio.sleep(0.25)
                    query = f"SELECT table_name, rows FROM {pg.STATE}.progress"
                    for r in await own.fetch(query):
                        name, done = r["table_name"], int(r["rows"])
                        if name in shown and done > shown[name]:
                            advance(name, done - shown[name])
                            shown[name] = done
            finally:
                await own.close()

        watcher = asyncio.ensure_future(watch()) if console.is_terminal else None
        try:
            await asyncio.gather(*(worker() for _ in range(max(1, opts.jobs))))
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
    if refused:
        async with conn.transaction():
            await conn.execute(f"DROP SCHEMA {pg.STAGING} CASCADE")
            await conn.execute(f"DROP SCHEMA {pg.STATE} CASCADE")
        problems = [p for name in tables for p in refused.get(name, [])]
        raise TransferError("refused; the target is unchanged:\n  " + "\n  ".join(problems))


async def _finish(
    conn: asyncpg.Connection, tables: dict[str, Table], actions: dict[str, str], report: Report
) -> None:
    """Findings of each table's steps, the target's own constraints on the tables it
    had, foreign keys once every table has its keys, sequences; then phase 'loaded'."""
    steps = {
        r["table_name"]: r
        for r in await conn.fetch(
            f"SELECT table_name, findings, key_findings FROM {pg.STATE}.progress"
        )
    }

    def found(column: str) -> list[Finding]:
        return [Finding(**f) for name in tables for f in json.loads(steps[name][column] or "[]")]

    async with conn.transaction():
        # Index builds and key checks sort in memory (the server's memory, not ours).
        await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        report.findings += found("findings")
        await finish_filled(conn, actions, report)
        report.findings += found("key_findings")
        staged = await pg.reflect(conn, pg.STAGING)
        await foreign_keys(conn, tables, staged, actions, report)
        for table in staged.values():
            await pg.reset_sequences(conn, pg.STAGING, table)
        await set_state(conn, "phase", "loaded")
        saved = [asdict(f) for f in report.findings if f.kind != "cycle"]
        await set_state(conn, "findings", json.dumps(saved, default=str))


async def _swap(conn: asyncpg.Connection, report: Report) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    kept = f"public_before_{stamp}"
    async with conn.transaction():
        extensions = await conn.fetch(
            "SELECT e.extname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE n.nspname = 'public'"
        )
        await pg.autovacuum_back(conn, pg.STAGING)
        await conn.execute(f"ALTER SCHEMA public RENAME TO {kept}")
        await conn.execute(f"ALTER SCHEMA {pg.STAGING} RENAME TO public")
        for row in extensions:
            await conn.execute(f"ALTER EXTENSION {quote(row[0])} SET SCHEMA public")
        await conn.execute(f"DROP SCHEMA {pg.STATE} CASCADE")
    report.kept_schema = kept


async def to_pg(source_url: str, target_url: str, opts: CopyOptions, console: Console) -> Report:
    # The workers start first: their interpreters start while this one reads the URLs.
    with workers.pool(max(1, opts.jobs)) as executor:
        path = lite.require(sqlite_path(source_url))
        return await _to_pg(path, target_url, opts, console, executor)


async def _to_pg(
    path: Path, target_url: str, opts: CopyOptions, console: Console, executor: ProcessPoolExecutor
) -> Report:
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
        source_id = str(path)
        public = await pg.reflect(conn, "public")
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
            await _begin(path, conn, tables, public, opts, source_id)
            state = await read_state(conn)
            assert state is not None
            rules = json.loads(state["options"])[3]
        actions = {k[7:]: v for k, v in state.items() if k.startswith("action:")}
        report.actions = actions
        if state.get("phase") == "load":
            await _run(
                path, target_url, conn, tables, public, actions, opts, console, report, executor
            )
            await _finish(conn, tables, actions, report)
        created = {n: t for n, t in tables.items() if actions.get(n) == "created"}
        await validate_foreign_keys(asyncpg_dsn(target_url), conn, created, opts.jobs, report)
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
