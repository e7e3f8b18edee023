"""db sync's loop: rounds of settle, reconcile, apply, and a wait that outlives faults.

A round that fails because a database cannot serve now (refused or dropped
connections, not accepting connections, too many connections, a statement or lock
timeout, a server that hangs) is retried with backoff, saying once what it waits for;
the sync exits only when told to stop or on an error a retry cannot fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable

from rich.console import Console
from sqlalchemy import text

from app.db.errors import failure, sqlstate
from app.db.live import capture
from app.db.live.capture import is_frozen_error
from app.db.live.reconcile import left_over, note_left, reconcile_batch, settle, thaw_rollback
from app.db.live.sync import Aside, Pair, SyncError, apply_batch, lag, start, started

ROUND_SECONDS = 120.0  # a round that takes longer than this is stuck: retried
MAX_BACKOFF = 5.0
APPLIED_KEPT_SECONDS = 3600.0  # the applied log an agreement reads (app/db/live/agreement)


def unavailable(exc: BaseException) -> str | None:
    """What a round waits for, or None when retrying cannot help."""
    if isinstance(exc, SyncError):
        return None
    seen: set[int] = set()
    current: BaseException | None = exc
    side = "a database"
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        module = type(current).__module__
        if module.startswith("asyncpg"):
            side = "postgresql"
        elif isinstance(current, sqlite3.Error):
            side = "sqlite"
            if isinstance(current, sqlite3.OperationalError):  # locked, busy, I/O
                return f"sqlite ({current.sqlite_errorname})"
        current = getattr(current, "orig", None) or current.__cause__
    if side == "a database" and isinstance(exc, OSError | TimeoutError):
        side = "postgresql"  # the one reached over a network; SQLite fails as sqlite3 errors
    if isinstance(exc, TimeoutError):
        return f"{side} (no answer in time)"
    if failure(exc) in ("connection", "busy", "pool_timeout") or is_frozen_error(exc):
        code = sqlstate(exc)
        return f"{side} ({f'SQLSTATE {code}' if code else type(exc).__name__})"
    if isinstance(exc, OSError):
        return f"{side} ({type(exc).__name__})"
    return None


async def step(pair: Pair, show: Callable[[str], None]) -> tuple[str, int]:
    """One round; (the direction changes go, how many moved).

    Leftovers exist only on PostgreSQL, past an automatic rollback: SQLite refuses
    every write while it does not serve, and a planned switch drains it under its
    freeze. Whatever this round read, the writes below check the file's state again
    under its lock (a round can outlast a switch when PostgreSQL hangs).
    """
    state = await settle(pair, show)
    if state.active == "sqlite":
        if left := await left_over(pair.pg):
            if (state.left_on, state.left_count) != ("postgresql", left):
                await note_left(pair, state.epoch, "postgresql", left)
            moved, conflicts = await reconcile_batch(pair)
            for conflict in conflicts:
                show(str(conflict))
            if moved:
                show(f"brought {moved} changes left on postgresql to sqlite")
            return "to_sqlite", moved
        if state.left_on is not None:
            await note_left(pair, state.epoch, None, None)
            if await thaw_rollback(pair, state.epoch):
                show("nothing left on postgresql: writes resume on sqlite")
    direction = "to_postgresql" if state.active == "sqlite" else "to_sqlite"
    try:
        return direction, await apply_batch(pair, direction)
    except Aside:
        return direction, 0  # the states changed under this round; the next one settles them


async def _prune(pair: Pair) -> None:
    for side in (pair.lite, pair.pg):
        async with side.writing(apply=True) as conn:
            await conn.execute(
                text(f"DELETE FROM {capture.APPLIED} WHERE at < :t"),
                {"t": time.time() - APPLIED_KEPT_SECONDS},
            )


async def run_sync(
    pair: Pair,
    console: Console,
    *,
    interval: float = 0.2,
    report_every: float = 1.0,
    stop: asyncio.Event | None = None,
    show: Callable[[str], None] | None = None,
) -> None:
    """Keep both sides caught up until `stop` is set: changes go from the serving side."""
    say = show or console.print
    stop = stop or asyncio.Event()
    waiting: str | None = None
    backoff = interval
    last_report = last_prune = time.monotonic()
    applied = 0
    first = True
    while not stop.is_set():
        try:
            if first:
                if not await started(pair):
                    await start(pair, console, say)
                else:
                    say("resuming the sync")
                first = False
            async with asyncio.timeout(ROUND_SECONDS):
                direction, moved = await step(pair, say)
                applied += moved
                now = time.monotonic()
                if now - last_report >= report_every:
                    behind = await lag(pair, direction)
                    say(f"{direction}: applied {applied} changes; lag {behind}")
                    last_report, applied = now, 0
                if now - last_prune >= 60:
                    await _prune(pair)
                    last_prune = now
        except Exception as exc:
            reason = unavailable(exc)
            if reason is None:
                raise
            if reason != waiting:
                say(f"waiting for {reason}; retrying")
                waiting = reason
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            continue
        if waiting is not None:
            say(f"{waiting.split(' (')[0]} answers again; the sync goes on")
            waiting, backoff = None, interval
        if moved:
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
