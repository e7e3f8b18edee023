"""Live migration under faults: processes killed at the worst moments, a failing PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

import asyncpg
import pytest
from rich.console import Console

from app.db.live.cutover import run_cutover
from app.db.live.guard import SchemaChangeRefused
from app.db.live.sync import Pair, remove_capture, start
from app.db.migrate import downgrade_async, upgrade_async
from tests import live_helpers as live
from tests.conftest import Postgres, _plain


async def test_sync_killed_mid_copy_and_mid_apply_resumes(
    postgres: Postgres, tmp_path: Path
) -> None:
    db = await live.databases(postgres, tmp_path)
    with live.Writer(db.path) as writer:
        first = live.cli(tmp_path, "sync-1", "db", "sync", db.lite, db.pg)
        await first.wait_for("bulk copy")
        first.stop(signal.SIGKILL)  # in the middle of the bulk copy
        second = live.cli(tmp_path, "sync-2", "db", "sync", db.lite, db.pg)
        await second.wait_for("lag")
        await asyncio.sleep(0.5)
        second.stop(signal.SIGKILL)  # in the middle of applying changes
        await asyncio.sleep(0.5)
        third = live.cli(tmp_path, "sync-3", "db", "sync", db.lite, db.pg)
        await third.wait_for("resuming the sync")
        await asyncio.sleep(0.5)
    try:
        found = await live.converged(db)
    finally:
        assert third.stop() == 0, third.text()
    assert len(writer.committed) > 20
    assert not writer.refused
    assert not writer.other
    emails = {row["email"] for row in found["users"].values()}
    assert {email for _, email in writer.committed} <= emails


async def test_cutover_killed_between_freeze_and_switch(postgres: Postgres, tmp_path: Path) -> None:
    db = await live.databases(postgres, tmp_path)
    sync = live.cli(tmp_path, "sync", "db", "sync", db.lite, db.pg, "--interval", "0.05")
    try:
        await sync.wait_for("lag")
        with live.Writer(db.path) as writer:
            await asyncio.sleep(0.5)
            doomed = live.cli(
                tmp_path,
                "cutover-killed",
                "db",
                "cutover",
                db.lite,
                db.pg,
                "--freeze-seconds",
                "4",
                "--hold-before-switch",
                "60",
            )
            await doomed.wait_for("holding")
            killed = time.monotonic()
            doomed.stop(signal.SIGKILL)

            async def resumed() -> list[float]:
                # The bound only catches a freeze that never lifts (it lasts 4 s).
                while not (after := [t for t, _ in writer.committed if t > killed]):
                    assert time.monotonic() - killed < 60, "writes never resumed"
                    await asyncio.sleep(0.05)
                return after

            await resumed()
            await asyncio.sleep(0.3)  # a few more writes after it
        # The freeze outlived its owner and lifted by itself: writes went on, on SQLite.
        assert writer.refused, "the freeze refused nothing"
        assert not writer.other
        assert live.active(db.path) == "sqlite"
        await live.converged(db)
        # Run again: it completes, and SQLite refuses writes from then on.
        again = live.cli(tmp_path, "cutover", "db", "cutover", db.lite, db.pg)
        assert await live.finished(again) == 0, again.text()
        assert live.active(db.path) == "postgresql"
        with live.Writer(db.path) as late:
            await asyncio.sleep(0.3)
        assert late.refused
        assert not late.committed
        assert not late.other
        found = await live.converged(db)
        emails = {row["email"] for row in found["users"].values()}
        assert {email for _, email in writer.committed} <= emails
    finally:
        assert sync.stop() == 0, sync.text()


def _outlive_the_freeze(path: Path) -> None:
    """Hold the cutover until the freeze it set has lapsed, however long it took to get here."""
    db = sqlite3.connect(path)
    try:
        until = float(db.execute("SELECT frozen_until FROM _bookedbarber_live").fetchone()[0])
    finally:
        db.close()
    assert until > 0, "no freeze set"
    time.sleep(max(0.0, until - time.time()) + 0.5)


async def test_cutover_whose_freeze_lapses_switches_nothing(
    postgres: Postgres, tmp_path: Path
) -> None:
    """Verification slower than the freeze: the fence refuses the switch; SQLite's writes stay."""
    db = await live.databases(postgres, tmp_path)
    sync = live.cli(tmp_path, "sync", "db", "sync", db.lite, db.pg, "--interval", "0.05")
    pair = Pair.open(db.lite, db.pg)
    try:
        await sync.wait_for("lag")
        with live.Writer(db.path) as writer:
            await asyncio.sleep(0.3)
            said: list[str] = []
            outcome = await run_cutover(
                pair,
                freeze_seconds=3,
                show=said.append,
                before_switch=lambda: _outlive_the_freeze(db.path),
            )
            await asyncio.sleep(0.5)
        assert not outcome.switched
        assert outcome.reason == "freeze lapsed"
        assert any(line.startswith("the freeze lapsed after") for line in said), said
        assert not any("verification failed" in line for line in said), said
        assert live.active(db.path) == "sqlite"
        assert (await pair.pg.state()).active == "sqlite"
        # SQLite took writes again once the freeze was over; every one is kept, and carried.
        assert writer.refused, "the freeze refused nothing"
        assert [t for t, _ in writer.committed if t > writer.refused[-1]], "writes never resumed"
        assert not writer.other
        found = await live.converged(db)
        emails = {row["email"] for row in found["users"].values()}
        assert {email for _, email in writer.committed} <= emails
    finally:
        await pair.dispose()
        assert sync.stop() == 0, sync.text()


async def test_schema_change_refused_during_sync(postgres: Postgres, tmp_path: Path) -> None:
    db = await live.databases(postgres, tmp_path)
    pair = Pair.open(db.lite, db.pg)
    try:
        await start(pair, Console(quiet=True))
    finally:
        await pair.dispose()
    for url in (db.lite, db.pg):
        with pytest.raises(SchemaChangeRefused, match="one side of a live sync"):
            await downgrade_async(url, "0004")
        await upgrade_async(url)  # already at head: nothing to change, allowed
    downgrade = live.cli(tmp_path, "downgrade", "db", "downgrade", "--url", db.lite, "0004")
    assert await live.finished(downgrade) == 1
    assert "is one side of a live sync" in downgrade.text()
    assert "Traceback" not in downgrade.text()
    rows = await live.rows(db.lite)
    assert rows["appointments"], "the downgrade changed nothing"


async def test_failed_verification_switches_nothing(postgres: Postgres, tmp_path: Path) -> None:
    db = await live.databases(postgres, tmp_path)
    pair = Pair.open(db.lite, db.pg)
    try:
        await start(pair, Console(quiet=True))
        # A row changed on PostgreSQL behind the capture's back: the copies now differ.
        conn = await asyncpg.connect(_plain(db.pg))
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL bookedbarber.applying = 'on'")
                await conn.execute("UPDATE users SET name = 'tampered' WHERE id = 3")
        finally:
            await conn.close()
        said: list[str] = []
        outcome = await run_cutover(pair, show=said.append)
        assert not outcome.switched
        assert live.active(db.path) == "sqlite"
        assert any("verification failed: users" in line and "'3'" in line for line in said), said
        # Writes resume at once on SQLite, without waiting for the freeze's deadline.
        with live.Writer(db.path) as writer:
            await asyncio.sleep(0.3)
        assert writer.committed
        assert not writer.refused
        assert not writer.other
        await remove_capture(pair)
    finally:
        await pair.dispose()
    # Removed: no triggers, no state, and schema changes are allowed again.
    await downgrade_async(db.lite, "0004")
    await upgrade_async(db.lite)
