"""Health endpoints on real databases, including stopped and paused servers."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.engine import create_engine
from app.db.migrate import upgrade_async
from app.db.models import Payment
from app.main import create_app
from tests import factories, pgcluster
from tests.conftest import make_settings, pg_fetch

ENDPOINTS = ("/health/live", "/health/ready", "/health/db", "/health/replicas", "/health/integrity")


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


async def until(condition: Any, limit: float = 20.0, what: str = "condition") -> Any:
    """Poll an async predicate until it returns something truthy; return that."""
    deadline = time.monotonic() + limit
    while True:
        result = await condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {limit}s waiting for {what}"
        await asyncio.sleep(0.05)


def assert_no_secret(text: str, *secrets: str) -> None:
    # The harness's passwords all start with "pw-".
    assert "pw-" not in text
    for secret in secrets:
        assert secret not in text


def serve(
    tmp_path: Path, env: dict[str, str], *args: str
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`python -m app serve` on a free port; returns the process, its base URL and its log."""
    port = pgcluster.free_port()
    log = tmp_path / f"serve-{port}.log"
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REPLICA_URLS")} | {
        "DEMO_SEED": "false",
        **env,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port), "--no-access-log", *args],
            cwd=Path(__file__).parent.parent,
            env=clean,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    # Generous: importing the app takes seconds on a busy two-core CI machine.
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/health/live", timeout=2).status_code == 200:
                return proc, base, log
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise AssertionError(f"serve did not come up:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# -- every endpoint, both backends ------------------------------------------------------


async def test_all_endpoints_healthy(client: httpx.AsyncClient, backend: str) -> None:
    for path in ENDPOINTS:
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text)
        if path != "/health/live":
            assert response.headers["cache-control"] == "no-store"
    db = (await client.get("/health/db")).json()
    assert db["status"] == "healthy"
    assert isinstance(db["response_time"], float)
    assert db["response_time"] >= 0
    assert dt.datetime.fromisoformat(db["timestamp"]).tzinfo is not None

    replicas = (await client.get("/health/replicas")).json()
    if backend == "sqlite":
        assert replicas["status"] == "no_replicas"
        assert replicas["replicas"] == []
    else:
        assert replicas["status"] == "healthy"
        [entry] = replicas["replicas"]
        assert entry["replica_id"] == 0
        assert entry["status"] == "healthy"
        assert entry["in_rotation"] is True
        assert entry["lag_seconds"] is not None
        assert entry["lag_bytes"] is not None
        assert entry["response_time"] > 0
        assert entry["timestamp"]

    report = (await client.get("/health/integrity")).json()
    assert report["status"] == "healthy"
    assert [c["check"] for c in report["integrity_checks"]] == [
        "orphaned_appointments",
        "orphaned_payments",
        "user_appointment_consistency",
    ]
    assert all(c["status"] == "passed" for c in report["integrity_checks"])


async def test_integrity_runs_on_a_replica_once_per_cache_period(
    app: FastAPI, client: httpx.AsyncClient, backend: str
) -> None:
    role = "primary" if backend == "sqlite" else "replica"

    def scans() -> tuple[float, float]:
        return tuple(  # type: ignore[return-value]
            app.state.metrics_registry.get_sample_value(
                "database_queries_total",
                {"operation": "SELECT", "table": table, "role": role, "outcome": "success"},
            )
            or 0.0
            for table in ("appointments", "payments")
        )

    before = scans()
    # A probe storm: one run, every caller gets its result.
    responses = await asyncio.gather(*(client.get("/health/integrity") for _ in range(20)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["timestamp"] for r in responses}) == 1
    # One check scans appointments, two scan payments: on the replica when there is one.
    expected = (before[0] + 1, before[1] + 2)
    assert scans() == expected
    await client.get("/health/integrity")
    assert scans() == expected


async def test_integrity_reports_inconsistent_payment(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'integrity.db'}"
    await upgrade_async(url)
    settings = make_settings(url)
    engine = create_engine(url, settings)
    try:
        async with AsyncSession(engine) as session:
            loc = await factories.location(session)
            barber = await factories.user(session, "barber")
            client, other = await factories.user(session), await factories.user(session)
            svc = await factories.service(session, loc.id)
            start = dt.datetime(2031, 5, 6, 9, tzinfo=dt.UTC)
            appt = await factories.appointment(
                session,
                user_id=client.id,
                barber_id=barber.id,
                service_id=svc.id,
                location_id=loc.id,
                start=start,
            )
            # Paid by someone else than the appointment's client.
            session.add(
                Payment(
                    user_id=other.id,
                    appointment_id=appt.id,
                    location_id=loc.id,
                    amount=Decimal("25.00"),
                )
            )
            await session.commit()
    finally:
        await engine.dispose()
    async with serving(settings) as (_, http):
        response = await http.get("/health/integrity")
    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "issues_found"
    checks = {c["check"]: c for c in report["integrity_checks"]}
    assert checks["user_appointment_consistency"] == {
        "check": "user_appointment_consistency",
        "status": "failed",
        "count": 1,
    }
    assert checks["orphaned_appointments"]["status"] == "passed"


