"""A replica serves only if it is a copy of this primary: identity and sampled content.

Real clusters: a standby of another cluster, a standby left on the old timeline after a
promotion, a copy written to before it became a standby, and a healthy replica under
steady writes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.api.deps import AnalyticsSession
from app.db.engine import create_engine
from app.db.migrate import upgrade
from app.db.seed import seed_demo
from tests import pgcluster
from tests.conftest import make_settings, pg_fetch
from tests.test_metrics import value
from tests.test_routing import db, serving, until

pytestmark = pytest.mark.faults

FAST = {
    "max_replica_lag_seconds": 2.0,
    "replica_consistency_interval_seconds": 0.2,
    "replica_consistency_sample_rows": 200,
}


def _seed(url: str) -> None:
    async def run() -> None:
        engine = create_engine(url, make_settings(url))
        try:
            await seed_demo(engine, 0.002)
        finally:
            await engine.dispose()

    asyncio.run(run())


def _prepared(replicas: int) -> pgcluster.PgCluster:
    started = pgcluster.start_cluster(replicas=replicas)
    try:
        upgrade(started.primary.url())
        _seed(started.primary.url())
        for replica in started.replicas:
            started.wait_replica_caught_up(replica)
    except BaseException:
        started.stop()
        raise
    return started


@pytest.fixture(scope="module")
def cluster() -> Iterator[pgcluster.PgCluster]:
    with _prepared(replicas=1) as started:
        yield started


@pytest.fixture(scope="module")
def foreign() -> Iterator[pgcluster.PgCluster]:
    """Another cluster: its own initdb, the same schema, plausible data."""
    with _prepared(replicas=1) as started:
        yield started


def _where_routes(app: FastAPI) -> None:
    @app.get("/_probe/analytics")
    async def probe_analytics(session: AnalyticsSession) -> dict[str, Any]:
        port = await session.scalar(text("SELECT inet_server_port()"))
        return {"port": port}


async def _read_ports(client: Any, n: int = 30) -> set[int]:
    answers = [await client.get("/_probe/read") for _ in range(n)]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers[:3]]
    return {a.json()["port"] for a in answers}


def _entry(report: dict[str, Any], name: str) -> dict[str, Any]:
    found = [r for r in report["replicas"] if r["name"] == name]
    assert found, report
    entry: dict[str, Any] = found[0]
    return entry


async def test_a_standby_of_another_cluster_never_serves(
    cluster: pgcluster.PgCluster,
    foreign: pgcluster.PgCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ours, theirs = cluster.replicas[0], foreign.replicas[0]
    settings = make_settings(
        cluster.primary.url(),
        [ours.url(), theirs.url()],
        analytics_database_url=theirs.url(),
        **FAST,
    )
    caplog.set_level(logging.INFO, logger="app.db.router")
    async with serving(settings) as (app, client):
        _where_routes(app)
        router = db(app)
        stranger = router.replicas[1]
        assert stranger.up
        assert stranger.identity == "foreign_cluster"
        assert not stranger.in_rotation
        assert stranger.reason == "foreign_cluster"
        assert theirs.port not in await _read_ports(client)
        # The analytics replica is held to the same rule: its queries go elsewhere.
        analytics = router.analytics_replica
        assert analytics is not None
        assert analytics.reason == "foreign_cluster"
        answer = await client.get("/_probe/analytics")
        assert answer.status_code == 200
        assert answer.json()["port"] != theirs.port
        report = (await client.get("/health/replicas")).json()
        assert _entry(report, "replica-1")["reason"] == "foreign_cluster"
        assert report["analytics"]["reason"] == "foreign_cluster"
        metrics = (await client.get("/metrics")).text
        assert 'database_replica_excluded{reason="foreign_cluster",replica="replica-1"} 1.0' in (
            metrics
        )
        # Content checks never run against a stranger: nothing sampled, nothing "diverged".
        await until(lambda: router.replicas[0].consistency.rows_total > 0, what="a sample")
        assert stranger.consistency.rows_total == 0
        for _ in range(5):
            await router.monitor.probe()
    lines = [r for r in caplog.records if r.getMessage() == "replica is not a copy of the primary"]
    # One line per state change: the stranger and the analytics replica, once each.
    assert sorted(getattr(r, "replica", "") for r in lines) == ["analytics", "replica-1"]


@pytest.fixture
def two_standbys() -> Iterator[pgcluster.PgCluster]:
    with _prepared(replicas=2) as started:
        yield started


async def test_a_standby_left_on_the_old_timeline_is_excluded(
    two_standbys: pgcluster.PgCluster,
) -> None:
    started = two_standbys
    promoted, left = started.replicas
    promoted.promote()
    await until(
        lambda: promoted.psql("SELECT pg_is_in_recovery()", "postgres") == "f",
        what="promotion",
    )
    # `left` still streams from the old primary, on timeline 1.
    settings = make_settings(promoted.url(), [left.url()], **FAST)
    async with serving(settings) as (app, client):
        router = db(app)
        replica = router.replicas[0]
        assert router.monitor.primary.timeline == 2
        assert replica.timeline == 1
        assert replica.reason == "old_timeline"
        assert await _read_ports(client) == {promoted.port}
        # Without its WAL receiver (the old primary gone) it is still told apart.
        started.primary.stop("immediate")
        await until(
            lambda: left.psql("SELECT count(*) FROM pg_stat_wal_receiver", "postgres") == "0",
            what="the receiver gone",
        )
        for _ in range(3):
            await router.monitor.probe()
        assert replica.up
        assert replica.reason == "old_timeline"
        assert await _read_ports(client) == {promoted.port}
        body = (await client.get("/health/replicas")).json()
        assert body["primary_timeline"] == 2
        assert _entry(body, "replica-0")["timeline"] == 1


def _basebackup(cluster: pgcluster.PgCluster, node: pgcluster.PgNode, *extra: str) -> None:
    p = cluster.primary
    res = pgcluster._run(
        [
            *(p.bin / "pg_basebackup", "-h", "127.0.0.1", "-p", str(p.port), "-U", p.user),
            *("-D", node.datadir, "-X", "stream", "-c", "fast", "-N", *extra),
        ],
        env=pgcluster._clean_env(PGPASSWORD=p.password),
    )
    pgcluster._check(res, f"pg_basebackup for {node.name}")
    for copied in [node.logfile, *node.datadir.glob(".s.PGSQL.*")]:
        copied.unlink(missing_ok=True)
    node._append_conf({"port": node.port, "unix_socket_directories": str(node.datadir)})


def _diverged_copy(cluster: pgcluster.PgCluster, name: str) -> pgcluster.PgNode:
    """A copy of the primary written to on its own before it was made a standby.

    What a broken restore leaves: the same system identifier and timeline, a replay
    position past the primary's (so no lag at all), and rows the primary never had.
    """
    p = cluster.primary
    node = pgcluster.PgNode(name, cluster.base_dir / name, pgcluster.free_port(), p.bin, p.user)
    node.password = p.password
    _basebackup(cluster, node)
    cluster._nodes.append(node)
    node.start()  # no signal file: recovery of the backup, then read-write, same timeline
    node.psql(
        "UPDATE users SET name = name || ' (restored)' WHERE id IN (2, 3);"
        "SELECT pg_switch_wal(); SELECT pg_switch_wal(); SELECT 1"
    )
    node.stop()
    (node.datadir / "standby.signal").touch()
    node.start()
    return node


async def test_a_diverged_replica_is_excluded_and_named(cluster: pgcluster.PgCluster) -> None:
    copy = _diverged_copy(cluster, "restored")
    try:
        ours = cluster.replicas[0]
        settings = make_settings(cluster.primary.url(), [ours.url(), copy.url()], **FAST)
        async with serving(settings) as (app, client):
            router = db(app)
            suspect = router.replicas[1]
            assert suspect.identity is None  # same cluster, same timeline: only content tells
            await until(lambda: suspect.reason == "diverged", what="divergence found")
            diverged = suspect.consistency.diverged
            assert diverged is not None
            assert diverged.table == "users"
            assert diverged.keys == [2, 3]
            assert copy.port not in await _read_ports(client), [r.reason for r in router.replicas]
            report = (await client.get("/health/replicas")).json()
            named = _entry(report, "replica-1")["consistency"]["diverged"]
            assert named["table"] == "users"
            assert named["keys"] == [2, 3]
            assert named["first_key"] <= 2
            assert named["last_key"] >= 3
            ratio = _entry(report, "replica-1")["consistency"]["ratio"]
            assert ratio is not None
            assert ratio < 1.0
            assert _entry(report, "replica-0")["consistency"]["ratio"] == 1.0
            integrity = (await client.get("/health/integrity")).json()
            assert integrity["status"] == "issues_found"
            assert integrity["replica_consistency"]["replica-1"]["diverged"]["table"] == "users"
            metrics = (await client.get("/metrics")).text
            assert 'database_replica_excluded{reason="diverged",replica="replica-1"} 1.0' in (
                metrics
            )
            # The two restored rows, once per round: the range that differed is compared
            # again every period (0.2 s here) until it matches.
            mismatched = value(
                metrics,
                "database_replica_sampled_rows_total",
                replica="replica-1",
                result="mismatched",
            )
            assert mismatched >= 2
            assert mismatched % 2 == 0, mismatched
            # Rebuilt from the primary at the same address, it comes back.
            copy.stop("immediate")
            shutil.rmtree(copy.datadir)
            _basebackup(cluster, copy, "-R")
            copy.start()
            await until(lambda: suspect.in_rotation, limit=30, what="back in rotation")
            assert suspect.consistency.diverged is None
    finally:
        copy.stop("immediate")
        shutil.rmtree(copy.datadir, ignore_errors=True)


async def test_a_healthy_replica_under_steady_writes_stays_consistent(
    cluster: pgcluster.PgCluster,
) -> None:
    settings = make_settings(
        cluster.primary.url(),
        [cluster.replicas[0].url()],
        **{**FAST, "replica_consistency_sample_rows": 40, "max_replica_lag_seconds": 5.0},
    )
    dsn = cluster.primary.url(driver="postgresql")
    stop = asyncio.Event()
    writes = 0

    async def writer() -> None:
        nonlocal writes
        conn = await asyncpg.connect(dsn)
        try:
            ids = [r[0] for r in await conn.fetch("SELECT id FROM users ORDER BY id")]
            rng = random.Random(7)
            while not stop.is_set():
                chosen = rng.sample(ids, 5)
                await conn.execute(
                    "UPDATE users SET name = name || '.' WHERE id = ANY($1::bigint[])",
                    chosen,
                )
                await conn.execute(
                    "UPDATE users SET name = rtrim(name, '.') WHERE id = ANY($1)",
                    chosen,
                )
                writes += 2
                await asyncio.sleep(0.002)
        finally:
            await conn.close()

    # PostgreSQL's default: the primary prunes row versions whatever the replica's
    # queries still see, and the replica's replay waits for those queries.
    standby = cluster.replicas[0]
    standby._append_conf({"hot_standby_feedback": "off"})
    standby.psql("SELECT pg_reload_conf()")
    async with serving(settings) as (app, _client):
        router = db(app)
        replica = router.replicas[0]
        reasons: set[str] = set()
        task = asyncio.create_task(writer())
        try:
            periods = 0
            seen = replica.consistency.checked_at
            while periods < 25:
                await asyncio.sleep(0.05)
                reasons.add(replica.reason)
                if replica.consistency.checked_at != seen:
                    seen = replica.consistency.checked_at
                    periods += 1
        finally:
            stop.set()
            await task
            standby._append_conf({"hot_standby_feedback": "on"})
            standby.psql("SELECT pg_reload_conf()")
        state = replica.consistency
        assert writes > 100
        assert state.rows_total > 0
        assert state.mismatched_total == 0
        assert state.ratio == 1.0
        assert "diverged" not in reasons
        # Nor behind: the sampler holds no snapshot on the replica while it waits for
        # replay (one would stop the replay of the writes' page pruning, a recovery
        # conflict, until the wait ran out and the lag passed the limit).
        assert "lagging" not in reasons, reasons
        assert state.diverged is None


async def test_a_replica_url_naming_another_database_never_serves(
    cluster: pgcluster.PgCluster,
) -> None:
    """A physical standby holds every database of its cluster under the primary's OIDs: one
    its URL names by mistake (here an empty one, created on the primary and replayed) is
    not a copy of the primary's database, though cluster and timeline are."""
    ours = cluster.replicas[0]
    cluster.primary.psql("CREATE DATABASE elsewhere")
    try:
        cluster.wait_replica_caught_up(ours)
        settings = make_settings(
            cluster.primary.url(), [ours.url(), ours.url(database="elsewhere")], **FAST
        )
        async with serving(settings) as (app, client):
            router = db(app)
            stranger = router.replicas[1]
            assert stranger.up
            assert stranger.identity == "other_database"
            assert stranger.reason == "other_database"
            assert not stranger.in_rotation
            # Reads (the hot lane's and the routes') go to the primary's database only: the
            # empty one has no table, where each would have been a 500.
            users = [r[0] for r in await pg_fetch(cluster.primary.url(), "SELECT id FROM users")]
            for user_id in users[:20]:
                for path in (f"/api/v1/users/{user_id}", f"/api/v1/users?limit=1&after={user_id}"):
                    answer = await client.get(path)
                    assert answer.status_code == 200, (path, answer.text)
            report = (await client.get("/health/replicas")).json()
            assert _entry(report, "replica-1")["reason"] == "other_database"
            metrics = (await client.get("/metrics")).text
            assert 'database_replica_excluded{reason="other_database",replica="replica-1"} 1.0' in (
                metrics
            )
            await until(lambda: router.replicas[0].consistency.rows_total > 0, what="a sample")
            assert stranger.consistency.rows_total == 0
    finally:
        cluster.primary.psql("DROP DATABASE elsewhere WITH (FORCE)")


