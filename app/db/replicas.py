"""The replicas' state, the monitor that probes them, and who is in rotation."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import get_args

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.consistency import (
    Consistency,
    Identity,
    Mismatch,
    Primary,
    Sampler,
    identity,
    timeline_of,
)
from app.db.errors import REFUSALS, refusal
from app.db.lsn import parse_lsn
from app.db.metrics import DatabaseMetrics

log = logging.getLogger("app.db.router")

# Identity: the cluster's system_identifier, the OID of the database the URL names, and
# the timeline the replica is on: the one
# its WAL receiver streams (shown to roles with pg_read_all_stats), else its last
# restartpoint's; a server out of recovery is on the timeline it writes.
_REPLICA_PROBE = text(
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
    "pg_last_wal_receive_lsn()::text, "
    "extract(epoch FROM now() - pg_last_xact_replay_timestamp()), "
    "(SELECT system_identifier::text FROM pg_control_system()), "
    "(SELECT oid::int8 FROM pg_database WHERE datname = current_database()), "
    "CASE WHEN pg_is_in_recovery() THEN coalesce("
    "(SELECT received_tli FROM pg_stat_wal_receiver), "
    "(SELECT timeline_id FROM pg_control_checkpoint())) "
    "ELSE ('x' || left(pg_walfile_name(pg_current_wal_insert_lsn()), 8))::bit(32)::int END"
)
# What _REPLICA_PROBE answers, column by column.
ProbeRow = Row[bool, str | None, str | None, float | None, str, int, int]
_PRIMARY_PROBE = text(
    "SELECT pg_current_wal_lsn()::text, "
    "(SELECT system_identifier::text FROM pg_control_system()), "
    "(SELECT oid::int8 FROM pg_database WHERE datname = current_database()), "
    "pg_walfile_name(pg_current_wal_insert_lsn())"
)


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
    role: str = "replica"  # or "analytics": the analytics replica, never in read rotation
    system: str | None = None
    database: int | None = None
    timeline: int | None = None
    identity: Identity | None = None
    # Up and proven this primary's copy (identity confirmed against an answering primary,
    # content not diverged): only such a replica serves, in rotation or as a fallback.
    trusted: bool = False
    consistency: Consistency = field(default_factory=Consistency)

    @property
    def name(self) -> str:
        return "analytics" if self.role == "analytics" else f"replica-{self.index}"

    def busy(self) -> int:
        return int(self.engine.pool.checkedout())  # type: ignore[attr-defined]

    def record(self, row: ProbeRow, primary_lsn: int | None, history: WalHistory) -> None:
        """A probe's answer: replay position and lag in bytes and seconds."""
        in_recovery, replay, receive, since_replay, self.system, self.database, self.timeline = row
        if not in_recovery:
            # A promoted standby is a primary now: fully caught up with itself.
            self.replay_lsn, self.lag_seconds, self.lag_bytes = None, 0.0, 0
            return
        self.replay_lsn = parse_lsn(replay) if replay else None
        behind_primary = 0
        behind_receive = 0
        if self.replay_lsn is not None:
            if primary_lsn is not None:
                behind_primary = primary_lsn - self.replay_lsn
            if receive:
                behind_receive = parse_lsn(receive) - self.replay_lsn
        self.lag_bytes = max(behind_primary, behind_receive, 0)
        if self.lag_bytes == 0:
            self.lag_seconds = 0.0
            return
        # How long ago the primary had already written WAL this replica has not
        # replayed yet; without the primary's history, the age of the last replayed
        # transaction (an idle primary's own small records would read as old).
        age = history.age_beyond(self.replay_lsn) if self.replay_lsn is not None else None
        self.lag_seconds = age if age is not None else float(since_replay or 0.0)


class WalHistory:
    """The primary's WAL position at each probe round, for lag in seconds.

    A replica's lag is the time since the primary first stood past the replica's
    replay position (as pg_stat_replication's replay_lag measures it), to within a
    probe interval. The age of the last replayed transaction is no such measure: an
    idle primary writes a 48-byte standby snapshot every 15 s, and while a replica
    had not replayed it yet, a transaction minutes old made it "lagging".
    """

    def __init__(self, keep_seconds: float) -> None:
        self.keep_seconds = keep_seconds
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, lsn: int) -> None:
        now = time.monotonic()
        self._samples.append((now, lsn))
        while len(self._samples) > 1 and now - self._samples[1][0] > self.keep_seconds:
            self._samples.popleft()

    def clear(self) -> None:
        self._samples.clear()

    def age_beyond(self, lsn: int) -> float | None:
        """Seconds since a probe first saw the primary past `lsn`; None without samples."""
        if not self._samples:
            return None
        for at, position in self._samples:
            if position > lsn:
                return time.monotonic() - at
        return 0.0  # the primary wrote past it only after the last round


