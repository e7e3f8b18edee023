"""A database that cannot serve now: 503 with Retry-After at every door, never a 500.

The refusals are PostgreSQL's own, on a database and a role of the test's: the database
not accepting connections (55000), the role at its connection limit (53300), writes sent
to a standby as after a failover (25006). The doors: the routes, the lanes in front of
FastAPI (app/api/lane.py, app/api/write_lane.py) and the health probes. A lane's 503
counts toward a live migration's automatic rollback as a route's does.
"""

from __future__ import annotations

import datetime as dt
import secrets
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import make_url
from starlette.types import Receive, Scope, Send

from app import errors
from app.db import errors as db_errors
from app.db.live.capture import sqlite_install
from app.db.migrate import upgrade_async
from app.db.router import DatabaseRouter
from app.main import Service, create_app
from tests import factories, pgcluster
from tests.conftest import Postgres, _plain, create_database, drop_database, make_settings, unique
from tests.test_booking_rules import DAY, booking
from tests.test_health import assert_no_secret, until

API = "/api/v1"
HEALTH = ("/health/db", "/health/ready")


# -- a database and a role of the test's own ----------------------------------------------


@dataclass
class Database:
    name: str
    role: str
    password: str = field(repr=False)
    url: str = field(repr=False)  # the role's, on the primary
    admin: asyncpg.Connection = field(repr=False)  # the superuser's, on the postgres database

    def on(self, server_url: str) -> str:
        """This database as the role, on another server of the cluster (a standby)."""
        parsed = make_url(server_url).set(
            database=self.name, username=self.role, password=self.password
        )
        return pgcluster.SecretUrl(parsed.render_as_string(hide_password=False))

    async def end_sessions(self, column: str, value: str) -> None:
        """pg_terminate_backend for every session of the database or role, until all are gone."""
        others = f"FROM pg_stat_activity WHERE {column} = $1 AND pid <> pg_backend_pid()"
        await self.admin.fetch(f"SELECT pg_terminate_backend(pid) {others}", value)

        async def gone() -> bool:
            left: int = await self.admin.fetchval(f"SELECT count(*) {others}", value)
            return left == 0

        await until(gone, what=f"the sessions of {value} to end")

    async def copy_as(self, name: str) -> None:
        """This database copied as `name`, schema and grants. A template in use cannot be
        copied, and a running service may reconnect at any moment: its sessions are ended
        again until a copy finds none."""

        async def copied() -> bool:
            await self.end_sessions("datname", self.name)
            try:
                await self.admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.name}"')
            except asyncpg.ObjectInUseError:
                return False
            return True

        await until(copied, what=f"a copy of {self.name} no session uses")


@pytest.fixture
async def database(postgres: Postgres) -> AsyncIterator[Database]:
    name = unique("unavailable").replace("-", "_")
    # Characters a URL must encode, as real passwords have.
    password = pgcluster.Hidden(f"pw-{secrets.token_urlsafe(8)}@:/?#%+ &")
    superuser_url = await create_database(postgres, name)
    await upgrade_async(superuser_url)
    admin = await asyncpg.connect(_plain(postgres.with_database(postgres.primary_url, "postgres")))
    try:
        statement = await admin.fetchval(
            "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)", name, password
        )
        await admin.execute(statement)
        owner = await asyncpg.connect(_plain(superuser_url))
        try:
            await owner.execute(
                f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{name}";'
                f'GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO "{name}"'
            )
        finally:
            await owner.close()
        url = make_url(superuser_url).set(username=name, password=password)
        shown = pgcluster.SecretUrl(url.render_as_string(hide_password=False))
        yield Database(name, name, password, shown, admin)
    finally:
        await drop_database(postgres, name)
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()


# -- PostgreSQL's refusals ------------------------------------------------------------------


@asynccontextmanager
async def refusing(db: Database) -> AsyncIterator[str]:
    """The database set to ALLOW_CONNECTIONS false and its sessions ended: 55000."""
    await db.admin.execute(f'ALTER DATABASE "{db.name}" ALLOW_CONNECTIONS false')
    try:
        await db.end_sessions("datname", db.name)
        yield "55000"
    finally:
        await db.admin.execute(f'ALTER DATABASE "{db.name}" ALLOW_CONNECTIONS true')


