"""Schema, migrations, engine settings and replication on both backends."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.adapters.sqlalchemy_pool import CountingPool, max_overflow
from app.config import Settings
from app.db.engine import PING_AFTER_IDLE_SECONDS, create_engine
from app.db.migrate import downgrade_async, upgrade_async
from app.db.models import Base, User, migration_only
from app.db.seed import seed_demo
from tests import factories
from tests.conftest import Postgres, create_database, drop_database, make_settings, pg_fetch, unique

SEED_INDEXES = {
    "idx_users_email_active",
    "idx_users_role_unified",
    "idx_users_location_role",
    "idx_users_trial_status",
    "idx_appointments_user_status",
    "idx_appointments_barber_date",
    "idx_appointments_location_date",
    "idx_appointments_datetime_range",
    "idx_appointments_status_created",
    "idx_payments_user_status",
    "idx_payments_stripe_session",
    "idx_payments_created_amount",
    "idx_appointments_location_user",
    "idx_payments_location",
    "idx_users_name_search",
    "idx_appointments_notes_search",
}


@pytest.fixture
async def fresh_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    pg: Postgres = request.getfixturevalue("postgres")
    name = unique("db").replace("-", "_")
    url = await create_database(pg, name)
    try:
        yield url
    finally:
        await drop_database(pg, name)


async def _tables(url: str) -> set[str]:
    engine = create_engine(url, make_settings(url))
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_migrations_up_down_up(fresh_url: str) -> None:
    await upgrade_async(fresh_url)
    assert {"users", "appointments", "payments", "reviews", "payouts"} <= await _tables(fresh_url)
    await downgrade_async(fresh_url, "base")
    assert await _tables(fresh_url) <= {"alembic_version"}
    await upgrade_async(fresh_url)
    assert "appointments" in await _tables(fresh_url)


async def test_models_match_migrations(fresh_url: str) -> None:
    await upgrade_async(fresh_url)
    engine = create_engine(fresh_url, make_settings(fresh_url))

    def diff(connection: object) -> list[object]:
        context = MigrationContext.configure(
            connection,  # type: ignore[arg-type]
            opts={
                "compare_type": True,
                "include_object": lambda o, name, kind, *_: (
                    not (kind == "index" and name and migration_only(name))
                ),
            },
        )
        with warnings.catch_warnings():
            # Alembic reflects the unique expression index on lower(email) (migration-only,
            # excluded above) with options it then cannot validate.
            warnings.filterwarnings("ignore", "Can't validate argument 'dialect_options'")
            return list(compare_metadata(context, Base.metadata))

    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(diff) == []
    finally:
        await engine.dispose()


async def test_every_seed_index_and_fk_index_exists(postgres: Postgres) -> None:
    rows = await pg_fetch(postgres.primary_url, "SELECT indexname FROM pg_indexes")
    assert {r["indexname"] for r in rows} >= SEED_INDEXES
    # Every foreign key column leads some index (else joins and cascades scan).
    unindexed = await pg_fetch(
        postgres.primary_url,
        """
        SELECT c.conrelid::regclass::text AS tbl, a.attname AS col
        FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE c.contype = 'f' AND NOT EXISTS (
            SELECT 1 FROM pg_index i
            WHERE i.indrelid = c.conrelid AND i.indkey[0] = c.conkey[1]
        )
        """,
    )
    assert [(r["tbl"], r["col"]) for r in unindexed] == []
    invalid = await pg_fetch(
        postgres.primary_url, "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid"
    )
    assert invalid == []


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_exclusion_constraint_rejects_overlap(settings: Settings) -> None:
    engine = create_engine(settings.primary_url, settings)
    start = dt.datetime(2031, 3, 4, 10, 0, tzinfo=dt.UTC)
    try:
        async with AsyncSession(engine) as session:
            loc = await factories.location(session)
            barber = await factories.user(session, "barber")
            client = await factories.user(session)
            svc = await factories.service(session, loc.id)
            ids = {
                "user_id": client.id,
                "barber_id": barber.id,
                "service_id": svc.id,
                "location_id": loc.id,
            }
            await factories.appointment(session, **ids, start=start)
            # Back to back is fine: ranges are half open.
            await factories.appointment(session, **ids, start=start + dt.timedelta(minutes=30))
            # A cancelled appointment does not hold the slot.
            await factories.appointment(session, **ids, start=start, status="cancelled")
            with pytest.raises(IntegrityError) as caught:
                await factories.appointment(session, **ids, start=start + dt.timedelta(minutes=15))
            assert getattr(caught.value.orig, "sqlstate", None) == "23P01"
            await session.rollback()
    finally:
        await engine.dispose()


async def test_write_on_primary_is_visible_on_replica(postgres: Postgres) -> None:
    settings = make_settings(postgres.primary_url, postgres.replica_urls)
    primary = create_engine(settings.primary_url, settings)
    replica = create_engine(postgres.replica_urls[0], settings, "replica", index=0)
    email = f"{unique()}@example.test"
    try:
        async with primary.begin() as conn:
            await conn.execute(
                User.__table__.insert().values(
                    email=email, name="Replicated", unified_role="client"
                )
            )
        deadline = time.monotonic() + 60  # only catches a write never replicated
        async with replica.connect() as conn:
            assert await conn.scalar(text("SELECT pg_is_in_recovery()")) is True
            while True:
                found = await conn.scalar(select(func.count()).where(User.email == email))
                await conn.rollback()
                if found or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
        assert found == 1
    finally:
        await primary.dispose()
        await replica.dispose()


async def test_engine_settings_are_applied(postgres: Postgres) -> None:
    settings = make_settings(
        postgres.primary_url, statement_timeout_ms=12_345, lock_timeout_ms=2_345
    )
    engine = create_engine(settings.primary_url, settings, "primary")
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SHOW statement_timeout")) == "12345ms"
            assert await conn.scalar(text("SHOW lock_timeout")) == "2345ms"
            assert await conn.scalar(text("SHOW timezone")) == "UTC"
            names = await conn.scalars(
                text("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")
            )
            assert names.all() == ["bookedbarber_primary"]
        pool = engine.pool
        assert isinstance(pool, CountingPool)
        assert pool.size() == settings.pool_size
        assert max_overflow(pool) == settings.max_overflow
        assert pool.timeout() == settings.pool_timeout
    finally:
        await engine.dispose()


PING = ";"  # the checkout's ping (app/db/engine.py _ping)


async def last_statement(postgres: Postgres, pid: int) -> str:
    """What the backend `pid` ran last, as the server shows it to another session."""
    rows = await pg_fetch(
        postgres.primary_url, "SELECT query FROM pg_stat_activity WHERE pid = $1", pid
    )
    return str(rows[0][0])


async def test_pre_ping_replaces_a_connection_that_died_idle(postgres: Postgres) -> None:
    """A connection idle past the bypass window is pinged and replaced; a fresh one is not."""
    settings = make_settings(postgres.primary_url, pool_size=1, max_overflow=0)
    engine = create_engine(settings.primary_url, settings, "primary")
    try:
        async with engine.connect() as conn:
            first = await conn.scalar(text("SELECT pg_backend_pid()"))
        returned = await last_statement(postgres, first)
        # Just returned: the next checkout skips the ping (the backend's last statement is
        # still the one before) and gets the same connection.
        async with engine.connect() as conn:
            assert await last_statement(postgres, first) == returned != PING
            assert await conn.scalar(text("SELECT pg_backend_pid()")) == first
        await pg_fetch(postgres.primary_url, "SELECT pg_terminate_backend($1)", first)
        await asyncio.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
        # Idle past the window: pinged, found dead, replaced before the statement runs.
        async with engine.connect() as conn:
            second = await conn.scalar(text("SELECT pg_backend_pid()"))
        assert second != first
    finally:
        await engine.dispose()


async def test_pre_ping_keeps_a_live_connection_idle_past_the_window(postgres: Postgres) -> None:
    """The ping itself works: a live connection idle past the window is kept, not replaced
    (a ping that failed would pass unnoticed otherwise, as a reconnect)."""
    settings = make_settings(postgres.primary_url, pool_size=1, max_overflow=0)
    engine = create_engine(settings.primary_url, settings, "primary")
    try:
        async with engine.connect() as conn:
            first = await conn.scalar(text("SELECT pg_backend_pid()"))
        await asyncio.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
        async with engine.connect() as conn:
            assert await last_statement(postgres, first) == PING  # pinged at the checkout
            assert await conn.scalar(text("SELECT pg_backend_pid()")) == first
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_sqlite_pragmas(settings: Settings) -> None:
    engine = create_engine(settings.primary_url, settings)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("PRAGMA foreign_keys")) == 1
            assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"
            assert await conn.scalar(text("PRAGMA busy_timeout")) == 10_000
    finally:
        await engine.dispose()


async def test_demo_seed_then_new_rows_get_fresh_ids(fresh_url: str) -> None:
    await upgrade_async(fresh_url)
    settings = make_settings(fresh_url)
    engine = create_engine(fresh_url, settings)
    try:
        report = await seed_demo(engine, scale=0.002)
        assert report.rows["appointments"] == 2_000
        assert report.rows["users"] >= 200
        async with engine.begin() as conn:
            highest = await conn.scalar(select(func.max(User.id)))
            new_id = (
                await conn.execute(
                    User.__table__.insert()
                    .values(email=f"{unique()}@example.test", name="New", unified_role="client")
                    .returning(User.id)
                )
            ).scalar_one()
            assert new_id > highest
            overlaps = await conn.scalar(
                text(
                    "SELECT count(*) FROM appointments a JOIN appointments b "
                    "ON a.barber_id = b.barber_id AND a.id < b.id "
                    "AND a.start_time < b.end_time AND b.start_time < a.end_time"
                )
            )
            assert overlaps == 0
    finally:
        await engine.dispose()


def _free_port() -> int:
    from tests.pgcluster import free_port

    return free_port()


def test_serve_on_fresh_sqlite_creates_demo_database(tmp_path: Path) -> None:
    """README's first command: a new SQLite file, upgraded and seeded, serving on a port."""
    _serve_until_live(tmp_path, [])
    assert (tmp_path / "bookedbarber.db").exists()


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read the queue")
def test_serve_listens_with_the_backlog_it_is_given(tmp_path: Path) -> None:
    """`--backlog`: the listen queue the kernel keeps (ss shows it as a listener's Send-Q)."""

    def queue(port: int) -> int:
        out = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
        ).stdout.split()
        return int(out[2])

    assert _serve_until_live(tmp_path, ["--backlog", "123"], queue) == 123


def _serve_until_live(
    tmp_path: Path, extra: list[str], probe: Callable[[int], int] | None = None
) -> int | None:
    """Runs `serve` on a fresh SQLite file until /health/live answers; `probe(port)` then."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REPLICA_URLS")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--no-access-log", *extra],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    response = client.get("/health/live")
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                    assert time.monotonic() < deadline, "serve did not come up within 60 s"
                    time.sleep(0.1)
            assert response.status_code == 200
        return probe(port) if probe else None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
