"""Routing by request type against real clusters, with real faults."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response

from app.api.deps import MethodSession, ReadSession, WriteSession
from app.config import Settings
from app.db.models import Organization
from app.db.router import DatabaseRouter
from app.main import create_app
from tests import pgcluster
from tests.conftest import make_settings

pytestmark = pytest.mark.faults


def _probe_routes(app: FastAPI) -> None:
    """Routes that report where their session ran: test scaffolding, not product API."""

    async def where(session: Any) -> dict[str, Any]:
        row = (
            await session.execute(
                text(
                    "SELECT pg_is_in_recovery(), inet_server_port(), "
                    "current_setting('application_name')"
                )
            )
        ).one()
        return {"recovery": row[0], "port": row[1], "app": row[2]}

    @app.get("/_probe/read")
    async def probe_read(session: ReadSession) -> dict[str, Any]:
        return await where(session)

    @app.post("/_probe/write")
    async def probe_write(session: WriteSession) -> dict[str, Any]:
        slug = uuid.uuid4().hex
        session.add(Organization(name="Probe", slug=slug))
        await session.flush()
        return {"slug": slug, **(await where(session))}

    @app.get("/_probe/org/{slug}")
    async def probe_org(slug: str, session: ReadSession) -> dict[str, Any]:
        found = await session.scalar(select(Organization.id).where(Organization.slug == slug))
        return {"found": found is not None, **(await where(session))}

    @app.api_route("/_probe/by-method", methods=["GET", "PUT"])
    async def probe_by_method(session: MethodSession) -> dict[str, Any]:
        return await where(session)

    @app.get("/_probe/sleep")
    async def probe_sleep(session: ReadSession) -> dict[str, Any]:
        await session.execute(text("SELECT pg_sleep(2)"))
        return {}


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    _probe_routes(app)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


def db(app: FastAPI) -> DatabaseRouter:
    router: DatabaseRouter = app.state.db
    return router


async def until(condition: Any, limit: float = 20.0, what: str = "condition") -> float:
    """Poll an async or sync predicate; return how long it took."""
    started = time.monotonic()
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await asyncio.sleep(0.05)


def checked_out(app: FastAPI) -> int:
    """Connections checked out of every serving pool of the app."""
    return sum(e.pool.checkedout() for _, e in db(app).engines())  # type: ignore[attr-defined]


def primary_reads(app: FastAPI, reason: str) -> float:
    registry = app.state.metrics_registry
    value = registry.get_sample_value("database_primary_reads_total", {"reason": reason})
    return float(value or 0.0)


@pytest.fixture(scope="module")
def cluster() -> Iterator[pgcluster.PgCluster]:
    from app.db.migrate import upgrade

    with pgcluster.start_cluster(replicas=1) as started:
        upgrade(started.primary.url())
        started.wait_replica_caught_up(started.replicas[0])
        yield started


@pytest.fixture(autouse=True)
def _cluster_running_after(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that failed with a node stopped must not fail the module's next tests too."""
    yield
    if "cluster" in request.fixturenames:
        started: pgcluster.PgCluster = request.getfixturevalue("cluster")
        for node in (started.primary, *started.replicas):
            if not node.is_running():
                node.start()


def cluster_settings(cluster: pgcluster.PgCluster, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"max_replica_lag_seconds": 1.0}
    values.update(overrides)
    return make_settings(cluster.primary.url(), [r.url() for r in cluster.replicas], **values)


async def test_reads_go_to_replica_writes_to_primary(cluster: pgcluster.PgCluster) -> None:
    replica = cluster.replicas[0]
    async with serving(cluster_settings(cluster)) as (_, client):
        read = (await client.get("/_probe/read")).json()
        assert read == {"recovery": True, "port": replica.port, "app": "bookedbarber_replica_0"}
        write = await client.post("/_probe/write")
        assert write.status_code == 200
        assert write.json()["recovery"] is False
        assert write.json()["app"] == "bookedbarber_primary"
        assert write.headers["x-consistency-token"]
        forced = await client.get("/_probe/read", headers={"X-Read-Consistency": "primary"})
        assert forced.json()["recovery"] is False
        bad = await client.get("/_probe/read", headers={"X-Consistency-Token": "nope"})
        assert bad.status_code == 422
        # Safe methods read by default; others write.
        assert (await client.get("/_probe/by-method")).json()["recovery"] is True
        assert (await client.put("/_probe/by-method")).json()["recovery"] is False


