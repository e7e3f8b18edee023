"""Where one request's statements go, and the one retry when a replica drops them."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, Protocol, TypeVar

from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import PoolProxiedConnection

from app.adapters.sqlalchemy_pool import CountingPool, in_greenlet
from app.db.errors import is_connection_error

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.prepared_stmt import PreparedStatement

    from app.db.replicas import Replica
    from app.db.router import DatabaseRouter

Intent = Literal["write", "read", "analytics"]


@dataclass
class Target:
    """Where one session goes: an engine, and the replica behind it if any."""

    intent: Intent
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    replica: Replica | None = None
    label: str = "primary"
    tried: set[int] = field(default_factory=set)


class Routed(Protocol):
    router: DatabaseRouter
    target: Target
    min_lsn: int | None

    async def move_to(self, target: Target) -> None: ...


_P = ParamSpec("_P")
_T = TypeVar("_T")


async def retried(
    handle: Routed, call: Callable[_P, Awaitable[_T]], *args: _P.args, **kwargs: _P.kwargs
) -> _T:
    """`call`, and once more elsewhere when the router says the failure is the replica's."""
    try:
        return await call(*args, **kwargs)
    except Exception as exc:
        target = handle.router.retarget(handle.target, exc, handle.min_lsn)
        if target is None:
            raise
        await handle.move_to(target)
        return await call(*args, **kwargs)


