"""Automatic rollback under real faults of PostgreSQL: no acknowledged write lost or overwritten.

A PostgreSQL of this module's own (faults stop it), durable commits. The service runs on
SQLite with MIGRATION_TARGET_URL and automatic rollback, db sync runs, db cutover moves
it to PostgreSQL, a mixed load writes there; then the fault, the rollback to SQLite,
writes on SQLite, the fault lifted, and the sync catching up. Judged by the test's own
reads of both databases against what every 2xx answer said.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.db.live import keys
from app.db.live.backend import UNTIL_DRAINED
from app.db.live.sync import BATCH
from tests import live_helpers as live
from tests import pgcluster
from tests.conftest import Postgres, _plain
from tests.live_load import Load, Plan
from tests.test_edges import launch, wait_port
from tests.test_health import stop as halt
from tests.test_live_migration import _check_reflected

WINDOW = 2.0


@pytest.fixture(scope="module")
def own() -> Iterator[pgcluster.PgCluster]:
    cluster = pgcluster.start_cluster(replicas=0)
    try:
        # An acknowledged commit must survive `pg_ctl stop -m immediate`.
        cluster.primary._append_conf({"synchronous_commit": "on"})
        cluster.primary.restart()
        yield cluster
    finally:
        cluster.stop()


def _processes(postmaster: int) -> list[int]:
    """The postmaster and its children (every backend), read from /proc."""
    found = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                found.append(int(entry.name))
    return found


class Fault:
    """One way for PostgreSQL to fail, put on and taken off."""

    def __init__(self, kind: str, cluster: pgcluster.PgCluster, database: str) -> None:
        self.kind, self.cluster, self.database = kind, cluster, database
        self.admin = _plain(cluster.primary.url("postgres"))
        self.lock: asyncpg.Connection | None = None
        self.stopped: list[int] = []

    async def on(self) -> None:
        node = self.cluster.primary
        if self.kind == "not_accepting":
            conn = await asyncpg.connect(self.admin)
            try:
                await conn.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS false')
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    self.database,
                )
            finally:
                await conn.close()
        elif self.kind == "stopped":
            node.stop("immediate")
        elif self.kind == "hung":
            postmaster = node.pid
            assert postmaster is not None
            os.kill(postmaster, signal.SIGSTOP)  # first: no backend is forked meanwhile
            self.stopped = [postmaster]
            for pid in _processes(postmaster)[1:]:
                with contextlib.suppress(ProcessLookupError):  # a backend that just ended
                    os.kill(pid, signal.SIGSTOP)
                    self.stopped.append(pid)
        else:  # every table the API writes locked: statements time out
            url = _plain(node.url(self.database))
            self.lock = await asyncpg.connect(url)
            await self.lock.execute("BEGIN")
            await self.lock.execute(
                "LOCK TABLE users, appointments, payments IN ACCESS EXCLUSIVE MODE"
            )

    async def off(self) -> None:
        node = self.cluster.primary
        if self.kind == "not_accepting":
            conn = await asyncpg.connect(self.admin)
            try:
                await conn.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS true')
            finally:
                await conn.close()
        elif self.kind == "stopped":
            node.start()
        elif self.kind == "hung":
            for pid in self.stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        elif self.lock is not None:
            await self.lock.execute("ROLLBACK")
            await self.lock.close()


async def _until(
    client: httpx.AsyncClient, check: Callable[[dict[str, Any]], bool], limit: float
) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        health = (await client.get("/health/db")).json()
        if check(health.get("backend", {})):
            return health  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, health
        await asyncio.sleep(0.05)


async def _run(load: Load, seconds: float) -> None:
    stop = asyncio.Event()
    running = asyncio.create_task(load.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await running


def _conflicts(path: Path) -> list[tuple[str, int, dict[str, Any] | None]]:
    """(table, key, the version that lost) of every conflict kept."""
    db = sqlite3.connect(path)
    try:
        return [
            (str(t), int(k), None if lost is None else json.loads(lost))
            for t, k, lost in db.execute(
                "SELECT tbl, key, lost_row FROM _bookedbarber_live_conflicts"
            )
        ]
    finally:
        db.close()


def _distinct_keys(load: Load) -> None:
    """No key handed out twice: as many distinct ids as 201 answers, per kind."""
    created = collections.Counter(a.op for a in load.answers if a.status == 201)
    assert created["book"] == len(load.appointments), (created, len(load.appointments))
    assert created["sign_up"] == len(load.users), (created, len(load.users))


# A PostgreSQL that hangs, met with timeouts longer than the test waits for the switch
# (30 s): only the watch's own ping can tell it before a statement gives up.
PATIENT = {"STATEMENT_TIMEOUT_MS": "60000", "CONNECT_TIMEOUT": "30", "POOL_TIMEOUT": "30"}


@pytest.mark.parametrize("kind", ["not_accepting", "stopped", "hung", "locked", "hung_patient"])
async def test_rollback_keeps_every_acknowledged_write(
    own: pgcluster.PgCluster, tmp_path: Path, kind: str
) -> None:
    patient = kind == "hung_patient"
    kind = "hung" if patient else kind
    pg = Postgres(own.primary.url(), [], own)
    db = await live.databases(pg, tmp_path)
    database = db.pg.rsplit("/", 1)[1].split("?")[0]
    plan = Plan.from_sqlite(db.path)
    sync = live.cli(tmp_path, "sync", "db", "sync", db.lite, db.pg, "--interval", "0.05")
    server = launch(
        tmp_path,
        live.service_env(
            db,
            **{
                "MIGRATION_AUTO_ROLLBACK": "true",
                "MIGRATION_ROLLBACK_WINDOW_SECONDS": str(WINDOW),
                "MIGRATION_ROLLBACK_ERROR_RATE": "1",
                "MIGRATION_ROLLBACK_DRAIN_SECONDS": "2",
                "LOCK_TIMEOUT_MS": "200",
                "STATEMENT_TIMEOUT_MS": "500",
                "CONNECT_TIMEOUT": "1",
                "POOL_TIMEOUT": "1",
                **(PATIENT if patient else {}),
            },
        ),
        "--no-access-log",
    )
    fault = Fault(kind, own, database)
    try:
        wait_port(server)
        await sync.wait_for("lag")
        cutover = live.cli(tmp_path, "cutover", "db", "cutover", db.lite, db.pg)
        assert await live.finished(cutover, 120) == 0, cutover.text()
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as client:
            await _until(client, lambda b: b.get("active") == "postgresql", 60)
            load = Load(server.base, plan, writes_per_second=20, reads_per_second=20)
            stop = asyncio.Event()
            running = asyncio.create_task(load.run(stop))
            await asyncio.sleep(1.5)
            await fault.on()
            faulted = time.monotonic()
            try:
                if patient:  # /health/db waits on the hung server as long as requests do
                    while live.active(db.path) != "sqlite":
                        assert time.monotonic() - faulted < 25, "no rollback while hung"
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(1)  # the workers read the switch (0.2 s polls)
                health = await _until(client, lambda b: b.get("active") == "sqlite", 30)
                switched = time.monotonic() - faulted
                # Writes are served again on SQLite (after the drain's bound at most).
                served = None
                signed_up: int | None = None
                while served is None and time.monotonic() - faulted < 30:
                    await asyncio.sleep(0.1)
                    served = next(
                        (
                            a.finished
                            for a in load.writes()
                            if a.started > faulted + switched and 200 <= a.status < 300
                        ),
                        None,
                    )
                    if patient and served is None:
                        # The load's writers all wait on the hung server (as long as their
                        # statements may): a new client's write shows SQLite serving.
                        email = f"after-{time.monotonic_ns()}@example.com"
                        user = {"email": email, "name": "After", "unified_role": "client"}
                        answer = await client.post("/api/v1/users", json=user)
                        assert answer.status_code in (201, 503), answer.text
                        if answer.status_code == 201:
                            served, signed_up = time.monotonic(), int(answer.json()["id"])
                assert served is not None, "no write served on SQLite after the rollback"
                await asyncio.sleep(1)
                during = (await client.get("/health/db")).json()["backend"]
            finally:
                await fault.off()
            print(
                f"{kind}: rolled back {switched:.2f} s after the fault, writes served "
                f"{served - faulted:.2f} s after it; left {during.get('unsynced')}"
            )
            assert health["backend"]["switches"][-1]["reason"].startswith("auto rollback")
            assert "unsynced" in during
            await asyncio.sleep(1)  # more writes on SQLite with PostgreSQL back
            stop.set()
            await running
            # The sync brings what PostgreSQL kept, then SQLite's writes, and nothing is left.
            found = await live.converged(db, limit=90)
            settled = await _until(client, live.nothing_left_on_postgresql, 30)
            metrics = (await client.get("/metrics")).text
        print(sync.text()[-1500:])
        assert sync.proc.poll() is None, "the sync exited:\n" + sync.text()
        if kind in ("not_accepting", "stopped"):  # refused at once, not merely slow
            assert "waiting for postgresql" in sync.text(), sync.text()
        _distinct_keys(load)
        _check_reflected(load, found)
        if signed_up is not None:
            assert signed_up in found["users"], signed_up
        # A write PostgreSQL committed but could not answer (its server stopped or hung
        # after the commit: the client saw 503) can clash with the client's retry on
        # SQLite: reported and kept aside, never the version a client was told it has.
        conflicts = _conflicts(db.path)
        said = {"appointments": load.appointments, "payments": load.payments}
        for table, key, lost in conflicts:
            view = said.get(table, {}).get(key)
            if view is not None and lost is not None:
                # The client's retry on SQLite may have made the very change the straggler
                # made: then the version it was told is the one kept, and a copy is aside.
                told = (view["status"], view["version"])
                kept = (found[table][key]["status"], found[table][key]["version"])
                set_aside = (lost["status"], lost["version"])
                assert set_aside != told or kept == told, (table, key, lost, view)
            assert table != "users" or key not in load.users, (table, key)
        assert settled["backend"]["conflicts"] == len(conflicts)
        for table, key, _lost in conflicts:
            assert f"conflict: {table} {key} " in sync.text()
        assert "bookedbarber_db_migration_unsynced_changes" in metrics
        assert (
            'bookedbarber_db_backend_switches_total{reason="auto_rollback",to="sqlite"} 1.0'
            in metrics
        )
        assert live.active(db.path) == "sqlite"
        before = collections.Counter(a.status for a in load.writes() if a.finished < faulted)
        assert before.keys() <= {200, 201, 409, 503}, before
        # After it, SQLite has not seen what PostgreSQL kept until it is back: a payment
        # or a status change of such a booking is 404 or 422 meanwhile. Never a 500.
        after = collections.Counter(a.status for a in load.writes() if a.finished >= faulted)
        assert after.keys() <= {200, 201, 404, 409, 422, 503}, after
    finally:
        halt(server.proc)
        assert sync.stop() == 0, sync.text()


async def _on_postgresql_without_sync(db: live.Databases, tmp_path: Path) -> None:
    """Cut over to PostgreSQL, then stop the sync: PostgreSQL's next writes stay there."""
    sync = live.cli(tmp_path, "sync-0", "db", "sync", db.lite, db.pg, "--interval", "0.05")
    try:
        await sync.wait_for("lag")
        cutover = live.cli(tmp_path, "cutover", "db", "cutover", db.lite, db.pg)
        assert await live.finished(cutover, 120) == 0, cutover.text()
    finally:
        assert sync.stop() == 0, sync.text()


