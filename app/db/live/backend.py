"""The switch every worker watches: which database serves, read from the SQLite file.

A service started with MIGRATION_TARGET_URL (PostgreSQL) beside its SQLite DATABASE_URL
reads the one-row state `db cutover` writes (a local read, every
MIGRATION_POLL_SECONDS) and, when it names the other side, builds that side's router,
hands new requests to it and closes the old one once its requests are done. No restart.

With MIGRATION_AUTO_ROLLBACK, a worker serving PostgreSQL that sees more than
MIGRATION_ROLLBACK_ERROR_RATE database errors per second over
MIGRATION_ROLLBACK_WINDOW_SECONDS switches every worker back to SQLite.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.config import Settings
from app.db.live import capture
from app.db.live.sides import Backend
from app.db.metrics import DatabaseMetrics
from app.db.router import DatabaseRouter
from app.urls import asyncpg_dsn

log = logging.getLogger(__name__)

GRACE_SECONDS = 30.0  # the old router closes once requests begun on it are surely done

# The service's watcher in this process (one app per worker; tests may hold several).
_WATCHERS: weakref.WeakSet[LiveBackend] = weakref.WeakSet()


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

    async def one(engine: Any) -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            await asyncio.sleep(0.05)  # held together, so the pool keeps several

    engines = {id(e): e for e in (router.primary, router.primary_reader)}.values()
    try:
        async with asyncio.timeout(2):
            await asyncio.gather(*(one(e) for e in engines for _ in range(connections)))
    except Exception as exc:  # requests will find out and answer 503
        log.warning("new backend did not answer", extra={"error": type(exc).__name__})


def record_error() -> None:
    """A request answered a database error (counted toward auto rollback on PostgreSQL)."""
    now = time.monotonic()
    for watcher in _WATCHERS:
        if watcher.active == "postgresql":
            watcher.errors.append(now)


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
        self.path = make_url(settings.primary_url).database or ""
        self.target_url = settings.migration_target_url.get_secret_value()
        self.active: Backend = "sqlite"
        self.epoch = 0
        self.switches: deque[Switch] = deque(maxlen=20)
        self.errors: deque[float] = deque(maxlen=100_000)
        self._db: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    def create(
        cls, settings: Settings, db_metrics: DatabaseMetrics, registry: CollectorRegistry
    ) -> LiveBackend | None:
        if settings.migration_target_url is None or not settings.is_sqlite:
            return None
        watcher = cls(settings, db_metrics, registry)
        _WATCHERS.add(watcher)
        return watcher

    # -- the state ------------------------------------------------------------------
    def read(self) -> tuple[Backend, int, str | None]:
        if self._db is None:
            self._db = sqlite3.connect(self.path, timeout=1.0, check_same_thread=False)
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

    async def stop(self) -> None:
        _WATCHERS.discard(self)
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
                if active != self.active:
                    await self.swap(app, active, epoch, reason or "state changed")
                elif self.active == "postgresql" and self.error_rate_exceeded():
                    await self.roll_back()
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

    async def swap(self, app: FastAPI, to: Backend, epoch: int, reason: str) -> None:
        began = time.monotonic()
        new = self.router(to)
        self.db_metrics.instrument(new.engines(), self.settings.slow_query_seconds)
        await _warm(new)
        old: DatabaseRouter = app.state.db
        app.state.db = new
        self.active, self.epoch = to, epoch
        self.errors.clear()
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

    async def roll_back(self) -> None:
        """Every worker back to SQLite: the file they watch says so; PostgreSQL refuses writes."""
        window = self.settings.migration_rollback_window_seconds
        reason = f"auto rollback: {len(self.errors)} database errors in {window:g} s on postgresql"
        log.error("automatic rollback to sqlite", extra={"reason": reason})
        assert self._db is not None
        with self._db:
            self._db.execute(
                f"UPDATE {capture.STATE} SET active = 'sqlite', epoch = epoch + 1, reason = ?, "
                "frozen_until = 0, switched_at = ? WHERE id = 1 AND active = 'postgresql'",
                (reason, time.time()),
            )
        self.errors.clear()
        task = asyncio.create_task(self._refuse_on_pg(reason), name="refuse-writes-on-pg")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _refuse_on_pg(self, reason: str) -> None:
        import asyncpg

        try:
            conn = await asyncpg.connect(asyncpg_dsn(self.target_url), timeout=2)
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

    def health(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "epoch": self.epoch,
            "auto_rollback": self.settings.migration_auto_rollback,
            "switches": [
                {"at": s.at, "to": s.to, "reason": s.reason, "epoch": s.epoch}
                for s in self.switches
            ],
        }
