"""After an automatic rollback: both states made one, and what the failed side kept brought over.

The file's state is the one every worker follows. A PostgreSQL that failed while it
served missed the switch back: once it answers, its state is made the file's (so its
guard refuses writes from then on), and the changes it took that the sync had not
carried yet are brought to the side that serves now. A key that side changed too
since (a change of its own not yet handed over) is a conflict: the serving side's row
stays, the failed side's is kept in `_bookedbarber_live_conflicts` beside it and
reported. A row the serving side refuses (a unique value it has given to another row
meanwhile) is kept there the same way. Either way the serving side's version then goes
to the failed side like any change, so the two end equal and nothing is lost unseen.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.errors import constraint_name, violation
from app.db.live import capture
from app.db.live.sides import LiveDatabase, State
from app.db.live.sync import BATCH, Pair, _rows_of, _write
from app.db.models import ACTIVE_APPOINTMENT_STATUSES
from app.db.statements import sqlite_fetch
from app.queries import booking

log = logging.getLogger(__name__)

LOCKED_SECONDS = 3.0


@dataclass
class RowConflict:
    table: str
    key: int
    kept: str
    lost: str
    reason: str

    def __str__(self) -> str:
        return (
            f"conflict: {self.table} {self.key} {self.reason}; {self.kept}'s row kept, "
            f"{self.lost}'s in {capture.CONFLICTS}"
        )


async def settle(pair: Pair, show: Callable[[str], None]) -> State:
    """The file's state, with PostgreSQL's made the same where a switch left it behind.

    Locks in the order every switch takes them: the file's write lock, then PostgreSQL's
    state row (which waits for the writers in flight there).
    """
    mine, theirs = await pair.lite.state(), await pair.pg.state()
    if mine.agrees(theirs):
        return mine
    async with (
        asyncio.timeout(LOCKED_SECONDS),  # a PostgreSQL that hangs now must not hold the file
        pair.pg.writing(apply=True) as pg,
        pair.lite.writing(apply=True) as lite,
    ):
        mine, theirs = await pair.lite.state(lite), await pair.pg.state(pg)
        block_end = max(mine.block_end, theirs.block_end)
        if not mine.agrees(theirs):
            await pair.pg.set_state(
                pg,
                active=mine.active,
                epoch=mine.epoch,
                reason=mine.reason,
                frozen_until=0.0,
                owner=None,
                block_end=block_end,
            )
            if block_end != mine.block_end:
                await pair.lite.set_state(lite, block_end=block_end)
            show(
                f"postgresql's state brought in line with the file's: {mine.active} serves "
                f"(switch {mine.epoch}; postgresql said {theirs.active}, switch {theirs.epoch})"
            )
    return mine


async def left_over(side: LiveDatabase) -> int:
    async with side.engine.connect() as conn:
        count, _ = await side.backlog(conn)
    return count


async def note_left(pair: Pair, epoch: int, on: str | None, count: int | None) -> None:
    """What the file says is left on the failed side (shown in /health/db and /metrics),
    as of the switch `epoch` (a later switch has its own)."""
    async with pair.lite.writing(apply=True) as conn:
        await conn.execute(
            text(
                f"UPDATE {capture.STATE} SET left_on = :on, left_count = :n, left_at = :at "
                "WHERE id = 1 AND epoch = :e"
            ),
            {"on": on, "n": count, "at": time.time(), "e": epoch},
        )


async def thaw_rollback(pair: Pair, epoch: int) -> bool:
    """Lift the freeze an automatic rollback set while it drained (that switch's only)."""
    async with pair.lite.writing(apply=True) as conn:
        result = await conn.execute(
            text(
                f"UPDATE {capture.STATE} SET frozen_until = 0, owner = NULL "
                "WHERE id = 1 AND owner = 'rollback' AND epoch = :e AND frozen_until > :now"
            ),
            {"e": epoch, "now": time.time()},
        )
    return bool(result.rowcount)


def _json(row: dict[str, object] | None) -> str | None:
    return None if row is None else json.dumps(row, default=str, sort_keys=True)


async def _pending(
    side: LiveDatabase, conn: AsyncConnection, keys: dict[str, set[int]]
) -> dict[str, set[int]]:
    """Which of `keys` this side changed and has not handed over yet."""
    found: dict[str, set[int]] = defaultdict(set)
    for name, wanted in keys.items():
        ordered = sorted(wanted)
        for start in range(0, len(ordered), 500):
            listed = ", ".join(str(k) for k in ordered[start : start + 500])
            rows = await conn.execute(
                text(
                    f"SELECT DISTINCT key FROM {capture.CHANGES} "
                    f"WHERE tbl = :t AND key IN ({listed})"
                ),
                {"t": name},
            )
            found[name] |= {int(r[0]) for r in rows}
    return found


async def _keep(
    serving: LiveDatabase,
    conn: AsyncConnection,
    failed: LiveDatabase,
    table: str,
    key: int,
    lost: dict[str, object] | None,
    reason: str,
    requeue: bool,
) -> RowConflict:
    """Both versions kept on the serving side; its own goes to the failed side next."""
    found = await serving.rows(conn, capture.table(table), [key])
    kept = found[0] if found else None
    await conn.execute(
        text(
            f"INSERT INTO {capture.CONFLICTS} "
            "(at, tbl, key, kept, kept_row, lost, lost_row, reason) "
            "VALUES (:at, :t, :k, :kept, :kept_row, :lost, :lost_row, :reason)"
        ),
        {
            "at": time.time(),
            "t": table,
            "k": key,
            "kept": serving.backend,
            "kept_row": _json(kept),
            "lost": failed.backend,
            "lost_row": _json(lost),
            "reason": reason,
        },
    )
    if requeue:  # the serving side's row (or its absence) must reach the failed side
        await conn.execute(
            text(f"INSERT INTO {capture.CHANGES} (tbl, key, at) VALUES (:t, :k, :at)"),
            {"t": table, "k": key, "at": time.time()},
        )
    return RowConflict(table, key, serving.backend, failed.backend, reason)


async def reconcile_batch(pair: Pair, limit: int = BATCH) -> tuple[int, list[RowConflict]]:
    """Up to `limit` of PostgreSQL's leftovers brought to SQLite, which serves.

    Only while the file says SQLite serves, checked under its write lock: a round that
    read an older state (PostgreSQL hung through a rollback) must not take SQLite's
    own new writes for leftovers.
    """
    failed, serving = pair.pg, pair.lite
    conflicts: list[RowConflict] = []
    # The failed side is fenced (its guard refuses writes): its rows hold still, so they
    # are read before the serving side's write lock is taken, not under it.
    async with failed.reading() as src:
        changes = await failed.changes(src, limit)
        if not changes:
            return 0, []
        keys: dict[str, set[int]] = defaultdict(set)
        for _, name, key in changes:
            keys[name].add(key)
        found = await _rows_of(failed, src, keys)
    async with serving.writing(apply=True) as out:
        if (await serving.state(out)).active != "sqlite":
            return 0, []  # switched meanwhile; the next round looks again
        both = await _pending(serving, out, keys)
        for name, clashing in both.items():
            rows = {r["id"]: r for r in found.get(name, [])}
            for key in sorted(clashing):
                conflicts.append(
                    await _keep(
                        serving,
                        out,
                        failed,
                        name,
                        key,
                        rows.get(key),
                        "changed on both sides",
                        requeue=False,
                    )
                )
            keys[name] -= clashing
            found[name] = [r for r in found.get(name, []) if r["id"] not in clashing]
        for row in await _busy(serving, out, found.get("appointments", [])):
            why = "overlaps an active appointment of the same barber or client"
            key = cast(int, row["id"])  # every captured table's key is a bigint id
            conflicts.append(
                await _keep(serving, out, failed, "appointments", key, row, why, requeue=True)
            )
            keys["appointments"].discard(key)
            found["appointments"].remove(row)
        try:
            async with out.begin_nested():
                await _write(serving, out, keys, found)
        except IntegrityError:  # one row at a time, to find those the serving side refuses
            conflicts += await _write_each(serving, out, failed, keys, found)
    await failed.consume([seq for seq, _, _ in changes])
    for conflict in conflicts:
        log.warning("live migration conflict", extra={"conflict": str(conflict)})
    return len(changes), conflicts


async def _busy(
    serving: LiveDatabase, out: AsyncConnection, rows: list[dict[str, object]]
) -> list[dict[str, object]]:
    """Active appointments the booking's overlap rules refuse on the serving side (SQLite
    has no constraint for them; PostgreSQL's exclusion constraints refuse them on write)."""
    if not serving.sqlite:
        return []
    busy = []
    for row in rows:
        if row["status"] not in ACTIVE_APPOINTMENT_STATUSES:
            continue
        fields = ("id", "user_id", "barber_id", "start_time", "end_time")
        (verdicts,) = await sqlite_fetch(out, booking.CLASH, *(row[f] for f in fields))
        if booking.first_broken(verdicts) is not None:
            busy.append(row)
    return busy


async def _write_each(
    serving: LiveDatabase,
    out: AsyncConnection,
    failed: LiveDatabase,
    keys: dict[str, set[int]],
    found: dict[str, list[dict[str, object]]],
) -> list[RowConflict]:
    conflicts = []
    order = capture.tables()
    rows = {(name, r["id"]): r for name, batch in found.items() for r in batch}
    every = [(t.name, k) for t in order for k in sorted(keys.get(t.name, set()))]
    upserts = [item for item in every if item in rows]  # parents first
    singles = [item for item in reversed(every) if item not in rows] + upserts
    for name, key in singles:
        row = rows.get((name, key))
        one = {name: {key}}
        try:
            async with out.begin_nested():
                await _write(serving, out, one, {name: [row] if row else []})
        except IntegrityError as exc:
            named = constraint_name(exc)
            why = f"refused by {named}" if named else f"refused (SQLSTATE {violation(exc)})"
            conflicts.append(await _keep(serving, out, failed, name, key, row, why, requeue=True))
    return conflicts
