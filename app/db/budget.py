"""Do the configured pools keep their connections, and fit the servers' max_connections?

Two warnings at start-up, neither of which stops the service:

- churn: a pool with overflow (MAX_OVERFLOW, REPLICA_MAX_OVERFLOW) closes every
  connection beyond its size as soon as it comes back, so a steady load above the size
  opens a connection (a TCP and SCRAM handshake, a backend fork) per request;
- budget: WORKERS x (size + overflow) per database, plus the monitor's connections,
  more than the server accepts (max_connections less superuser_reserved_connections):
  under load requests fail with "too many clients" instead of waiting for the pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import cast

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from app.adapters.sqlalchemy_pool import max_overflow
from app.config import Settings
from app.db.engine import is_sqlite

log = logging.getLogger(__name__)

# One round trip for both numbers.
AVAILABLE = (
    "SELECT current_setting('max_connections')::int AS max_connections, "
    "current_setting('superuser_reserved_connections')::int AS reserved"
)


def _capacity(engine: AsyncEngine) -> tuple[int, int]:
    pool = cast(QueuePool, engine.pool)  # every engine is made with CountingPool (engine.py)
    return int(pool.size()), max_overflow(pool)


def server(engine: AsyncEngine) -> str:
    """host:port of an engine's database server (never its credentials)."""
    url = engine.url
    return f"{url.host or 'localhost'}:{url.port or 5432}"


async def _server_limits(engine: AsyncEngine, seconds: float) -> asyncpg.Record:
    """max_connections and the reserved slots, on a connection of its own.

    Not one of the pools' (it would be counted in their gauges and statement series
    while requests start to arrive), and not kept: one handshake at start-up.
    """
    url = engine.url
    query = {k: v for k, v in url.query.items() if k == "ssl"}
    dsn = url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=seconds, statement_cache_size=0)
    try:
        async with asyncio.timeout(seconds):
            row = await conn.fetchrow(AVAILABLE)
    finally:
        await conn.close()
    assert row is not None  # AVAILABLE selects settings: always one row
    return row


def churn_warnings(pools: Iterable[tuple[str, AsyncEngine]]) -> list[dict[str, object]]:
    """One warning per pool whose overflow connections would be opened and closed under load."""
    found = []
    for name, engine in pools:
        size, overflow = _capacity(engine)
        if overflow > 0:
            found.append({"pool": name, "size": size, "overflow": overflow})
            log.warning(
                "pool overflow connections are closed when returned: a steady load above "
                "the pool size opens a new connection per request; prefer a larger pool "
                "and no overflow",
                extra=found[-1],
            )
    return found


def demand(
    pools: Iterable[tuple[str, AsyncEngine]],
    monitors: Iterable[tuple[str, AsyncEngine]],
    workers: int,
) -> dict[str, tuple[AsyncEngine, int]]:
    """Per server: an engine to ask, and the connections all workers may open there."""
    needed: dict[str, int] = defaultdict(int)
    engines: dict[str, AsyncEngine] = {}
    for _, engine in [*pools, *monitors]:
        if is_sqlite(engine):
            continue
        size, overflow = _capacity(engine)
        key = server(engine)
        needed[key] += workers * (size + overflow)
        engines.setdefault(key, engine)
    return {key: (engines[key], needed[key]) for key in needed}


async def check_budget(
    pools: list[tuple[str, AsyncEngine]],
    monitors: list[tuple[str, AsyncEngine]],
    settings: Settings,
) -> list[dict[str, object]]:
    """Warn for each server the pools would overrun; the warnings' fields, returned too."""
    churn_warnings(pools)
    found = []
    for key, (engine, needed) in demand(pools, monitors, settings.workers).items():
        try:
            row = await _server_limits(engine, settings.connect_timeout)
        except Exception as exc:  # a database down at start-up is the monitor's to report
            log.info(
                "could not read max_connections", extra={"server": key, "error": type(exc).__name__}
            )
            continue
        available = int(row["max_connections"]) - int(row["reserved"])
        if needed > available:
            fields = {
                "server": key,
                "workers": settings.workers,
                "connections": needed,
                "max_connections": int(row["max_connections"]),
                "available": available,
            }
            found.append(fields)
            log.warning(
                "the connection pools of all workers exceed the server's max_connections: "
                "under load requests fail instead of waiting for a pooled connection; lower "
                "the pool sizes or POOL_CONNECTION_BUDGET",
                extra=fields,
            )
    return found
