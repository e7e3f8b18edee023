"""PostgreSQL -> SQLite (the way back): same batches, resumable, verified."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.db.migrate import upgrade
from app.db.transfer import lite, pg, workers
from app.db.transfer.defaults import pg_to_sqlite
from app.db.transfer.load import collector_paused, progress
from app.db.transfer.options import CopyOptions, pg_connect, sqlite_path
from app.db.transfer.reading import Reading, Rows, read_batch
from app.db.transfer.report import Check, Report, TransferError
from app.db.transfer.schema import Table, load_order, quote
from app.db.transfer.stamp import service_schema
from app.db.transfer.types import Type
from app.db.transfer.values import Options
from app.db.transfer.verify import Side, compare, digests
from app.urls import asyncpg_dsn

if TYPE_CHECKING:
    import asyncpg
    from rich.console import Console

LITE_PROGRESS = "_bookedbarber_transfer_progress"
# A row of LITE_PROGRESS: table_name, last_key (JSON), rows, done, action.
_Progress = tuple[str, str | None, int, int, str]


def _defaults(table: Table, report: Report) -> dict[str, str]:
    found = {}
    for column in table.columns:
        if column.default is None:
            continue
        expr = pg_to_sqlite(column.default, column.type)
        if expr is None:
            if not column.default.lower().startswith("nextval("):
                report.note(
                    "default-skipped",
                    table.name,
                    f"default {column.default} has no SQLite form",
                    column=column.name,
                )
            continue
        found[column.name] = expr
    return found


def _start(
    dst: sqlite3.Connection,
    tables: dict[str, Table],
    order: list[str],
    opts: CopyOptions,
    report: Report,
    migrated: bool = False,
) -> None:
    existing = lite.reflect(dst)
    problems = []
    for name in order:
        if name in existing:
            for column in tables[name].columns:
                if existing[name].column(column.name) is None:
                    problems.append(f"{name}.{column.name}: the target table has no such column")
            # A file the copy has just migrated holds its stamp only (the source's revision).
            if not (opts.truncate or migrated) and lite.count(dst, name):
                problems.append(f"{name}: the target table already has rows (--truncate)")
    if problems:
        raise TransferError("refused before copying any row:\n  " + "\n  ".join(problems))
    dst.execute("BEGIN IMMEDIATE")
    dst.execute(
        f"CREATE TABLE {LITE_PROGRESS} (table_name TEXT PRIMARY KEY, last_key TEXT, "
        "rows INTEGER NOT NULL DEFAULT 0, done INTEGER NOT NULL DEFAULT 0, action TEXT)"
    )
    for name in order:
        if name in existing:
            dst.execute(f"DELETE FROM {quote(name)}")
            action = "filled"
        else:
            lite.create_table(dst, tables[name], _defaults(tables[name], report))
            action = "created"
        dst.execute(
            f"INSERT INTO {LITE_PROGRESS} (table_name, action) VALUES (?, ?)", (name, action)
        )
    dst.execute("COMMIT")


async def _load_table(
    executor: ProcessPoolExecutor,
    dsn: str,
    dst: sqlite3.Connection,
    table: Table,
    target: Table,
    state: _Progress,
    opts: CopyOptions,
    advance: Callable[[str, int], None],
    writer: asyncio.Lock,
) -> int:
    """Batches read and converted by a worker, each written (with its progress row) here
    while the worker reads the next: this process only writes, one batch at a time (the
    writer lock) for every table loading at once."""
    name = table.name
    _n, last_key, _rows, _done, _action = state
    # The typed side decides: a PostgreSQL numeric goes to SQLite as text digits.
    types: list[tuple[str, Type]] = []
    for column in table.columns:
        other = target.column(column.name)
        assert other is not None
        types.append((other.name, column.type))
    options = Options(opts.round_money, opts.strip_nul)
    reading = Reading.of(dsn, table, types, options, opts.batch_size)
    insert = (
        f"INSERT INTO {quote(name)} ({', '.join(quote(t[0]) for t in types)}) "
        f"VALUES ({', '.join('?' for _ in types)})"
    )
    copied = 0

    def read(start: list[object] | None) -> asyncio.Future[Rows]:
        return asyncio.ensure_future(workers.run(executor, read_batch, reading, start))

    fetching = read(json.loads(last_key) if last_key else None)
    try:
        while True:
            rows, last = await fetching
            finished = len(rows) < opts.batch_size
            if not finished:  # the next range is read while this one is written
                fetching = read(last)
            async with writer:
                await _finish(asyncio.to_thread(_write, dst, insert, rows, name, last, finished))
            copied += len(rows)
            advance(name, len(rows))
            if finished:
                return copied
    finally:
        if not fetching.done():
            fetching.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await fetching


async def _finish(work: Coroutine[object, object, None]) -> None:
    """A write in its thread, waited for to its end even when the copy is cancelled
    meanwhile: the connection is closed only once no thread writes on it."""
    job = asyncio.ensure_future(work)
    try:
        await asyncio.shield(job)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await job
        raise


def _write(
    dst: sqlite3.Connection,
    insert: str,
    rows: list[tuple[object, ...]],
    name: str,
    last: list[object] | None,
    finished: bool,
) -> None:
    dst.execute("BEGIN IMMEDIATE")
    try:
        dst.executemany(insert, rows)
        dst.execute(
            f"UPDATE {LITE_PROGRESS} SET last_key = coalesce(?, last_key), "
            "rows = rows + ?, done = ? WHERE table_name = ?",
            (json.dumps(last, default=str) if last else None, len(rows), int(finished), name),
        )
        dst.execute("COMMIT")
    except BaseException:
        dst.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def _writing(dst: sqlite3.Connection) -> Iterator[None]:
    """While the copy writes: the target in WAL mode with synchronous=NORMAL, so a batch's
    commit (its progress row with it) does not wait for the disk; a batch lost to a power
    cut is loaded again on resume, and WAL keeps the file whole. The file's own journal
    mode comes back at the end. The garbage collector pauses meanwhile."""
    mode = dst.execute("PRAGMA journal_mode").fetchone()[0]
    dst.execute("PRAGMA journal_mode=WAL")
    dst.execute("PRAGMA synchronous=NORMAL")
    try:
        with collector_paused():
            yield
    finally:
        with contextlib.suppress(sqlite3.Error):  # another connection has the file open
            dst.execute(f"PRAGMA journal_mode={mode}")


def _digests(path: Path, dsn: str, lite_table: Table, pg_table: Table, opts: Options) -> Check:
    """In a worker: a loaded table's counts and checksums, computed by each database on a
    connection of the worker's own (the target in WAL mode, its reads wait for no write)."""

    async def both() -> Check:
        conn = await pg.connect(dsn)
        db = lite.connect(path)
        try:
            return await digests(db, lite_table, conn, pg_table, opts, False)
        finally:
            db.close()
            await conn.close()

    return asyncio.run(both())


