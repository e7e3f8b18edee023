"""A database that will not take the service's login: 503 at every door, told once, healed
without a restart.

PostgreSQL's own refusals, on a database and a role of the test's: a wrong password
(28P01), a role that may not log in (28000), no CONNECT privilege on the database
(42501), a database that does not exist (3D000). Each is fixed while the service runs
(the password changed, LOGIN given back, CONNECT granted, the database created) and the
service serves again by itself. The secrets carry every character URLs and logs encode.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from app import errors
from app.db import errors as db_errors
from app.db.access import REFUSED_RETRY_SECONDS
from app.db.errors import Refused
from app.logs import JsonFormatter, TextFormatter
from tests.conftest import Postgres, _plain, collect_earlier_garbage
from tests.leaks import leaks, secret
from tests.test_health import until
from tests.test_unavailable import (
    API,
    Database,
    Door,
    doors,
    served,
    shop,
)
from tests.test_unavailable import database as database
from tests.test_unavailable import refusal as answer_to

ACCESS_LOGGER = "app.db.access"
REFUSES = "database refuses the service's connections"
TAKES = "database takes the service's connections again"


# -- the refusals and their fixes -------------------------------------------------------


@dataclass
class Case:
    """A database of the test's made to refuse the service, and fixed again."""

    url: str = field(repr=False)  # what the service is configured with
    sqlstate: str
    reason: str
    fix: Callable[[], Awaitable[None]] = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)


async def _execute(db: Database, sql: str, *args: object) -> None:
    await db.admin.execute(sql, *args)


async def wrong_password(db: Database) -> Case:
    wrong = secret()
    url = make_url(db.url).set(password=wrong).render_as_string(hide_password=False)

    async def change_password() -> None:
        await set_password(db, db.role, wrong)

    return Case(url, "28P01", "login_refused", change_password, (db.password, wrong))


async def no_login(db: Database) -> Case:
    await db.admin.execute(f'ALTER ROLE "{db.role}" NOLOGIN')

    async def give_login() -> None:
        await db.admin.execute(f'ALTER ROLE "{db.role}" LOGIN')

    return Case(db.url, "28000", "login_refused", give_login, (db.password,))


async def no_connect(db: Database) -> Case:
    await db.admin.execute(f'REVOKE CONNECT ON DATABASE "{db.name}" FROM PUBLIC')

    async def grant() -> None:
        await db.admin.execute(f'GRANT CONNECT ON DATABASE "{db.name}" TO "{db.role}"')

    return Case(db.url, "42501", "no_connect_privilege", grant, (db.password,))


async def no_database(db: Database) -> Case:
    missing = f"{db.name}_later"
    url = make_url(db.url).set(database=missing).render_as_string(hide_password=False)

    async def create() -> None:
        # The test's database as the template: its schema and grants come along.
        await db.copy_as(missing)

    return Case(url, "3D000", "no_such_database", create, (db.password,))


REFUSALS = {
    "wrong_password": wrong_password,
    "no_login": no_login,
    "no_connect": no_connect,
    "no_database": no_database,
}


@asynccontextmanager
async def refusal_of(db: Database, name: str) -> AsyncIterator[Case]:
    case = await REFUSALS[name](db)
    try:
        yield case
    finally:
        await db.admin.execute(f'DROP DATABASE IF EXISTS "{db.name}_later" WITH (FORCE)')


# -- what the service logged ------------------------------------------------------------


