"""Both sides proven equal while the sync runs, so that a freeze checks only what changed.

`agree` reads the destination in one snapshot, noting how far its applied log goes,
then the source in another, noting the changes it still holds. Every table is compared
by key ranges (counts and checksums computed in each database); a range that differs is
compared row by row. A row may differ only for a reason the sync accounts for: the
source still held a change of it, or the sync wrote it into the destination after the
destination's snapshot (its applied log says so). Any other difference is a divergence.

`recheck`, under the freeze once the last changes are applied, compares row by row just
those keys, and every key the sync wrote since: the rest agreed already and neither side
has changed it since (the source's changes are captured, the destination's are logged).
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import asyncpg

from app.db.live import capture
from app.db.live.sides import LiveDatabase
from app.db.live.sync import Pair
from app.db.transfer import lite as transfer_lite
from app.db.transfer import pg as transfer_pg
from app.db.transfer.digest import Digest, pg_digests, sqlite_digests
from app.db.transfer.options import sqlite_path
from app.db.transfer.schema import Table
from app.db.transfer.types import Type
from app.db.transfer.values import Options

RANGE = 10_000  # keys per range of the first comparison
CHUNK = 1_000  # keys per statement of a row-by-row comparison

Keys = dict[str, set[int]]


@dataclass
class Agreement:
    mark: int  # the destination's applied log, as far as its snapshot saw
    unsettled: Keys  # keys that may differ for a reason the sync accounts for
    diverged: dict[str, list[int]] = field(default_factory=dict)  # differing for no such reason
    rows: int = 0  # rows compared, on the source
    seconds: float = 0.0


def describe_divergence(diverged: dict[str, list[int]]) -> str:
    """`users (keys ['3'])`: the tables that differ and a few of their keys."""
    return ", ".join(
        f"{name} (keys {[str(k) for k in keys[:5]]})" for name, keys in diverged.items()
    )


class _Ends:
    """Raw connections to both databases, for digests computed where the data is."""

    def __init__(self, pair: Pair, db: sqlite3.Connection, conn: asyncpg.Connection) -> None:
        self.pair, self.db, self.conn = pair, db, conn
        self.background: ThreadPoolExecutor | None = None
        self.options = Options(False, False)
        self.types: dict[str, list[tuple[str, Type]]] = {}
        self.lite_tables: dict[str, Table] = {}

    @classmethod
    async def open(cls, pair: Pair, *, background: bool = False) -> _Ends:
        """`background`: the service is writing meanwhile; leave it the CPU it needs."""
        db = transfer_lite.connect(sqlite_path(pair.lite.url))
        try:
            conn = await transfer_pg.connect(pair.pg.url_plain)
        except BaseException:
            db.close()
            raise
        ends = cls(pair, db, conn)
        if background:
            ends.background = ThreadPoolExecutor(1, initializer=_yield_cpu)
        ends.lite_tables = transfer_lite.reflect(db)
        pg_tables = await transfer_pg.reflect(conn, "public")
        for table in capture.tables():
            lite_table = ends.lite_tables[table.name]
            pairs = [(c.name, pg_tables[table.name].column(c.name)) for c in lite_table.columns]
            ends.types[table.name] = [(n, other.type) for n, other in pairs if other is not None]
        return ends

    async def close(self) -> None:
        if self.background is not None:
            self.background.shutdown()
        self.db.close()
        await self.conn.close()

    async def begin(self, side: LiveDatabase) -> None:
        """A snapshot that the next statement on this side fixes."""
        if side.sqlite:
            self.db.execute("BEGIN")
        else:
            await self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    async def end(self) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT")
        if self.conn.is_in_transaction():
            await self.conn.execute("COMMIT")

    async def scalar(self, side: LiveDatabase, sql: str) -> int:
        if side.sqlite:
            return int(self.db.execute(sql).fetchone()[0])
        return int(await self.conn.fetchval(sql))

    async def rows(self, side: LiveDatabase, sql: str) -> list[tuple[str, int]]:
        """(table, key) pairs: what the capture and applied logs hold."""
        if side.sqlite:
            return [tuple(r) for r in self.db.execute(sql)]
        return [tuple(r) for r in await self.conn.fetch(sql)]

    async def applied_since(self, side: LiveDatabase, mark: int, into: Keys) -> None:
        """Add the keys the sync wrote into `side` past its applied log's `mark`."""
        for name, key in await self.rows(
            side, f"SELECT tbl, key FROM {capture.APPLIED} WHERE id > {mark}"
        ):
            into[str(name)].add(int(key))

    async def digests(self, name: str, group: str, where: str) -> tuple[dict[int, Digest], ...]:
        """(SQLite's, PostgreSQL's) digests by group.

        Under a freeze both at once (SQLite in a thread); in the background one after the
        other, SQLite's in a thread of low priority: one core at most.
        """
        types = self.types[name]
        lite = functools.partial(
            sqlite_digests,
            self.db,
            self.lite_tables[name],
            types,
            self.options,
            group=group,
            where=where,
        )
        theirs = pg_digests(self.conn, "public", name, types, group=group, where=where)
        loop = asyncio.get_running_loop()
        if self.background is None:
            return tuple(await asyncio.gather(loop.run_in_executor(None, lite), theirs))
        return await loop.run_in_executor(self.background, lite), await theirs


