"""Prometheus metrics of the data layer (names from the optimization strategy)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from app.adapters.prometheus_values import file_backed
from app.adapters.sqlalchemy_pool import CountingPool
from app.db.models import Base

log = logging.getLogger("app.db.slow_queries")

Engines = Callable[[], Iterable[tuple[str, AsyncEngine]]]
_POOL_STATS = {
    "size": "Configured pool size: connections the pool keeps (POOL_SIZE, REPLICA_POOL_SIZE)",
    "checked_out": "Connections in use",
    "overflow": "Open connections beyond the pool size (up to MAX_OVERFLOW), closed on return",
    "checked_in": "Idle open connections in the pool",
}
_POOL_LABELS = ["role", "pool"]


def multiprocess() -> bool:
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


def app_registry() -> CollectorRegistry:
    """A registry of one application's own, made once multiprocess mode is settled.

    In single-process mode it also carries the process, platform and GC collectors
    the global registry would have had (multiprocess mode cannot aggregate those).
    """
    settle_multiprocess()
    registry = CollectorRegistry(auto_describe=True)
    if not multiprocess():
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


def settle_multiprocess() -> None:
    """Before any metric of an app exists. prometheus_client picks file-backed values at
    its import, so the directory is set before the process starts (`serve` does so for
    its workers); one set later would be ignored by every value: refused instead."""
    if multiprocess() != file_backed():
        raise RuntimeError(
            "PROMETHEUS_MULTIPROC_DIR was set or unset after prometheus_client was imported; "
            "set it in the environment the process starts with"
        )
    if multiprocess():
        os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


# -- statements ------------------------------------------------------------------------

TABLES = frozenset(Base.metadata.tables)
OPERATIONS = ("SELECT", "INSERT", "UPDATE", "DELETE")
_CHANGES = frozenset(OPERATIONS[1:])
_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE|JOIN)\s+"?(\w+)', re.IGNORECASE)
_CACHE_LIMIT = 4096
# SQLAlchemy caches compiled statements, so the same strings come back again and again:
# each is parsed once and later costs a dict lookup.
_parsed: dict[str, tuple[str, str]] = {}


def classify(statement: str) -> tuple[str, str]:
    """(operation, table) of a statement, both from a bounded set of label values."""
    found = _parsed.get(statement)
    if found is not None:
        return found
    head = statement.lstrip()[:6].upper()
    operation = head if head in OPERATIONS else "other"
    match = _TABLE.search(statement)
    table = match[1].lower() if match else "other"
    found = (operation, table if table in TABLES else "other")
    if len(_parsed) >= _CACHE_LIMIT:
        _parsed.clear()
    _parsed[statement] = found
    return found


# -- connection pools ---------------------------------------------------------------


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


class DatabaseMetrics:
    """The data layer's series, in one application's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.routing = Counter(
            "database_routing_total",
            "Sessions handed out, by intent and target",
            ["intent", "target"],
            registry=registry,
        )
        self.primary_reads = Counter(
            "database_primary_reads_total",
            "Reads served by the primary, by reason",
            ["reason"],
            registry=registry,
        )
        self.replica_up = self._replica_gauge(
            "database_replica_up", "1 when the replica answered its last probe"
        )
        self.replica_lag = self._replica_gauge(
            "database_replica_lag_seconds", "Replay lag of the replica at its last probe"
        )
        self.replica_in_rotation = self._replica_gauge(
            "database_replica_in_rotation", "1 when routing sends reads to the replica"
        )
        self.replica_consistency = self._replica_gauge(
            "database_replica_consistency",
            "Fraction of sampled rows equal on the replica and the primary over "
            "REPLICA_CONSISTENCY_WINDOW_SECONDS (absent before the first sample)",
        )
        self.replica_excluded = Gauge(
            "database_replica_excluded",
            "1 while the replica is kept out: foreign_cluster, old_timeline or diverged",
            ["replica", "reason"],
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.replica_sampled_rows = Counter(
            "database_replica_sampled_rows_total",
            "Rows compared between the replica and the primary, by result (matched, mismatched)",
            ["replica", "result"],
            registry=registry,
        )
        self.queries = Counter(
            "database_queries_total",
            "Statements executed, by first keyword, table, engine role and outcome "
            "(success; no_rows: an INSERT, UPDATE or DELETE that changed nothing; error)",
            ["operation", "table", "role", "outcome"],
            registry=registry,
        )
        self.query_duration = Histogram(
            "database_query_duration_seconds",
            "Execution time of successful statements, cursor execute to result",
            ["role"],
            buckets=(
                *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
                *(1.0, 2.5, 5.0, 10.0, 30.0),
            ),
            registry=registry,
        )
        self.slow_queries = Counter(
            "database_slow_queries_total",
            "Statements slower than SLOW_QUERY_SECONDS",
            ["role"],
            registry=registry,
        )
        self.pool_timeouts = Counter(
            "database_pool_timeouts_total",
            "Requests that gave up waiting POOL_TIMEOUT for a pooled connection",
            ["role"],
            registry=registry,
        )
        self._routes: dict[tuple[str, str], Any] = {}
        # Statements sent to the driver directly (app/db/statements.py) bypass the engine's
        # events; they are recorded here instead, found by the pool they ran on.
        self._recorders: weakref.WeakKeyDictionary[Any, Recorder] = weakref.WeakKeyDictionary()
        self._instrumented: weakref.WeakSet[Engine] = weakref.WeakSet()

    def _replica_gauge(self, name: str, documentation: str) -> Gauge:
        return Gauge(
            name,
            documentation,
            ["replica"],
            multiprocess_mode="livemostrecent",
            registry=self.registry,
        )

    def routed(self, intent: str, kind: str) -> None:
        child = self._routes.get((intent, kind))
        if child is None:
            child = self._routes[intent, kind] = self.routing.labels(intent, kind)
        child.inc()

    def instrument(self, engines: list[tuple[str, AsyncEngine]], slow_query_seconds: float) -> None:
        for role, engine in engines:
            self.instrument_engine(engine, role, slow_query_seconds)
        if multiprocess():
            track_pools(engines)

    def instrument_engine(self, engine: AsyncEngine, role: str, slow_query_seconds: float) -> None:
        """Count and time every statement of `engine`; log the slow ones (never parameters)."""
        sync_engine = engine.sync_engine
        if sync_engine in self._instrumented:
            return
        self._instrumented.add(sync_engine)
        record = Recorder(self, role, slow_query_seconds)

        def before(
            _conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, _many: bool
        ) -> None:
            context.query_started = time.perf_counter()

        def after(
            _conn: Any, cursor: Any, statement: str, _params: Any, context: Any, _many: bool
        ) -> None:
            record(statement, time.perf_counter() - context.query_started, cursor.rowcount)

        def failed(context: Any) -> None:
            if context.statement is not None:  # None: connecting failed, no statement ran
                record.failed(context.statement)

        if isinstance(engine.pool, CountingPool):
            engine.pool.on_timeout = self.pool_timeouts.labels(role).inc
        event.listen(sync_engine, "before_cursor_execute", before)
        event.listen(sync_engine, "after_cursor_execute", after)
        event.listen(sync_engine, "handle_error", failed)
        self._recorders[engine.pool] = record

    def record_statement(self, engine: AsyncEngine, statement: str, t: float, rows: int) -> None:
        """A statement sent to the driver directly; `rows` it returned (no_rows at 0)."""
        record = self._recorders.get(engine.pool)
        if record is not None:
            record(statement, t, rows)

    def statement_failed(self, engine: AsyncEngine, statement: str) -> None:
        """A statement sent to the driver directly failed: counted with outcome error."""
        record = self._recorders.get(engine.pool)
        if record is not None:
            record.failed(statement)

    def exposition(self, engines: Engines) -> bytes:
        """Everything in Prometheus text format: this app's, or every live worker's."""
        if multiprocess():
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        pools = CollectorRegistry(auto_describe=False)
        pools.register(PoolCollector(engines))
        return generate_latest(self.registry) + generate_latest(pools)


class Recorder:
    """Counts and times one role's statements; the slow ones are logged (never parameters)."""

    def __init__(self, metrics: DatabaseMetrics, role: str, slow_query_seconds: float) -> None:
        self._metrics = metrics
        self._role = role
        self._slow_query_seconds = slow_query_seconds
        self._duration = metrics.query_duration.labels(role)
        self._slow = metrics.slow_queries.labels(role)
        self._counters: dict[tuple[str, str, str], Any] = {}

    def _count(self, statement: str, rowcount: int | None) -> None:
        """`rowcount` None for a statement that failed."""
        operation, table = classify(statement)
        if rowcount is None:
            outcome = "error"
        elif rowcount == 0 and operation in _CHANGES:
            outcome = "no_rows"  # ON CONFLICT DO NOTHING, an update whose WHERE matched nothing
        else:
            outcome = "success"
        key = (operation, table, outcome)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self._metrics.queries.labels(
                operation, table, self._role, outcome
            )
        counter.inc()

    def __call__(self, statement: str, elapsed: float, rowcount: int = -1) -> None:
        self._count(statement, rowcount)
        self._duration.observe(elapsed)
        if elapsed >= self._slow_query_seconds:
            self._slow.inc()
            extra = {"role": self._role, "duration_seconds": round(elapsed, 6)}
            log.warning("slow query", extra={**extra, "statement": statement[:200]})

    def failed(self, statement: str) -> None:
        self._count(statement, None)


def track_pools(engines: list[tuple[str, AsyncEngine]]) -> None:
    """Multiprocess mode: keep this worker's pool gauges current from pool events."""
    gauges = _pool_gauges()
    named = dict(pools(engines))

    def refresh(key: Pool) -> None:
        for name, value in pool_stats_of(named[key]).items():
            gauges[name].labels(*key).set(value)

    for key, pool in named.items():
        refresh(key)

        def on_change(*_: Any, key: Pool = key) -> None:
            # Checkin and close fire before the pool has counted the change: read it
            # once the current step is done.
            try:
                asyncio.get_running_loop().call_soon(refresh, key)
            except RuntimeError:  # a connection garbage-collected outside the loop
                refresh(key)

        for name in ("checkout", "checkin", "connect", "close", "close_detached"):
            event.listen(pool, name, on_change)


# -- exposition -----------------------------------------------------------------------

# The classic text format: every Prometheus 2.x and other scrapers read it (our names are
# plain ASCII, so nothing needs the newer format's escaping).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def worker_exited() -> None:
    """Multiprocess mode: drop this worker's live gauges from later scrapes."""
    if multiprocess():
        prometheus_multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