class Captured(logging.Handler):
    """Every record of every logger, rendered by both of the service's formatters."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.rendered: list[str] = []
        self.formatters = (JsonFormatter(), TextFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        record.request_id = None
        self.records.append(record)
        self.rendered.extend(f.format(record) for f in self.formatters)

    def messages(self, message: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.getMessage() == message]


@pytest.fixture
def captured() -> AsyncIterator[Captured]:
    collect_earlier_garbage()
    handler = Captured()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler  # type: ignore[misc]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def unavailable(response: httpx.Response, what: str, *values: str) -> None:
    assert response.status_code == 503, (what, response.status_code)
    assert int(response.headers["retry-after"]) >= 1, what
    body = response.json()
    assert body == {"error": "unavailable", "detail": body["detail"]}, (what, body)
    assert not leaks(response.text, *values), what


def fake_doors() -> list[Door]:
    """A read, a booking, a payment and an ORM read, on ids that need no database."""
    from tests.test_unavailable import Shop

    return doors(Shop(1, 2, 3, 4, 5), slot=0)


# -- the primary ------------------------------------------------------------------------


@pytest.mark.parametrize("lanes", [True, False], ids=["lanes", "routes"])
@pytest.mark.parametrize("refusal", sorted(REFUSALS))
async def test_a_refused_login_answers_503_is_told_once_and_heals(
    database: Database, captured: Captured, refusal: str, lanes: bool
) -> None:
    async with refusal_of(database, refusal) as case:
        assert await answer_to(case.url) == case.sqlstate
        async with served(primary=case.url, hot_reads=lanes) as service:
            for _ in range(3):
                for door in fake_doors():
                    unavailable(await service.send(door), door.url, *case.secrets)
                for path in ("/health/db", "/health/ready"):
                    response = await service.client.get(path)
                    unavailable_health = response.json()
                    assert response.status_code == 503, path
                    assert int(response.headers["retry-after"]) >= 1, path
                    primary = unavailable_health.get("primary", unavailable_health)
                    assert primary["status"] == "unhealthy", path
                    assert primary["error"] == case.reason, (path, primary)
                    assert not leaks(response.text, *case.secrets), path
            metrics = (await service.client.get("/metrics")).text
            assert not leaks(metrics, *case.secrets)
            # Twelve requests and six probes refused: one line, when it began.
            began = captured.messages(REFUSES)
            assert [(r.database, r.reason, r.sqlstate) for r in began] == [  # type: ignore[attr-defined]
                ("primary", case.reason, case.sqlstate)
            ]
            assert [r for r in captured.records if r.exc_info] == []
            loud = [r.getMessage() for r in captured.records if r.levelno >= logging.WARNING]
            assert loud == [REFUSES], loud
            assert service.read_by_lane() == [lanes] * 3
            assert service.booked_by_lane() == (3 if lanes else 0)

            await case.fix()
            assert await answer_to(case.url) is None

            async def ready() -> bool:
                return (await service.client.get("/health/ready")).status_code == 200

            await until(ready, what="the service to take the fixed database")
            ids = await shop(service.app)
            for door in doors(ids, slot=1):
                response = await service.send(door)
                assert response.status_code in (200, 201), (door.url, response.status_code)
            ended = captured.messages(TAKES)
            assert [(r.database, r.was) for r in ended] == [("primary", case.reason)]  # type: ignore[attr-defined]
            assert len(captured.messages(REFUSES)) == 1
    logged = "\n".join(captured.rendered)
    assert not leaks(logged, *case.secrets)
    assert "pw-" not in logged


@pytest.mark.parametrize("lanes", [True, False], ids=["lanes", "routes"])
async def test_a_login_taken_away_from_a_running_service(
    database: Database, captured: Captured, lanes: bool
) -> None:
    """The pool's connections end with the login: the next ones are refused, then taken."""
    async with served(primary=database.url, hot_reads=lanes) as service:
        ids = await shop(service.app)
        for door in doors(ids, slot=0):
            assert (await service.send(door)).status_code in (200, 201), door.url
        await database.admin.execute(f'ALTER ROLE "{database.role}" NOLOGIN')
        await database.end_sessions("usename", database.role)
        for slot in (1, 2, 3):
            for door in doors(ids, slot):
                unavailable(await service.send(door), door.url, database.password)
        assert [r.reason for r in captured.messages(REFUSES)] == ["login_refused"]  # type: ignore[attr-defined]
        await database.admin.execute(f'ALTER ROLE "{database.role}" LOGIN')

        async def ready() -> bool:
            return (await service.client.get("/health/ready")).status_code == 200

        await until(ready, what="the login given back")
        for door in doors(ids, slot=4):
            assert (await service.send(door)).status_code in (200, 201), door.url
        assert len(captured.messages(TAKES)) == 1
        assert service.read_by_lane() == [lanes] * 5
    loud = [r.getMessage() for r in captured.records if r.levelno >= logging.WARNING]
    # Besides: a request that met a pooled connection the server had just ended (a lost
    # connection, told as such), before any new one was refused.
    assert [m for m in loud if m != "database unavailable"] == [REFUSES, TAKES], loud
    assert loud.index(REFUSES) == len(loud) - 2, loud
    assert [r for r in captured.records if r.exc_info] == []
    assert not leaks("\n".join(captured.rendered), database.password)


