from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Literal

from sqlalchemy import Connection, event
from sqlalchemy.engine import AdaptedConnection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util.concurrency import in_greenlet as inside_greenlet

from app.adapters.sqlalchemy_pool import CountingPool
from app.config import Settings

if TYPE_CHECKING:
    import asyncpg
    from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection

Role = Literal["primary", "replica", "analytics"]

SQLITE_BUSY_TIMEOUT_MS = 10_000
PING_AFTER_IDLE_SECONDS = 0.5


def application_name(role: Role, index: int | None = None) -> str:
    return f"bookedbarber_{role}" if index is None else f"bookedbarber_{role}_{index}"


# Per database, per worker: a probe (or a health check) and the content sampler at once.
MONITOR_CONNECTIONS = 2


def create_engine(
    url: str,
    settings: Settings,
    role: Role = "primary",
    *,
    index: int | None = None,
    sqlite_begin: Literal["BEGIN", "BEGIN IMMEDIATE"] = "BEGIN IMMEDIATE",
    monitor: bool = False,
) -> AsyncEngine:
    """One factory for every role and both backends.

    `monitor` makes the replica monitor's own engine of MONITOR_CONNECTIONS: its probes
    never queue behind requests for a pooled connection, so a busy pool is not
    mistaken for a slow or dead database; the content sampler holds at most one of
    them, for as long as it waits on a replica's replay, and the probes and health
    checks take the other.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, settings, sqlite_begin)

    primary = role == "primary"
    name = application_name(role, index)
    if monitor:
        name = name.replace("bookedbarber_", "bookedbarber_monitor_", 1)
        settings = settings.model_copy(
            update={
                "pool_size": MONITOR_CONNECTIONS,
                "max_overflow": 0,
                "replica_pool_size": MONITOR_CONNECTIONS,
                "replica_max_overflow": 0,
            }
        )
    server_settings = {"application_name": name, "timezone": "UTC"}
    connect_args: dict[str, object] = {
        "server_settings": server_settings,
        "timeout": settings.connect_timeout,
        # A server that stops answering (hung, or a silent peer) fails a statement a
        # second after the server's own timeout would have, instead of holding it.
        "command_timeout": settings.statement_timeout_ms / 1000 + 1.0
        if settings.statement_timeout_ms
        else None,
    }
    if settings.pgbouncer:
        # Transaction pooling hands each transaction to any server connection: no
        # statement may outlive it unless PgBouncer keeps it (1.21+ with
        # max_prepared_statements, PGBOUNCER_PREPARED_STATEMENTS), and PgBouncer refuses
        # startup parameters it does not track (set statement_timeout per role instead).
        connect_args["prepared_statement_name_func"] = lambda: f"__bb_{uuid.uuid4().hex}__"
        if not settings.pgbouncer_prepared_statements:
            connect_args["statement_cache_size"] = 0
            parsed = parsed.update_query_dict({"prepared_statement_cache_size": "0"})
    else:
        server_settings["statement_timeout"] = str(settings.statement_timeout_ms)
        server_settings["lock_timeout"] = str(settings.lock_timeout_ms)
    # SQLAlchemy's pre-ping wraps its ping in BEGIN and ROLLBACK (three round trips per
    # checkout) for drivers that sync between prepare and execute. asyncpg flushes
    # there, so PgBouncer keeps one server connection for both: _ping's `;` does, also
    # behind it, and only after PING_AFTER_IDLE_SECONDS idle.
    one_trip_ping = settings.pool_pre_ping
    engine = create_async_engine(
        parsed,
        pool_size=settings.pool_size if primary else settings.replica_pool_size,
        max_overflow=settings.max_overflow if primary else settings.replica_max_overflow,
        pool_timeout=settings.effective_pool_timeout,
        poolclass=CountingPool,
        # The connection returned last goes out first: below saturation a few warm
        # connections serve the load (a third less client CPU per statement than
        # rotating through all of them), and the rest idle until pinged or recycled.
        pool_use_lifo=True,
        pool_recycle=settings.pool_recycle,
        pool_pre_ping=settings.pool_pre_ping and not one_trip_ping,
        connect_args=connect_args,
        # Errors carry the statement, never its parameters (personal data).
        hide_parameters=True,
    )
    if one_trip_ping:
        pool = engine.sync_engine.pool
        if isinstance(pool, CountingPool):
            pool.ping_after_idle = PING_AFTER_IDLE_SECONDS
        event.listen(pool, "connect", _stamp)
        event.listen(pool, "checkin", _stamp)
        event.listen(pool, "checkout", _ping)
    return engine


def _stamp(_dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    if record is not None:  # checkin of a connection already invalidated has no record
        record.info["returned_at"] = time.monotonic()


def _ping(
    dbapi_connection: AdaptedConnection, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """Pessimistic disconnect handling: a dead pooled connection is replaced, not used.

    Except one that was in use less than PING_AFTER_IDLE_SECONDS ago: under load
    nearly every checkout is such, and the ping doubled the round trips of a
    one-statement read. A connection is found dead only where the server went
    down within that window; reads then retry elsewhere and a write answers 503
    (SQLAlchemy invalidates the rest of the pool), as requests in flight at that
    moment do anyway. HikariCP's aliveBypassWindowMs, 500 ms by default, is the
    same trade.
    """
    driver: asyncpg.Connection | None = record.driver_connection
    if driver is not None and driver.is_closed():
        # The driver already saw the server go (connection_lost): no round trip needed to
        # know, and a fixed pool keeps many such connections when a server stops.
        raise DisconnectionError("pooled connection was closed by the server")
    returned_at = record.info.get("returned_at")
    if returned_at is not None and time.monotonic() - returned_at < PING_AFTER_IDLE_SECONDS:
        return
    if not inside_greenlet():
        # The quick checkout (app/db/sessions.py checkout), which cannot await: the pool
        # found this connection within half the window a moment ago, and only a pause of
        # this process (a full garbage collection) can have aged it since, which says
        # nothing new about the server.
        return
    try:
        dbapi_connection.run_async(lambda conn: conn.fetchrow(";"))
    except Exception as exc:
        # The pool discards this connection and checks out (or opens) another.
        raise DisconnectionError("pooled connection failed its ping") from exc


def _sqlite_engine(
    url: str, settings: Settings, begin: Literal["BEGIN", "BEGIN IMMEDIATE"]
) -> AsyncEngine:
    engine = create_async_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.effective_pool_timeout,
        poolclass=CountingPool,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        hide_parameters=True,
    )

    event.listen(engine.sync_engine, "connect", sqlite_on_connect)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Writers take the write lock up front: check-then-insert rules
        # (no overlapping appointments) hold inside one serialized transaction.
        connection.exec_driver_sql(begin)

    return engine


def sqlite_on_connect(
    dbapi_connection: AsyncAdapt_aiosqlite_connection, _record: ConnectionPoolEntry | None
) -> None:
    """Every SQLite connection: foreign keys on, WAL, a busy timeout, and transaction
    control taken from the driver so that BEGIN is the engine's own."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"
