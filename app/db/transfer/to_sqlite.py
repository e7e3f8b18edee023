"""PostgreSQL -> SQLite (the way back): same batches, resumable, verified."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from typing import TYPE_CHECKING, Any

from app.db.transfer import lite, pg
from app.db.transfer.defaults import pg_to_sqlite
from app.db.transfer.load import convert_rows, progress
from app.db.transfer.options import CopyOptions, pg_connect, sqlite_path
from app.db.transfer.report import Report, TransferError
from app.db.transfer.schema import Table, load_order, quote
from app.db.transfer.types import Type
from app.db.transfer.values import Options
from app.db.transfer.verify import Side, compare, digests

if TYPE_CHECKING:
    from rich.console import Console

LITE_PROGRESS = "_bookedbarber_transfer_progress"


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
) -> None:
    existing = lite.reflect(dst)
    problems = []
    for name in order:
        if name in existing:
            for column in tables[name].columns:
                if existing[name].column(column.name) is None:
                    problems.append(f"{name}.{column.name}: the target table has no such column")
            if not opts.truncate and lite.count(dst, name):
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
    conn: Any,
    dst: sqlite3.Connection,
    table: Table,
    target: Table,
    state: tuple[Any, ...],
    opts: CopyOptions,
    advance: Any,
) -> int:
    name = table.name
    _n, last_key, _rows, _done, _action = state
    options = Options(opts.round_money, opts.strip_nul)
    # The typed side decides: a PostgreSQL numeric goes to SQLite as text digits.
    types: list[tuple[str, Type]] = []
    for column in table.columns:
        other = target.column(column.name)
        assert other is not None
        types.append((other.name, column.type))
    nkeys = len(pg.key_columns(table))
    after = json.loads(last_key) if last_key else None
    columns = [c.name for c in table.columns]
    insert = (
        f"INSERT INTO {quote(name)} ({', '.join(quote(t[0]) for t in types)}) "
        f"VALUES ({', '.join('?' for _ in types)})"
    )
    copied = 0

    def read(start: list[Any] | None) -> asyncio.Future[list[tuple[Any, ...]]]:
        return asyncio.ensure_future(
            pg.read_batch(conn, "public", table, columns, start, opts.batch_size)
        )

    fetching = read(after)
    try:
        while True:
            batch = await fetching
            finished = len(batch) < opts.batch_size
            last = list(batch[-1][:nkeys]) if batch else None
            if not finished:  # the next range travels while this one is written
                fetching = read(last)
            rows = convert_rows(name, types, batch, nkeys, options, target=False)
            await asyncio.to_thread(_write, dst, insert, rows, name, last, finished)
            copied += len(rows)
            advance(name, len(rows))
            if finished:
                return copied
    finally:
        if not fetching.done():
            fetching.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await fetching


def _write(
    dst: sqlite3.Connection,
    insert: str,
    rows: list[tuple[Any, ...]],
    name: str,
    last: list[Any] | None,
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


async def to_sqlite(
    source_url: str, target_url: str, opts: CopyOptions, console: Console
) -> Report:
    path = sqlite_path(target_url)
    conn = await pg_connect(source_url)
    dst = lite.connect(path, create=True)
    report = Report()
    try:
        tables = await pg.reflect(conn, "public")
        order, _cycles = load_order(tables)
        resuming = (
            dst.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (LITE_PROGRESS,)).fetchone()
            is not None
        )
        if resuming:
            console.print(f"resuming the copy into {path}")
            report.resumed = True
        else:
            _start(dst, tables, order, opts, report)
        existing = lite.reflect(dst)
        state = {r[0]: r for r in dst.execute(f"SELECT * FROM {LITE_PROGRESS}")}
        report.actions = {name: state[name][4] for name in order}
        totals = {name: await pg.count(conn, "public", name) for name in order}
        with progress(console, totals, {n: state[n][2] for n in order}) as advance:
            for name in order:
                if not state[name][3]:
                    report.rows_copied += await _load_table(
                        conn, dst, tables[name], existing[name], state[name], opts, advance
                    )
        for name in order:
            lite.create_indexes(dst, tables[name])
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
        options = Options(opts.round_money, opts.strip_nul)
        final = lite.reflect(dst)
        for name in order:
            check = await digests(dst, final[name], conn, tables[name], options, False)
            if not check.ok:
                check = await compare(
                    Side(pg=conn, schema="public"),
                    tables[name],
                    Side(sqlite=dst),
                    final[name],
                    options,
                )
            report.checks.append(check)
        dst.execute(f"DROP TABLE {LITE_PROGRESS}")
        if not report.ok:
            raise TransferError(f"verification failed; the copy stays in {path}", report)
        return report
    finally:
        dst.close()
        await conn.close()
