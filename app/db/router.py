"""Primary, replicas and analytics: which engine serves which request."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from contextlib import AbstractAsyncContextManager
from typing import Literal

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.access import Access
from app.db.engine import create_engine, is_sqlite
from app.db.errors import is_connection_error, refusal
from app.db.lsn import WRITE_LSN
from app.db.metrics import DatabaseMetrics
from app.db.replicas import Replica, ReplicaMonitor
from app.db.sessions import Intent, RoutedConnection, RoutedSession, Target
from app.db.statements import Statements, open_statements

__all__ = ["DatabaseRouter", "Intent", "Replica", "RoutedConnection", "Target"]

PrimaryReason = Literal[
    "no_replicas", "all_down", "all_lagging", "consistency_token", "forced", "retry"
]


def _sessionmaker(engine: AsyncEngine, cls: type[AsyncSession]) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=cls, expire_on_commit=False, autoflush=False)


def _reader(engine: AsyncEngine, settings: Settings) -> AsyncEngine:
    """Reads on PostgreSQL run in autocommit: no BEGIN and ROLLBACK round trips.

    Each statement sees its own snapshot; a read request's few statements are
    each consistent, which is what a replica offers anyway. Behind PgBouncer in
    transaction mode the ORM's reads stay transactional: SQLAlchemy names each
    statement it prepares, and outside a transaction the name would stay behind on
    a server connection others share. The raw statements (RoutedConnection) need neither: they
    run unnamed in autocommit there too (app/db/sessions.py, unnamed).
    """
    if is_sqlite(engine) or settings.pgbouncer:
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


class DatabaseRouter:
    """Owns every engine; hands out sessions by intent; watches the replicas."""

    def __init__(self, settings: Settings, metrics: DatabaseMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.primary = create_engine(settings.primary_url, settings, "primary")
        self._write_sessions = _sessionmaker(self.primary, AsyncSession)
        self.sqlite = is_sqlite(self.primary)
        # Reads and writes straight on asyncpg, in autocommit (RoutedConnection,
        # app/db/statements.py): not SQLite. Behind PgBouncer too: each statement is one
        # unnamed round trip there.
        self.uses_asyncpg = self.primary.dialect.driver == "asyncpg"
        # And the lane in front of FastAPI (app/api/lane.py) unless HOT_READS=false.
        self.hot_reads = settings.hot_reads and self.uses_asyncpg
        # SQLite: readers use their own engine so they never take the write lock.
        self.primary_reader = (
            create_engine(settings.primary_url, settings, "primary", sqlite_begin="BEGIN")
            if self.sqlite
            else _reader(self.primary, settings)
        )
        self._primary_reads = _sessionmaker(self.primary_reader, RoutedSession)
        self.replicas = [
            Replica(
                i,
                engine,
                _reader(engine, settings),
                _sessionmaker(_reader(engine, settings), RoutedSession),
                create_engine(url.get_secret_value(), settings, "replica", index=i, monitor=True),
            )
            for i, url in enumerate(settings.replica_urls)
            for engine in [create_engine(url.get_secret_value(), settings, "replica", index=i)]
        ]
        # The monitor's own connections (two per database): a saturated pool must not
        # look like a slow replica, or a busy service would eject its replicas.
        self.analytics: AsyncEngine | None = None
        self.analytics_replica: Replica | None = None
        if settings.analytics_database_url is not None:
            url = settings.analytics_database_url.get_secret_value()
            self.analytics = create_engine(url, settings, "analytics")
            self.analytics_replica = Replica(
                len(self.replicas),
                self.analytics,
                _reader(self.analytics, settings),
                _sessionmaker(_reader(self.analytics, settings), RoutedSession),
                create_engine(url, settings, "analytics", monitor=True),
                role="analytics",
            )
        self._primary_probe = (
            create_engine(settings.primary_url, settings, "primary", monitor=True)
            if self.replicas or self.analytics_replica
            else None
        )
        # Whether each database takes the service's login (app/db/access.py).
        self.access = {"primary": Access("primary")}
        self.access["primary"].watch(self.primary)
        if self._primary_probe is not None:
            self.access["primary"].watch(self._primary_probe)
        for replica in self.replicas:
            access = self.access[replica.name] = Access(replica.name)
            access.watch(replica.engine)
            access.watch(replica.probe)
        if self.analytics_replica is not None:
            self.access["analytics"] = Access("analytics")
            self.access["analytics"].watch(self.analytics_replica.engine)
            self.access["analytics"].watch(self.analytics_replica.probe)
        # SQLite has one writer at a time; queueing writers here is fair and
        # cheap, where SQLite's own busy handler sleeps in growing steps.
        self._sqlite_writer = asyncio.Lock() if self.sqlite else None
        self._round_robin = itertools.count()
        self.monitor = ReplicaMonitor(
            settings, self.replicas, self._primary_probe, metrics, self.analytics_replica
        )

    # -- engines and their roles ------------------------------------------------
    def engines(self) -> list[tuple[str, AsyncEngine]]:
        pairs = [("primary", self.primary)]
        if self.sqlite:  # its own pool; on PostgreSQL the reader shares the primary's
            pairs.append(("primary", self.primary_reader))
        pairs += [("replica", r.engine) for r in self.replicas]
        if self.analytics is not None:
            pairs.append(("analytics", self.analytics))
        return pairs

    def monitor_engines(self) -> list[tuple[str, AsyncEngine]]:
        """The monitor's and health checks' own engines: their statements count, their pools not."""
        pairs = [("replica", r.probe) for r in self.replicas]
        if self.analytics_replica is not None:
            pairs.append(("analytics", self.analytics_replica.probe))
        if self._primary_probe is not None:
            pairs.append(("primary", self._primary_probe))
        return pairs

    @property
    def probe_engine(self) -> AsyncEngine:
        """Where health checks reach the primary: past a busy pool when there is a monitor."""
        return self._primary_probe or self.primary

    async def start_monitor(self) -> None:
        await self.monitor.start()

    async def dispose(self) -> None:
        await self.monitor.stop()
        for _, engine in self.engines() + self.monitor_engines():
            await engine.dispose()

    # -- choosing ----------------------------------------------------------------
    def target(
        self,
        intent: Intent,
        *,
        min_lsn: int | None = None,
        force_primary: bool = False,
        exclude: set[int] | None = None,
        retry: bool = False,
    ) -> Target:
        if intent == "write":
            return self._count(Target("write", self.primary, self._write_sessions))
        analytics = self.analytics_replica
        if (
            intent == "analytics"
            and analytics is not None
            and analytics.in_rotation
            and not force_primary
            and min_lsn is None
        ):
            # Out of service (down, lagging, not this primary's copy, diverged), its
            # queries go where any read would.
            return self._count(
                Target("analytics", analytics.reader, analytics.sessionmaker, label="analytics")
            )
        tried = set(exclude or ())
        reason: PrimaryReason
        if force_primary:
            reason = "forced"
        elif not self.replicas:
            reason = "no_replicas"
        else:
            candidates = [r for r in self.replicas if r.in_rotation and r.index not in tried]
            if min_lsn is not None:
                fresh = [r for r in candidates if (r.replay_lsn or 0) >= min_lsn]
                if candidates and not fresh:
                    return self._to_primary(intent, "consistency_token", tried)
                candidates = fresh
            if candidates:
                return self._to_replica(intent, self._least_busy(candidates), tried)
            if retry:
                reason = "retry"
            elif any(r.up for r in self.replicas if r.index not in tried):
                reason = "all_lagging"
                # Behind, slow or recovering, but a proven copy: not another cluster's,
                # another database's, a diverged one or one not confirmed yet.
                trusted = [r for r in self.replicas if r.trusted and r.index not in tried]
                if self.settings.replica_fallback == "least_lagged" and min_lsn is None and trusted:
                    best = min(trusted, key=lambda r: r.lag_seconds or 0.0)
                    return self._to_replica(intent, best, tried)
            else:
                reason = "all_down"
        return self._to_primary(intent, reason, tried)

    def _least_busy(self, candidates: list[Replica]) -> Replica:
        start = next(self._round_robin)
        ordered = candidates[start % len(candidates) :] + candidates[: start % len(candidates)]
        return min(ordered, key=Replica.busy)

    def _to_replica(self, intent: Intent, replica: Replica, tried: set[int]) -> Target:
        tried.add(replica.index)
        return self._count(
            Target(intent, replica.reader, replica.sessionmaker, replica, replica.name, tried)
        )

    def _to_primary(self, intent: Intent, reason: PrimaryReason, tried: set[int]) -> Target:
        self.metrics.primary_read(reason)
        return self._count(Target(intent, self.primary_reader, self._primary_reads, tried=tried))

    def _count(self, target: Target) -> Target:
        self.metrics.routed(target.intent, "replica" if target.replica else target.label)
        return target

    def retarget(self, target: Target, exc: Exception, min_lsn: int | None) -> Target | None:
        """Where a read goes after `exc` on `target`: another database, or None to fail."""
        replica = target.replica
        if replica is None:
            return None
        # Requests queued on the pool of a replica that died meanwhile wait out
        # POOL_TIMEOUT (SQLAlchemy wakes a waiter only when a connection comes
        # back, and failed reconnects give back overflow slots without one): they
        # go elsewhere. A replica still in rotation is merely busy: 503, as promised.
        stranded = isinstance(exc, sa_exc.TimeoutError) and not replica.in_rotation
        refused = refusal(exc)
        if not (stranded or refused or is_connection_error(exc)):
            return None
        if not stranded:
            self.monitor.eject(replica, refused or "connection error")
        return self.target(target.intent, min_lsn=min_lsn, exclude=target.tried, retry=True)

    def routed_connection(
        self, intent: Intent, *, min_lsn: int | None = None, force_primary: bool = False
    ) -> RoutedConnection:
        """A raw-SQL handle for reads and writes; PostgreSQL through asyncpg only."""
        target = self.target(intent, min_lsn=min_lsn, force_primary=force_primary)
        return RoutedConnection(self, target, min_lsn)

    def statements(
        self, intent: Intent, *, min_lsn: int | None = None, force_primary: bool = False
    ) -> Statements:
        """The unit of work's statement handle for `intent` (app/db/statements.py)."""
        return open_statements(self, intent, min_lsn=min_lsn, force_primary=force_primary)

    def session(
        self, intent: Intent, *, min_lsn: int | None = None, force_primary: bool = False
    ) -> AsyncSession:
        target = self.target(intent, min_lsn=min_lsn, force_primary=force_primary)
        session = target.sessionmaker()
        if isinstance(session, RoutedSession):
            session.router, session.target, session.min_lsn = self, target, min_lsn
        return session

    def write_turn(self) -> AbstractAsyncContextManager[object]:
        return self._sqlite_writer or contextlib.nullcontext()

    # -- consistency tokens --------------------------------------------------------
    async def write_lsn(self) -> str | None:
        """The primary's WAL position after a commit, for read-your-writes."""
        if self.sqlite or not self.replicas:
            return None
        # One autocommit statement, after the commit returned: on any connection to the
        # primary (behind PgBouncer, any server connection it lends), as the position is
        # the server's. Straight to the driver: a tenth of the CPU of a SQLAlchemy one.
        if not self.uses_asyncpg:
            async with self.primary_reader.connect() as conn:
                lsn = await conn.scalar(text(WRITE_LSN))
            return str(lsn) if lsn else None
        reader = RoutedConnection(
            self, Target("write", self.primary_reader, self._primary_reads), None
        )
        try:
            row = await reader.fetchrow(WRITE_LSN)
        finally:
            await reader.close()
        lsn = row["lsn"] if row is not None else None
        return str(lsn) if lsn else None