async def test_stopped_replica_loses_no_reads_and_comes_back(
    cluster: pgcluster.PgCluster,
) -> None:
    replica = cluster.replicas[0]
    async with serving(cluster_settings(cluster)) as (app, client):
        retries_before = primary_reads(app, "retry") + primary_reads(app, "all_down")

        async def read() -> httpx.Response:
            return await client.get("/_probe/read")

        first = asyncio.gather(*(read() for _ in range(100)))
        await asyncio.sleep(0.05)
        replica.stop("immediate")
        stopped_at = time.monotonic()
        responses = list(await first) + list(await asyncio.gather(*(read() for _ in range(100))))
        failed = [r for r in responses if r.status_code != 200]
        assert failed == [], [r.text for r in failed[:3]]
        on_primary = sum(1 for r in responses if r.json()["recovery"] is False)
        assert on_primary > 0
        assert primary_reads(app, "retry") + primary_reads(app, "all_down") > retries_before
        await until(lambda: not db(app).replicas[0].in_rotation, what="replica marked down")

        replica.start()
        back = await until(lambda: db(app).replicas[0].in_rotation, what="replica back in rotation")
        again = (await client.get("/_probe/read")).json()
        assert again["recovery"] is True
        print(
            f"stop replica: {len(failed)} failed of {len(responses)}; "
            f"back in rotation {back:.2f}s after restart "
            f"({time.monotonic() - stopped_at:.2f}s after the stop)"
        )


async def test_paused_replay_excludes_replica_and_token_reads_see_writes(
    cluster: pgcluster.PgCluster,
) -> None:
    replica = cluster.replicas[0]
    async with serving(cluster_settings(cluster)) as (app, client):
        await until(lambda: db(app).replicas[0].in_rotation, what="replica in rotation")
        replica.psql("SELECT pg_wal_replay_pause()")
        try:
            # A write followed at once by a read with its token sees the write.
            write = await client.post("/_probe/write")
            token = write.headers["x-consistency-token"]
            read = await client.get(
                f"/_probe/org/{write.json()['slug']}", headers={"X-Consistency-Token": token}
            )
            assert read.json()["found"] is True
            assert read.json()["recovery"] is False

            async def lagging() -> bool:
                await client.post("/_probe/write")  # WAL the paused replica cannot replay
                return not db(app).replicas[0].in_rotation

            excluded = await until(lagging, what="lagging replica excluded")
            assert db(app).replicas[0].reason == "lagging"
            assert (await client.get("/_probe/read")).json()["recovery"] is False
            print(f"paused replay: excluded {excluded:.2f}s after the pause")
        finally:
            replica.psql("SELECT pg_wal_replay_resume()")
        await until(lambda: db(app).replicas[0].in_rotation, what="caught-up replica back")


async def test_least_lagged_fallback_keeps_reads_off_the_primary(
    cluster: pgcluster.PgCluster,
) -> None:
    replica = cluster.replicas[0]
    settings = cluster_settings(cluster, replica_fallback="least_lagged")
    async with serving(settings) as (app, client):
        replica.psql("SELECT pg_wal_replay_pause()")
        try:

            async def lagging() -> bool:
                await client.post("/_probe/write")
                return not db(app).replicas[0].in_rotation

            await until(lagging, what="lagging replica excluded")
            lagging_before = primary_reads(app, "all_lagging")
            read = (await client.get("/_probe/read")).json()
            assert read["recovery"] is True
            assert primary_reads(app, "all_lagging") == lagging_before
        finally:
            replica.psql("SELECT pg_wal_replay_resume()")


