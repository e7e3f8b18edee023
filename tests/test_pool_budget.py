"""Default pools keep their connections under load; pools past max_connections are named."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import event
from sqlalchemy.engine import make_url

from app.config import DEFAULT_POOL_CAP, Settings
from app.db.budget import check_budget
from app.db.engine import MONITOR_CONNECTIONS
from app.db.metrics import DatabaseMetrics
from app.db.router import DatabaseRouter
from app.main import create_app
from tests.conftest import Postgres, collect_earlier_garbage, make_settings, pg_fetch


def test_unset_pools_are_fixed_and_sized_from_workers_and_budget() -> None:
    one = Settings(workers=1)
    assert (one.pool_size, one.max_overflow) == (DEFAULT_POOL_CAP, 0)
    assert (one.replica_pool_size, one.replica_max_overflow) == (DEFAULT_POOL_CAP, 0)
    # Four workers share the budget of 80 connections per database: 20 each.
    four = Settings(workers=4)
    assert (four.pool_size, four.replica_pool_size) == (20, 20)
    assert Settings(workers=200).pool_size == 1
    assert Settings(pool_connection_budget=12, workers=3).replica_pool_size == 4
    # The seed's variable names still decide when set.
    seed = Settings(pool_size=20, max_overflow=30, replica_pool_size=10, replica_max_overflow=20)
    assert (seed.pool_size, seed.max_overflow) == (20, 30)
    assert (seed.replica_pool_size, seed.replica_max_overflow) == (10, 20)


def test_the_environment_still_sets_the_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICA_POOL_SIZE", "7")
    monkeypatch.setenv("MAX_OVERFLOW", "3")
    monkeypatch.setenv("WORKERS", "8")
    settings = Settings()
    assert (settings.pool_size, settings.max_overflow) == (10, 3)
    assert (settings.replica_pool_size, settings.replica_max_overflow) == (7, 0)


async def _connections_opened(settings: Settings, requests: int, waves: int) -> tuple[int, int]:
    """Backend connections the replica pool opened serving `waves` of concurrent reads."""
    app = create_app(settings)
    opened = 0

    def count(*_: Any) -> None:
        nonlocal opened
        opened += 1

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        router: DatabaseRouter = app.state.db
        pool = router.replicas[0].engine.pool
        event.listen(pool, "connect", count)
        for _ in range(waves):
            answers = await asyncio.gather(
                *(client.get(f"/api/v1/users/{10**12 + i}") for i in range(requests))
            )
            assert {a.status_code for a in answers} == {404}
        open_now = pool.checkedin() + pool.checkedout()  # type: ignore[attr-defined]
    return opened, open_now


async def test_default_pools_keep_their_connections_under_load(postgres: Postgres) -> None:
    # The defaults with a budget of 4 connections per database: a fixed pool of 4.
    defaults = make_settings(
        postgres.primary_url,
        postgres.replica_urls,
        pool_connection_budget=4,
        replica_probe_interval_seconds=3600,
    )
    assert (defaults.replica_pool_size, defaults.replica_max_overflow) == (4, 0)
    opened, open_now = await _connections_opened(defaults, requests=40, waves=3)
    # 120 reads, 40 at a time, on 4 connections: none opened beyond the pool's 4.
    assert opened <= 4
    assert open_now <= 4

    # The seed's shape, 2 kept + 2 overflow: overflow is closed on return and reopened.
    churning = make_settings(
        postgres.primary_url,
        postgres.replica_urls,
        replica_pool_size=2,
        replica_max_overflow=2,
        replica_probe_interval_seconds=3600,
    )
    opened, _ = await _connections_opened(churning, requests=40, waves=3)
    assert opened > 4


async def _wait_for(caplog: pytest.LogCaptureFixture, text: str, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in caplog.text:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_start_up_warns_when_pools_exceed_max_connections(
    postgres: Postgres, caplog: pytest.LogCaptureFixture
) -> None:
    [row] = await pg_fetch(postgres.primary_url, "SHOW max_connections")
    limit = int(row[0])
    # Two workers, each with half the server's connections on the primary: over the limit
    # once the reserved superuser slots and the monitor's connections are counted.
    settings = make_settings(
        postgres.primary_url, postgres.replica_urls, workers=2, pool_size=limit // 2
    )
    app = create_app(settings)
    with caplog.at_level(logging.WARNING, logger="app.db.budget"):
        async with app.router.lifespan_context(app):
            assert await _wait_for(caplog, "exceed the server's max_connections")
            router: DatabaseRouter = app.state.db
            found = await check_budget(router.engines(), router.monitor_engines(), settings)
    # Only the primary's server is over: the replica's pools are the defaults.
    [over] = found
    assert over["max_connections"] == limit
    assert over["connections"] == 2 * (limit // 2 + MONITOR_CONNECTIONS)
    assert over["connections"] > over["available"]
    assert over["server"] == f"127.0.0.1:{make_url(settings.primary_url).port}"
    assert "password" not in caplog.text.lower()


async def test_no_warning_for_the_defaults_and_one_for_overflow(
    postgres: Postgres, caplog: pytest.LogCaptureFixture
) -> None:
    collect_earlier_garbage()
    caplog.clear()
    settings = make_settings(postgres.primary_url, postgres.replica_urls)
    router = DatabaseRouter(settings, DatabaseMetrics(CollectorRegistry()))
    try:
        with caplog.at_level(logging.WARNING, logger="app.db.budget"):
            assert await check_budget(router.engines(), router.monitor_engines(), settings) == []
        assert caplog.text == ""
    finally:
        await router.dispose()
    churning = make_settings(postgres.primary_url, postgres.replica_urls, max_overflow=5)
    router = DatabaseRouter(churning, DatabaseMetrics(CollectorRegistry()))
    try:
        with caplog.at_level(logging.WARNING, logger="app.db.budget"):
            assert await check_budget(router.engines(), router.monitor_engines(), churning) == []
        assert "overflow connections are closed when returned" in caplog.text
        assert [r.__dict__.get("pool") for r in caplog.records] == ["primary"]
    finally:
        await router.dispose()
