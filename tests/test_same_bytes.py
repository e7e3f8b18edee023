"""The same data on SQLite and on PostgreSQL: the same requests answer the same bytes.

Two services, each on a new database of its own made by the migrations, get the same
rows (written by this test with fixed times and messy text) and then the same requests:
the hot reads (answered on PostgreSQL by its own statements, in front of FastAPI), the
other reads, the writes' answers and the errors. Status, content type and body bytes
must be equal; only headers that are meant to differ (request ids, PostgreSQL's
consistency token) are not compared. The times a write stamps on its row are its
server's clock: in a write's answer they are checked to be in the API's one form and
then left out; the test then sets them to the same instant on both sides, so every
later read compares whole.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from sqlalchemy import update

from app.db.migrate import upgrade_async
from app.db.models import (
    Appointment,
    BarbershopLocation,
    Organization,
    Payment,
    Service,
    StripeAccount,
    User,
    UserOrganization,
)
from app.main import create_app
from tests.conftest import ConsistentClient, Postgres, make_settings

API = "/api/v1"
T0 = dt.datetime(2031, 5, 4, 9, 30, tzinfo=dt.UTC)
LATER = dt.datetime(2031, 6, 1, 12, 0, 0, 250000, tzinfo=dt.UTC)
# Everything JSON escapes, and what it leaves alone: quotes, a backslash, control
# characters, a line separator, HTML, an emoji, a decomposed letter.
MESSY = 'Zoë "Z" O\'Brien \\ \x01\x1f\t\n\u2028 </script> \U0001f488 e\u0301 \x7f'
STAMP = re.compile(rb'"(created_at|updated_at)":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z"')


@dataclass
class Side:
    name: str
    app: FastAPI
    client: ConsistentClient


@asynccontextmanager
async def _side(name: str, url: str) -> AsyncIterator[Side]:
    await upgrade_async(url)
    app = create_app(make_settings(url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with ConsistentClient(transport=transport, base_url="http://test") as client:
            yield Side(name, app, client)


@dataclass
class Shop:
    ids: dict[str, int] = field(default_factory=dict)


async def _seed(side: Side) -> Shop:
    """The same rows, in the same order (so the same keys), with fixed times."""
    shop = Shop()
    session = side.app.state.db.session("write")
    try:

        async def add(key: str, row: Any) -> Any:
            session.add(row)
            await session.flush()
            shop.ids[key] = row.id
            return row

        at = {"created_at": T0}
        org = await add("org", Organization(name=MESSY, slug="north-side", **at))
        north = await add(
            "north", BarbershopLocation(name='Shop "North"', organization_id=org.id, **at)
        )
        await add("south", BarbershopLocation(name="South", **at))
        stamps = {"created_at": T0, "updated_at": T0 + dt.timedelta(microseconds=1)}
        barber = await add(
            "barber",
            User(
                email="Barber.Ünal@Example.com",
                name="Ünal",
                unified_role="barber",
                location_id=north.id,
                **stamps,
            ),
        )
        client = await add(
            "client",
            User(email="Zoë.Ünal@Example.com", name=MESSY, phone="+1 (555) 000-0001", **stamps),
        )
        await add("idle", User(email="idle@example.com", name="Idle", is_active=False, **stamps))
        await add(
            "stripe",
            StripeAccount(user_id=barber.id, stripe_account_id="acct_\u00e9", **at),
        )
        await add(
            "member",
            UserOrganization(user_id=client.id, organization_id=org.id, role="owner", **at),
        )
        cut = await add(
            "cut",
            Service(
                location_id=north.id, name=MESSY, duration_minutes=30, price=Decimal("25.00"), **at
            ),
        )
        shave = await add(
            "shave",
            Service(
                location_id=north.id,
                name="Shave",
                duration_minutes=45,
                price=Decimal("19.99"),
                **at,
            ),
        )
        plans = [
            ("a_done", cut, 0, "completed", MESSY),
            ("a_refunded", shave, 123456, "completed", None),
            ("a_confirmed", cut, 1, "confirmed", ""),
            ("a_cancelled", shave, 0, "cancelled", "late"),
            ("a_progress", cut, 999999, "in_progress", None),
        ]
        for i, (key, service, micro, status, notes) in enumerate(plans):
            start = T0 + dt.timedelta(days=i % 3, hours=i, microseconds=micro)
            await add(
                key,
                Appointment(
                    user_id=client.id,
                    barber_id=barber.id,
                    service_id=service.id,
                    location_id=north.id,
                    appointment_date=start.date(),
                    start_time=start,
                    end_time=start + dt.timedelta(minutes=service.duration_minutes),
                    status=status,
                    notes=notes,
                    version=i + 1,
                    created_at=T0,
                    updated_at=start,
                ),
            )
        pays = [
            ("p_done", "a_done", "25.00", "completed", T0),
            ("p_refunded", "a_refunded", "19.99", "refunded", T0 + dt.timedelta(hours=20)),
            ("p_pending", "a_confirmed", "25.00", "pending", LATER),
            ("p_walkin", None, "0.05", "completed", T0 + dt.timedelta(microseconds=5)),
            ("p_walkin2", None, "0.02", "completed", T0 + dt.timedelta(minutes=1)),
        ]
        for key, appointment, amount, status, created in pays:
            await add(
                key,
                Payment(
                    user_id=client.id,
                    appointment_id=shop.ids[appointment] if appointment else None,
                    location_id=north.id,
                    amount=Decimal(amount),
                    status=status,
                    idempotency_key=f"seed-{key}",
                    created_at=created,
                ),
            )
        await session.commit()
    finally:
        await session.close()
    return shop


async def _restamp(side: Side, written: dict[type[Any], list[int]]) -> None:
    """The rows the writes made: their server-clock times set to one instant."""
    session = side.app.state.db.session("write")
    try:
        for model, ids in written.items():
            values: dict[str, Any] = {"created_at": LATER}
            if hasattr(model, "updated_at"):
                values["updated_at"] = LATER
            await session.execute(update(model).where(model.id.in_(ids)).values(**values))
        await session.commit()
    finally:
        await session.close()


def _reads(ids: dict[str, int]) -> list[tuple[str, Any]]:
    user, barber, idle = ids["client"], ids["barber"], ids["idle"]
    relations = ["appointments", "payments", "organizations", "stripe_account"]
    schedule = f"{API}/barbers/{barber}/appointments"
    revenue = f"{API}/locations/{ids['north']}/revenue"
    may = {"start": "2031-05-01", "end": "2031-05-31"}
    return [
        *((f"{API}/users/{who}", {}) for who in (user, barber, idle)),
        *((f"{API}/users/{user}", {"include": r}) for r in relations),
        *((f"{API}/users/{who}", {"include": ",".join(relations)}) for who in (user, barber, idle)),
        (f"{API}/users", {}),
        (f"{API}/users", {"limit": 1}),
        (f"{API}/users", {"after": user, "limit": 5}),
        (f"{API}/users", {"email": "ZOË.üNAL@EXAMPLE.COM"}),
        (f"{API}/users", {"role": "barber"}),
        (f"{API}/users/{user}/payments", {}),
        (f"{API}/users/{user}/payments", {"limit": 2, "after": ids["p_done"]}),
        *((f"{API}/payments/{ids[k]}", {}) for k in ("p_done", "p_pending", "p_walkin")),
        *((f"{API}/appointments/{ids[k]}", {}) for k in ("a_done", "a_refunded", "a_progress")),
        (schedule, may),
        (schedule, {**may, "status": ["completed", "cancelled"]}),
        (schedule, {**may, "status": ["pending", "confirmed", "in_progress", "completed"]}),
        (schedule, {"start": "2031-05-05", "end": "2031-05-05", "status": "confirmed"}),
        (schedule, {"start": "2030-01-01", "end": "2030-01-02"}),
        (revenue, may),
        (revenue, {"start": "2031-05-05", "end": "2031-05-05"}),
        (revenue, {"start": "2031-05-01", "end": "2031-06-30"}),
        (f"{API}/locations/{ids['south']}/revenue", may),
        # Errors: unknown ids, parameters refused, the API's first and last days.
        (f"{API}/users/{10**12}", {"include": "payments"}),
        (f"{API}/barbers/{10**12}/appointments", may),
        (f"{API}/locations/{10**12}/revenue", may),
        (f"{API}/payments/{10**12}", {}),
        (f"{API}/appointments/{10**12}", {}),
        (f"{API}/users/{10**12}/payments", {}),
        (f"{API}/users/{user}", {"include": "bogus"}),
        (f"{API}/users/0", {}),
        (revenue, {"start": "0001-01-01", "end": "0001-01-01"}),
        (revenue, {"start": "9999-12-31", "end": "9999-12-31"}),
        (revenue, {"start": "0001-01-02", "end": "0001-01-02"}),
        (revenue, {"start": "9999-12-30", "end": "9999-12-30"}),
        (schedule, {"start": "0001-01-01", "end": "0001-01-01"}),
        (schedule, {"start": "9999-12-30", "end": "9999-12-30"}),
        (revenue, {"start": "2031-05-02", "end": "2031-05-01"}),
        (revenue, {"start": "2031-05-01", "end": "2033-05-02"}),
        (schedule, {**may, "status": "bogus"}),
        (schedule, {**may, "colour": "red"}),
    ]


@dataclass
class Answer:
    status: int
    content_type: str | None
    body: bytes

    @classmethod
    def of(cls, response: httpx.Response) -> Answer:
        return cls(response.status_code, response.headers.get("content-type"), response.content)


async def _both(
    sides: tuple[Side, Side], method: str, url: str, **kwargs: Any
) -> tuple[Answer, Answer]:
    answers = [Answer.of(await s.client.request(method, url, **kwargs)) for s in sides]
    return answers[0], answers[1]


async def _read_all(sides: tuple[Side, Side], ids: dict[str, int]) -> int:
    compared = 0
    for url, params in _reads(ids):
        lite, pg = await _both(sides, "GET", url, params=params)
        assert lite == pg, (url, params)
        assert pg.status < 500, (url, params, pg)
        compared += 1
    return compared


def _unstamped(answer: Answer) -> Answer:
    """A write's answer without its server-clock times, each checked to be the API's form."""
    body = answer.body
    loose = re.sub(rb'"(created_at|updated_at)":"[^"]*"', b"", body)
    assert STAMP.sub(b"", body) == loose, body
    return Answer(answer.status, answer.content_type, STAMP.sub(rb'"\1":"-"', body))


@pytest.fixture
async def sides(tmp_path: Path, scratch_db: str) -> AsyncIterator[tuple[Side, Side]]:
    async with (
        _side("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'same.db'}") as lite,
        _side("postgresql", scratch_db) as pg,
    ):
        yield lite, pg


async def test_the_same_bytes_from_both_backends(sides: tuple[Side, Side]) -> None:
    lite, pg = sides
    assert pg.app.state.db.hot_reads  # the hot reads answered by PostgreSQL's statements
    ids = (await _seed(lite)).ids
    assert (await _seed(pg)).ids == ids
    reads = await _read_all(sides, ids)

    written: dict[type[Any], list[int]] = {}

    async def write(method: str, url: str, expect: int, **kwargs: Any) -> dict[str, Any]:
        one, other = await _both(sides, method, url, **kwargs)
        assert one.status == expect, one
        assert _unstamped(one) == _unstamped(other), (method, url, kwargs)
        body: dict[str, Any] = json.loads(one.body)
        assert body.get("id") == json.loads(other.body).get("id")
        return body

    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(
        hour=10, minute=0, second=0, microsecond=0
    )
    booking = {
        "user_id": ids["client"],
        "barber_id": ids["barber"],
        "service_id": ids["cut"],
        "location_id": ids["north"],
        "start_time": start.isoformat(),
        "end_time": (start + dt.timedelta(minutes=30)).isoformat(),
        "notes": MESSY,
    }
    # What makes rows first: PostgreSQL's sequences move on with a refused insert too,
    # SQLite's keys do not, and the keys are what both sides must agree on.
    new_user = {"email": "Ñandú@Example.com", "name": MESSY}
    user = await write("POST", f"{API}/users", 201, json=new_user)
    written[User] = [user["id"]]
    booked = await write("POST", f"{API}/appointments", 201, json=booking)
    written[Appointment] = [booked["id"]]
    pay = {
        "user_id": ids["client"],
        "appointment_id": booked["id"],
        "location_id": ids["north"],
        "amount": "25.00",
    }
    key = {"Idempotency-Key": "same-bytes-1"}
    paid = await write("POST", f"{API}/payments", 201, json=pay, headers=key)
    written[Payment] = [paid["id"]]

    users = f"{API}/users"
    for email in ("ñANDÚ@EXAMPLE.COM", "ZOË.ÜNAL@example.COM", "zoe\u0308.u\u0308nal@example.com"):
        await write("POST", users, 409, json={"email": email, "name": "x"})
    await write("POST", users, 422, json={"email": "no-at-sign", "name": "x"})
    await write("POST", users, 422, json={"email": "a@b", "name": "x", "colour": 1})
    broken = {"content": b'{"email": ', "headers": {"content-type": "application/json"}}
    await write("POST", users, 422, **broken)

    appointments = f"{API}/appointments"
    await write("POST", appointments, 409, json=booking)
    late = (start + dt.timedelta(minutes=45)).isoformat()
    await write("POST", appointments, 422, json={**booking, "end_time": late})
    await write("POST", appointments, 422, json={**booking, "service_id": ids["shave"]})
    for first, last in [
        ("0001-01-01T00:00:00Z", "0001-01-01T00:30:00Z"),
        ("0001-01-01T00:30:00+01:00", "0001-01-01T01:00:00+01:00"),
        ("9999-12-31T23:00:00-02:00", "9999-12-31T23:30:00-02:00"),
        ("9999-12-30T23:30:00Z", "9999-12-31T00:00:00Z"),
    ]:
        times = {"start_time": first, "end_time": last}
        await write("POST", appointments, 422, json={**booking, **times})
    url = f"{appointments}/{booked['id']}"
    await write("PATCH", url, 200, json={"status": "confirmed", "version": 1})
    await write("PATCH", url, 409, json={"status": "cancelled", "version": 1})
    await write("PATCH", url, 409, json={"status": "completed", "version": 2})
    await write("PATCH", url, 422, json={"status": "confirmed", "version": 2, "start_time": "x"})

    payments = f"{API}/payments"
    await write("POST", payments, 200, json=pay, headers=key)
    await write("POST", payments, 409, json={**pay, "amount": "24.00"}, headers=key)
    await write("POST", payments, 409, json=pay, headers={"Idempotency-Key": "other"})
    wrong = {**pay, "amount": "24.99"}
    await write("POST", payments, 422, json=wrong, headers={"Idempotency-Key": "k0"})
    payment = f"{payments}/{paid['id']}"
    await write("PATCH", payment, 200, json={"status": "completed", "version": 1})
    await write("PATCH", payment, 409, json={"status": "pending", "version": 2})
    done = {"status": "completed", "version": 1}
    await write("PATCH", f"{payments}/{10**12}", 404, json=done)

    for side in sides:
        await _restamp(side, written)
    ids = {**ids, "new_user": user["id"], "booked": booked["id"], "paid": paid["id"]}
    assert await _read_all(sides, ids) == reads
    more = [
        (f"{API}/users/{user['id']}", {"include": "appointments,payments"}),
        (f"{API}/appointments/{booked['id']}", {}),
        (f"{API}/payments/{paid['id']}", {}),
        (f"{API}/users/{ids['client']}", {"include": "appointments,payments"}),
    ]
    for url, params in more:
        one, other = await _both(sides, "GET", url, params=params)
        assert one == other, (url, params)
        assert one.status == 200


@pytest.fixture
async def pg_conn(postgres: Postgres) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(postgres.primary_url.replace("+asyncpg", ""))
    try:
        yield conn
    finally:
        await conn.close()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00")))
async def test_postgres_escapes_text_as_the_routes_do(
    pg_conn: asyncpg.Connection, text: str
) -> None:
    """The hot reads' text values (to_json) against FastAPI's and pydantic's encoders."""
    written = (await pg_conn.fetchval("SELECT to_json($1::text)::text", text)).encode()
    assert written == json.dumps(text, ensure_ascii=False).encode()
    assert written == TypeAdapter(str).dump_json(text)