@asynccontextmanager
async def full(db: Database) -> AsyncIterator[str]:
    """The role's CONNECTION LIMIT reached by another client, the service's sessions ended:
    53300."""
    await db.admin.execute(f'ALTER ROLE "{db.role}" CONNECTION LIMIT 1')
    try:
        await db.end_sessions("usename", db.role)
        holder = await asyncpg.connect(_plain(db.url))
        try:
            yield "53300"
        finally:
            await holder.close()
    finally:
        await db.admin.execute(f'ALTER ROLE "{db.role}" CONNECTION LIMIT -1')


Outage = Callable[[Database], AbstractAsyncContextManager[str]]


async def refusal(url: str) -> str | None:
    """The SQLSTATE PostgreSQL answers a new connection with, None when it takes it."""
    try:
        conn = await asyncpg.connect(_plain(url))
    except asyncpg.PostgresError as exc:
        return str(exc.sqlstate)
    await conn.close()
    return None


async def refused_write(url: str) -> str | None:
    """The SQLSTATE PostgreSQL answers a write with, None when it takes it."""
    conn = await asyncpg.connect(_plain(url))
    try:
        await conn.execute("UPDATE users SET name = name WHERE false")
    except asyncpg.PostgresError as exc:
        return str(exc.sqlstate)
    finally:
        await conn.close()
    return None


# -- the service ----------------------------------------------------------------------------


@dataclass
class Shop:
    user_id: int
    barber_id: int
    service_id: int
    location_id: int
    payment_id: int


async def shop(app: FastAPI) -> Shop:
    async with factories.committed(app) as session:
        loc = await factories.location(session)
        barber = await factories.user(session, "barber", location_id=loc.id)
        user = await factories.user(session)
        svc = await factories.service(session, loc.id)
        paid = await factories.payment(session, user_id=user.id, location_id=loc.id, amount="25.00")
        return Shop(user.id, barber.id, svc.id, loc.id, paid.id)


@dataclass
class Door:
    method: str
    url: str
    options: dict[str, Any]
    lane: str | None  # the lane in front of its route, if any


def doors(ids: Shop, slot: int) -> list[Door]:
    """A user read, a booking, a payment and a read on an ORM session; `slot` keeps the
    bookings apart."""
    booked = booking(
        {
            "user_id": ids.user_id,
            "barber_id": ids.barber_id,
            "service_id": ids.service_id,
            "location_id": ids.location_id,
        },
        DAY + dt.timedelta(hours=slot),
    )
    payment = {"user_id": ids.user_id, "location_id": ids.location_id, "amount": "25.00"}
    return [
        Door("GET", f"{API}/users/{ids.user_id}", {}, "read"),
        Door("POST", f"{API}/appointments", {"json": booked}, "booking"),
        Door(
            "POST",
            f"{API}/payments",
            {"json": payment, "headers": {"Idempotency-Key": uuid.uuid4().hex}},
            None,
        ),
        Door("GET", f"{API}/payments/{ids.payment_id}", {}, None),
    ]


@dataclass
class Served:
    app: Service
    client: httpx.AsyncClient
    verdicts: list[tuple[str, bool]]  # the read lane's verdict on each request, by path

    async def send(self, door: Door) -> httpx.Response:
        return await self.client.request(door.method, door.url, **door.options)

    def read_by_lane(self) -> list[bool]:
        """Whether the read lane answered each user read, or left it to the route."""
        return [verdict for path, verdict in self.verdicts if path.startswith(f"{API}/users/")]

    def booked_by_lane(self) -> float:
        registry = self.app.state.metrics_registry
        value = registry.get_sample_value("booking_lane_requests_total", {"answered_by": "lane"})
        return float(value or 0)


@asynccontextmanager
async def served(**settings: Any) -> AsyncIterator[Served]:
    app = create_app(make_settings(**settings))
    assert isinstance(app, Service)
    async with app.router.lifespan_context(app):
        verdicts: list[tuple[str, bool]] = []
        answer = app.lane.answer

        async def watched(scope: Scope, receive: Receive, send: Send) -> bool:
            try:
                verdict = await answer(scope, receive, send)
            except Exception:
                # The lane took it: the edge stack's last resort answers what it raised.
                verdicts.append((scope["path"], True))
                raise
            verdicts.append((scope["path"], verdict))
            return verdict

        app.lane.answer = watched  # type: ignore[method-assign]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Served(app, client, verdicts)


