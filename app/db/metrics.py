"""Prometheus metrics of the data layer (names from the optimization strategy)."""

from __future__ import annotations

import logging
import os
import re
import time
import weakref
from collections.abc import Callable

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
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine.interfaces import DBAPICursor, ExceptionContext, ExecutionContext
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import Pool as ConnectionPool

from app.adapters.prometheus_values import counting, file_backed, observing
from app.adapters.sqlalchemy_pool import CountingPool
from app.db.models import Base
from app.db.pool_metrics import Engines, PoolCollector, track_pools

log = logging.getLogger("app.db.slow_queries")


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
            "1 while the replica is kept out: foreign_cluster, other_database, old_timeline"
            " or diverged",
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
        # Recorders of the children every request adds to (app/adapters/prometheus_values.py).
        self._routes: dict[tuple[str, str], Callable[[float], None]] = {}
        self._primary_reasons: dict[str, Callable[[float], None]] = {}
        # Statements sent to the driver directly (app/db/statements.py) bypass the engine's
        # events; they are recorded here instead, found by the pool they ran on.
        self._recorders: weakref.WeakKeyDictionary[ConnectionPool, Recorder] = (
            weakref.WeakKeyDictionary()
        )
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
        add = self._routes.get((intent, kind))
        if add is None:
            add = self._routes[intent, kind] = counting(self.routing.labels(intent, kind))
        add(1)

    def primary_read(self, reason: str) -> None:
        add = self._primary_reasons.get(reason)
        if add is None:
            add = self._primary_reasons[reason] = counting(self.primary_reads.labels(reason))
        add(1)

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

        # Each statement's start, by its execution context: an entry goes with its
        # statement, whether after() ran or the driver refused it.
        started: weakref.WeakKeyDictionary[ExecutionContext, float] = weakref.WeakKeyDictionary()

        def before(
            _conn: Connection,
            _cursor: DBAPICursor,
            _statement: str,
            _params: object,
            context: ExecutionContext,
            _many: bool,
        ) -> None:
            started[context] = time.perf_counter()

        def after(
            _conn: Connection,
            cursor: DBAPICursor,
            statement: str,
            _params: object,
            context: ExecutionContext,
            _many: bool,
        ) -> None:
            record(statement, time.perf_counter() - started.pop(context), cursor.rowcount)

        def failed(context: ExceptionContext) -> None:
            if context.statement is not None:  # None: connecting failed, no statement ran
                record.failed(context.statement)

        if isinstance(engine.pool, CountingPool):
            engine.pool.on_timeout = self.pool_timeouts.labels(role).inc
            engine.pool.on_statement = record
        event.listen(sync_engine, "before_cursor_execute", before)
        event.listen(sync_engine, "after_cursor_execute", after)
        event.listen(sync_engine, "handle_error", failed)
        self._recorders[engine.pool] = record

    def record_statement(self, engine: AsyncEngine, statement: str, t: float, rows: int) -> None:
        """A statement sent to the driver directly; `rows` it returned (no_rows at 0)."""
        pool = engine.pool
        record = pool.on_statement if isinstance(pool, CountingPool) else None
        if record is None:
            record = self._recorders.get(pool)
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
        self._duration = observing(metrics.query_duration.labels(role))
        self._slow = metrics.slow_queries.labels(role)
        self._counters: dict[tuple[str, str, str], Callable[[float], None]] = {}

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
        add = self._counters.get(key)
        if add is None:
            add = self._counters[key] = counting(
                self._metrics.queries.labels(operation, table, self._role, outcome)
            )
        add(1)

    def __call__(self, statement: str, elapsed: float, rowcount: int = -1) -> None:
        self._count(statement, rowcount)
        self._duration(elapsed)
        if elapsed >= self._slow_query_seconds:
            self._slow.inc()
            extra = {"role": self._role, "duration_seconds": round(elapsed, 6)}
            log.warning("slow query", extra={**extra, "statement": statement[:200]})

    def failed(self, statement: str) -> None:
        self._count(statement, None)


# -- exposition -----------------------------------------------------------------------

# The classic text format: every Prometheus 2.x and other scrapers read it (our names are
# plain ASCII, so nothing needs the newer format's escaping).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def worker_exited() -> None:
    """Multiprocess mode: drop this worker's live gauges from later scrapes."""
    if multiprocess():
        prometheus_multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