class DelayProxy:
    """A TCP proxy that delays every chunk: a replica that is slow, not dead."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay = 0.0
        self.port = pgcluster.free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> DelayProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))


async def test_slow_replica_is_ejected_and_returns_only_after_staying_healthy(
    cluster: pgcluster.PgCluster,
) -> None:
    replica = cluster.replicas[0]
    async with DelayProxy(replica.port) as proxy:
        url = replica.url().replace(f":{replica.port}/", f":{proxy.port}/")
        settings = make_settings(
            cluster.primary.url(),
            [url],
            replica_recovery_seconds=1.5,
            replica_slow_floor_seconds=0.1,
            pool_pre_ping=False,
        )
        async with serving(settings) as (app, client):
            state = db(app).replicas[0]
            await until(lambda: state.in_rotation, what="replica in rotation")
            proxy.delay = 0.3
            await until(lambda: not state.in_rotation, what="slow replica ejected")
            assert state.reason == "slow"
            assert (await client.get("/_probe/read")).json()["recovery"] is False
            proxy.delay = 0.0
            fast_again = time.monotonic()
            await until(lambda: state.reason == "recovering", what="recovering")
            await until(lambda: state.in_rotation, what="replica back")
            # Hysteresis: healthy for replica_recovery_seconds (1.5 s) before it returns,
            # counted from its first fast probe, which began at most a probe (the 0.3 s
            # delay) before the proxy sped up. A busy machine only makes this longer.
            assert time.monotonic() - fast_again >= 1.5 - 0.3


async def test_pool_exhaustion_answers_503_with_retry_after(
    cluster: pgcluster.PgCluster,
) -> None:
    settings = cluster_settings(cluster, pool_size=2, max_overflow=0, pool_timeout=1)
    async with serving(settings) as (app, client):
        held = [await db(app).primary.connect() for _ in range(2)]
        try:
            started = time.monotonic()
            response = await client.post("/_probe/write")
            elapsed = time.monotonic() - started
        finally:
            for conn in held:
                await conn.close()
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert response.json()["error"] == "unavailable"
        # It waited out POOL_TIMEOUT (1 s); the upper bound only catches a wait never ended.
        assert 0.9 <= elapsed < 30, elapsed
        assert (await client.post("/_probe/write")).status_code == 200


class CancelOnDisconnect(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        return await call_next(request)


async def test_cancelled_requests_return_their_connections(
    cluster: pgcluster.PgCluster,
) -> None:
    settings = cluster_settings(cluster)
    app = create_app(settings)
    _probe_routes(app)
    app.add_middleware(CancelOnDisconnect)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            tasks = [asyncio.create_task(client.get("/_probe/sleep")) for _ in range(500)]
            await until(lambda: checked_out(app) > 0, what="queries in flight")
            await asyncio.sleep(0.2)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await until(lambda: checked_out(app) == 0, limit=10, what="pool drained")
            # And the pool still serves.
            assert (await client.get("/_probe/read")).status_code == 200


async def test_pgbouncer_transaction_mode(cluster: pgcluster.PgCluster, tmp_path: Any) -> None:
    bouncer = pgcluster.start_pgbouncer(cluster.primary, tmp_path, pool_size=5)
    try:
        settings = make_settings(bouncer.url(), pgbouncer=True, pool_size=20)
        async with serving(settings) as (_, client):
            writes = await asyncio.gather(*(client.post("/_probe/write") for _ in range(50)))
            assert {w.status_code for w in writes} == {200}
            reads = await asyncio.gather(
                *(client.get(f"/_probe/org/{w.json()['slug']}") for w in writes)
            )
            assert all(r.status_code == 200 and r.json()["found"] for r in reads)
    finally:
        bouncer.stop()


async def test_promoted_standby_takes_writes_without_restart() -> None:
    from app.db.migrate import upgrade

    with pgcluster.start_cluster(replicas=1) as own:
        upgrade(own.primary.url())
        primary, standby = own.primary, own.replicas[0]
        own.wait_replica_caught_up(standby)
        base = primary.url()
        auth, _, rest = base.partition("@")
        database = rest.split("/", 1)[1]
        multi = (
            f"{auth}@/{database}?host=127.0.0.1:{primary.port}&host=127.0.0.1:{standby.port}"
            "&target_session_attrs=read-write"
        )
        settings = make_settings(multi, [standby.url()], connect_timeout=2)
        async with serving(settings) as (_, client):
            assert (await client.post("/_probe/write")).json()["port"] == primary.port
            primary.stop("immediate")
            stopped = time.monotonic()
            standby.promote()
            failures = 0
            while True:
                response = await client.post("/_probe/write")
                if response.status_code == 200:
                    break
                assert response.status_code == 503, response.text
                failures += 1
                assert time.monotonic() - stopped < 60, "writes did not recover"
                await asyncio.sleep(0.1)
            recovered = time.monotonic() - stopped
            assert response.json()["port"] == standby.port
            print(f"promotion: {failures} failed writes, writes back after {recovered:.2f}s")


async def test_database_down_answers_503() -> None:
    port = pgcluster.free_port()  # nothing listens there
    url = f"postgresql+asyncpg://bookedbarber:pw-nothing@127.0.0.1:{port}/bookedbarber"
    async with serving(make_settings(url, [url], connect_timeout=2)) as (_, client):
        for method, path in (("POST", "/_probe/write"), ("GET", "/_probe/read")):
            # A bound that only catches an answer that never comes.
            response = await asyncio.wait_for(client.request(method, path), 30)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"]
            assert "pw-nothing" not in response.text
            assert str(port) not in response.text


async def test_hot_reads_survive_a_stopped_replica_and_cancellation(
    cluster: pgcluster.PgCluster,
) -> None:
    """The hand-written hot reads hold a pooled connection of their own: same guarantees."""
    replica = cluster.replicas[0]
    async with serving(cluster_settings(cluster)) as (app, client):
        email = f"{uuid.uuid4().hex}@example.com"
        created = await client.post(
            "/api/v1/users", json={"email": email, "name": "Hot Path", "unified_role": "client"}
        )
        assert created.status_code == 201
        cluster.wait_replica_caught_up(replica)
        await until(lambda: db(app).replicas[0].in_rotation, what="replica in rotation")
        url = f"/api/v1/users/{created.json()['id']}?include=appointments,payments,organizations"
        # Cancelled at every stage (waiting for the pool, pinging, fetching): nothing leaks.
        tasks = [asyncio.create_task(client.get(url)) for _ in range(300)]
        await until(lambda: checked_out(app) > 0, what="reads in flight")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await until(lambda: checked_out(app) == 0, limit=10, what="pool drained")

        retries_before = primary_reads(app, "retry") + primary_reads(app, "all_down")
        first = asyncio.gather(*(client.get(url) for _ in range(100)))
        await asyncio.sleep(0.05)
        replica.stop("immediate")
        try:
            responses = list(await first)
            responses += await asyncio.gather(*(client.get(url) for _ in range(100)))
        finally:
            replica.start()
        failed = [r for r in responses if r.status_code != 200]
        assert failed == [], [r.text for r in failed[:3]]
        assert {r.json()["email"] for r in responses} == {email}
        assert primary_reads(app, "retry") + primary_reads(app, "all_down") > retries_before
        await until(lambda: db(app).replicas[0].in_rotation, what="replica back in rotation")
        assert (await client.get(url)).status_code == 200
        await until(lambda: checked_out(app) == 0, limit=10, what="pool drained")


async def test_a_saturated_pool_does_not_eject_its_replica(cluster: pgcluster.PgCluster) -> None:
    """The monitor probes on its own connection: a busy pool is not a slow replica."""
    settings = cluster_settings(
        cluster, replica_pool_size=2, replica_max_overflow=0, connect_timeout=1, pool_timeout=1
    )
    async with serving(settings) as (app, client):
        replica = db(app).replicas[0]
        await until(lambda: replica.in_rotation, what="replica in rotation")
        held = [await replica.engine.connect() for _ in range(2)]
        try:
            for conn in held:
                await conn.execute(text("SELECT 1"))
            await asyncio.sleep(1.5)  # several probe rounds, each past CONNECT_TIMEOUT's worth
            assert replica.in_rotation, replica.reason
            assert replica.response_time is not None
            health = (await client.get("/health/replicas")).json()
            assert health["replicas"][0]["status"] == "healthy", health
            # A read that finds the pool of a replica in rotation exhausted: 503 after
            # POOL_TIMEOUT (1 s); the upper bound only catches a wait never ended.
            started = time.monotonic()
            read = await client.get("/_probe/read")
            assert read.status_code == 503
            assert read.headers["retry-after"]
            assert 0.9 <= time.monotonic() - started < 30
        finally:
            for conn in held:
                await conn.close()