async def test_a_replica_behind_never_holds_up_the_primarys_probe_or_health(
    cluster: pgcluster.PgCluster,
) -> None:
    """The content sampler waits (up to MAX_REPLICA_LAG_SECONDS, 30 s here) for a replica
    to replay to the primary's position, holding a monitor connection to each. Meanwhile
    the primary's probe, /health/db and /health/ready (CONNECT_TIMEOUT 2 s here) answer on
    the monitor's other connection."""
    ours = cluster.replicas[0]
    settings = make_settings(
        cluster.primary.url(),
        [ours.url()],
        **{**FAST, "max_replica_lag_seconds": 30.0, "connect_timeout": 2},
    )
    async with serving(settings) as (app, client):
        router = db(app)
        replica = router.replicas[0]
        await until(lambda: replica.consistency.rows_total > 0, what="a sample")
        ours.psql("SELECT pg_wal_replay_pause()")
        try:
            # WAL the paused replica cannot replay: the next sample waits for it.
            cluster.primary.psql("SELECT pg_current_xact_id()")

            async def waiting() -> bool:
                seen = replica.consistency.checked_at
                await asyncio.sleep(1.0)  # five periods: a round that ends changes it
                return replica.consistency.checked_at == seen

            await until(waiting, what="the sampler waiting on the paused replica")
            held_since = replica.consistency.checked_at
            answers = []
            for _ in range(4):
                answers.append(await client.get("/health/db"))
                answers.append(await client.get("/health/ready"))
                await router.monitor.probe()
                assert router.monitor.primary_lsn is not None  # the primary's probe answered
            assert [a.status_code for a in answers] == [200] * len(answers), [
                a.text for a in answers if a.status_code != 200
            ]
            # The sampler was waiting all along: no round ended in between.
            assert replica.consistency.checked_at == held_since
        finally:
            ours.psql("SELECT pg_wal_replay_resume()")