async def test_integrity_scan_is_stopped_by_the_server(
    postgres: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.db import health

    # 3 s: the server's limit (0.8 of it) is per statement, so the connection, the
    # transaction and the three real checks before the slow one must fit in the rest.
    monkeypatch.setattr(health, "INTEGRITY_TIMEOUT_SECONDS", 3.0)
    monkeypatch.setitem(health._INTEGRITY_CHECKS, "slow_scan", "SELECT count(*) FROM pg_sleep(60)")
    settings = make_settings(postgres.primary_url, postgres.replica_urls)
    async with serving(settings) as (_, client):
        started = time.monotonic()
        response = await client.get("/health/integrity")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    # statement_timeout (2.4 s) ended it on the server, not the task's own 3 s limit,
    # and long before pg_sleep(60) would have returned: no scan is left running there.
    assert body["error"] != "timed out"
    assert elapsed > 2.3
    assert elapsed < 30, "the scan was not stopped"
    running = (
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
        "AND query LIKE '%FROM pg_sleep(60)%' AND pid <> pg_backend_pid()"
    )
    # The scan ran where reads go (a replica); looked for on every node.
    for url in (postgres.primary_url, *postgres.replica_urls):
        assert [tuple(r) for r in await pg_fetch(url, running)] == [(0,)], url


# -- a service whose databases are unreachable ------------------------------------------


def test_service_starts_and_lives_without_its_database(tmp_path: Path) -> None:
    closed = pgcluster.free_port()  # nothing listens there
    secret = "pw-unreachable-" + os.urandom(6).hex()
    url = f"postgresql://bookedbarber:{secret}@127.0.0.1:{closed}/bookedbarber"
    env = {"DATABASE_URL": url, "REPLICA_URLS": url, "CONNECT_TIMEOUT": "2"}
    proc, base, log = serve(tmp_path, env)
    try:
        # The client's timeout only catches an answer that never comes.
        with httpx.Client(base_url=base, timeout=60) as http:
            assert http.get("/health/live").status_code == 200
            bodies = []
            for path in ENDPOINTS:
                response = http.get(path)
                bodies.append(response.text)
                expected = 200 if path == "/health/live" else 503
                assert response.status_code == expected, (path, response.text)
            db = http.get("/health/db").json()
            assert db["status"] == "unhealthy"
            assert db["error"]  # a type name or a fixed phrase
            replicas = http.get("/health/replicas").json()
            assert replicas["status"] == "unavailable"
            assert replicas["replicas"][0]["status"] == "unhealthy"
            metrics = http.get("/metrics")
            assert metrics.status_code == 200
            bodies.append(metrics.text)
            assert http.get("/health/live").status_code == 200
    finally:
        stop(proc)
    for text in [*bodies, log.read_text(errors="replace")]:
        assert_no_secret(text, secret)


# -- faults on a cluster of our own ---------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[pgcluster.PgCluster]:
    from app.db.migrate import upgrade

    with pgcluster.start_cluster(replicas=1) as started:
        upgrade(started.primary.url())
        started.wait_replica_caught_up(started.replicas[0])
        yield started


def cluster_settings(cluster: pgcluster.PgCluster, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"connect_timeout": 2, "max_replica_lag_seconds": 60}
    values.update(overrides)
    return make_settings(cluster.primary.url(), [r.url() for r in cluster.replicas], **values)


async def _all_bodies(client: httpx.AsyncClient) -> list[str]:
    return [(await client.get(path)).text for path in ENDPOINTS]


async def test_replicas_show_stopped_and_paused_replica(cluster: pgcluster.PgCluster) -> None:
    replica = cluster.replicas[0]
    async with serving(cluster_settings(cluster)) as (_, client):

        async def report(status: str) -> dict[str, Any] | None:
            response = await client.get("/health/replicas")
            body: dict[str, Any] = response.json()
            return body if body["replicas"][0]["status"] == status else None

        await until(lambda: report("healthy"), what="replica healthy")

        replica.stop("immediate")
        try:
            down = await until(lambda: report("unhealthy"), what="stopped replica unhealthy")
            assert down["status"] == "unavailable"
            assert down["replicas"][0]["in_rotation"] is False
            assert (await client.get("/health/replicas")).status_code == 503
            # Reads fall back to the primary; the service stays ready.
            assert (await client.get("/health/ready")).status_code == 200
            for body in await _all_bodies(client):
                assert_no_secret(body, replica.password)
        finally:
            replica.start()
        await until(lambda: report("healthy"), what="replica back")

        replica.psql("SELECT pg_wal_replay_pause()")
        try:

            async def lagging() -> dict[str, Any] | None:
                cluster.primary.psql(
                    "CREATE TABLE IF NOT EXISTS lag_probe (n int); INSERT INTO lag_probe VALUES (1)"
                )
                response = await client.get("/health/replicas")
                entry: dict[str, Any] = response.json()["replicas"][0]
                return entry if (entry["lag_bytes"] or 0) > 0 and entry["lag_seconds"] else None

            first = await until(lagging, what="replay lag")

            async def grown() -> dict[str, Any] | None:
                entry = await lagging()
                if entry and entry["lag_seconds"] > first["lag_seconds"] + 0.3:
                    return entry
                return None

            later = await until(grown, what="lag growing")
            assert later["lag_bytes"] >= first["lag_bytes"]
            assert later["status"] == "healthy"  # within MAX_REPLICA_LAG_SECONDS=60
        finally:
            replica.psql("SELECT pg_wal_replay_resume()")
        caught_up = await until(lambda: report("healthy"), what="replica caught up after resume")
        assert caught_up["status"] == "healthy"


async def test_lag_beyond_the_limit_makes_replicas_unavailable(
    cluster: pgcluster.PgCluster,
) -> None:
    replica = cluster.replicas[0]
    settings = cluster_settings(cluster, max_replica_lag_seconds=0.5)
    cluster.primary.psql("CREATE TABLE IF NOT EXISTS lag_probe (n int)")
    async with serving(settings) as (_, client):
        replica.psql("SELECT pg_wal_replay_pause()")
        try:

            async def out() -> httpx.Response | None:
                cluster.primary.psql("INSERT INTO lag_probe VALUES (2)")
                response = await client.get("/health/replicas")
                return response if response.status_code == 503 else None

            response = await until(out, what="lagging replica out of rotation")
            entry = response.json()["replicas"][0]
            assert entry["status"] == "degraded"
            assert entry["reason"] == "lagging"
            assert entry["lag_seconds"] > 0.5
        finally:
            replica.psql("SELECT pg_wal_replay_resume()")


async def test_a_small_record_after_an_idle_spell_is_not_lag(
    cluster: pgcluster.PgCluster,
) -> None:
    """Lag counts from when the primary wrote what the replica has not replayed.

    An idle primary still writes small records (checkpoints, standby snapshots). Not
    yet replayed, such a record once made the replica "lagging" by the age of its last
    replayed transaction: here 4 s, over a 2 s limit, for a record a moment old.
    """
    replica = cluster.replicas[0]
    cluster.primary.psql(
        "CREATE TABLE IF NOT EXISTS lag_probe (n int); INSERT INTO lag_probe VALUES (3)"
    )
    cluster.wait_replica_caught_up(replica)
    settings = cluster_settings(cluster, max_replica_lag_seconds=2.0)
    async with serving(settings) as (app, client):

        async def in_rotation() -> bool:
            return bool(app.state.db.replicas[0].in_rotation)

        await until(in_rotation, what="replica in rotation")
        await asyncio.sleep(4.0)  # the last replayed transaction grows old
        written = time.monotonic()  # nothing written from here on is replayed
        replica.psql("SELECT pg_wal_replay_pause()")
        try:
            cluster.primary.psql("CHECKPOINT")  # WAL, but no transaction

            async def behind() -> dict[str, Any] | None:
                entry: dict[str, Any] = (await client.get("/health/replicas")).json()["replicas"][0]
                return entry if (entry["lag_bytes"] or 0) > 0 else None

            entry = await until(behind, limit=30, what="the record seen unreplayed")
            # No older than the record (the last transaction is 4 s older), however long
            # a busy machine took to see it; not "lagging" unless that passed the limit
            # (a busy machine's slow probe may take it out of rotation for being slow).
            since = time.monotonic() - written
            assert entry["lag_seconds"] < since + 0.5, (entry, since)
            assert entry["reason"] != "lagging" or entry["lag_seconds"] >= 2.0, entry
            # Still not replayed 2 s later: that is lag, and the replica leaves.

            async def out() -> dict[str, Any] | None:
                entry = (await client.get("/health/replicas")).json()["replicas"][0]
                return entry if entry["reason"] == "lagging" else None

            gone = await until(out, limit=30, what="lagging replica out of rotation")
            assert not gone["in_rotation"], gone
        finally:
            replica.psql("SELECT pg_wal_replay_resume()")


async def test_primary_down_is_503(cluster: pgcluster.PgCluster) -> None:
    async with serving(cluster_settings(cluster)) as (_, client):
        assert (await client.get("/health/db")).status_code == 200
        cluster.primary.stop("fast")
        try:
            for path in ("/health/db", "/health/ready"):
                # A bound that only catches an answer that never comes.
                response = await asyncio.wait_for(client.get(path), 30)
                assert response.status_code == 503, (path, response.text)
            body = (await client.get("/health/db")).json()
            assert body["status"] == "unhealthy"
            assert set(body) == {"status", "response_time", "timestamp", "error"}
            assert (await client.get("/health/live")).status_code == 200
            for text in await _all_bodies(client):
                assert_no_secret(text, cluster.primary.password)
        finally:
            cluster.primary.start()
        await until(lambda: _ok(client, "/health/db"), what="primary back", limit=20)


async def _ok(client: httpx.AsyncClient, path: str) -> bool:
    return (await client.get(path)).status_code == 200
