"""db cutover: both sides proven equal while writes go on, then a short freeze and a fenced switch.

1. The last changes applied and every table compared while the serving side still
   takes writes (app/db/live/agreement): a divergence stops here, nothing frozen.
2. The freeze: writes on the serving side fail from its commit on, and it lifts by
   itself at its deadline if its owner dies. Under it only the changes since are
   applied and the keys changed since the comparison are checked, so it does not
   grow with the data.
3. The switch is written only if this cutover's freeze is still in force, decided in
   the transaction that writes it; a freeze that lapsed switches nothing. The side
   that starts serving gets a block of keys of its own (app/db/live/keys).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text

from app.db.live import capture, keys
from app.db.live.agreement import agree, describe_divergence, recheck
from app.db.live.sides import Backend, LiveDatabase
from app.db.live.sync import BATCH, Pair, SyncError, apply_batch, catch_up, started

# How long a freeze holds when its owner dies before lifting it.
FREEZE_SECONDS = 10.0


@dataclass
class CutoverOutcome:
    switched: bool
    to: Backend
    pause_seconds: float = 0.0
    applied: int = 0
    reason: str = ""


class Lapsed(RuntimeError):
    """The freeze this cutover owns is over: switching now could lose a write."""


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def freeze(side: LiveDatabase, seconds: float, token: str) -> None:
    """Writes on `side` fail from this commit on; the freeze lifts by itself after `seconds`.

    On SQLite the write lock orders it after every writer in flight; on PostgreSQL the
    UPDATE waits for the share lock each writer's guard holds on the state row.
    """
    async with side.writing(apply=True) as conn:
        await side.set_state(conn, frozen_until=time.time() + seconds, owner=token)


async def thaw(side: LiveDatabase, token: str) -> None:
    """Lift this cutover's freeze (and no other's)."""
    async with side.writing(apply=True) as conn:
        await conn.execute(
            text(
                f"UPDATE {capture.STATE} SET frozen_until = 0, owner = NULL "
                "WHERE id = 1 AND owner = :o"
            ),
            {"o": token},
        )


async def switch(pair: Pair, to: Backend, reason: str, token: str) -> None:
    """Make `to` the serving side, fenced by the freeze `token` owns on the other side.

    Locks in the order every switch takes them (the file's write lock, then
    PostgreSQL's state row); the side that starts serving commits first, so a failure
    between the two commits leaves the old side frozen or refusing, never two writers.
    """
    old, new = (pair.lite, pair.pg) if to == "postgresql" else (pair.pg, pair.lite)
    async with old.writing(apply=True) as old_conn, new.writing(apply=True) as new_conn:
        old_state, new_state = await old.state(old_conn), await new.state(new_conn)
        if old_state.owner != token or old_state.frozen_until <= time.time():
            raise Lapsed
        block_end = await keys.claim(
            new_conn,
            new.sqlite,
            max(old_state.block_end, new_state.block_end),
            await keys.highest(old_conn, old.sqlite),
        )
        values = {
            "active": to,
            "epoch": max(old_state.epoch, new_state.epoch) + 1,
            "reason": reason,
            "frozen_until": 0.0,
            "owner": None,
            "switched_at": time.time(),
            "block_end": block_end,
            "left_on": None,
            "left_count": None,
        }
        await new.set_state(new_conn, **values)
        await old.set_state(old_conn, **values)


async def _catch_up_while_writing(pair: Pair, direction: str) -> None:
    """Apply batches until one is not full: the backlog is as small as writes let it be."""
    for _ in range(20):
        if await apply_batch(pair, direction) < BATCH // 4:
            return


async def run_cutover(
    pair: Pair,
    *,
    back: bool = False,
    freeze_seconds: float = FREEZE_SECONDS,
    show: Callable[[str], None] = print,
    before_switch: Callable[[], None] | None = None,
) -> CutoverOutcome:
    to: Backend = "sqlite" if back else "postgresql"
    frm: Backend = "postgresql" if back else "sqlite"
    direction = f"to_{to}"
    if not await started(pair):
        raise SyncError("no sync has been started between these databases; run db sync first")
    state = await pair.lite.state()
    if state.active == to:
        raise SyncError(f"the service already runs on {to}")
    if state.left_on is not None:
        raise SyncError(
            f"changes left on {state.left_on} by an automatic rollback are not reconciled "
            "yet; db sync brings them over once it reaches both databases"
        )
    source = pair.pg if back else pair.lite
    await _catch_up_while_writing(pair, direction)
    show(f"comparing both databases while {frm} takes writes")
    agreement = await agree(pair, direction)
    if agreement.diverged:
        show(
            f"verification failed: {describe_divergence(agreement.diverged)}; "
            f"nothing frozen, writes go on on {frm}, nothing switched"
        )
        return CutoverOutcome(False, frm, 0.0, 0, "verification failed")
    left = sum(len(k) for k in agreement.unsettled.values())
    show(
        f"both sides agree: {agreement.rows:,} rows compared in {agreement.seconds:.1f} s; "
        f"{left} keys changing meanwhile are checked under the freeze"
    )
    await _catch_up_while_writing(pair, direction)
    token = owner()
    show(f"freezing writes on {frm} (lifted by itself after {freeze_seconds:g} s)")
    await freeze(source, freeze_seconds, token)
    frozen_at = time.monotonic()
    try:
        applied = await catch_up(pair, direction)
        diverged = await recheck(pair, direction, agreement)
        if diverged:
            await thaw(source, token)
            show(
                f"verification failed: {describe_divergence(diverged)}; writes resume on {frm}, "
                "nothing switched"
            )
            paused = time.monotonic() - frozen_at
            return CutoverOutcome(False, frm, paused, applied, "verification failed")
        show(f"applied the last {applied} changes; the keys changed since agree")
        if before_switch is not None:
            before_switch()
        await switch(pair, to, "cutover --back" if back else "cutover", token)
    except Lapsed:
        pause = time.monotonic() - frozen_at
        show(f"the freeze lapsed after {pause:.1f} s; nothing switched, writes go on on {frm}")
        return CutoverOutcome(False, frm, pause, 0, "freeze lapsed")
    except BaseException:
        await asyncio.shield(thaw(source, token))
        raise
    pause = time.monotonic() - frozen_at
    show(f"switched to {to}; writes were paused {pause:.2f} s")
    return CutoverOutcome(True, to, pause, applied, "switched")