class RoutedSession(AsyncSession):
    """A read session that, when its replica drops the connection, retries once elsewhere."""

    router: DatabaseRouter
    target: Target
    min_lsn: int | None

    async def move_to(self, target: Target) -> None:
        await self.rollback()
        self.target = target
        self.sync_session.bind = target.engine.sync_engine

    # AsyncSession's overloaded methods, passed through: restating each overload would
    # not change what callers see (they hold an AsyncSession, RoutedSession is internal).
    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await retried(self, super().execute, *args, **kwargs)

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        return await retried(self, super().scalar, *args, **kwargs)

    async def scalars(self, *args: Any, **kwargs: Any) -> Any:
        return await retried(self, super().scalars, *args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        return await retried(self, super().get, *args, **kwargs)


# The statement descriptions a pooled connection keeps behind PgBouncer (`unnamed`),
# under its pool entry's info: the driver connection they were described on, and them.
_DESCRIBED = "bookedbarber_unnamed_statements"
_DESCRIBED_LIMIT = 64


async def unnamed(
    pooled: PoolProxiedConnection, driver: asyncpg.Connection, statement: str
) -> PreparedStatement:
    """`statement` as asyncpg's unnamed prepared statement, described once per connection.

    Behind PgBouncer in transaction mode (asyncpg with statement_cache_size=0) each
    execution of the returned statement sends Parse, Bind, Execute and Sync together:
    one round trip, on whichever server connection PgBouncer lends until the Sync, and
    nothing named left behind there. Its parameter and column types are described on
    first use on this connection (Parse, Describe, Flush); the executions carry their
    own Parse, so they never rely on the server connection that described. asyncpg's
    own fetch() with the cache off describes before every execution: two round trips.
    PostgreSQL parses and plans every execution (a named one can keep a generic plan):
    PGBOUNCER_PREPARED_STATEMENTS with PgBouncer 1.21+ saves that.
    """
    kept = pooled.info.get(_DESCRIBED)
    if kept is None or kept[0] is not driver:  # a new driver connection: describe anew
        kept = pooled.info[_DESCRIBED] = (driver, {})
    described: dict[str, PreparedStatement] = kept[1]
    prepared = described.get(statement)
    if prepared is None:
        if len(described) >= _DESCRIBED_LIMIT:  # the statements are constants: never, today
            described.clear()
        prepared = described[statement] = await driver.prepare(statement)
    return prepared


async def checkout(engine: AsyncEngine) -> PoolProxiedConnection:
    """A pooled connection of `engine`: without a greenlet when the pool says the checkout
    needs no await (also after waiting in line for one given back), else the awaited way.

    The pool's answer can go stale before the checkout itself reads the connection's
    times: a pause of this process longer than its margins (a stall of 0.7 s with 10,000
    clients connected) moves the connection out of the ping window or past its recycle
    time. The ping is then skipped (app/db/engine.py _ping: nothing new is known about the
    server); a recycle makes SQLAlchemy ask for I/O outside a greenlet (MissingGreenlet,
    the connection put back invalidated) and the checkout starts over the awaited way.
    """
    pool = engine.sync_engine.pool
    # A busy pool: wait in line without a greenlet; the turn's connection is handed to the
    # checkout below (or, when that needs an await, to the awaited one), with no await between.
    if isinstance(pool, CountingPool) and (
        pool.checkout_without_io() or (pool.must_wait() and await pool.wait_turn())
    ):
        try:
            return engine.sync_engine.raw_connection()
        except MissingGreenlet:
            pass
    return await engine.raw_connection()


class RoutedConnection:
    """Hand-written SQL on a routed connection's asyncpg driver (app/db/statements.py).

    No ORM session, no SQLAlchemy execution or result layers: one pooled connection
    of the target's engine, its statements in autocommit, each counted and timed like
    any other statement (a failed one with outcome error). Retries once elsewhere, as
    RoutedSession does. Behind PgBouncer each statement is one unnamed Parse, Bind,
    Execute and Sync (`unnamed`): one round trip, no state left on the server; with
    PGBOUNCER_PREPARED_STATEMENTS asyncpg's named ones, which PgBouncer 1.21+ keeps.
    """

    __slots__ = ("_pooled", "min_lsn", "router", "target")

    def __init__(self, router: DatabaseRouter, target: Target, min_lsn: int | None) -> None:
        self.router, self.target, self.min_lsn = router, target, min_lsn
        self._pooled: PoolProxiedConnection | None = None

    async def move_to(self, target: Target) -> None:
        await self.close()
        self.target = target

    async def fetch(self, statement: str, *args: object) -> Sequence[asyncpg.Record]:
        return await retried(self, self._fetch, statement, args)

    async def fetchrow(self, statement: str, *args: object) -> asyncpg.Record | None:
        rows = await self.fetch(statement, *args)
        return rows[0] if rows else None

    async def _fetch(self, statement: str, args: tuple[object, ...]) -> Sequence[asyncpg.Record]:
        engine = self.target.engine
        if self._pooled is None:
            self._pooled = await checkout(engine)
        driver = self._pooled.driver_connection
        assert driver is not None
        started = time.perf_counter()
        try:
            rows: Sequence[asyncpg.Record]
            settings = self.router.settings
            if settings.pgbouncer and not settings.pgbouncer_prepared_statements:
                prepared = await unnamed(self._pooled, driver, statement)
                rows = await prepared.fetch(*args)
            else:
                rows = await driver.fetch(statement, *args)
        except Exception as exc:
            self.router.metrics.statement_failed(engine, statement)
            # asyncpg says "connection is closed" without a SQLSTATE when the server went
            # between checkout and this statement: a connection error all the same.
            lost = not is_connection_error(exc) and driver.is_closed()
            if lost or is_connection_error(exc):
                pooled, self._pooled = self._pooled, None
                await in_greenlet(pooled.invalidate, exc)
            if lost:
                raise ConnectionResetError("the database closed the connection") from exc
            raise
        # The raw writes return their rows (RETURNING): none back is a write that changed
        # nothing, counted no_rows as the ORM's rowcount 0 is.
        elapsed = time.perf_counter() - started
        self.router.metrics.record_statement(engine, statement, elapsed, len(rows))
        return rows

    def close_without_io(self) -> bool:
        """Give the connection back now if that needs no await (nearly always): True when
        nothing is left to give back."""
        pooled = self._pooled
        if pooled is None:
            return True
        pool = self.target.engine.sync_engine.pool
        if isinstance(pool, CountingPool) and pool.checkin_without_io(pooled):
            self._pooled = None
            pool.checkin_reset(pooled)
            return True
        return False

    async def close(self) -> None:
        if self.close_without_io():
            return
        pooled, self._pooled = self._pooled, None
        if pooled is not None:
            await in_greenlet(pooled.close)
