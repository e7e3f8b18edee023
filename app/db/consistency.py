"""Is a replica a copy of this primary? Its identity, and sampled rows compared at a common point.

Identity: a replica serves only if its `system_identifier` is the primary's (a standby of
another cluster has its own), its URL names the primary's database (a physical standby
holds every database of its cluster under the primary's OIDs: another of them is another
schema, or none) and it follows the primary's timeline (one left on the old timeline
after a promotion does not). Content: each period, per replica and table, the
next range of keys (a cursor walks every table, so in time every row is compared) is
checksummed on the primary (each row's values and the transaction that wrote them); the
replica is waited for until it has replayed past the primary's WAL position at that
moment; the range is checksummed there, then again on the primary. A range that changed
on the primary meanwhile proves nothing and is sampled again next period; one that held
still must match on the replica, row for row, or the replica has diverged. Plain reads
on both sides: nothing here takes a lock a write waits for.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.lsn import parse_lsn

if TYPE_CHECKING:
    from app.db.replicas import Replica

Identity = Literal["foreign_cluster", "other_database", "old_timeline"]

# Tables of the current schema keyed by one integer column: what the sampler walks.
_TABLES = text(
    "SELECT c.relname, a.attname FROM pg_index i"
    " JOIN pg_class c ON c.oid = i.indrelid"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]"
    " WHERE i.indisprimary AND i.indnkeyatts = 1 AND c.relkind = 'r'"
    " AND n.nspname = current_schema()"
    " AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)"
    " ORDER BY c.relname"
)
_REPLAYED = text("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text")
_NUDGE = text("SELECT pg_current_xact_id()")


def timeline_of(walfile: str | None) -> int | None:
    """The timeline a WAL file name begins with (pg_walfile_name)."""
    return int(walfile[:8], 16) if walfile else None


def identity(
    system: str | None, database: int | None, timeline: int | None, primary: Primary
) -> Identity | None:
    """Why a replica is not a copy of this primary; None when it is (or cannot be told yet)."""
    if primary.system is None or system is None:
        return None
    if system != primary.system:
        return "foreign_cluster"
    if None not in (primary.database, database) and database != primary.database:
        return "other_database"
    if None not in (primary.timeline, timeline) and timeline != primary.timeline:
        return "old_timeline"
    return None


@dataclass
class Primary:
    """What the primary's last probe said of its identity (kept while it does not answer)."""

    system: str | None = None
    database: int | None = None  # the OID of the database its URL names
    timeline: int | None = None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# A row version: its values and the transaction that wrote it (a physical replica holds
# the very same xmin), so a row changed and changed back between two reads of the
# primary still reads as changed.
_VERSION = "hashtextextended(t.xmin::text || ' ' || t::text, 0)"


def _range_sql(table: str, key: str, rows: bool, primary: bool = False) -> str:
    t, k = _quote(table), _quote(key)
    if rows:
        return f"SELECT {k}, {_VERSION} FROM {t} t WHERE {k} > :lo AND {k} <= :hi ORDER BY {k}"
    # On the primary, the WAL insert position is read after the statement's snapshot:
    # every commit the snapshot sees lies before it.
    lsn = "pg_current_wal_insert_lsn()::text" if primary else "NULL"
    return (
        f"SELECT count(*), coalesce(sum({_VERSION}::numeric), 0)::text,"
        f" {lsn} FROM {t} t WHERE {k} > :lo AND {k} <= :hi"
    )


def _upper_sql(table: str, key: str) -> str:
    t, k = _quote(table), _quote(key)
    return f"SELECT max({k}) FROM (SELECT {k} FROM {t} WHERE {k} > :lo ORDER BY {k} LIMIT :n) s"


async def _digest(
    conn: AsyncConnection, table: str, key: str, lo: int, hi: int, primary: bool = False
) -> tuple[int, str, str]:
    sql = text(_range_sql(table, key, False, primary))
    row = (await conn.execute(sql, {"lo": lo, "hi": hi})).one()
    return int(row[0]), str(row[1]), str(row[2])


async def _hashes(conn: AsyncConnection, table: str, key: str, lo: int, hi: int) -> dict[int, int]:
    result = await conn.execute(text(_range_sql(table, key, True)), {"lo": lo, "hi": hi})
    return {int(k): int(h) for k, h in result.all()}


class _Behind(Exception):
    """The replica did not replay to the primary's position within the wait."""


@dataclass
class Mismatch:
    table: str
    first_key: int
    last_key: int
    keys: list[int]  # present on one side only, or different

    def describe(self) -> str:
        shown = ", ".join(str(k) for k in self.keys[:10])
        more = f" and {len(self.keys) - 10} more" if len(self.keys) > 10 else ""
        return f"{self.table} keys {self.first_key}-{self.last_key}: {shown}{more} differ"


@dataclass
class Consistency:
    """One replica's sampled comparisons: the window's totals and the last divergence."""

    samples: deque[tuple[float, int, int]] = field(default_factory=deque)  # (at, rows, matched)
    rows_total: int = 0
    mismatched_total: int = 0
    checked_at: float | None = None
    diverged: Mismatch | None = None
    cursors: dict[str, int] = field(default_factory=dict)

    def add(self, rows: int, matched: int, window_seconds: float) -> None:
        now = time.monotonic()
        self.samples.append((now, rows, matched))
        self.rows_total += rows
        self.mismatched_total += rows - matched
        while self.samples and now - self.samples[0][0] > window_seconds:
            self.samples.popleft()

    @property
    def window_rows(self) -> int:
        return sum(rows for _, rows, _ in self.samples)

    @property
    def ratio(self) -> float | None:
        """Matched rows / sampled rows over the window; None before any sample."""
        rows = self.window_rows
        return None if rows == 0 else sum(m for _, _, m in self.samples) / rows


