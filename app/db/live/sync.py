"""db sync: the bulk copy, then every captured change applied by key in commit order."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.live import capture
from app.db.live.sides import LiveDatabase
from app.db.transfer import CopyOptions, TransferError, copy
from app.db.transfer import pg as transfer_pg
from app.db.transfer.options import sqlite_path

log = logging.getLogger(__name__)

BATCH = 2000


class SyncError(RuntimeError):
    """A sync that cannot start or go on, told in one line."""


@dataclass
class Lag:
    changes: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.changes} changes, {self.seconds:.1f} s behind"


@dataclass
class Pair:
    """The SQLite file a service runs on and the PostgreSQL database it moves to."""

    lite: LiveDatabase
    pg: LiveDatabase

    @classmethod
    def open(cls, sqlite_url: str, pg_url: str) -> Pair:
        lite, pg = LiveDatabase(sqlite_url), LiveDatabase(pg_url)
        if not lite.sqlite or pg.sqlite:
            raise SyncError("sync goes between a SQLite file (first) and PostgreSQL (second)")
        return cls(lite, pg)

    async def dispose(self) -> None:
        await self.lite.dispose()
        await self.pg.dispose()

    def ends(self, direction: str) -> tuple[LiveDatabase, LiveDatabase]:
        """(source, destination) of a direction: 'to_postgresql' or 'to_sqlite'."""
        return (self.lite, self.pg) if direction == "to_postgresql" else (self.pg, self.lite)


class Aside(RuntimeError):
    """The destination serves now: what the source still holds is left for `reconcile`."""


async def apply_batch(pair: Pair, direction: str, limit: int | None = BATCH) -> int:
    """Apply up to `limit` waiting changes, then consume them. Returns the count.

    Every changed key is read from the source as it is now, in one snapshot with the
    changes themselves: present means upsert, absent means delete. Applying twice
    (a crash between the destination's commit and the consume) gives the same rows.
    The source is read before the destination is locked (a source that hangs holds no
    lock of the destination's, such as SQLite's one write lock); the destination's
    applied log then says whether another applier wrote meanwhile, in which case this
    read is dropped and made again, so an older read never lands after a newer one.
    A destination that serves itself (an automatic rollback made it so) takes
    nothing: a write it took since would be overwritten.

    A batch's rows, as the source has them now, may clash with a row of the destination
    that a later change takes away (after a rollback's conflict, the serving side's row
    goes back to the failed side as a change queued last, behind its own newer rows).
    A batch the destination refuses is therefore made again of every waiting change,
    applied in one transaction: the destination then holds the source's state of one
    snapshot, which keeps the constraints the source keeps. Refused still, the sync stops.
    """
    source, dest = pair.ends(direction)
    while True:
        async with dest.engine.connect() as conn:
            mark = await dest.applied_mark(conn)
        async with source.reading() as src:
            changes = await source.changes(src, limit)
            if not changes:
                return 0
            keys: dict[str, set[int]] = defaultdict(set)
            for _, name, key in changes:
                keys[name].add(key)
            found = await _rows_of(source, src, keys)
        async with dest.writing(apply=True) as out:
            if await dest.cursor(out, direction) is None:  # locks the cursor row
                raise SyncError(f"{direction}: no sync started; run db sync first")
            if (await dest.state(out)).active == dest.backend:
                raise Aside(direction)
            if await dest.applied_mark(out) != mark:
                continue  # another applier went first: read again
            try:
                async with out.begin_nested():
                    await _write(dest, out, keys, found)
            except IntegrityError:
                if limit is None:
                    raise
                log.info("a batch clashes with rows later changes take away: applying all")
                limit = None
                continue
            await dest.log_applied(out, keys)
            await dest.set_cursor(out, direction, changes[-1][0])
        await source.consume([seq for seq, _, _ in changes])
        return len(changes)


async def _rows_of(
    side: LiveDatabase, conn: AsyncConnection, keys: dict[str, set[int]]
) -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = {}
    for table in capture.tables():
        if table.name in keys:
            found[table.name] = await side.rows(conn, table, sorted(keys[table.name]))
    return found


async def _write(
    dest: LiveDatabase,
    out: AsyncConnection,
    keys: dict[str, set[int]],
    found: dict[str, list[dict[str, object]]],
) -> None:
    """Rows as the source has them: deletes children first, upserts parents first."""
    tables = capture.tables()
    for table in reversed(tables):
        present = {row[capture.key_column(table)] for row in found.get(table.name, [])}
        await dest.delete(out, table, sorted(keys.get(table.name, set()) - present))
    for table in tables:
        await dest.upsert(out, table, found.get(table.name, []))


async def catch_up(pair: Pair, direction: str) -> int:
    total = 0
    while applied := await apply_batch(pair, direction):
        total += applied
    return total


async def lag(pair: Pair, direction: str) -> Lag:
    source, _ = pair.ends(direction)
    async with source.engine.connect() as conn:
        count, oldest = await source.backlog(conn)
    return Lag(count, 0.0 if oldest is None else max(0.0, time.time() - oldest))


async def remove_capture(pair: Pair) -> None:
    """The end of a migration: no guard, no capture, no state on either side."""
    for side, statements in ((pair.lite, capture.sqlite_remove()), (pair.pg, capture.pg_remove())):
        async with side.writing() as conn:
            for statement in statements:
                await conn.exec_driver_sql(statement)


async def started(pair: Pair) -> bool:
    if not await pair.pg.installed():
        return False
    async with pair.pg.engine.connect() as conn:
        return await pair.pg.cursor(conn, "to_postgresql") is not None


async def _schema_matches(pair: Pair) -> None:
    versions = []
    for side in (pair.lite, pair.pg):
        async with side.engine.connect() as conn:
            try:
                versions.append(await conn.scalar(text("SELECT version_num FROM alembic_version")))
            except Exception:
                versions.append(None)
    if versions[0] is None or versions[0] != versions[1]:
        raise SyncError(
            "both databases must be at the same schema revision "
            f"(SQLite: {versions[0] or 'none'}, PostgreSQL: {versions[1] or 'none'}); "
            "run bookedbarber db upgrade --url on each first"
        )


def _snapshot(path: Path, into: Path) -> None:
    """A consistent copy of the live file (one read transaction), changes table included."""
    src = sqlite3.connect(path)
    dst = sqlite3.connect(into)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


async def start(pair: Pair, console: Console, show: Callable[[str], None] | None = None) -> None:
    """First run: capture on, a snapshot copied with the transfer tool, cursors set."""
    show = show or console.print
    await _schema_matches(pair)
    await pair.lite.install("sqlite")
    # An earlier first run that died: its half-done copy (of another snapshot) goes, and
    # the bulk copy starts over; only what follows it resumes.
    async with pair.pg.writing() as conn:
        if await pair.pg.installed():
            for statement in capture.pg_remove():
                await conn.exec_driver_sql(statement)
        await conn.exec_driver_sql(
            f"DROP SCHEMA IF EXISTS {transfer_pg.STAGING}, {transfer_pg.STATE} CASCADE"
        )
    path = sqlite_path(pair.lite.url)
    with tempfile.TemporaryDirectory(prefix="bookedbarber-sync-") as tmp:
        snapshot = Path(tmp) / "snapshot.db"
        await asyncio.to_thread(_snapshot, path, snapshot)
        with sqlite3.connect(snapshot) as conn:
            row = conn.execute(f"SELECT coalesce(max(seq), 0) FROM {capture.CHANGES}")
            upto = int(row.fetchone()[0])
        show(f"bulk copy of a snapshot (changes up to #{upto} included)")
        began = time.monotonic()
        try:
            report = await copy(
                f"sqlite:///{snapshot}", pair.pg.url, CopyOptions(truncate=True), console
            )
        except TransferError as exc:
            raise SyncError(f"bulk copy failed: {exc}") from exc
        show(f"bulk copy done: {report.total_rows:,} rows in {time.monotonic() - began:.1f} s")
    # The snapshot holds every change up to `upto`: those are done.
    async with pair.lite.writing(apply=True) as conn:
        await conn.execute(text(f"DELETE FROM {capture.CHANGES} WHERE seq <= :s"), {"s": upto})
        await pair.lite.set_cursor(conn, "to_sqlite", 0)
    await pair.pg.install("sqlite")
    async with pair.pg.writing(apply=True) as conn:
        await pair.pg.set_cursor(conn, "to_postgresql", upto)
