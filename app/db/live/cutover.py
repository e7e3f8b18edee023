"""db cutover: freeze the serving side, apply the last changes, verify, switch every worker."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.db.live import capture
from app.db.live.sides import Backend, Side
from app.db.live.sync import Pair, SyncError, catch_up, started
from app.db.transfer import lite as transfer_lite
from app.db.transfer import pg as transfer_pg
from app.db.transfer.digest import Digest, pg_digest, sqlite_digest
from app.db.transfer.options import sqlite_path
from app.db.transfer.report import Check
from app.db.transfer.values import Options
from app.db.transfer.verify import Side as VerifySide
from app.db.transfer.verify import compare

# How long a freeze holds when its owner dies before lifting it.
FREEZE_SECONDS = 10.0


@dataclass
class Outcome:
    switched: bool
    to: Backend
    pause_seconds: float = 0.0
    applied: int = 0
    checks: list[Check] = field(default_factory=list)
    reason: str = ""


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def verify(pair: Pair) -> list[Check]:
    """Counts and checksums of every application table, computed in each database.

    Both databases work at once (SQLite in a thread): this runs inside the write pause.
    """
    names = sorted(t.name for t in capture.tables())
    db = transfer_lite.connect(sqlite_path(pair.lite.url))
    conn = await transfer_pg.connect(pair.pg.url_plain)
    options = Options(False, False)
    try:
        lite_tables = transfer_lite.reflect(db)
        pg_tables = await transfer_pg.reflect(conn, "public")
        types = {}
        for name in names:
            pairs = [(c.name, pg_tables[name].column(c.name)) for c in lite_tables[name].columns]
            types[name] = [(n, other.type) for n, other in pairs if other is not None]

        def lite_side() -> list[Digest]:
            return [sqlite_digest(db, lite_tables[n], types[n], options) for n in names]

        async def pg_side() -> list[Digest]:
            return [await pg_digest(conn, "public", n, types[n]) for n in names]

        mine, theirs = await asyncio.gather(asyncio.to_thread(lite_side), pg_side())
        checks = []
        for name, a, b in zip(names, mine, theirs, strict=True):
            check = Check(name, a.rows, b.rows, a.total, b.total)
            if not check.ok:  # which rows: the comparison that names keys
                ta, tb = lite_tables[name], pg_tables[name]
                check = await compare(VerifySide(sqlite=db), ta, VerifySide(pg=conn), tb, options)
            checks.append(check)
        return checks
    finally:
        db.close()
        await conn.close()


async def freeze(side: Side, seconds: float) -> None:
    """Writes on `side` fail from this commit on; the freeze lifts by itself after `seconds`.

    On SQLite the write lock orders it after every writer in flight; on PostgreSQL the
    UPDATE waits for the share lock each writer's guard holds on the state row.
    """
    async with side.writing(apply=True) as conn:
        await side.set_state(conn, frozen_until=time.time() + seconds, owner=owner())


async def thaw(side: Side) -> None:
    async with side.writing(apply=True) as conn:
        await side.set_state(conn, frozen_until=0.0, owner=None)


async def switch_state(pair: Pair, to: Backend, reason: str) -> None:
    """Make `to` the active side: first where the writes go, then the file workers watch."""
    first, second = (pair.pg, pair.lite) if to == "postgresql" else (pair.lite, pair.pg)
    now = time.time()
    async with first.writing(apply=True) as conn:
        epoch = (await first.state(conn)).epoch + 1
        await first.set_state(
            conn, active=to, epoch=epoch, reason=reason, frozen_until=0.0, switched_at=now
        )
    async with second.writing(apply=True) as conn:
        await second.set_state(
            conn, active=to, epoch=epoch, reason=reason, frozen_until=0.0, switched_at=now
        )


async def cutover(
    pair: Pair,
    *,
    back: bool = False,
    freeze_seconds: float = FREEZE_SECONDS,
    show: Callable[[str], None] = print,
    before_switch: Callable[[], None] | None = None,
) -> Outcome:
    to: Backend = "sqlite" if back else "postgresql"
    frm: Backend = "postgresql" if back else "sqlite"
    direction = f"to_{to}"
    if not await started(pair):
        raise SyncError("no sync has been started between these databases; run db sync first")
    state = await pair.lite.state()
    if state.active == to:
        raise SyncError(f"the service already runs on {to}")
    source = pair.pg if back else pair.lite
    # Catch up while writes go on, so the freeze has only the last few changes to apply.
    for _ in range(5):
        if await catch_up(pair, direction) < 50:
            break
    show(f"freezing writes on {frm} (lifted by itself after {freeze_seconds:.0f} s)")
    await freeze(source, freeze_seconds)
    frozen_at = time.monotonic()
    try:
        applied = await catch_up(pair, direction)
        show(f"applied the last {applied} changes")
        if not back:
            async with pair.pg.writing(apply=True) as conn:
                await pair.pg.reset_sequences(conn)
        checks = await verify(pair)
    except BaseException:
        await asyncio.shield(thaw(source))
        raise
    bad = [c for c in checks if not c.ok]
    if bad:
        await thaw(source)
        pause = time.monotonic() - frozen_at
        names = ", ".join(
            f"{c.table} ({c.source_rows} vs {c.target_rows} rows; keys {c.differing_keys})"
            for c in bad
        )
        show(f"verification failed: {names}; writes resume on {frm}, nothing switched")
        return Outcome(False, frm, pause, applied, checks, "verification failed")
    show(f"verified {len(checks)} tables: counts and checksums match")
    if before_switch is not None:
        before_switch()
    try:
        await switch_state(pair, to, "cutover --back" if back else "cutover")
    except BaseException:
        # The file the workers read decides; unless it says `to`, writes resume as they were.
        if (await asyncio.shield(pair.lite.state())).active != to:
            await asyncio.shield(thaw(source))
        raise
    pause = time.monotonic() - frozen_at
    show(f"switched to {to}; writes were paused {pause:.2f} s")
    return Outcome(True, to, pause, applied, checks, "switched")