class Sampler:
    """Compares `rows` keys per table per period between the primary and one replica."""

    def __init__(self, rows: int, wait_seconds: float, window_seconds: float) -> None:
        self.rows = rows
        self.wait_seconds = wait_seconds
        self.window_seconds = window_seconds

    async def tables(self, primary: AsyncConnection) -> list[tuple[str, str]]:
        return [(str(t), str(k)) for t, k in (await primary.execute(_TABLES)).all()]

    async def check(
        self,
        replica: Replica,
        primary: AsyncConnection,
        standby: AsyncConnection,
        tables: list[tuple[str, str]],
    ) -> tuple[int, int]:
        """Compares the period's ranges; (rows compared, rows that matched)."""
        state = replica.consistency
        rows = matched = 0
        found: Mismatch | None = None
        settled = True
        for table, key in tables:
            try:
                outcome = await self._range(replica, primary, standby, table, key)
            except _Behind:  # the other tables would wait as long: next period
                settled = False
                break
            if outcome is None:
                settled = False
                continue
            sampled, bad = outcome
            rows += sampled
            if bad is None:
                matched += sampled
            else:
                matched += max(sampled - len(bad.keys), 0)
                found = found or bad
        state.checked_at = time.monotonic()
        if rows:
            state.add(rows, matched, self.window_seconds)
        if found is not None:
            state.diverged = found
        elif settled and state.diverged is not None:
            # Every table compared clean, the range that differed included (it is sampled
            # again until it matches): a rebuilt replica comes back.
            state.diverged = None
        return rows, matched

    async def _range(
        self,
        replica: Replica,
        primary: AsyncConnection,
        standby: AsyncConnection,
        table: str,
        key: str,
    ) -> tuple[int, Mismatch | None] | None:
        """(rows compared, what differed) in the table's next range; None: nothing proven."""
        state = replica.consistency
        divergent = state.diverged
        if divergent is not None and divergent.table == table:
            lo, hi = divergent.first_key - 1, divergent.last_key
        else:
            upper = text(_upper_sql(table, key))
            lo = state.cursors.get(table, 0)
            hi_value = await primary.scalar(upper, {"lo": lo, "n": self.rows})
            if hi_value is None:  # past the last key: start the walk again
                lo = 0
                hi_value = await primary.scalar(upper, {"lo": lo, "n": self.rows})
                if hi_value is None:
                    state.cursors[table] = 0
                    return 0, None
            hi = int(hi_value)
        compared = await self._compare(primary, standby, table, key, lo, hi)
        if compared is not None and compared[1]:
            # A difference is confirmed by a second comparison of its own before it
            # counts: a commit the replica shows a moment before the primary does
            # (its WAL is sent before the primary makes it visible) is not divergence.
            again = await self._compare(primary, standby, table, key, lo, hi)
            if again is None or not set(again[1]) & set(compared[1]):
                return None
            compared = again
        if compared is None:
            return None  # written meanwhile: try the range again next period
        if divergent is None or divergent.table != table:
            state.cursors[table] = hi
        count, keys = compared
        return count, Mismatch(table, lo + 1, hi, keys) if keys else None

    async def _compare(
        self,
        primary: AsyncConnection,
        standby: AsyncConnection,
        table: str,
        key: str,
        lo: int,
        hi: int,
    ) -> tuple[int, list[int]] | None:
        """(rows, keys that differ) of the range, at a common point; None if it moved."""
        count, before, lsn = await _digest(primary, table, key, lo, hi, primary=True)
        if not await self._replayed(primary, standby, parse_lsn(lsn)):
            raise _Behind
        _, seen, _ = await _digest(standby, table, key, lo, hi)
        if (await _digest(primary, table, key, lo, hi))[:2] != (count, before):
            return None
        if seen == before:
            return count, []
        theirs = await _hashes(standby, table, key, lo, hi)
        ours = await _hashes(primary, table, key, lo, hi)
        if sum(ours.values()) != int(before) or len(ours) != count:
            return None  # the primary moved after all: nothing to conclude
        return count, sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))

    async def _replayed(
        self, primary: AsyncConnection, standby: AsyncConnection, target: int
    ) -> bool:
        """Wait (bounded) for the replica to replay past `target`; a primary always has.

        WAL the primary inserted may wait unwritten while nothing commits (a page pruned
        by a read, say): a transaction id taken and committed has the WAL writer flush
        everything before its commit record soon, so a quiet primary's replica gets there.
        """
        deadline = time.monotonic() + self.wait_seconds
        nudged = False
        while True:
            in_recovery, replay = (await standby.execute(_REPLAYED)).one()
            if not in_recovery or (replay is not None and parse_lsn(str(replay)) >= target):
                return True
            if time.monotonic() >= deadline:
                return False
            if not nudged:
                await primary.execute(_NUDGE)
                await primary.commit()
                nudged = True
            await asyncio.sleep(0.05)