@dataclass
class _Loading:
    """The tables loaded `jobs` at once, the biggest first: each reads its batches in a
    worker while this process writes another's, one batch at a time (SQLite has one
    writer). A table's indexes are built as soon as its rows are in, and its checksums
    computed in a worker while the other tables load."""

    executor: ProcessPoolExecutor
    dsn: str
    dst: sqlite3.Connection
    path: Path
    tables: dict[str, Table]
    existing: dict[str, Table]
    state: dict[str, _Progress]
    opts: CopyOptions

    async def run(
        self,
        totals: dict[str, int],
        advance: Callable[[str, int], None],
        checks: dict[str, asyncio.Future[Check]],
    ) -> int:
        writer = asyncio.Lock()
        slots = asyncio.Semaphore(max(1, self.opts.jobs))
        options = Options(self.opts.round_money, self.opts.strip_nul)

        async def one(name: str) -> int:
            copied = 0
            async with slots:
                if not self.state[name][3]:
                    copied = await _load_table(
                        self.executor,
                        self.dsn,
                        self.dst,
                        self.tables[name],
                        self.existing[name],
                        self.state[name],
                        self.opts,
                        advance,
                        writer,
                    )
            lite_table, pg_table = self.existing[name], self.tables[name]
            checking = workers.run(
                self.executor, _digests, self.path, self.dsn, lite_table, pg_table, options
            )
            checks[name] = asyncio.ensure_future(checking)
            async with writer:
                await _finish(asyncio.to_thread(lite.create_indexes, self.dst, pg_table))
            return copied

        biggest = sorted(totals, key=totals.__getitem__, reverse=True)
        tasks = [asyncio.ensure_future(one(name)) for name in biggest]
        try:
            return sum(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def to_sqlite(
    source_url: str, target_url: str, opts: CopyOptions, console: Console
) -> Report:
    # Workers read and convert each table's batches, and verify each table loaded while
    # the next one loads.
    with workers.pool(max(1, opts.jobs)) as executor:
        path = sqlite_path(target_url)
        conn = await pg_connect(source_url)
        dst = lite.connect(path, create=True)
        report = Report()
        try:
            with _writing(dst):
                return await _to_sqlite(
                    conn,
                    dst,
                    path,
                    target_url,
                    asyncpg_dsn(source_url),
                    opts,
                    console,
                    report,
                    executor,
                )
        finally:
            dst.close()
            await conn.close()


async def _to_sqlite(
    conn: asyncpg.Connection,
    dst: sqlite3.Connection,
    path: Path,
    target_url: str,
    dsn: str,
    opts: CopyOptions,
    console: Console,
    report: Report,
    executor: ProcessPoolExecutor,
) -> Report:
    tables = await pg.reflect(conn, "public")
    order, _cycles = load_order(tables)
    as_text = [(t.name, c) for t in tables.values() for c in t.columns if c.type.kind == "any"]
    if opts.strict and as_text:
        refused = [
            f"{table}.{c.name}: type {c.declared} has no SQLite kind (--strict)"
            for table, c in as_text
        ]
        raise TransferError("refused before copying any row:\n  " + "\n  ".join(refused))
    for table, c in as_text:
        report.note(
            "as-text",
            table,
            f"type {c.declared} has no SQLite kind: kept as PostgreSQL writes it",
            column=c.name,
        )
    resuming = (
        dst.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (LITE_PROGRESS,)).fetchone()
        is not None
    )
    if resuming:
        console.print(f"resuming the copy into {path}")
        report.resumed = True
    else:
        migrated = False
        if not lite.reflect(dst) and await service_schema(conn, tables):
            # A new file for this service's data gets the migrations' schema (keys
            # AUTOINCREMENT, CHECKs, indexes as `db upgrade` makes them), not one derived
            # from PostgreSQL's; then the rows are copied into it.
            await asyncio.to_thread(upgrade, target_url)
            migrated = True
        _start(dst, tables, order, opts, report, migrated)
    existing = lite.reflect(dst)
    state: dict[str, _Progress] = {r[0]: r for r in dst.execute(f"SELECT * FROM {LITE_PROGRESS}")}
    report.actions = {name: state[name][4] for name in order}
    totals = {name: await pg.count(conn, "public", name) for name in order}
    options = Options(opts.round_money, opts.strip_nul)
    checks: dict[str, asyncio.Future[Check]] = {}
    loading = _Loading(executor, dsn, dst, path, tables, existing, state, opts)
    try:
        with progress(console, totals, {n: state[n][2] for n in order}) as advance:
            report.rows_copied += await loading.run(totals, advance, checks)
        for name in order:
            for index in tables[name].skipped_indexes:
                report.note(
                    "index-skipped",
                    name,
                    f"index {index} (partial or on expressions) not recreated",
                )
        for (child, parent), (n, sample) in lite.orphans(dst, tables).items():
            report.note(
                "orphans", child, f"-> {parent}: {n} orphaned rows kept", count=n, keys=sample
            )
        found = await asyncio.gather(*(checks[name] for name in order))
    finally:
        for pending in checks.values():
            pending.cancel()
        await asyncio.gather(*checks.values(), return_exceptions=True)
    for name, check in zip(order, found, strict=True):
        if not check.ok:
            check = await compare(
                Side(pg=conn, schema="public"),
                tables[name],
                Side(sqlite=dst),
                existing[name],
                options,
            )
        report.checks.append(check)
    dst.execute(f"DROP TABLE {LITE_PROGRESS}")
    if not report.ok:
        raise TransferError(f"verification failed; the copy stays in {path}", report)
    return report