async def test_a_refusing_database_is_asked_at_most_once_a_period(
    database: Database, postgres: Postgres
) -> None:
    """Requests in between are answered from the last refusal: PostgreSQL's log shows
    one failed login per REFUSED_RETRY_SECONDS, not one per request."""
    if postgres.cluster is None:
        pytest.skip("the server's log is the judge: a cluster of the suite's own is needed")
    logfile = postgres.cluster.primary.logfile
    case = await wrong_password(database)
    failed_login = f'password authentication failed for user "{database.role}"'
    before = logfile.read_text(errors="replace").count(failed_login)
    async with served(primary=case.url) as service:
        started = time.monotonic()
        answered = 0
        while answered < 40 or time.monotonic() - started < 2.5 * REFUSED_RETRY_SECONDS:
            for door in fake_doors():
                unavailable(await service.send(door), door.url, *case.secrets)
                answered += 1
        elapsed = time.monotonic() - started
    attempts = logfile.read_text(errors="replace").count(failed_login) - before
    # Start-up's own look at max_connections (app/db/budget.py) is one more login.
    assert 2 <= attempts <= elapsed / REFUSED_RETRY_SECONDS + 2, (attempts, answered, elapsed)
    assert answered > 4 * attempts


# -- replicas and the analytics replica ---------------------------------------------------


async def set_password(db: Database, role: str, password: str) -> None:
    statement = await db.admin.fetchval(
        "SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)", role, password
    )
    await db.admin.execute(statement)


