"""A `db copy` killed (SIGKILL) while a real lock holds it in one phase, for the fault tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from tests.conftest import sqlite_file_url

ROOT = Path(__file__).resolve().parents[1]


def plain(u: str) -> str:
    """asyncpg wants postgresql://, not SQLAlchemy's postgresql+asyncpg://."""
    return u.replace("+asyncpg", "")


async def wait_for(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def kill_copy_blocked(
    source: Path, target: str, locked: str, blocked: str, batch_size: int
) -> None:
    """Starts a copy, holds `locked` until the copy waits on it in a statement starting
    with `blocked` (that phase, for real), then kills the copy."""
    args = [sys.executable, "-m", "app", "db", "copy", sqlite_file_url(source), target]
    proc = subprocess.Popen(  # noqa: ASYNC220
        [*args, "--batch-size", str(batch_size)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    holder = await asyncpg.connect(plain(target))
    watcher = await asyncpg.connect(plain(target))
    try:

        async def exists() -> bool:
            return await watcher.fetchval("SELECT to_regclass($1)", locked) is not None

        await wait_for(locked, exists)
        tx = holder.transaction()
        await tx.start()
        await holder.execute(f"LOCK TABLE {locked} IN ACCESS SHARE MODE")

        async def waiting() -> bool:
            return bool(
                await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE $1",
                    blocked + "%",
                )
            )

        await wait_for(f"the copy to block in {blocked}", waiting)
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        await tx.rollback()
    finally:
        await holder.close()
        await watcher.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