# A booking PostgreSQL took that nothing carried (say, committed after it answered 503).
PG_BOOKING = (
    "INSERT INTO appointments (user_id, barber_id, service_id, location_id, "
    "appointment_date, start_time, end_time, status) SELECT user_id, barber_id, "
    "service_id, location_id, DATE '2031-01-01', TIMESTAMPTZ '2031-01-01 10:00Z', "
    "TIMESTAMPTZ '2031-01-01 11:00Z', 'pending' FROM appointments WHERE id = 1 "
    "RETURNING id"
)


def _roll_back_by_hand(path: Path) -> tuple[int, int]:
    """The rollback a worker makes, as its SQL says: SQLite serves from the next block,
    PostgreSQL's leftovers noted. (PostgreSQL's block end, SQLite's block start.)"""
    lite = sqlite3.connect(path, isolation_level=None)
    try:
        block_end = lite.execute("SELECT block_end FROM _bookedbarber_live").fetchone()[0]
        lite.execute("BEGIN IMMEDIATE")
        start, end = keys.sqlite_claim_sync(lite, block_end)
        lite.execute(
            "UPDATE _bookedbarber_live SET active = 'sqlite', epoch = epoch + 1, "
            "reason = 'auto rollback: test', block_end = ?, left_on = 'postgresql' "
            "WHERE id = 1",
            (end,),
        )
        lite.execute("COMMIT")
        return int(block_end), start
    finally:
        lite.close()


