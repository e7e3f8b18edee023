"""SQLite -> PostgreSQL a table at a time, in worker processes.

Each table is probed, created in the staging schema, loaded and given its keys and
indexes by one of `jobs` worker processes, each with its own SQLite and PostgreSQL
connections, so one table's probe runs while another's rows travel and a third's
indexes are built. Processes, not threads: SQLite's reads scale with processes only
(probing the messy fixture's two biggest tables took 2.0 s one after the other, 2.3 s
in two threads of one process, where SQLite's allocator serialises them, and 1.35 s in
two processes). Workers are spawned (they inherit none of the caller's threads or
locks) and die with the process that started them: a copy killed mid-load leaves no
worker writing behind it.

Each step commits with its mark in the progress table (planned, each batch, done,
keyed), so a rerun resumes at the first step not committed."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import multiprocessing
import multiprocessing.util
import os
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, TypeVarTuple

from app.db.transfer import lite, pg, probe
from app.db.transfer.constraints import keys
from app.db.transfer.digest import converted_digest, pg_digest
from app.db.transfer.load import Batch, convert_rows, read_split
from app.db.transfer.report import Finding, Report
from app.db.transfer.schema import Table
from app.db.transfer.values import Options

if TYPE_CHECKING:
    import asyncpg

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
_PR_SET_PDEATHSIG = 1


def _started(parent: int) -> None:
    """In each worker: die with the copy, also when it is killed (SIGKILL leaves no
    chance to stop workers)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the copy ended before the line above took effect
        os._exit(1)


@contextlib.contextmanager
def pool(jobs: int) -> Iterator[ProcessPoolExecutor]:
    """`jobs` workers, started at once (their interpreters start while the copy reads
    both schemas); on the way out it waits for them, so no worker outlives the copy."""
    executor = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_started,
        initargs=(os.getpid(),),
    )
    try:
        for _ in range(jobs):
            executor.submit(os.getpid)
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


async def run(executor: ProcessPoolExecutor, func: Callable[[*Ts], T], *args: *Ts) -> T:
    """func(*args) in a worker. A worker's exception is raised here as it was raised
    there; the worker's own traceback becomes a note (shown by --debug), not its cause."""
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, func, *args)
    except Exception as exc:
        remote = exc.__cause__
        if remote is not None and type(remote).__name__ == "_RemoteTraceback":
            exc.__cause__ = None
            exc.add_note(f"raised in a copy worker:{remote}")
        raise


@dataclass
class Job:
    """One table's copy, resumed at its first step not yet committed."""

    table: Table  # the source's table; its types as planned once planned
    target: Table | None  # the target's own table, when the copy fills it
    planned: bool
    done: bool
    keyed: bool
    last_key: str | None  # the last batch's last key, as JSON

    @property
    def keys_missing(self) -> bool:
        """A table the copy made gets the source's keys (one it fills, the target's, later)."""
        return self.target is None and not self.keyed

    @property
    def finished(self) -> bool:
        return self.planned and self.done and not self.keys_missing


@dataclass
class Outcome:
    table: Table  # with the types and cleanliness planned
    refused: list[str]
    rows: int = 0  # copied by this run


class _Session:
    """A worker's event loop and PostgreSQL connection, kept from one table to the next:
    a connection's start (authentication included) for each of the messy file's 33
    tables took 0.3 s of the copy, most of it at its end, among the small tables."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection | None = None
        self.dsn = ""
        # Closed when the worker ends (multiprocessing runs these before it exits).
        multiprocessing.util.Finalize(self, self.close, exitpriority=10)

    async def connection(self, dsn: str) -> asyncpg.Connection:
        if self.conn is None or self.conn.is_closed() or dsn != self.dsn:
            await self.forget()
            self.conn, self.dsn = await pg.connect(dsn), dsn
        return self.conn

    async def forget(self) -> None:
        """After a failure the connection is not trusted again."""
        conn, self.conn = self.conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.forget())
        self.loop.close()


_session: _Session | None = None


def with_connection(dsn: str, func: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """In a worker: func(connection) on the worker's own PostgreSQL connection, kept from
    one call to the next."""
    global _session
    if _session is None:
        _session = _Session()
    session = _session

    async def call() -> T:
        conn = await session.connection(dsn)
        try:
            return await func(conn)
        except BaseException:
            await session.forget()
            raise

    return session.loop.run_until_complete(call())


def copy_table(
    path: Path, dsn: str, job: Job, batch_size: int, options: Options, strict: bool
) -> Outcome:
    """In a worker: one table's remaining steps."""
    global _session
    if _session is None:
        _session = _Session()
    session = _session
    return session.loop.run_until_complete(
        _copy_table(session, path, dsn, job, batch_size, options, strict)
    )


