"""Live migration of a serving SQLite deployment to PostgreSQL and back (app/db/live)."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

import httpx

from app.db.live.keys import BLOCK
from tests import live_helpers as live
from tests.conftest import Postgres
from tests.live_load import Load, Plan
from tests.test_edges import launch, wait_port
from tests.test_health import stop as halt


def _check_answers(load: Load, where: str) -> None:
    statuses = collections.Counter(a.status for a in load.writes())
    odd = [(a.op, a.status, a.body) for a in load.writes() if a.status not in (200, 201, 503)]
    assert set(statuses) <= {200, 201, 503}, f"{where}: write statuses {statuses}: {odd[:3]}"
    frozen = [a for a in load.writes() if a.status == 503]
    assert all(a.retry_after and int(a.retry_after) >= 1 for a in frozen), where
    assert all(
        a.body and a.body.get("detail") == "writes are paused for a database switch" for a in frozen
    ), f"{where}: a 503 that is not the switch's"
    failed = load.failed_reads()
    assert not failed, f"{where}: {len(failed)} failed reads, e.g. {failed[:3]}"


async def _until_booked(load: Load, after: float, count: int) -> None:
    """Waits for `count` bookings answered 201 that began after `after` (monotonic)."""
    deadline = time.monotonic() + 120  # only catches a service that stopped booking
    while (
        sum(1 for a in load.answers if a.op == "book" and a.status == 201 and a.started > after)
        < count
    ):
        assert time.monotonic() < deadline, load.timeline()
        await asyncio.sleep(0.05)


def _check_reflected(load: Load, found: dict[str, dict[int, dict[str, Any]]]) -> None:
    """What every 2xx said is in the database, column by column."""
    for key, said in load.appointments.items():
        row = found["appointments"][key]
        for column in ("user_id", "barber_id", "service_id", "location_id", "status", "version"):
            assert row[column] == said[column], (key, column, row[column], said[column])
        assert row["notes"] == said["notes"]
    for key, said in load.payments.items():
        row = found["payments"][key]
        assert (row["appointment_id"], row["status"], row["version"]) == (
            said["appointment_id"],
            said["status"],
            said["version"],
        )
        assert str(row["amount"]) == said["amount"]
    for key, said in load.users.items():
        assert found["users"][key]["email"] == said["email"]


async def test_serving_sqlite_moves_to_postgresql_and_back_under_load(
    postgres: Postgres, tmp_path: Path
) -> None:
    """Two workers (one serves the rollback tests): every one of them switches."""
    workers = 2
    db = await live.databases(postgres, tmp_path)
    plan = Plan.from_sqlite(db.path)
    sync = live.cli(tmp_path, "sync", "db", "sync", db.lite, db.pg, "--interval", "0.05")
    server = launch(
        tmp_path,
        live.service_env(db),
        "--no-access-log",
        "--workers",
        str(workers),
    )
    stop = asyncio.Event()
    running: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    running.set_result(None)
    try:
        wait_port(server)
        await sync.wait_for("lag")
        stop = asyncio.Event()
        # The machine is shared: a modest rate the service keeps up with even when busy
        # (bench/live.py runs 50 writes/s and 200 reads/s).
        load = Load(server.base, plan, writes_per_second=25, reads_per_second=100)
        running = asyncio.create_task(load.run(stop))
        pauses = {}
        blocks: dict[str, list[int]] = {}
        for where, args in (("postgresql", ()), ("sqlite", ("--back",))):
            # Load under way on the side that serves, then the cutover meets it.
            await _until_booked(load, time.monotonic(), 10)
            begun = len(load.answers)
            cutover = live.cli(tmp_path, f"cutover-{where}", "db", "cutover", db.lite, db.pg, *args)
            assert await live.finished(cutover, 120) == 0, cutover.text()
            switched = time.monotonic()
            assert f"switched to {where}" in cutover.text()
            async with httpx.AsyncClient(base_url=server.base, timeout=30) as client:
                # Each answer comes from one worker: several in a row, all switched. A new
                # connection each time, or one worker would answer them all.
                agreeing = 0
                for _ in range(400):
                    health = (
                        await client.get("/health/db", headers={"Connection": "close"})
                    ).json()
                    agreeing = agreeing + 1 if health["backend"]["active"] == where else 0
                    if agreeing >= 10 * workers:
                        break
                    await asyncio.sleep(0.02)
            assert health["backend"]["active"] == where, health
            assert health["backend"]["switches"][-1]["to"] == where
            await _until_booked(load, switched, 10)  # served after the switch
            window = Load(server.base, plan)
            window.answers = load.answers[begun:]
            pauses[where] = window.longest_write_pause()
            blocks[where] = [
                a.body["id"]
                for a in window.answers
                if a.op == "book" and a.status == 201 and a.body and a.started > switched
            ]
            print(cutover.text().strip())
            print(window.timeline())
        stop.set()
        await running
        writes, reads = load.rates()
        print(f"answered {writes:.0f} writes/s and {reads:.0f} reads/s")
        found = await live.converged(db)
        for where, pause in pauses.items():
            print(f"longest write pause, cut over to {where}: {pause:.3f} s")
        _check_answers(load, "whole run")
        _check_reflected(load, found)
        assert load.appointments
        assert load.payments
        assert load.users
        assert sum(1 for a in load.writes() if a.status == 503) > 0, "no write met the freeze"
        # Each serving period hands out keys from a block of its own (app/db/live/keys).
        assert blocks["postgresql"], blocks
        assert blocks["sqlite"], blocks
        assert min(blocks["postgresql"]) >= BLOCK, blocks
        assert min(blocks["sqlite"]) >= 2 * BLOCK, blocks
        assert max(blocks["postgresql"]) < 2 * BLOCK
        assert live.active(db.path) == "sqlite"
    finally:
        stop.set()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        halt(server.proc)
        assert sync.stop() == 0, sync.text()
    assert "sync stopped; run it again to resume" in sync.text()