def _yield_cpu() -> None:
    """This thread only (Linux schedules threads): the service's requests go first."""
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _differing(a: dict[int, Digest], b: dict[int, Digest]) -> list[int]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


async def _by_rows(ends: _Ends, name: str, keys: Iterable[int]) -> list[int]:
    """The keys among `keys` whose rows differ (or exist on one side only)."""
    ordered = sorted(keys)
    differing: list[int] = []
    for start in range(0, len(ordered), CHUNK):
        listed = ", ".join(str(k) for k in ordered[start : start + CHUNK])
        mine, theirs = await ends.digests(name, "id", f"id IN ({listed})")
        differing += _differing(mine, theirs)
    return differing


async def agree(pair: Pair, direction: str) -> Agreement:
    """Compare every table while writes go on; see the module's docstring."""
    source, dest = pair.ends(direction)
    began = time.monotonic()
    ends = await _Ends.open(pair, background=True)
    try:
        await ends.begin(dest)
        mark = await ends.scalar(dest, capture.APPLIED_MARK)
        await ends.begin(source)
        unsettled: Keys = defaultdict(set)
        for name, key in await ends.rows(source, f"SELECT tbl, key FROM {capture.CHANGES}"):
            unsettled[str(name)].add(int(key))
        suspects: dict[str, list[int]] = {}
        rows = 0
        for table in capture.tables():
            mine, theirs = await ends.digests(table.name, f"id / {RANGE}", "1 = 1")
            rows += sum(d.rows for d in (mine if source.sqlite else theirs).values())
            differing: list[int] = []
            for bucket in _differing(mine, theirs):
                low = bucket * RANGE
                rows_a, rows_b = await ends.digests(
                    table.name, "id", f"id BETWEEN {low} AND {low + RANGE - 1}"
                )
                differing += _differing(rows_a, rows_b)
            suspects[table.name] = differing
        await ends.end()
        # What the sync wrote into the destination after its snapshot explains a difference too.
        await ends.applied_since(dest, mark, unsettled)
        diverged = {}
        for name, differing in suspects.items():
            unexplained = [k for k in differing if k not in unsettled[name]]
            if unexplained:
                diverged[name] = unexplained
        return Agreement(mark, dict(unsettled), diverged, rows, time.monotonic() - began)
    finally:
        await ends.close()


async def recheck(pair: Pair, direction: str, agreement: Agreement) -> dict[str, list[int]]:
    """Under the freeze, the last changes applied: the unsettled keys, row by row; the
    tables and keys that differ."""
    _source, dest = pair.ends(direction)
    ends = await _Ends.open(pair)
    try:
        keys: Keys = defaultdict(set)
        for name, found in agreement.unsettled.items():
            keys[name] |= found
        await ends.applied_since(dest, agreement.mark, keys)
        diverged = {}
        for name, wanted in keys.items():
            if differing := await _by_rows(ends, name, wanted):
                diverged[name] = differing
        return diverged
    finally:
        await ends.close()