async def test_sync_killed_while_reconciling_converges(postgres: Postgres, tmp_path: Path) -> None:
    db = await live.databases(postgres, tmp_path)
    await _on_postgresql_without_sync(db, tmp_path)
    conn = await asyncpg.connect(_plain(db.pg))
    try:  # writes PostgreSQL took that nothing carried (every appointment, up to 20,000)
        await conn.execute(
            "UPDATE appointments SET notes = 'pg ' || id WHERE id IN "
            "(SELECT id FROM appointments ORDER BY id LIMIT 20000)"
        )
        changed = await conn.fetchval("SELECT count(*) FROM appointments WHERE notes LIKE 'pg %'")
    finally:
        await conn.close()
    _roll_back_by_hand(db.path)
    first = live.cli(tmp_path, "sync-1", "db", "sync", db.lite, db.pg, "--interval", "0.05")
    await first.wait_for("changes left on postgresql to sqlite")  # a batch brought
    first.stop(signal.SIGKILL)
    # Killed in the middle: some batches brought (2,000 changes at most each), not all.
    brought = sum(int(n) for n in re.findall(r"brought (\d+) changes", first.text()))
    assert 0 < brought < changed, first.text()
    again = live.cli(tmp_path, "sync-2", "db", "sync", db.lite, db.pg, "--interval", "0.05")
    try:
        await again.wait_for("resuming the sync")
        found = await live.converged(db, limit=60)
        await again.wait_for("to_postgresql: applied")
    finally:
        assert again.stop() == 0, again.text()
    notes = [r["notes"] for r in found["appointments"].values()]
    assert sum(1 for n in notes if n and n.startswith("pg ")) == changed
    lite = sqlite3.connect(db.path)
    try:
        assert lite.execute("SELECT left_on FROM _bookedbarber_live").fetchone() == (None,)
        assert lite.execute("SELECT count(*) FROM _bookedbarber_live_conflicts").fetchone() == (0,)
    finally:
        lite.close()


