"""Users: create, get with ?include=, search with keyset pages, bearer tokens."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import event, func, select

from app.config import Settings
from app.db.models import User
from app.main import create_app
from tests import factories, races
from tests.conftest import Postgres, make_settings

API = "/api/v1"


def word() -> str:
    """A fresh letters-only word: full-text search parses it as one lexeme."""
    return "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:12])


@contextmanager
def statements(app: FastAPI) -> Iterator[list[tuple[str, Any]]]:
    """Every statement any engine of the app runs meanwhile."""
    seen: list[tuple[str, Any]] = []

    def record(_c: Any, _cur: Any, sql: str, params: Any, _ctx: Any, _many: bool) -> None:
        seen.append((sql, params))

    # Statements on asyncpg in autocommit (app/db/statements.py) go to the driver directly and
    # report it to the metrics instead of through the engine's events.
    collected = app.state.db_metrics
    recorded = collected.record_statement

    def hot(engine: Any, sql: str, elapsed: float, rows: int) -> None:
        seen.append((sql.strip(), None))
        recorded(engine, sql, elapsed, rows)

    engines = [engine.sync_engine for _, engine in app.state.db.engines()]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    collected.record_statement = hot
    try:
        yield seen
    finally:
        del collected.record_statement
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


async def test_create_user(client: httpx.AsyncClient) -> None:
    email = f"{uuid.uuid4().hex}@example.com"
    body = {"email": email, "name": "Ana Silva", "phone": "+1 555 0100", "unified_role": "barber"}
    created = await client.post(f"{API}/users", json=body)
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["email"] == email
    assert user["unified_role"] == "barber"
    assert user["id"] > 0
    assert user["is_active"] is True
    assert user["created_at"].endswith("Z")

    fetched = await client.get(f"{API}/users/{user['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == user  # no include: no relation keys at all

    again = await client.post(f"{API}/users", json={**body, "name": "Someone Else"})
    assert again.status_code == 409
    assert again.json() == {"error": "conflict", "detail": "a user with this email already exists"}


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "name": "X"},
        {"email": "a@b.c", "name": ""},
        {"email": "a@b.c", "name": "x" * 201},
        {"email": "a@b.c", "name": "nul\x00byte"},
        {"email": "a@b.c", "name": "   "},
        {"email": "a@b.c", "name": "\t\n"},
        {"email": "a@b.c", "name": "X", "unified_role": "wizard"},
        {"email": "a@b.c", "name": "X", "location_id": 0},
        {"email": "a@b.c", "name": "X", "location_id": 2**63},
        {"email": "a@b.c"},
    ],
)
async def test_create_user_rejects_bad_input(client: httpx.AsyncClient, body: object) -> None:
    response = await client.post(f"{API}/users", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"


async def test_create_user_with_unknown_location(client: httpx.AsyncClient) -> None:
    body = {"email": f"{uuid.uuid4().hex}@example.com", "name": "X", "location_id": 2**62}
    response = await client.post(f"{API}/users", json=body)
    assert response.status_code == 422
    assert response.json()["detail"] == f"location {2**62} does not exist"


async def _user_with_everything(app: FastAPI, client: httpx.AsyncClient, n: int) -> int:
    start = dt.datetime(2031, 1, 6, 9, tzinfo=dt.UTC) + dt.timedelta(days=uuid.uuid4().int % 5000)
    async with factories.committed(app, client) as session:
        loc = await factories.location(session)
        barber = await factories.user(session, "barber")
        user = await factories.user(session)
        svc = await factories.service(session, loc.id)
        ids = {"user_id": user.id, "barber_id": barber.id, "service_id": svc.id}
        for i in range(n):
            await factories.appointment(
                session, **ids, location_id=loc.id, start=start + dt.timedelta(minutes=30 * i)
            )
        await factories.payment(session, user_id=user.id, location_id=loc.id, amount="19.99")
        await factories.membership(session, user.id, role="owner")
        return user.id


async def test_get_user_includes_only_what_is_asked(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    user_id = await _user_with_everything(app, client, 2)

    url = f"{API}/users/{user_id}"
    only = (await client.get(url, params={"include": "appointments"})).json()
    assert len(only["appointments"]) == 2
    assert {"payments", "organizations", "stripe_account"}.isdisjoint(only)
    assert only["appointments"][0]["start_time"] < only["appointments"][1]["start_time"]

    full = await client.get(url, params={"include": "appointments,payments,organizations"})
    assert full.status_code == 200
    body = full.json()
    assert [p["amount"] for p in body["payments"]] == ["19.99"]
    [org] = body["organizations"]
    assert org["role"] == "owner"
    assert org["slug"].startswith("org-")

    seed = (await client.get(url, params={"include": "stripe_account,organizations"})).json()
    assert seed["stripe_account"] is None
    assert "appointments" not in seed


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/users/1?include=wallet", 422),
        ("/users/1?include=appointments,,payments", 422),
        ("/users/0", 422),
        ("/users/-3", 422),
        (f"/users/{2**63}", 422),
        ("/users/abc", 422),
        (f"/users/{2**63 - 1}", 404),
    ],
)
async def test_get_user_errors(client: httpx.AsyncClient, path: str, status: int) -> None:
    response = await client.get(API + path)
    assert response.status_code == status, response.text
    assert "error" in response.json()


async def test_get_user_statement_count_does_not_grow(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    few = await _user_with_everything(app, client, 1)
    many = await _user_with_everything(app, client, 500)
    include = {"include": "appointments,payments,organizations"}

    counts = {}
    for user_id, expected in ((few, 1), (many, 500)):
        with statements(app) as seen:
            response = await client.get(f"{API}/users/{user_id}", params=include)
        assert response.status_code == 200
        assert len(response.json()["appointments"]) == expected
        # Not counted: SQLite's BEGIN, and the replica monitor's probes (pg_* functions).
        queries = [sql for sql, _ in seen if sql.startswith("SELECT") and "pg_" not in sql]
        counts[expected] = len(queries)
    # No N+1: one statement, the user's row and its relations' (app/queries/reads.py).
    assert counts[1] == counts[500] == 1


async def test_list_users_search_and_keyset_pages(client: httpx.AsyncClient) -> None:
    surname = word()
    ids = []
    for first, role in (("Maria", "client"), ("Kwame", "barber"), ("Olivia", "client")):
        body = {
            "email": f"{uuid.uuid4().hex}@example.com",
            "name": f"{first} {surname}",
            "unified_role": role,
        }
        ids.append((await client.post(f"{API}/users", json=body)).json()["id"])

    first_page = (await client.get(f"{API}/users", params={"q": surname, "limit": 2})).json()
    assert [u["id"] for u in first_page["items"]] == ids[:2]
    assert first_page["next_after"] == ids[1]
    second = await client.get(
        f"{API}/users", params={"q": surname, "limit": 2, "after": first_page["next_after"]}
    )
    assert [u["id"] for u in second.json()["items"]] == ids[2:]
    assert second.json()["next_after"] is None

    barbers = (await client.get(f"{API}/users", params={"q": surname, "role": "barber"})).json()
    assert [u["id"] for u in barbers["items"]] == [ids[1]]
    both = (await client.get(f"{API}/users", params={"q": f"olivia {surname}"})).json()
    assert [u["id"] for u in both["items"]] == [ids[2]]
    assert (await client.get(f"{API}/users", params={"q": word()})).json()["items"] == []

    everyone = (await client.get(f"{API}/users", params={"limit": 100})).json()
    assert len(everyone["items"]) == 100 or everyone["next_after"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "+1"},
        {"limit": " 1"},
        {"after": "+0"},
        {"after": -1},
        {"after": 2**63},
        {"role": "x"},
        {"q": "q" * 201},
    ],
)
async def test_list_users_rejects_bad_params(client: httpx.AsyncClient, params: dict) -> None:
    assert (await client.get(f"{API}/users", params=params)).status_code == 422


async def test_list_users_like_fallback_escapes_wildcards(
    client: httpx.AsyncClient, backend: str
) -> None:
    surname = word()
    body = {"email": f"{uuid.uuid4().hex}@example.com", "name": f"Ann {surname}"}
    assert (await client.post(f"{API}/users", json=body)).status_code == 201
    found = (await client.get(f"{API}/users", params={"q": surname[:6] + "%"})).json()
    assert found["items"] == []
    if backend == "sqlite":  # substring match; full text matches whole words only
        found = (await client.get(f"{API}/users", params={"q": surname[2:8]})).json()
        assert [u["name"] for u in found["items"]] == [f"Ann {surname}"]


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_name_search_uses_the_gin_index(
    app: FastAPI, client: httpx.AsyncClient, postgres: Postgres
) -> None:
    with statements(app) as seen:
        response = await client.get(f"{API}/users", params={"q": "maria silva"})
    assert response.status_code == 200
    [(sql, params)] = [s for s in seen if "plainto_tsquery" in s[0]]
    conn = await asyncpg.connect(postgres.primary_url.replace("+asyncpg", ""))
    try:
        # With no statistics the planner guesses the table's rows from its pages and the
        # rows' width, and may take `id > 0` on pk_users as the more selective condition.
        await conn.execute("ANALYZE users")
        await conn.execute("SET enable_seqscan = off; SET enable_indexscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *params))
    finally:
        await conn.close()
    assert "idx_users_name_search" in plan, plan


async def test_bearer_tokens(settings: Settings) -> None:
    secured = make_settings(
        settings.primary_url,
        [u.get_secret_value() for u in settings.replica_urls],
        api_tokens=[SecretStr("first-token"), SecretStr("second-token")],
    )
    app = create_app(secured)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        body = {"email": f"{uuid.uuid4().hex}@example.com", "name": "Token Holder"}
        missing = await c.post(f"{API}/users", json=body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await c.get(f"{API}/users/1", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert "token" not in wrong.json()["detail"].replace("bearer token", "")
        right = await c.post(
            f"{API}/users", json=body, headers={"Authorization": "Bearer second-token"}
        )
        assert right.status_code == 201
        assert (await c.get("/health/live")).status_code == 200


# -- one account per email, whatever its case -------------------------------------------------


async def accounts_with(app: FastAPI, email: str) -> list[str]:
    async with factories.committed(app) as session:
        rows = await session.scalars(
            select(User.email).where(func.lower(User.email) == email.lower())
        )
        return list(rows)


async def test_emails_are_unique_whatever_their_case(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    local = uuid.uuid4().hex
    email = f"Ana.{local}@Example.com"
    created = await client.post(f"{API}/users", json={"email": email, "name": "Ana"})
    assert created.status_code == 201, created.text
    for variant in (email.lower(), email.upper(), f"ana.{local}@EXAMPLE.COM"):
        again = await client.post(f"{API}/users", json={"email": variant, "name": "Other"})
        assert again.status_code == 409, variant
        assert again.json() == {
            "error": "conflict",
            "detail": "a user with this email already exists",
        }
    assert await accounts_with(app, email) == [email]  # kept as given

    for query in (email, email.lower(), email.upper()):
        found = await client.get(f"{API}/users", params={"email": query})
        assert found.status_code == 200
        assert [u["id"] for u in found.json()["items"]] == [created.json()["id"]]
    none = await client.get(f"{API}/users", params={"email": f"x{local}@example.com"})
    assert none.json() == {"items": [], "next_after": None}


async def test_case_variant_emails_race(settings: Settings) -> None:
    """200 sign-ups of one address in as many spellings of its case: one account."""
    patient = make_settings(
        settings.primary_url, [u.get_secret_value() for u in settings.replica_urls], pool_timeout=60
    )
    app = create_app(patient)
    local = uuid.uuid4().hex[:10]
    variants = [
        "".join(c.upper() if i >> (j % 10) & 1 else c for j, c in enumerate(local))
        + ("@EXAMPLE.com" if i % 2 else "@example.COM")
        for i in range(200)
    ]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        responses = await asyncio.gather(
            *(client.post(f"{API}/users", json={"email": e, "name": "Racer"}) for e in variants)
        )
        assert races.statuses(responses, {201, 409})[201] == 1
        [winner] = [r.json()["email"] for r in responses if r.status_code == 201]
        assert await accounts_with(app, winner) == [winner]
