"""Real databases for every test: a PostgreSQL primary with a streaming replica, and SQLite."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from app.config import Settings
from app.db.migrate import upgrade, upgrade_async
from app.main import create_app
from app.redaction import scrub
from tests import pgcluster
from tests.leaks import encodings


@dataclass
class Postgres:
    """The session's PostgreSQL: started here from the machine's binaries, or given by URL."""

    primary_url: str
    replica_urls: list[str]
    cluster: pgcluster.PgCluster | None = None

    def with_database(self, url: str, database: str) -> pgcluster.SecretUrl:
        url = make_url(url).set(database=database).render_as_string(hide_password=False)
        return pgcluster.SecretUrl(url)


def pytest_assertrepr_compare(op: str, left: object, right: object) -> list[str] | None:
    """A failing comparison that involves a test's password shows it, and nothing else, as ***."""
    shown = [repr(left)[:2000], repr(right)[:2000]]
    texts = (*shown, str(left), str(right))
    # Every form: a repr escapes a password's quotes and backslashes, a URL encodes it.
    forms = {f for s in pgcluster.SECRETS for f in encodings(s) if f and any(f in t for t in texts)}
    if not forms and not any(isinstance(v, pgcluster.SecretUrl) for v in (left, right)):
        return None
    for form in sorted(forms, key=len, reverse=True):
        shown = [text.replace(form, "***") for text in shown]
    left_shown, right_shown = (scrub(text, ()) for text in shown)
    return [f"{left_shown} {op} {right_shown}", "(a test secret is involved: shown redacted)"]


def _plain(url: str) -> str:
    """asyncpg.connect wants postgresql://, not SQLAlchemy's postgresql+asyncpg://."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_database(pg: Postgres, name: str) -> str:
    admin = await asyncpg.connect(_plain(pg.with_database(pg.primary_url, "postgres")))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return pg.with_database(pg.primary_url, name)


async def drop_database(pg: Postgres, name: str) -> None:
    admin = await asyncpg.connect(_plain(pg.with_database(pg.primary_url, "postgres")))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def pg_fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(_plain(url))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        replicas = [u for u in os.environ.get("TEST_REPLICA_URLS", "").split(",") if u]
        yield Postgres(pgcluster.SecretUrl(given), [pgcluster.SecretUrl(u) for u in replicas])
        return
    # No PostgreSQL is an error with instructions, never a skip.
    cluster = pgcluster.start_cluster(replicas=1)
    try:
        primary = cluster.primary.url()
        pg = Postgres(primary, [r.url() for r in cluster.replicas], cluster)
        upgrade(primary)
        cluster.wait_replica_caught_up(cluster.replicas[0])
        yield pg
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "bookedbarber.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def make_settings(primary: str, replicas: list[str] | None = None, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": SecretStr(primary),
        "replica_urls": [SecretStr(u) for u in replicas or []],
        "replica_probe_interval_seconds": 0.2,
        # No consistency rounds unless a test asks for them (tests/test_replica_consistency.py):
        # their statements on the primary would land in the counts other tests compare.
        "replica_consistency_interval_seconds": 0,
        "replica_recovery_seconds": 0.5,
        # A busy machine's probe can take a second: "slow" only where a test means it.
        "replica_slow_floor_seconds": 5.0,
        "pool_timeout": 5,
        "demo_seed": False,
        # Tests start with their replicas probed, as a healthy cluster does within this.
        "startup_probe_wait_seconds": 60,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
def settings(backend: str, request: pytest.FixtureRequest) -> Settings:
    if backend == "sqlite":
        return make_settings(request.getfixturevalue("sqlite_url"))
    pg: Postgres = request.getfixturevalue("postgres")
    return make_settings(pg.primary_url, pg.replica_urls)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


class ConsistentClient(httpx.AsyncClient):
    """A booking service's client: sends back the latest write's consistency token."""

    token: str | None = None

    async def send(self, request: httpx.Request, **kwargs: object) -> httpx.Response:  # type: ignore[override]
        if self.token and "x-consistency-token" not in request.headers:
            request.headers["X-Consistency-Token"] = self.token
        response = await super().send(request, **kwargs)  # type: ignore[arg-type]
        if token := response.headers.get("x-consistency-token"):
            self.token = token
        return response


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with ConsistentClient(transport=transport, base_url="http://test") as c:
        yield c


def collect_earlier_garbage() -> None:
    """Collect now what earlier tests left to the garbage collector, before a test starts
    counting log lines: collecting it logs, in whichever test the collector happens to run.
    E.g. a read cancelled while its pool opens a connection (tests/test_routing.py cancels
    300) leaves asyncpg's half-made connection, whose future asyncio logs, when collected,
    as "Future exception was never retrieved" at ERROR."""
    gc.collect()


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def sqlite_file_url(path: Path) -> str:
    return f"sqlite:///{path}"


def db_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m app db ARGS` in a subprocess, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "app", "db", *args],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
async def scratch_db(postgres: Postgres) -> AsyncIterator[str]:
    """An empty database of its own on the suite's PostgreSQL, dropped afterwards."""
    name = unique("scratch").replace("-", "_")
    url = await create_database(postgres, name)
    try:
        yield url
    finally:
        await drop_database(postgres, name)


@asynccontextmanager
async def database_at(
    revision: str, backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """A new database of the backend's, migrated to `revision` (and dropped afterwards)."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        await upgrade_async(url, revision)
        yield url
        return
    pg: Postgres = request.getfixturevalue("postgres")
    name = unique("db").replace("-", "_")
    url = await create_database(pg, name)
    try:
        await upgrade_async(url, revision)
        yield url
    finally:
        await drop_database(pg, name)