@pytest.mark.parametrize("later", [0, 2 * BATCH], ids=["alone", "behind-batches"])
async def test_conflicting_changes_are_kept_and_reported(
    postgres: Postgres, tmp_path: Path, later: int
) -> None:
    """A row changed on PostgreSQL, never carried, then changed on SQLite after a rollback.

    With `later` changes on SQLite after its booking, the booking goes to PostgreSQL a batch
    before SQLite's word on PostgreSQL's clashing one (queued by the conflict, last)."""
    db = await live.databases(postgres, tmp_path)
    await _on_postgresql_without_sync(db, tmp_path)
    conn = await asyncpg.connect(_plain(db.pg))
    try:
        await conn.execute("UPDATE users SET name = 'on postgresql' WHERE id = 5")
        new_id = await conn.fetchval(
            "INSERT INTO users (email, email_key, name, unified_role) VALUES "
            "('only-pg@example.test', 'only-pg@example.test', 'only on postgresql', 'client') "
            "RETURNING id"
        )
        # A booking PostgreSQL took ...
        pg_booking = await conn.fetchval(PG_BOOKING)
    finally:
        await conn.close()
    block_end, start = _roll_back_by_hand(db.path)
    assert new_id < block_end <= start
    lite = sqlite3.connect(db.path, isolation_level=None)
    try:
        lite.execute("UPDATE users SET name = 'on sqlite' WHERE id = 5")
        lite.execute(
            "INSERT INTO users (email, email_key, name, unified_role) VALUES "
            "('only-lite@example.test', 'only-lite@example.test', 'only on sqlite', 'client')"
        )
        lite_id = lite.execute("SELECT max(id) FROM users").fetchone()[0]
        # ... and the client's retry that SQLite took after the rollback: the same slot.
        lite.execute(
            "INSERT INTO appointments (user_id, barber_id, service_id, location_id, "
            "appointment_date, start_time, end_time, status, version, created_at, updated_at) "
            "SELECT user_id, barber_id, service_id, location_id, '2031-01-01', "
            "'2031-01-01 10:30:00.000000', '2031-01-01 11:30:00.000000', 'pending', 1, "
            "created_at, updated_at FROM appointments WHERE id = 1"
        )
        lite_booking = lite.execute("SELECT max(id) FROM appointments").fetchone()[0]
        lite.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO users (email, email_key, name, unified_role) SELECT "
            "'later-' || i || '@example.test', 'later-' || i || '@example.test', 'later', "
            "'client' FROM n",
            (later,),
        )
    finally:
        lite.close()
    assert lite_id >= block_end > new_id
    again = live.cli(tmp_path, "sync-2", "db", "sync", db.lite, db.pg, "--interval", "0.05")
    try:
        await again.wait_for("conflict: users 5 changed on both sides")
        found = await live.converged(db)
    finally:
        assert again.stop() == 0, again.text()
    assert found["users"][5]["name"] == "on sqlite"
    assert found["users"][new_id]["name"] == "only on postgresql"
    assert found["users"][lite_id]["name"] == "only on sqlite"
    # The booking rule holds on both sides: SQLite's booking stays, PostgreSQL's is kept aside.
    assert lite_booking in found["appointments"]
    assert pg_booking not in found["appointments"]
    assert f"conflict: appointments {pg_booking} overlaps" in again.text()
    lite = sqlite3.connect(db.path)
    try:
        rows = lite.execute(
            "SELECT tbl, key, kept, lost, json_extract(kept_row, '$.name'), "
            "json_extract(lost_row, '$.name') FROM _bookedbarber_live_conflicts ORDER BY tbl"
        ).fetchall()
        state = lite.execute("SELECT left_on FROM _bookedbarber_live").fetchone()
    finally:
        lite.close()
    assert rows == [
        ("appointments", pg_booking, "sqlite", "postgresql", None, None),
        ("users", 5, "sqlite", "postgresql", "on sqlite", "on postgresql"),
    ]
    assert state == (None,)