class Replay:
    """The standby's replay, paused and resumed: what the primary does meanwhile is not
    there yet (a database created on the primary is missing on the standby until then)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def pause(self) -> None:
        await self.conn.execute("SELECT pg_wal_replay_pause()")

    async def resume(self) -> None:
        await self.conn.execute("SELECT pg_wal_replay_resume()")


@asynccontextmanager
async def replay(postgres: Postgres) -> AsyncIterator[Replay]:
    conn = await asyncpg.connect(
        _plain(postgres.with_database(postgres.replica_urls[0], "postgres"))
    )
    try:
        yield Replay(conn)
    finally:
        await conn.execute("SELECT pg_wal_replay_resume()")
        await conn.close()


@pytest.mark.parametrize("reason", ["login_refused", "no_such_database"])
async def test_a_replica_refusing_the_login_leaves_rotation_with_its_reason(
    database: Database, postgres: Postgres, captured: Captured, reason: str
) -> None:
    # A login of its own: changing its password leaves the primary's login alone.
    role, given, wrong = f"{database.role}_r", secret(), secret()
    later = f"{database.name}_later"
    await database.admin.execute(f'CREATE ROLE "{role}"')
    await set_password(database, role, given)
    standby = make_url(database.on(postgres.replica_urls[0])).set(username=role, password=given)
    known = standby.render_as_string(hide_password=False)
    primary = database.url
    if reason == "login_refused":
        standby = standby.set(password=wrong)
    else:
        # The primary's database created while the standby does not replay: missing there
        # until it does (the same database, OID and all: a copy of this primary's).
        standby = standby.set(database=later)
        primary = make_url(database.url).set(database=later).render_as_string(hide_password=False)
    replica_url = standby.render_as_string(hide_password=False)
    sqlstate = "28P01" if reason == "login_refused" else "3D000"

    # The standby knows the new role once its own password logs in there. A wrong password
    # is no sign of it: with SCRAM an unknown role is refused with the same 28P01.
    async def replayed() -> bool:
        return await answer_to(known) is None

    async with replay(postgres) as standby_replay:
        try:
            await until(replayed, what="the standby to replay the role")
            if reason == "no_such_database":
                await standby_replay.pause()
                await database.copy_as(later)
            assert await answer_to(replica_url) == sqlstate
            async with served(primary=primary, replicas=[replica_url]) as service:
                response = await service.client.get("/health/replicas")
                assert response.status_code == 503
                (entry,) = response.json()["replicas"]
                assert (entry["status"], entry["in_rotation"], entry["reason"]) == (
                    "unhealthy",
                    False,
                    reason,
                )
                assert not leaks(response.text, database.password, given, wrong)
                ids = await shop(service.app)
                for _ in range(3):  # reads go to the primary meanwhile
                    for door in doors(ids, slot=0)[:1] + doors(ids, slot=0)[3:]:
                        got = await service.send(door)
                        assert got.status_code == 200, (door.url, got.status_code)
                began = captured.messages(REFUSES)
                assert [(r.database, r.reason) for r in began] == [("replica-0", reason)]  # type: ignore[attr-defined]

                if reason == "login_refused":
                    await set_password(database, role, wrong)
                else:
                    await standby_replay.resume()

                async def back() -> bool:
                    report = (await service.client.get("/health/replicas")).json()
                    return bool(report["replicas"][0]["in_rotation"])

                await until(back, what="the replica back in rotation")
                assert [(r.database, r.was) for r in captured.messages(TAKES)] == [  # type: ignore[attr-defined]
                    ("replica-0", reason)
                ]
        finally:
            await standby_replay.resume()
            await database.admin.execute(f'DROP DATABASE IF EXISTS "{later}" WITH (FORCE)')
            await database.admin.execute(f'DROP ROLE IF EXISTS "{role}"')
    logged = "\n".join(captured.rendered)
    assert not leaks(logged, database.password, given, wrong)


async def test_the_analytics_replica_refusing_leaves_service_and_heals(
    database: Database, postgres: Postgres, captured: Captured
) -> None:
    missing = f"{database.name}_later"
    analytics = make_url(database.on(postgres.replica_urls[0])).set(database=missing)
    url = analytics.render_as_string(hide_password=False)
    primary = make_url(database.url).set(database=missing).render_as_string(hide_password=False)
    revenue = f"{API}/locations/1/revenue?start=2026-01-01&end=2026-01-31"

    async def replayed() -> bool:  # the standby knows the test's role
        return await answer_to(url) == "3D000"

    async with replay(postgres) as standby_replay:
        try:
            await until(replayed, what="the standby to replay the role")
            # The primary's database created while the standby does not replay (see above).
            await standby_replay.pause()
            await database.copy_as(missing)
            async with served(primary=primary, analytics_database_url=url) as service:
                # Held to a replica's rules: out of service with its reason, its queries are
                # answered elsewhere (location 1 does not exist: a database answered).
                for _ in range(3):
                    assert (await service.client.get(revenue)).status_code == 404
                entry = (await service.client.get("/health/replicas")).json()["analytics"]
                assert entry["reason"] == "no_such_database"
                assert entry["in_rotation"] is False
                assert entry["connection"] == {"status": "refused", "reason": "no_such_database"}
                began = captured.messages(REFUSES)
                assert [(r.database, r.reason) for r in began] == [
                    ("analytics", "no_such_database")
                ]  # type: ignore[attr-defined]
                await standby_replay.resume()

                async def back() -> bool:
                    entry = (await service.client.get("/health/replicas")).json()["analytics"]
                    return bool(entry["in_rotation"])

                await until(back, what="analytics on the created database")
                entry = (await service.client.get("/health/replicas")).json()["analytics"]
                assert entry["connection"] == {"status": "connected", "reason": None}
                assert (await service.client.get(revenue)).status_code == 404
                assert len(captured.messages(TAKES)) == 1
        finally:
            await standby_replay.resume()
            await database.admin.execute(f'DROP DATABASE IF EXISTS "{missing}" WITH (FORCE)')
    assert not leaks("\n".join(captured.rendered), database.password)


# -- one classification -------------------------------------------------------------------

REFUSED = {
    "28P01": (asyncpg.InvalidPasswordError, "login_refused"),
    "28000": (asyncpg.InvalidAuthorizationSpecificationError, "login_refused"),
    "3D000": (asyncpg.InvalidCatalogNameError, "no_such_database"),
}


@pytest.mark.parametrize("sqlstate", sorted(REFUSED))
def test_each_refusal_is_classified_by_its_sqlstate(sqlstate: str) -> None:
    cls, reason = REFUSED[sqlstate]
    raised = cls("the server's words")
    assert raised.sqlstate == sqlstate
    for exc in (raised, wrapped(raised), Refused(reason, sqlstate)):  # type: ignore[arg-type]
        assert db_errors.refusal(exc) == reason
        assert db_errors.failure(exc) == "refused"
        response = errors.database_response(exc, wait=3)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "3"
        assert json.loads(bytes(response.body))["error"] == "unavailable"


def test_no_connect_privilege_is_a_refusal_only_while_connecting() -> None:
    exc = asyncpg.InsufficientPrivilegeError("permission denied")
    assert db_errors.refusal(exc, connecting=True) == "no_connect_privilege"
    # On a statement, a missing grant: the service's bug, a 500.
    assert db_errors.refusal(exc) is None
    assert db_errors.failure(wrapped(exc)) is None


def wrapped(exc: Exception) -> Exception:
    from sqlalchemy import exc as sa_exc

    return sa_exc.DBAPIError("SELECT 1", None, exc)