class ReplicaMonitor:
    """Probes the primary's WAL position and every replica; keeps the rotation.

    The analytics replica (when there is one) is held to the same rules: probed, checked
    for identity and content, and out of service when a read replica would be.
    """

    def __init__(
        self,
        settings: Settings,
        replicas: list[Replica],
        primary_probe: AsyncEngine | None,
        metrics: DatabaseMetrics,
        analytics: Replica | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.replicas = replicas
        self.analytics = analytics
        self.members = [*replicas, *([analytics] if analytics is not None else [])]
        self.primary_probe = primary_probe
        self.primary_lsn: int | None = None
        self.primary_response_time: float | None = None
        self.primary = Primary()
        # Beyond the lag limit, the exact age no longer changes a decision.
        self.wal_history = WalHistory(max(60.0, 4 * settings.max_replica_lag_seconds))
        self.sampler = Sampler(
            settings.replica_consistency_sample_rows,
            max(settings.max_replica_lag_seconds, settings.replica_probe_interval_seconds),
            settings.replica_consistency_window_seconds,
        )
        self._task: asyncio.Task[None] | None = None
        self._sampling: asyncio.Task[None] | None = None

    def eject(self, replica: Replica, reason: str) -> None:
        if replica.in_rotation:
            log.warning(
                "replica out of rotation",
                extra={"replica": replica.name, "reason": reason},
            )
        replica.up = replica.up and reason != "connection error" and reason not in REFUSALS
        replica.trusted = replica.trusted and replica.up and reason != "diverged"
        replica.in_rotation = False
        replica.healthy_since = None
        replica.reason = reason
        self.metrics.replica_in_rotation.labels(replica.name).set(0)

    async def probe(self) -> None:
        """Probe the primary's WAL position and every replica, then update rotation."""
        if not self.members or self.primary_probe is None:
            return
        timeout = self.settings.connect_timeout
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout), self.primary_probe.connect() as conn:
                lsn, system, database, walfile = (await conn.execute(_PRIMARY_PROBE)).one()
            self.primary_lsn = parse_lsn(str(lsn))
            self.primary_response_time = time.perf_counter() - started
            self.primary.system, self.primary.database = str(system), int(database)
            self.primary.timeline = timeline_of(walfile)
            self.wal_history.add(self.primary_lsn)
        except Exception as exc:  # the primary being down must not stop replica probes
            if refusal(exc) is None:  # a refusal is told once, when it begins (app/db/access.py)
                log.warning("primary probe failed", extra={"error": type(exc).__name__})
            self.primary_lsn = self.primary_response_time = None
            self.wal_history.clear()  # a promoted replica starts another history
        await asyncio.gather(*(self._probe_replica(r, timeout) for r in self.members))
        self._update_rotation()

    async def _probe_replica(self, replica: Replica, limit: float) -> None:
        started = time.perf_counter()
        replica.checked_at = dt.datetime.now(dt.UTC)
        try:
            async with asyncio.timeout(limit), replica.probe.connect() as conn:
                row = (await conn.execute(_REPLICA_PROBE)).one()
        except Exception as exc:
            replica.up = False
            replica.response_time = None
            replica.lag_seconds = replica.lag_bytes = None
            # A refusal by its reason: only whoever runs the replica can end it.
            replica.reason = refusal(exc) or f"probe failed: {type(exc).__name__}"
            return
        replica.response_time = time.perf_counter() - started
        replica.up = True
        replica.record(row, self.primary_lsn, self.wal_history)
        self._identify(replica)

    def _identify(self, replica: Replica) -> None:
        """Identity from the last probes of both; one log line when it changes."""
        found = identity(replica.system, replica.database, replica.timeline, self.primary)
        if found == replica.identity:
            return
        if found is not None:
            log.error(
                "replica is not a copy of the primary",
                extra={
                    "replica": replica.name,
                    "reason": found,
                    "replica_timeline": replica.timeline,
                    "primary_timeline": self.primary.timeline,
                },
            )
        else:
            log.warning(
                "replica identity confirmed",
                extra={"replica": replica.name, "was": replica.identity},
            )
        for reason in get_args(Identity):
            value = 1 if found == reason else 0
            self.metrics.replica_excluded.labels(replica.name, reason).set(value)
        replica.identity = found

    def _update_rotation(self) -> None:
        # Peers include the primary: with one replica, "slow" still has a yardstick.
        times = [r.response_time for r in self.members if r.up and r.response_time is not None]
        if self.primary_response_time is not None:
            times.append(self.primary_response_time)
        fastest = min(times) if times else None
        for replica in self.members:
            self.metrics.replica_up.labels(replica.name).set(1 if replica.up else 0)
            if replica.lag_seconds is not None:
                self.metrics.replica_lag.labels(replica.name).set(replica.lag_seconds)
            proven = replica.identity is None and replica.consistency.diverged is None
            replica.trusted = replica.up and self.primary.system is not None and proven
            reason = self._exclusion(replica, fastest)
            if reason is not None:
                self.eject(replica, reason)
            elif not replica.in_rotation:
                self._admit(replica)
            replica.probed_once = True

    def _admit(self, replica: Replica) -> None:
        """A healthy replica rejoins after REPLICA_RECOVERY_SECONDS of good probes."""
        now = time.monotonic()
        if replica.healthy_since is None:
            replica.healthy_since = now
        waited = now - replica.healthy_since
        # At start-up there is no flapping to damp: admit at once.
        if not replica.probed_once or waited >= self.settings.replica_recovery_seconds:
            replica.in_rotation = True
            replica.reason = "in rotation"
            self.metrics.replica_in_rotation.labels(replica.name).set(1)
        else:
            replica.reason = "recovering"

    def _exclusion(self, replica: Replica, fastest: float | None) -> str | None:
        if not replica.up:
            probed = replica.reason.startswith("probe") or replica.reason in REFUSALS
            return replica.reason if probed else "down"
        if replica.identity is not None:
            return replica.identity
        if self.primary.system is None:
            # No primary has answered since start-up: whose copy this is cannot be told.
            return "unconfirmed"
        if replica.consistency.diverged is not None:
            return "diverged"
        if (replica.lag_seconds or 0.0) > self.settings.max_replica_lag_seconds:
            return "lagging"
        slow_limit = max(
            self.settings.replica_slow_floor_seconds,
            (fastest or 0.0) * self.settings.replica_slow_factor,
        )
        if replica.response_time is not None and replica.response_time > slow_limit:
            return "slow"
        return None

    # -- content ---------------------------------------------------------------
    async def sample(self) -> None:
        """One period of content checks: every replica whose identity holds, one at a time."""
        if self.primary_probe is None:
            return
        for replica in self.members:
            if not replica.up or replica.identity is not None:
                continue
            was = replica.consistency.diverged
            try:
                async with (
                    asyncio.timeout(max(30.0, 4 * self.sampler.wait_seconds)),
                    self.primary_probe.connect() as primary,
                    replica.probe.connect() as standby,
                ):
                    # Each statement on the replica its own transaction: a snapshot held
                    # while waiting for replay would hold up the replay awaited (a recovery
                    # conflict with the primary's pruning) until the wait ran out.
                    await standby.execution_options(isolation_level="AUTOCOMMIT")
                    tables = await self.sampler.tables(primary)
                    rows, matched = await self.sampler.check(replica, primary, standby, tables)
            except Exception as exc:  # a replica that cannot be sampled now is judged by probes
                log.info(
                    "consistency check skipped",
                    extra={"replica": replica.name, "error": type(exc).__name__},
                )
                continue
            self._record_sample(replica, rows, matched, was)

    def _record_sample(
        self, replica: Replica, rows: int, matched: int, was: Mismatch | None
    ) -> None:
        state = replica.consistency
        if rows:
            sampled = self.metrics.replica_sampled_rows
            sampled.labels(replica.name, "matched").inc(matched)
            if rows > matched:
                sampled.labels(replica.name, "mismatched").inc(rows - matched)
        ratio = state.ratio
        if ratio is not None:
            self.metrics.replica_consistency.labels(replica.name).set(ratio)
        now = state.diverged
        if (now is None) != (was is None):
            self.metrics.replica_excluded.labels(replica.name, "diverged").set(int(now is not None))
            if now is not None:
                log.error(
                    "replica diverged from the primary",
                    extra={"replica": replica.name, "detail": now.describe()},
                )
                self.eject(replica, "diverged")
            else:
                log.warning("replica matches the primary again", extra={"replica": replica.name})

    async def start(self) -> None:
        if not self.members or self._task is not None:
            return
        await self.probe()
        self._task = asyncio.create_task(self._watch(), name="replica-monitor")
        if self.settings.replica_consistency_interval_seconds > 0:
            self._sampling = asyncio.create_task(self._sample_forever(), name="replica-sampler")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.replica_probe_interval_seconds)
            try:
                await self.probe()
            except Exception:
                log.exception("replica probe round failed")

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.replica_consistency_interval_seconds)
            try:
                await self.sample()
            except Exception:
                log.exception("replica consistency round failed")

    async def stop(self) -> None:
        for task in (self._task, self._sampling):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._sampling = None