def assert_unavailable(response: httpx.Response, what: str, *secrets: str) -> None:
    assert response.status_code == 503, (what, response.status_code, response.text)
    assert int(response.headers["retry-after"]) >= 1, what
    body = response.json()
    assert body["error"] == "unavailable", (what, body)
    assert set(body) == {"error", "detail"}, (what, body)
    assert_no_secret(response.text, *secrets)


# -- every door -----------------------------------------------------------------------------


@pytest.mark.parametrize("outage", [refusing, full], ids=["not_accepting", "too_many"])
@pytest.mark.parametrize("lanes", [True, False], ids=["lanes", "routes"])
async def test_every_door_answers_503_while_the_database_cannot_serve(
    database: Database, outage: Outage, lanes: bool
) -> None:
    async with served(primary=database.url, hot_reads=lanes) as service:
        ids = await shop(service.app)
        for door in doors(ids, slot=0):
            response = await service.send(door)
            assert response.status_code in (200, 201), (door.url, response.text)
        async with outage(database) as sqlstate:
            assert await refusal(database.url) == sqlstate
            # The first round meets the pool's dead connections, the second new refusals.
            for slot in (1, 2):
                for door in doors(ids, slot):
                    response = await service.send(door)
                    assert_unavailable(response, f"{door.method} {door.url}", database.password)
            for path in HEALTH:
                response = await service.client.get(path)
                assert response.status_code == 503, (path, response.text)
                assert int(response.headers["retry-after"]) >= 1, path
                assert_no_secret(response.text, database.password)
        for door in doors(ids, slot=3):
            response = await service.send(door)
            assert response.status_code in (200, 201), (door.url, response.text)
        for path in HEALTH:
            assert (await service.client.get(path)).status_code == 200, path
        # Whoever answered: the lanes every time they were on, the routes otherwise.
        assert service.read_by_lane() == [lanes] * 4
        assert service.booked_by_lane() == (4 if lanes else 0)


async def test_writes_reaching_a_standby_answer_503(database: Database, postgres: Postgres) -> None:
    """After a failover the service's primary URL may reach a standby: 25006 on each write."""
    async with served(primary=database.url) as primary:
        ids = await shop(primary.app)
    async with served(primary=database.on(postgres.replica_urls[0])) as standby:

        async def replayed() -> bool:
            return (await standby.send(doors(ids, 0)[0])).status_code == 200

        await until(replayed, what="the standby to replay the shop")
        assert await refused_write(database.on(postgres.replica_urls[0])) == "25006"
        writes = [door for door in doors(ids, slot=0) if door.method == "POST"]
        for door in writes:
            assert_unavailable(await standby.send(door), door.url, database.password)
        assert standby.booked_by_lane() == 1


# -- the automatic rollback -----------------------------------------------------------------


@pytest.mark.parametrize("lane", ["read", "booking"])
async def test_the_lanes_503s_count_toward_the_automatic_rollback(
    database: Database, tmp_path: Path, lane: str
) -> None:
    """A live migration serving PostgreSQL: one lane's 503s alone switch it back to SQLite."""
    path = tmp_path / "live.db"
    sqlite_url = f"sqlite+aiosqlite:///{path}"
    await upgrade_async(sqlite_url)
    with sqlite3.connect(path) as lite:
        for statement in sqlite_install(active="postgresql"):
            lite.execute(statement)
    lite.close()
    window = 5.0
    settings = {
        "primary": sqlite_url,
        "migration_target_url": SecretStr(database.url),
        "migration_poll_seconds": 0.05,
        "migration_auto_rollback": True,
        "migration_rollback_window_seconds": window,
        "migration_rollback_error_rate": 1.0,
    }
    async with served(**settings) as service:
        app = service.app
        backend = (await service.client.get("/health/db")).json()["backend"]
        assert backend["active"] == "postgresql"
        ids = await shop(app)
        on_lane = [door for door in doors(ids, slot=0) if door.lane == lane]
        async with refusing(database):

            async def rolled_back() -> bool:
                for door in on_lane:
                    read, booked = len(service.read_by_lane()), service.booked_by_lane()
                    response = await service.send(door)
                    router: DatabaseRouter = app.state.db
                    if router.sqlite:  # switched meanwhile: this answer may be SQLite's
                        return True
                    assert_unavailable(response, door.url, database.password)
                    # Answered by its lane: nothing else answered what counted.
                    if door.lane == "read":
                        assert service.read_by_lane()[read:] == [True]
                    else:
                        assert service.booked_by_lane() == booked + 1
                return False

            await until(rolled_back, limit=window + 20, what="the automatic rollback")
        backend = (await service.client.get("/health/db")).json()["backend"]
        assert backend["active"] == "sqlite"
        assert backend["switches"][-1]["reason"].startswith("auto rollback")
        # By the lane's errors, not by the watch's ping going unanswered for a window.
        assert "database errors" in backend["switches"][-1]["reason"], backend["switches"]
        registry = app.state.metrics_registry
        switches = {"to": "sqlite", "reason": "auto_rollback"}
        assert registry.get_sample_value("bookedbarber_db_backend_switches_total", switches) == 1


