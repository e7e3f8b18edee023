"""Primary, replicas and analytics: which engine serves which request."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from app.config import Settings
from app.db import metrics
from app.db.engine import create_engine, is_sqlite
from app.db.errors import is_connection_error

log = logging.getLogger(__name__)

Intent = Literal["write", "read", "analytics"]
PrimaryReason = Literal[
    "no_replicas", "all_down", "all_lagging", "consistency_token", "forced", "retry"
]

WRITE_LSN = "SELECT pg_current_wal_insert_lsn()::text AS lsn"
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(value: str) -> int:
    match = _LSN.match(value.strip())
    if match is None:
        raise ValueError("a consistency token is a PostgreSQL LSN such as 0/16B3748")
    return (int(match[1], 16) << 32) + int(match[2], 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass
class Replica:
    index: int
    engine: AsyncEngine
    reader: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    probe: AsyncEngine
    up: bool = False
    in_rotation: bool = False
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    replay_lsn: int | None = None
    response_time: float | None = None
    checked_at: dt.datetime | None = None
    reason: str = "not probed yet"
    healthy_since: float | None = None
    probed_once: bool = False

    @property
    def name(self) -> str:
        return f"replica-{self.index}"

    def busy(self) -> int:
        return int(self.engine.pool.checkedout())  # type: ignore[attr-defined]


@dataclass
class Target:
    """Where one session goes: an engine, and the replica behind it if any."""

    intent: Intent
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    replica: Replica | None = None
    label: str = "primary"
    tried: set[int] = field(default_factory=set)


_P = ParamSpec("_P")
_T = TypeVar("_T")


class RoutedSession(AsyncSession):
    """A read session that, when its replica drops the connection, retries once elsewhere."""

    router: DatabaseRouter
    target: Target
    min_lsn: int | None

    async def _retrying(
        self, call: Callable[_P, Awaitable[_T]], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        try:
            return await call(*args, **kwargs)
        except Exception as exc:
            target = self.router.retarget(self.target, exc, self.min_lsn)
            if target is None:
                raise
            await self.rollback()
            self.target = target
            self.sync_session.bind = target.engine.sync_engine
            return await call(*args, **kwargs)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await self._retrying(super().execute, *args, **kwargs)

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        return await self._retrying(super().scalar, *args, **kwargs)

    async def scalars(self, *args: Any, **kwargs: Any) -> Any:
        return await self._retrying(super().scalars, *args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        return await self._retrying(super().get, *args, **kwargs)


class Reader:
    """Hand-written SQL on a routed connection's asyncpg driver (app/queries/hot.py).

    No ORM session, no SQLAlchemy execution or result layers: one pooled connection
    of the target's engine, its statements in autocommit, each counted and timed like
    any other statement. Retries once elsewhere, as RoutedSession does.
    """

    __slots__ = ("_pooled", "min_lsn", "router", "target")

    def __init__(self, router: DatabaseRouter, target: Target, min_lsn: int | None) -> None:
        self.router, self.target, self.min_lsn = router, target, min_lsn
        self._pooled: PoolProxiedConnection | None = None

    async def fetch(self, statement: str, *args: Any) -> Sequence[Mapping[str, Any]]:
        try:
            return await self._fetch(statement, args)
        except Exception as exc:
            target = self.router.retarget(self.target, exc, self.min_lsn)
            if target is None:
                raise
            await self.close()
            self.target = target
            return await self._fetch(statement, args)

    async def fetchrow(self, statement: str, *args: Any) -> Mapping[str, Any] | None:
        rows = await self.fetch(statement, *args)
        return rows[0] if rows else None

    async def _fetch(self, statement: str, args: tuple[Any, ...]) -> Sequence[Mapping[str, Any]]:
        engine = self.target.engine
        if self._pooled is None:
            self._pooled = await engine.raw_connection()
        driver = self._pooled.driver_connection
        assert driver is not None
        started = time.perf_counter()
        try:
            rows: Sequence[Mapping[str, Any]] = await driver.fetch(statement, *args)
        except Exception as exc:
            # asyncpg says "connection is closed" without a SQLSTATE when the server went
            # between checkout and this statement: a connection error all the same.
            lost = not is_connection_error(exc) and driver.is_closed()
            if lost or is_connection_error(exc):
                pooled, self._pooled = self._pooled, None
                await greenlet_spawn(pooled.invalidate, exc)
            if lost:
                raise ConnectionResetError("the database closed the connection") from exc
            raise
        metrics.record_statement(engine, statement, time.perf_counter() - started)
        return rows

    async def close(self) -> None:
        pooled, self._pooled = self._pooled, None
        if pooled is not None:
            await greenlet_spawn(pooled.close)


def _sessionmaker(engine: AsyncEngine, cls: type[AsyncSession]) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, class_=cls, expire_on_commit=False, autoflush=False)


def _reader(engine: AsyncEngine, settings: Settings) -> AsyncEngine:
    """Reads on PostgreSQL run in autocommit: no BEGIN and ROLLBACK round trips.

    Each statement sees its own snapshot; a read request's few statements are
    each consistent, which is what a replica offers anyway. Behind PgBouncer in
    transaction mode, asyncpg's prepare and execute must share a transaction to
    reach the same server connection, so reads stay transactional there.
    """
    if is_sqlite(engine) or settings.pgbouncer:
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


class DatabaseRouter:
    """Owns every engine; hands out sessions by intent; watches the replicas."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.primary = create_engine(settings.primary_url, settings, "primary")
        self._write_sessions = _sessionmaker(self.primary, AsyncSession)
        self.sqlite = is_sqlite(self.primary)
        # The hot reads' lane (app/api/lane.py) needs asyncpg in autocommit: not SQLite, and
        # not behind PgBouncer, where reads stay in transactions (see _reader).
        self.hot_reads = (
            settings.hot_reads
            and self.primary.dialect.driver == "asyncpg"
            and not settings.pgbouncer
        )
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
        # The monitor's own connections (one per database): a saturated pool must not
        # look like a slow replica, or a busy service would eject its replicas.
        self._primary_probe = (
            create_engine(settings.primary_url, settings, "primary", monitor=True)
            if self.replicas
            else None
        )
        self.analytics: AsyncEngine | None = None
        self._analytics_sessions: async_sessionmaker[AsyncSession] | None = None
        if settings.analytics_database_url is not None:
            self.analytics = create_engine(
                settings.analytics_database_url.get_secret_value(), settings, "analytics"
            )
            self._analytics_sessions = _sessionmaker(
                _reader(self.analytics, settings), RoutedSession
            )
        # SQLite has one writer at a time; queueing writers here is fair and
        # cheap, where SQLite's own busy handler sleeps in growing steps.
        self._sqlite_writer = asyncio.Lock() if self.sqlite else None
        self._round_robin = itertools.count()
        self._monitor: asyncio.Task[None] | None = None
        self.primary_lsn: int | None = None
        self.primary_response_time: float | None = None

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
        if self._primary_probe is not None:
            pairs.append(("primary", self._primary_probe))
        return pairs

    @property
    def probe_engine(self) -> AsyncEngine:
        """Where health checks reach the primary: past a busy pool when there is a monitor."""
        return self._primary_probe or self.primary

    async def dispose(self) -> None:
        await self.stop_monitor()
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
        if (
            intent == "analytics"
            and self.analytics is not None
            and self._analytics_sessions is not None
            and not force_primary
            and min_lsn is None
        ):
            return self._count(
                Target(
                    "analytics",
                    _reader(self.analytics, self.settings),
                    self._analytics_sessions,
                    label="analytics",
                )
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
                if self.settings.replica_fallback == "least_lagged" and min_lsn is None:
                    up = [r for r in self.replicas if r.up and r.index not in tried]
                    best = min(up, key=lambda r: r.lag_seconds or 0.0)
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
        metrics.PRIMARY_READS.labels(reason).inc()
        return self._count(Target(intent, self.primary_reader, self._primary_reads, tried=tried))

    @staticmethod
    def _count(target: Target) -> Target:
        metrics.routed(target.intent, "replica" if target.replica else target.label)
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
        if not (stranded or is_connection_error(exc)):
            return None
        if not stranded:
            self.eject(replica, "connection error")
        return self.target(target.intent, min_lsn=min_lsn, exclude=target.tried, retry=True)

    def reader(
        self, intent: Intent, *, min_lsn: int | None = None, force_primary: bool = False
    ) -> Reader:
        """A raw-SQL read handle (the hot-read lane); PostgreSQL through asyncpg only."""
        target = self.target(intent, min_lsn=min_lsn, force_primary=force_primary)
        return Reader(self, target, min_lsn)

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
        # One autocommit statement, after the commit returned. The insert position
        # covers our commit record even before it is flushed (synchronous_commit
        # off), where pg_current_wal_lsn() can still be behind it.
        if self.settings.pgbouncer:  # a statement outside a transaction may change servers
            async with self.primary_reader.connect() as conn:
                lsn = await conn.scalar(text(WRITE_LSN))
        else:  # straight to the driver: a tenth of the CPU of a SQLAlchemy connection
            reader = Reader(self, Target("write", self.primary_reader, self._primary_reads), None)
            try:
                row = await reader.fetchrow(WRITE_LSN)
            finally:
                await reader.close()
            lsn = row["lsn"] if row is not None else None
        return str(lsn) if lsn else None

    # -- replica health --------------------------------------------------------------
    def eject(self, replica: Replica, reason: str) -> None:
        if replica.in_rotation:
            log.warning(
                "replica out of rotation",
                extra={"replica": replica.name, "reason": reason},
            )
        replica.up = replica.up and reason != "connection error"
        replica.in_rotation = False
        replica.healthy_since = None
        replica.reason = reason
        metrics.REPLICA_IN_ROTATION.labels(replica.name).set(0)

    async def probe(self) -> None:
        """Probe the primary's WAL position and every replica, then update rotation."""
        if not self.replicas:
            return
        timeout = self.settings.connect_timeout
        started = time.perf_counter()
        try:
            assert self._primary_probe is not None
            async with asyncio.timeout(timeout), self._primary_probe.connect() as conn:
                value = await conn.scalar(text("SELECT pg_current_wal_lsn()::text"))
            self.primary_lsn = parse_lsn(str(value))
            self.primary_response_time = time.perf_counter() - started
        except Exception as exc:  # the primary being down must not stop replica probes
            log.warning("primary probe failed", extra={"error": type(exc).__name__})
            self.primary_lsn = self.primary_response_time = None
        await asyncio.gather(*(self._probe_replica(r, timeout) for r in self.replicas))
        self._update_rotation()

    async def _probe_replica(self, replica: Replica, limit: float) -> None:
        started = time.perf_counter()
        replica.checked_at = dt.datetime.now(dt.UTC)
        try:
            async with asyncio.timeout(limit), replica.probe.connect() as conn:
                row = (
                    await conn.execute(
                        text(
                            "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
                            "pg_last_wal_receive_lsn()::text, "
                            "extract(epoch FROM now() - pg_last_xact_replay_timestamp())"
                        )
                    )
                ).one()
        except Exception as exc:
            replica.up = False
            replica.response_time = None
            replica.lag_seconds = replica.lag_bytes = None
            replica.reason = f"probe failed: {type(exc).__name__}"
            return
        replica.response_time = time.perf_counter() - started
        replica.up = True
        in_recovery, replay, receive, since_replay = row
        if not in_recovery:
            # A promoted standby is a primary now: fully caught up with itself.
            replica.replay_lsn, replica.lag_seconds, replica.lag_bytes = None, 0.0, 0
            return
        replica.replay_lsn = parse_lsn(replay) if replay else None
        behind_primary = (
            self.primary_lsn - replica.replay_lsn
            if self.primary_lsn is not None and replica.replay_lsn is not None
            else None
        )
        received = parse_lsn(receive) if receive else None
        behind_receive = (
            received - replica.replay_lsn
            if received is not None and replica.replay_lsn is not None
            else 0
        )
        replica.lag_bytes = max(behind_primary or 0, behind_receive, 0)
        # Idle primaries write nothing: lag is the age of the last replayed
        # transaction only while there is WAL still to replay.
        replica.lag_seconds = float(since_replay or 0.0) if replica.lag_bytes > 0 else 0.0

    def _update_rotation(self) -> None:
        now = time.monotonic()
        # Peers include the primary: with one replica, "slow" still has a yardstick.
        times = [r.response_time for r in self.replicas if r.up and r.response_time is not None]
        if self.primary_response_time is not None:
            times.append(self.primary_response_time)
        fastest = min(times) if times else None
        for replica in self.replicas:
            reason = self._exclusion(replica, fastest)
            metrics.REPLICA_UP.labels(replica.name).set(1 if replica.up else 0)
            if replica.lag_seconds is not None:
                metrics.REPLICA_LAG.labels(replica.name).set(replica.lag_seconds)
            if reason is not None:
                self.eject(replica, reason)
            elif not replica.in_rotation:
                if replica.healthy_since is None:
                    replica.healthy_since = now
                waited = now - replica.healthy_since
                # At start-up there is no flapping to damp: admit at once.
                if not replica.probed_once or waited >= self.settings.replica_recovery_seconds:
                    replica.in_rotation = True
                    replica.reason = "in rotation"
                    metrics.REPLICA_IN_ROTATION.labels(replica.name).set(1)
                else:
                    replica.reason = "recovering"
            replica.probed_once = True

    def _exclusion(self, replica: Replica, fastest: float | None) -> str | None:
        if not replica.up:
            return replica.reason if replica.reason.startswith("probe") else "down"
        if (replica.lag_seconds or 0.0) > self.settings.max_replica_lag_seconds:
            return "lagging"
        slow_limit = max(
            self.settings.replica_slow_floor_seconds,
            (fastest or 0.0) * self.settings.replica_slow_factor,
        )
        if replica.response_time is not None and replica.response_time > slow_limit:
            return "slow"
        return None

    async def start_monitor(self) -> None:
        if not self.replicas or self._monitor is not None:
            return
        await self.probe()
        self._monitor = asyncio.create_task(self._watch(), name="replica-monitor")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.replica_probe_interval_seconds)
            try:
                await self.probe()
            except Exception:
                log.exception("replica probe round failed")

    async def stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
            self._monitor = None
