"""Connection-pool gauges: read at scrape time, or kept current per worker (multiprocess)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

Engines = Callable[[], Iterable[tuple[str, AsyncEngine]]]
_POOL_STATS = {
    "size": "Configured pool size: connections the pool keeps (POOL_SIZE, REPLICA_POOL_SIZE)",
    "checked_out": "Connections in use",
    "overflow": "Open connections beyond the pool size (up to MAX_OVERFLOW), closed on return",
    "checked_in": "Idle open connections in the pool",
}
_POOL_LABELS = ["role", "pool"]


Pool = tuple[str, str]  # (role, pool)


def pools(engines: Iterable[tuple[str, AsyncEngine]]) -> Iterator[tuple[Pool, QueuePool]]:
    """Every connection pool, named: the role; replica-N; SQLite's second, read pool."""
    seen: dict[str, int] = {}
    for role, engine in engines:
        pool = engine.pool
        if not isinstance(pool, QueuePool):
            continue
        n = seen[role] = seen.get(role, -1) + 1
        name = f"{role}-{n}" if role == "replica" else role if n == 0 else f"{role}-reader"
        yield (role, name), pool


def pool_stats_of(pool: QueuePool) -> dict[str, int]:
    """A pool's own numbers; overflow from 0 (SQLAlchemy's counts from -size)."""
    return {
        "size": pool.size(),
        "checked_out": pool.checkedout(),
        "overflow": max(0, pool.overflow()),
        "checked_in": pool.checkedin(),
    }


def pool_stats(engines: Iterable[tuple[str, AsyncEngine]]) -> dict[Pool, dict[str, int]]:
    return {key: pool_stats_of(pool) for key, pool in pools(engines)}


class PoolCollector(Collector):
    """Reads the pools at scrape time: no cost per checkout (single-process mode)."""

    def __init__(self, engines: Engines) -> None:
        self._engines = engines

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = pool_stats(self._engines())
        for name, documentation in _POOL_STATS.items():
            family = GaugeMetricFamily(
                f"database_connection_pool_{name}", documentation, labels=_POOL_LABELS
            )
            for key, numbers in stats.items():
                family.add_metric(list(key), numbers[name])
            yield family


# In multiprocess mode custom collectors are not aggregated across workers, so each
# worker writes its own numbers to livesum gauges after every checkout and checkin,
# and the scrape sums the live workers. Not in any registry: in single-process mode
# PoolCollector owns these names.
def _pool_gauges() -> dict[str, Gauge]:
    return {
        name: Gauge(
            f"database_connection_pool_{name}",
            documentation,
            _POOL_LABELS,
            registry=None,
            multiprocess_mode="livesum",
        )
        for name, documentation in _POOL_STATS.items()
    }


def track_pools(engines: list[tuple[str, AsyncEngine]]) -> None:
    """Multiprocess mode: keep this worker's pool gauges current from pool events."""
    gauges = _pool_gauges()
    named = dict(pools(engines))

    def refresh(key: Pool) -> None:
        for name, value in pool_stats_of(named[key]).items():
            gauges[name].labels(*key).set(value)

    for key, pool in named.items():
        refresh(key)

        def on_change(*_: object, key: Pool = key) -> None:
            # Checkin and close fire before the pool has counted the change: read it
            # once the current step is done.
            try:
                asyncio.get_running_loop().call_soon(refresh, key)
            except RuntimeError:  # a connection garbage-collected outside the loop
                refresh(key)

        for name in ("checkout", "checkin", "connect", "close", "close_detached"):
            event.listen(pool, name, on_change)