# -- one classification ---------------------------------------------------------------------

# Every SQLSTATE that means "cannot serve now", by the driver's own exception class.
UNAVAILABLE = {
    "08000": asyncpg.PostgresConnectionError,
    "08001": asyncpg.ClientCannotConnectError,
    "08003": asyncpg.ConnectionDoesNotExistError,
    "08004": asyncpg.ConnectionRejectionError,
    "08006": asyncpg.ConnectionFailureError,
    "08007": asyncpg.TransactionResolutionUnknownError,
    "08P01": asyncpg.ProtocolViolationError,
    "57P01": asyncpg.AdminShutdownError,
    "57P02": asyncpg.CrashShutdownError,
    "57P03": asyncpg.CannotConnectNowError,
    "55000": asyncpg.ObjectNotInPrerequisiteStateError,
    "53300": asyncpg.TooManyConnectionsError,
    "25006": asyncpg.ReadOnlySQLTransactionError,
}


def wrapped(exc: Exception) -> sa_exc.DBAPIError:
    """`exc` as SQLAlchemy raises it, the driver's exception as `orig`."""
    return sa_exc.DBAPIError("SELECT 1", None, exc)


@pytest.mark.parametrize("sqlstate", sorted(UNAVAILABLE))
def test_each_unavailable_sqlstate_is_classified_as_unavailable(sqlstate: str) -> None:
    raised = UNAVAILABLE[sqlstate]("the server's words")
    assert raised.sqlstate == sqlstate
    for exc in (raised, wrapped(raised)):
        assert db_errors.failure(exc) == "connection", (sqlstate, type(exc))
        response = errors.database_response(exc, wait=3)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "3"
        assert orjson.loads(bytes(response.body))["error"] == "unavailable"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (asyncpg.QueryCanceledError("x"), "busy"),  # statement_timeout: a 503 of its own
        (asyncpg.UndefinedTableError("x"), None),  # a bug: a 500
        (asyncpg.ObjectInUseError("x"), None),  # 55006, beside 55000 in class 55
        (asyncpg.DiskFullError("x"), None),  # 53100, beside 53300 in class 53
    ],
)
def test_other_failures_keep_their_kind(exc: asyncpg.PostgresError, kind: str | None) -> None:
    assert db_errors.failure(exc) == kind
    assert db_errors.failure(wrapped(exc)) == kind


async def test_a_closed_connection_is_unavailable(database: Database) -> None:
    """The driver's closed connection, as SQLAlchemy raises it and as a RoutedConnection does."""
    async with served(primary=database.url) as service:
        router: DatabaseRouter = service.app.state.db
        async with router.primary.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.close()
            with pytest.raises(sa_exc.DBAPIError) as raised:
                await conn.execute(text("SELECT 1"))
        assert raised.value.connection_invalidated
        assert db_errors.failure(raised.value) == "connection"
    reader_says = ConnectionResetError("the database closed the connection")
    for exc in (reader_says, asyncpg.ConnectionDoesNotExistError("closed mid-operation")):
        assert db_errors.failure(exc) == "connection"