async def test_writes_paused_until_drained_answer_the_pause(
    postgres: Postgres, tmp_path: Path
) -> None:
    """MIGRATION_ROLLBACK_UNDRAINED=wait: a write about a row only PostgreSQL holds yet (a
    booking it took that nothing carried) is the pause's 503 until the sync has drained
    PostgreSQL, not the 404 of SQLite, which lacks it; then it is served."""
    db = await live.databases(postgres, tmp_path)
    await _on_postgresql_without_sync(db, tmp_path)
    conn = await asyncpg.connect(_plain(db.pg))
    try:
        pg_booking = await conn.fetchval(PG_BOOKING)
    finally:
        await conn.close()
    _roll_back_by_hand(db.path)
    lite = sqlite3.connect(db.path, isolation_level=None)
    try:  # as the rollback writes it with "wait": paused until db sync drains PostgreSQL
        lite.execute(
            "UPDATE _bookedbarber_live SET frozen_until = ?, owner = 'rollback'", (UNTIL_DRAINED,)
        )
    finally:
        lite.close()
    server = launch(
        tmp_path,
        live.service_env(
            db,
            MIGRATION_ROLLBACK_UNDRAINED="wait",
        ),
        "--no-access-log",
    )
    url = f"/api/v1/appointments/{pg_booking}"
    change = {"status": "confirmed", "version": 1}
    sync = None
    try:
        wait_port(server)
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as client:
            paused = await client.patch(url, json=change)
            assert paused.status_code == 503, paused.text
            assert paused.json()["detail"] == "writes are paused for a database switch"
            assert paused.headers["retry-after"] == "1"
            sync = live.cli(tmp_path, "sync", "db", "sync", db.lite, db.pg, "--interval", "0.05")
            await sync.wait_for("writes resume on sqlite")
            served = await client.patch(url, json=change)
            assert served.status_code == 200, served.text
            assert (served.json()["status"], served.json()["version"]) == ("confirmed", 2)
    finally:
        halt(server.proc)
        if sync is not None:
            assert sync.stop() == 0, sync.text()