async def test_a_replica_serves_only_once_a_primary_has_vouched_for_it(
    cluster: pgcluster.PgCluster,
) -> None:
    """Started while the primary is down, the service cannot tell whose copy a replica
    is (another cluster's, another database's): it serves none (`unconfirmed`), not even
    as REPLICA_FALLBACK=least_lagged's fallback, until the primary answers a probe."""
    ours = cluster.replicas[0]
    settings = make_settings(
        cluster.primary.url(),
        [ours.url()],
        **{**FAST, "replica_fallback": "least_lagged", "startup_probe_wait_seconds": 0},
    )
    [[user_id]] = await pg_fetch(cluster.primary.url(), "SELECT min(id) FROM users")
    cluster.primary.stop("immediate")
    try:
        async with serving(settings) as (app, client):
            replica = db(app).replicas[0]
            await until(lambda: replica.probed_once and replica.up, what="the replica probed")
            assert replica.reason == "unconfirmed"
            assert not replica.in_rotation
            assert not replica.trusted
            for _ in range(5):
                read = await client.get(f"/api/v1/users/{user_id}")
                assert read.status_code == 503, read.text
            report = (await client.get("/health/replicas")).json()
            assert _entry(report, "replica-0")["reason"] == "unconfirmed"
            cluster.primary.start()
            await until(lambda: replica.in_rotation, limit=30, what="the replica vouched for")
            read = await client.get(f"/api/v1/users/{user_id}")
            assert read.status_code == 200, read.text
    finally:
        if not cluster.primary.is_running():
            cluster.primary.start()
        cluster.wait_streaming(ours)
