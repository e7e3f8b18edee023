"""Pool gauges and query counts mean what their names say, on both backends."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import Settings
from app.db.router import DatabaseRouter
from app.main import create_app
from tests.conftest import Postgres, make_settings
from tests.test_metrics import promtool_check_metrics, samples, value

POOL_SIZE, MAX_OVERFLOW = 4, 3


def _settings(settings: Settings) -> Settings:
    return make_settings(
        settings.primary_url,
        [u.get_secret_value() for u in settings.replica_urls],
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        replica_probe_interval_seconds=3600,
    )


def _gauges(scrape: str, pool: str) -> dict[str, float]:
    labels = {"role": "primary", "pool": pool}
    return {
        name: value(scrape, f"database_connection_pool_{name}", **labels)
        for name in ("size", "checked_out", "overflow", "checked_in")
    }


async def test_pool_gauges_under_a_known_load(settings: Settings, backend: str) -> None:
    app = create_app(_settings(settings))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        router: DatabaseRouter = app.state.db
        pool = router.primary.pool

        async def scrape() -> dict[str, float]:
            body = (await client.get("/metrics")).text
            gauges = _gauges(body, "primary")
            # The gauges are the pool's own numbers, overflow counted from zero.
            assert gauges == {
                "size": pool.size(),  # type: ignore[attr-defined]
                "checked_out": pool.checkedout(),  # type: ignore[attr-defined]
                "overflow": max(0, pool.overflow()),  # type: ignore[attr-defined]
                "checked_in": pool.checkedin(),  # type: ignore[attr-defined]
            }
            promtool_check_metrics(body)
            return gauges

        held: list[AsyncConnection] = [await router.primary.connect() for _ in range(6)]
        # Six held on a pool of four: all four kept connections and two beyond them.
        assert await scrape() == {"size": 4, "checked_out": 6, "overflow": 2, "checked_in": 0}
        for conn in held[:3]:
            await conn.close()
        # Returned connections stay open while the pool has room for them.
        assert await scrape() == {"size": 4, "checked_out": 3, "overflow": 2, "checked_in": 3}
        for conn in held[3:]:
            await conn.close()
        # A full pool closes what comes back beyond its size.
        assert await scrape() == {"size": 4, "checked_out": 0, "overflow": 0, "checked_in": 4}
        body = (await client.get("/metrics")).text
        pools = {
            dict(labels)["pool"]
            for name, labels in samples(body)
            if name == "database_connection_pool_size"
        }
        if backend == "sqlite":
            # The read pool is its own series, with its own configured size: never 2 x 4.
            assert pools == {"primary", "primary-reader"}
            assert _gauges(body, "primary-reader")["size"] == POOL_SIZE
        else:
            assert pools == {"primary", "replica-0"}


async def test_queries_counted_by_outcome(settings: Settings) -> None:
    app = create_app(settings)
    registry = app.state.metrics_registry  # the app's own: it starts from zero

    def inserts(outcome: str) -> float:
        labels = {"operation": "INSERT", "table": "users", "role": "primary"}
        return registry.get_sample_value("database_queries_total", {**labels, "outcome": outcome})

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        email = f"{uuid.uuid4().hex}@example.test"
        for attempt in range(4):
            user = {"email": email if attempt else f"x{email}", "name": "Outcome"}
            response = await client.post("/api/v1/users", json=user)
            assert response.status_code == (201 if attempt < 2 else 409)
        router: DatabaseRouter = app.state.db
        failed = 2
        for _ in range(failed):  # the unique email, violated: the statement fails
            async with router.primary.connect() as conn:
                try:
                    await conn.execute(
                        text(
                            "INSERT INTO users (email, email_key, name, unified_role) "
                            "VALUES (:e, :k, 'n', 'c')"
                        ),
                        {"e": email, "k": email},
                    )
                except IntegrityError:
                    pass
                else:
                    raise AssertionError("the duplicate was inserted")
        # The scrape says what the registry says.
        scrape = (await client.get("/metrics")).text
        labels = {"operation": "INSERT", "table": "users", "role": "primary"}
        assert value(scrape, "database_queries_total", **labels, outcome="error") == failed
    # Two users created, two INSERTs that changed nothing (409), two that failed.
    assert (inserts("success"), inserts("no_rows"), inserts("error")) == (2, 2, failed)


async def test_lane_statements_counted_by_outcome(postgres: Postgres) -> None:
    """The hot reads' driver path (a RoutedConnection) counts a failed statement as an error too."""
    app = create_app(make_settings(postgres.primary_url, postgres.replica_urls))
    registry = app.state.metrics_registry

    def selects(outcome: str) -> float | None:
        labels = {"operation": "SELECT", "table": "users", "role": "primary", "outcome": outcome}
        return registry.get_sample_value("database_queries_total", labels)

    async with app.router.lifespan_context(app):
        router: DatabaseRouter = app.state.db
        reader = router.routed_connection("read", force_primary=True)
        try:
            before = selects("success") or 0.0
            assert await reader.fetch("SELECT id FROM users WHERE id = 0") == []
            with pytest.raises(asyncpg.DivisionByZeroError):  # raised by the server
                await reader.fetch("SELECT id FROM users WHERE id = 1 / $1::int", 0)
            # The connection is still good: the failure was the statement's.
            assert await reader.fetch("SELECT id FROM users WHERE id = 0") == []
        finally:
            await reader.close()
        assert (selects("success") or 0.0) - before == 2
        assert selects("error") == 1
