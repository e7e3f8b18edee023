"""One folding of emails on both backends (app.db.models.email_key), and migration 0007.

An account's email is unique whatever its case, for any Unicode email: SQLite's lower()
and NOCASE fold ASCII only and PostgreSQL's lower() follows the database's locale, so
the folding is Python's, stored in users.email_key. The expected keys below are written
out by hand, not computed by the function under test.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.db import transfer
from app.db.migrate import upgrade_async
from app.db.models import User, email_key
from app.main import create_app
from app.redaction import failure_line
from tests.conftest import database_at, make_settings, pg_fetch
from tests.test_booking_migration import revision, run
from tests.test_transfer import quiet

API = "/api/v1"

# (as first registered, a later spelling that is the same account)
SAME_ACCOUNT = [
    ("zoë@x.com", "ZOË@X.COM"),  # non-ASCII case: SQLite folded ASCII only
    ("zoë@x.com", "zoe\u0308@x.com"),  # the same letters, decomposed (NFD)
    ("straße@x.com", "STRASSE@X.COM"),  # full case folding: ß is ss
    ("ǅemal@x.com", "ǆEMAL@X.COM"),  # a titlecase letter and its lowercase
    ("Σίσυφος@x.com", "ΣΊΣΥΦΟΣ@x.com"),  # final sigma
    ("ana@example.com", "ANA@EXAMPLE.COM"),
]
OTHER_ACCOUNTS = [
    ("zoe@x.com", "zoë@x.com"),  # a diaeresis is not case
    ("ana@example.com", "ana.@example.com"),
    ("i@x.com", "\u0131@x.com"),  # dotless i folds to itself, not to i
]


def test_the_folding_is_nfc_casefold_nfc() -> None:
    assert email_key("ZOË@X.COM") == "zoë@x.com" == email_key("ZOE\u0308@x.com")
    assert unicodedata.is_normalized("NFC", email_key("ZOE\u0308@x.com"))
    assert email_key("STRAẞE@x.com") == "strasse@x.com"  # capital sharp s
    assert email_key("ΣΊΣΥΦΟΣ@x.com") == "σίσυφοσ@x.com"
    assert email_key("\u0131@x.com") == "\u0131@x.com"


def _tagged(email: str, tag: str) -> str:
    local, domain = email.rsplit("@", 1)
    return f"{local}+{tag}@{domain}"


@pytest.mark.parametrize(("first", "again"), SAME_ACCOUNT)
async def test_one_account_whatever_the_case(
    client: httpx.AsyncClient, first: str, again: str
) -> None:
    tag = uuid.uuid4().hex[:10]  # the suite's databases are shared: a fresh address
    first, again = _tagged(first, tag), _tagged(again, tag)
    created = await client.post(f"{API}/users", json={"email": first, "name": "First"})
    assert created.status_code == 201, created.text
    assert created.json()["email"] == first  # kept as given
    taken = await client.post(f"{API}/users", json={"email": again, "name": "Again"})
    assert taken.status_code == 409, taken.text
    assert taken.json() == {"error": "conflict", "detail": "a user with this email already exists"}
    found = await client.get(f"{API}/users", params={"email": again})
    assert [u["id"] for u in found.json()["items"]] == [created.json()["id"]]


@pytest.mark.parametrize(("one", "other"), OTHER_ACCOUNTS)
async def test_different_emails_stay_apart(client: httpx.AsyncClient, one: str, other: str) -> None:
    tag = uuid.uuid4().hex[:10]
    ids = []
    for email in (_tagged(one, tag), _tagged(other, tag)):
        response = await client.post(f"{API}/users", json={"email": email, "name": "Someone"})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
        found = await client.get(f"{API}/users", params={"email": email})
        assert [u["id"] for u in found.json()["items"]] == [ids[-1]]


async def test_every_insert_stores_the_key(app: FastAPI) -> None:
    """The ORM's own inserts (not only the route's) fill email_key: the column default."""
    tag = uuid.uuid4().hex[:8]
    async with app.state.db.session("write") as session:
        session.add(User(email=f"ÉLODIE.{tag}@X.COM", name="Élodie"))
        await session.commit()
    async with app.state.db.session("write") as session:
        stored = await session.scalar(
            select(User.email_key).where(User.email == f"ÉLODIE.{tag}@X.COM")
        )
    assert stored == f"élodie.{tag}@x.com"


# -- migration 0007 ---------------------------------------------------------------------


@pytest.fixture
async def at_0006(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """A new database at the revision before users.email_key."""
    async with database_at("0006", backend, request, tmp_path) as url:
        yield url


async def _add(url: str, email: str) -> int:
    await run(
        url, "INSERT INTO users (email, name, unified_role) VALUES (:e, 'x', 'client')", e=email
    )
    [(user_id,)] = await run(url, "SELECT id FROM users WHERE email = :e", e=email)
    return int(user_id)


async def test_0007_reports_accounts_one_under_the_new_folding(at_0006: str) -> None:
    # Each pair passed 0005's lower(email) / NOCASE index on both backends.
    emails = ["zoë@x.com", "zoe\u0308@x.com", "straße@x.com", "STRASSE@x.com", "solo@x.com"]
    ids = [await _add(at_0006, e) for e in emails]
    with pytest.raises(Exception, match="several accounts under Unicode case folding") as refused:
        await upgrade_async(at_0006)
    report = str(refused.value)
    assert f"user {ids[0]} <zoë@x.com>, user {ids[1]} <zoe\u0308@x.com>" in report
    assert f"user {ids[2]} <straße@x.com>, user {ids[3]} <STRASSE@x.com>" in report
    assert "solo@x.com" not in report
    assert report.startswith("2 email address(es)")
    # The command's one line of failure names them too, not only --debug's traceback.
    line = failure_line(refused.value)
    assert "\n" not in line
    assert f"user {ids[0]} <zoë@x.com>, user {ids[1]} <zoe\u0308@x.com>; user {ids[2]}" in line
    # Nothing changed: still 0006, the rows as they were, no new column.
    assert await revision(at_0006) == "0006"
    rows = await run(at_0006, "SELECT id, email FROM users ORDER BY id")
    assert rows == list(zip(ids, emails, strict=True))
    with pytest.raises(Exception, match="email_key"):
        await run(at_0006, "SELECT email_key FROM users")


async def test_0007_fills_the_key_and_keeps_the_tables_keys(at_0006: str, backend: str) -> None:
    emails = ["Zoë@X.com", "STRASSE@x.com", "plain@x.com"]
    ids = [await _add(at_0006, e) for e in emails]
    if backend == "sqlite":  # a live migration's key block moved the sequence on
        await run(at_0006, "UPDATE sqlite_sequence SET seq = 5000 WHERE name = 'users'")
    await upgrade_async(at_0006)
    assert await revision(at_0006) != "0006"
    rows = await run(at_0006, "SELECT id, email_key FROM users ORDER BY id")
    assert rows == list(zip(ids, ["zoë@x.com", "strasse@x.com", "plain@x.com"], strict=True))
    with pytest.raises(IntegrityError):
        await run(
            at_0006,
            "INSERT INTO users (email, email_key, name, unified_role) "
            "VALUES ('ZOË@x.com', 'zoë@x.com', 'x', 'client')",
        )
    with pytest.raises(IntegrityError):
        await run(
            at_0006, "INSERT INTO users (email, name, unified_role) VALUES ('n@x', 'x', 'client')"
        )
    new = await _add_with_key(at_0006, "new@x.com")
    # PostgreSQL's sequence also moved past the refused inserts' keys.
    assert new == 5001 if backend == "sqlite" else new > ids[-1]


async def _add_with_key(url: str, email: str) -> int:
    await run(
        url,
        "INSERT INTO users (email, email_key, name, unified_role) VALUES (:e, :k, 'x', 'client')",
        e=email,
        k=email,
    )
    [(user_id,)] = await run(url, "SELECT id FROM users WHERE email = :e", e=email)
    return int(user_id)


async def test_the_copy_carries_the_key_and_postgresql_holds_it(
    scratch_db: str, tmp_path: Path
) -> None:
    """Accounts made on SQLite, copied to PostgreSQL: the same keys, the same 409s there."""
    source = f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    await upgrade_async(source)
    await upgrade_async(scratch_db)
    emails = ["Zoë@X.com", "straße@x.com", "ǅemal@x.com"]
    lite = create_app(make_settings(source))
    async with lite.router.lifespan_context(lite):
        transport = httpx.ASGITransport(app=lite)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for email in emails:
                made = await client.post(f"{API}/users", json={"email": email, "name": "x"})
                assert made.status_code == 201, made.text
    report = await transfer.copy(source, scratch_db, transfer.CopyOptions(), quiet())
    assert report.ok
    assert (await transfer.verify(source, scratch_db)).ok
    rows = await pg_fetch(scratch_db, "SELECT email, email_key FROM users ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("Zoë@X.com", "zoë@x.com"),
        ("straße@x.com", "strasse@x.com"),
        ("ǅemal@x.com", "ǆemal@x.com"),
    ]
    pg = create_app(make_settings(scratch_db))
    async with pg.router.lifespan_context(pg):
        transport = httpx.ASGITransport(app=pg)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for again in ("ZOË@x.COM", "STRASSE@X.COM", "ǄEMAL@X.COM"):
                taken = await client.post(f"{API}/users", json={"email": again, "name": "x"})
                assert taken.status_code == 409, taken.text