async def _copy_table(
    session: _Session,
    path: Path,
    dsn: str,
    job: Job,
    batch_size: int,
    options: Options,
    strict: bool,
) -> Outcome:
    table = job.table
    conn = await session.connection(dsn)
    try:
        if not job.planned:
            refused, findings = _plan(path, table, job.target, options, strict)
            if refused:
                return Outcome(table, refused)
            async with conn.transaction():
                if job.target is None:
                    await pg.create_table(conn, pg.STAGING, table)
                await conn.execute(
                    f"UPDATE {pg.STATE}.progress SET planned = true, clean = $2, "
                    "findings = $3 WHERE table_name = $1",
                    table.name,
                    json.dumps([c.name for c in table.columns if c.clean]),
                    json.dumps([asdict(f) for f in findings], default=str),
                )
        # A refusal elsewhere (found by another table's probe) loads nothing more.
        if await conn.fetchval(f"SELECT 1 FROM {pg.STATE}.state WHERE key = 'refused'"):
            return Outcome(table, [])
        rows = 0
        if not job.done:
            staged = job.target or table
            rows = await _load(path, conn, table, staged, job.last_key, batch_size, options)
        if job.keys_missing:
            notes = Report()
            async with conn.transaction():
                # Index builds and key checks sort in memory (the server's, not ours).
                await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
                await keys(conn, table, notes)
                await conn.execute(
                    f"UPDATE {pg.STATE}.progress SET keyed = true, key_findings = $2 "
                    "WHERE table_name = $1",
                    table.name,
                    json.dumps([asdict(f) for f in notes.findings], default=str),
                )
        return Outcome(table, [], rows)
    except BaseException:
        await session.forget()
        raise


def _plan(
    path: Path, table: Table, target: Table | None, options: Options, strict: bool
) -> tuple[list[str], list[Finding]]:
    """Sets the table's column types and cleanliness; refusals, and findings."""
    src = lite.connect(path)
    try:
        if target is not None:
            return _plan_filled(src, table, target, options), []
        found = Report()
        return _plan_created(src, table, options, strict, found), found.findings
    finally:
        src.close()


def _plan_created(
    src: sqlite3.Connection, table: Table, options: Options, strict: bool, report: Report
) -> list[str]:
    """Types for a table the copy creates: each column's home for every value it holds."""
    problems: list[str] = []
    for column in table.columns:
        if column.type.kind == "any":
            column.type = probe.initial_any(src, table, column.name)
    counts = probe.looks(src, table, [c.type for c in table.columns])
    for column, count in zip(table.columns, counts, strict=True):
        column.type, findings, refused, column.clean = probe.home(
            src, table, column.name, column.type, options, strict, count
        )
        report.findings += findings
        problems += refused
    return problems


def _plan_filled(
    src: sqlite3.Connection, table: Table, target: Table, options: Options
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
    pairs = [(c, target.column(c.name)) for c in table.columns]
    counts = probe.looks(src, table, [o.type if o else c.type for c, o in pairs])
    for (column, other), count in zip(pairs, counts, strict=True):
        if other is not None:
            refused, column.clean = probe.fits(src, table, column.name, other.type, options, count)
            problems += refused
    return problems


async def _load(
    path: Path,
    conn: asyncpg.Connection,
    table: Table,
    target: Table,
    last_key: str | None,
    batch_size: int,
    options: Options,
) -> int:
    """In key-range batches, each committed with its progress row; the next range is read
    (in a thread) while the current one travels."""
    name = table.name
    types = []
    for c in table.columns:
        other = target.column(c.name)
        assert other is not None
        types.append((other.name, other.type))
    nkeys = len(lite.key_columns(table))
    after = json.loads(last_key) if last_key else None
    columns = [t[0] for t in types]
    clean = {c.name for c in table.columns if c.clean}
    copied = 0
    src = lite.connect(path)
    # Each batch commits with its progress row; a lost tail after a server crash is
    # simply loaded again, so the commit need not wait for the disk.
    await conn.execute("SET synchronous_commit = off")

    def read(start: list[object] | None) -> Awaitable[Batch]:
        return asyncio.to_thread(read_split, src, table, types, start, batch_size, clean)

    reading = asyncio.ensure_future(read(after))
    try:
        while True:
            batch = await reading
            if not batch.done:
                reading = asyncio.ensure_future(read(batch.last))
            records = convert_rows(name, types, batch.slow, nkeys, options, target=True)
            rows = batch.fast_rows + len(records)
            digest = batch.digest + converted_digest(records, types)
            async with conn.transaction():
                if batch.text:
                    # A buffer, not a file: asyncpg reads a file in an executor through a
                    # class it defines per call, a cycle that kept each range's text
                    # alive until a full collection (and bytes would read as a path).
                    # asyncpg takes any buffer-protocol object; its stubs list no buffer.
                    await conn.copy_to_table(
                        name,
                        source=memoryview(batch.text),  # type: ignore[arg-type]
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
            if batch.done:
                return copied
    finally:
        if not reading.done():
            with contextlib.suppress(Exception):
                await reading  # the thread still reads from src
        src.close()
