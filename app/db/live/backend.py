"""The switch every worker watches: which database serves, read from the SQLite file.

A service started with MIGRATION_TARGET_URL (PostgreSQL) beside its SQLite DATABASE_URL
reads the one-row state `db cutover` writes (a local read, every
MIGRATION_POLL_SECONDS) and, when it names the other side, builds that side's router,
hands new requests to it and closes the old one once its requests are done. No restart.

With MIGRATION_AUTO_ROLLBACK, a worker serving PostgreSQL that sees more than
MIGRATION_ROLLBACK_ERROR_RATE database errors per second over
MIGRATION_ROLLBACK_WINDOW_SECONDS switches every worker back to SQLite: in one SQLite
transaction it names SQLite the serving side, gives it a block of keys past
PostgreSQL's (app/db/live/keys), records that PostgreSQL may hold changes not carried
yet, and freezes writes for MIGRATION_ROLLBACK_DRAIN_SECONDS while db sync carries
them (app/db/live/reconcile); past that, writes resume on SQLite ("switch") or wait
until the sync has drained PostgreSQL ("wait").
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from dataclasses import dataclass

import asyncpg
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db.live import capture, keys
from app.db.live.sides import Backend
from app.db.metrics import DatabaseMetrics
from app.db.router import DatabaseRouter
from app.urls import asyncpg_dsn

log = logging.getLogger(__name__)

PING_SECONDS = 0.5  # how often the watch asks PostgreSQL, while it serves, for a sign of life
GRACE_SECONDS = 30.0  # the old router closes once requests begun on it are surely done
UNTIL_DRAINED = 1e12  # a rollback's freeze that only db sync lifts, once drained


@dataclass
class Switch:
    at: float
    to: Backend
    reason: str
    epoch: int


async def _warm(router: DatabaseRouter, connections: int = 4) -> None:
    """Open a few PostgreSQL connections before the first request needs them.

    Not on SQLite: opening a file is cheap, and a connection's first statement there
    begins IMMEDIATE, queueing behind every writer.
    """
    if router.sqlite:
        return

    async def one(engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            await asyncio.sleep(0.05)  # held together, so the pool keeps several

    engines = {id(e): e for e in (router.primary, router.primary_reader)}.values()
    try:
        async with asyncio.timeout(2):
            await asyncio.gather(*(one(e) for e in engines for _ in range(connections)))
    except Exception as exc:  # requests will find out and answer 503
        log.warning("new backend did not answer", extra={"error": type(exc).__name__})


class LiveBackend:
    def __init__(
        self, settings: Settings, db_metrics: DatabaseMetrics, registry: CollectorRegistry
    ) -> None:
        assert settings.migration_target_url is not None
        self.settings = settings
        self.db_metrics = db_metrics
        self.switch_count = Counter(
            "bookedbarber_db_backend_switches_total",
            "Switches of the serving database by this worker, by target and reason",
            ["to", "reason"],
            registry=registry,
        )
        self.unsynced = Gauge(
            "bookedbarber_db_migration_unsynced_changes",
            "Changes one side holds that the other lacks (NaN: that side cannot be reached)",
            ["side"],
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.conflicts = Gauge(
            "bookedbarber_db_migration_conflicts",
            "Rows changed on both sides since a switch, kept in _bookedbarber_live_conflicts",
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.path = make_url(settings.primary_url).database or ""
        self.target_url = settings.migration_target_url.get_secret_value()
        self.active: Backend = "sqlite"
        self.epoch = 0
        self.switches: deque[Switch] = deque(maxlen=20)
        self.errors: deque[float] = deque(maxlen=100_000)
        # When PostgreSQL last answered the watch's own `SELECT 1` (or began serving).
        self.answered_at = time.monotonic()
        self.counts: dict[str, object] = {}
        self._counted = 0.0
        self._db: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    def create(
        cls, settings: Settings, db_metrics: DatabaseMetrics, registry: CollectorRegistry
    ) -> LiveBackend | None:
        if settings.migration_target_url is None or not settings.is_sqlite:
            return None
        return cls(settings, db_metrics, registry)

    # -- the state ------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(
                self.path, timeout=1.0, check_same_thread=False, isolation_level=None
            )
        return self._db

    def count(self) -> None:
        """What is left unsynced, and the conflicts kept: gauges and /health/db (1/s)."""
        if time.monotonic() - self._counted < 1.0:
            return
        self._counted = time.monotonic()
        db = self._conn()
        try:
            backlog = db.execute(f"SELECT count(*) FROM {capture.CHANGES}").fetchone()[0]
            left_on, left_count, left_at = db.execute(
                f"SELECT left_on, left_count, left_at FROM {capture.STATE} WHERE id = 1"
            ).fetchone()
            conflicts = db.execute(f"SELECT count(*) FROM {capture.CONFLICTS}").fetchone()[0]
        except sqlite3.OperationalError:  # no sync set up yet
            return
        self.counts = {
            "unsynced": {"sqlite": int(backlog)}
            | ({left_on: left_count} if left_on is not None else {}),
            "left_since": left_at if left_on is not None else None,
            "conflicts": int(conflicts),
        }
        self.unsynced.labels("sqlite").set(backlog)
        if left_on is not None:
            self.unsynced.labels(left_on).set(float("nan") if left_count is None else left_count)
        elif self.active == "sqlite":
            self.unsynced.labels("postgresql").set(0)
        self.conflicts.set(conflicts)

    def read(self) -> tuple[Backend, int, str | None]:
        self._conn()
        assert self._db is not None
        try:
            row = self._db.execute(
                f"SELECT active, epoch, reason FROM {capture.STATE} WHERE id = 1"
            ).fetchone()
        except sqlite3.OperationalError:  # no sync set up yet
            return "sqlite", 0, None
        return (row[0], int(row[1]), row[2]) if row else ("sqlite", 0, None)

    def router(self, backend: Backend) -> DatabaseRouter:
        url = self.settings.primary_url if backend == "sqlite" else self.target_url
        settings = self.settings.model_copy(update={"database_url": SecretStr(url)})
        return DatabaseRouter(settings, self.db_metrics)

    def first_router(self) -> DatabaseRouter:
        self.active, self.epoch, _ = self.read()
        return self.router(self.active)

    # -- watching -------------------------------------------------------------------
    def start(self, app: FastAPI) -> None:
        self._task = asyncio.create_task(self._watch(app), name="backend-watch")
        if self.settings.migration_auto_rollback:
            self._closing.add(asyncio.create_task(self._ping(), name="postgresql-ping"))

    def record_error(self) -> None:
        """A request answered a database fault (counted toward auto rollback on PostgreSQL)."""
        if self.active == "postgresql":
            self.errors.append(time.monotonic())

    async def stop(self) -> None:
        for task in [self._task, *self._closing]:
            if task is not None:
                task.cancel()
        tasks = [t for t in [self._task, *self._closing] if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._db is not None:
            self._db.close()

    async def _watch(self, app: FastAPI) -> None:
        while True:
            await asyncio.sleep(self.settings.migration_poll_seconds)
            try:
                active, epoch, reason = self.read()
                self.count()
                if active != self.active:
                    await self.swap(app, active, epoch, reason or "state changed")
                elif self.active == "postgresql" and self.error_rate_exceeded():
                    await self.roll_back()
                elif self.active == "postgresql" and self.silent():
                    window = self.settings.migration_rollback_window_seconds
                    await self.roll_back(f"postgresql answered nothing for {window:g} s")
            except Exception:
                log.exception("backend watch failed")

    def error_rate_exceeded(self) -> bool:
        if not self.settings.migration_auto_rollback:
            return False
        window = self.settings.migration_rollback_window_seconds
        since = time.monotonic() - window
        while self.errors and self.errors[0] < since:
            self.errors.popleft()
        return len(self.errors) / window > self.settings.migration_rollback_error_rate

    def silent(self) -> bool:
        """PostgreSQL answered no `SELECT 1` for a whole MIGRATION_ROLLBACK_WINDOW_SECONDS.

        A server that hangs (stopped, or a peer gone silent) answers no request with an
        error until each one's own timeout (STATEMENT_TIMEOUT_MS, CONNECT_TIMEOUT,
        POOL_TIMEOUT): tens of seconds of writes held before the error rate could tell.
        """
        if not self.settings.migration_auto_rollback:
            return False
        window = self.settings.migration_rollback_window_seconds
        return time.monotonic() - self.answered_at > window

    async def _ping(self) -> None:
        """While PostgreSQL serves: `SELECT 1` each PING_SECONDS on a connection of its own
        (past the pools, which hung requests may hold), waited for a window at most."""
        window = self.settings.migration_rollback_window_seconds
        conn: asyncpg.Connection | None = None
        try:
            while True:
                await asyncio.sleep(PING_SECONDS)
                if self.active != "postgresql":
                    continue
                try:
                    async with asyncio.timeout(window):
                        if conn is None or conn.is_closed():
                            conn = await asyncpg.connect(
                                asyncpg_dsn(self.target_url), statement_cache_size=0
                            )
                        # The simple query protocol: nothing prepared, as PgBouncer's
                        # transaction pooling wants.
                        await conn.execute("SELECT 1")
                    self.answered_at = time.monotonic()
                except Exception:  # no answer: silent() tells once the window has passed
                    if conn is not None:
                        conn.terminate()
                    conn = None
        finally:
            if conn is not None:
                conn.terminate()

    async def swap(self, app: FastAPI, to: Backend, epoch: int, reason: str) -> None:
        began = time.monotonic()
        new = self.router(to)
        self.db_metrics.instrument(new.engines(), self.settings.slow_query_seconds)
        await _warm(new)
        old: DatabaseRouter = app.state.db
        app.state.db = new
        self.active, self.epoch = to, epoch
        self.errors.clear()
        self.answered_at = time.monotonic()
        self.switches.append(Switch(time.time(), to, reason, epoch))
        kind = "auto_rollback" if reason.startswith("auto rollback") else "cutover"
        self.switch_count.labels(to, kind).inc()
        log.warning(
            "database backend switched",
            extra={
                "to": to,
                "reason": reason,
                "epoch": epoch,
                "seconds": round(time.monotonic() - began, 3),
            },
        )
        task = asyncio.create_task(self._close_later(old), name="close-old-router")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_later(self, router: DatabaseRouter) -> None:
        await asyncio.sleep(GRACE_SECONDS)
        await router.dispose()

    async def roll_back(self, why: str | None = None) -> None:
        """Every worker back to SQLite: the file they watch says so; PostgreSQL refuses writes.

        One SQLite transaction: SQLite serves, from a block of keys PostgreSQL never hands
        out; PostgreSQL may hold changes not carried yet (db sync counts and brings them);
        writes wait while it drains them, for MIGRATION_ROLLBACK_DRAIN_SECONDS at most
        with "switch", until drained with "wait".
        """
        window = self.settings.migration_rollback_window_seconds
        why = why or f"{len(self.errors)} database errors in {window:g} s on postgresql"
        reason = f"auto rollback: {why}"
        log.error("automatic rollback to sqlite", extra={"reason": reason})
        now = time.time()
        if self.settings.migration_rollback_undrained == "wait":
            until = UNTIL_DRAINED
        else:
            until = now + self.settings.migration_rollback_drain_seconds
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            active, block_end = db.execute(
                f"SELECT active, block_end FROM {capture.STATE} WHERE id = 1"
            ).fetchone()
            if active == "postgresql":
                _start, end = keys.sqlite_claim_sync(db, int(block_end))
                db.execute(
                    f"UPDATE {capture.STATE} SET active = 'sqlite', epoch = epoch + 1, "
                    "reason = ?, frozen_until = ?, owner = 'rollback', switched_at = ?, "
                    "block_end = ?, left_on = 'postgresql', left_count = NULL, left_at = ? "
                    "WHERE id = 1",
                    (reason, until, now, end, now),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.errors.clear()
        task = asyncio.create_task(self._refuse_on_pg(reason), name="refuse-writes-on-pg")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _refuse_on_pg(self, reason: str) -> None:
        try:
            conn = await asyncpg.connect(asyncpg_dsn(self.target_url), timeout=2, command_timeout=3)
            try:
                await conn.execute("SET lock_timeout = '2s'")
                await conn.execute(
                    f"UPDATE {capture.STATE} SET active = 'sqlite', reason = $1 WHERE id = 1",
                    reason,
                )
            finally:
                await conn.close()
        except Exception as exc:  # PostgreSQL down: nothing can write there either
            log.warning("could not mark postgresql inactive", extra={"error": type(exc).__name__})

    def health(self) -> dict[str, object]:
        return self.counts | {
            "active": self.active,
            "epoch": self.epoch,
            "auto_rollback": self.settings.migration_auto_rollback,
            "switches": [
                {"at": s.at, "to": s.to, "reason": s.reason, "epoch": s.epoch}
                for s in self.switches
            ],
        }
