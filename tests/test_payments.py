"""Payments: idempotent creation, exact money, one payment per appointment, pages by user."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.db.models import Payment
from tests import factories

API = "/api/v1"


async def shop(app: FastAPI, client: httpx.AsyncClient) -> dict[str, int]:
    """A client with a booked appointment at a location."""
    start = dt.datetime(2031, 6, 2, 9, tzinfo=dt.UTC)
    async with factories.committed(app, client) as session:
        loc = await factories.location(session)
        barber = await factories.user(session, "barber", location_id=loc.id)
        user = await factories.user(session)
        svc = await factories.service(session, loc.id)
        appointment = await factories.appointment(
            session,
            user_id=user.id,
            barber_id=barber.id,
            service_id=svc.id,
            location_id=loc.id,
            start=start,
        )
        return {"user_id": user.id, "appointment_id": appointment.id, "location_id": loc.id}


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


async def test_create_payment_and_replay(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await shop(app, client)
    body = {**ids, "amount": "25.00"}
    headers = key()
    first = await client.post(f"{API}/payments", json=body, headers=headers)
    assert first.status_code == 201, first.text
    payment = first.json()
    assert payment["amount"] == "25.00"
    assert payment["version"] == 1
    assert payment["status"] == "pending"
    assert payment["currency"] == "usd"
    assert {k: payment[k] for k in ids} == ids

    replay = await client.post(f"{API}/payments", json=body, headers=headers)
    assert replay.status_code == 200
    assert replay.json() == payment

    fetched = await client.get(f"{API}/payments/{payment['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == payment

    other_body = await client.post(
        f"{API}/payments", json={**body, "amount": "20.00"}, headers=headers
    )
    assert other_body.status_code == 409
    assert other_body.json()["detail"] == (
        "this Idempotency-Key was used with a different request body"
    )
    second_payment = await client.post(f"{API}/payments", json=body, headers=key())
    assert second_payment.status_code == 409
    assert second_payment.json()["detail"] == (
        f"appointment {ids['appointment_id']} already has a payment"
    )


@pytest.mark.parametrize("amount", ["0.10", "19.9", "99999999.99", "7"])
async def test_money_round_trips_exactly(
    app: FastAPI, client: httpx.AsyncClient, amount: str
) -> None:
    ids = await shop(app, client)
    # A payment without an appointment: any amount within the bounds.
    ids = {"user_id": ids["user_id"], "location_id": ids["location_id"]}
    created = await client.post(f"{API}/payments", json={**ids, "amount": amount}, headers=key())
    assert created.status_code == 201, created.text
    expected = f"{float(amount):.2f}" if "." not in amount[-3:] else amount.ljust(len(amount), "0")
    expected = amount if amount.count(".") and len(amount.split(".")[1]) == 2 else expected
    if amount == "19.9":
        expected = "19.90"
    assert created.json()["amount"] == expected
    fetched = await client.get(f"{API}/payments/{created.json()['id']}")
    assert fetched.json()["amount"] == expected


@pytest.mark.parametrize(
    "amount",
    [19.99, 20, "0", "0.00", "-1.00", "1.999", "1e3", "NaN", "100000000.00", " 1.00", "", None],
)
async def test_amount_must_be_a_positive_decimal_string(
    client: httpx.AsyncClient, amount: object
) -> None:
    body = {"user_id": 1, "location_id": 1, "amount": amount}
    response = await client.post(f"{API}/payments", json=body, headers=key())
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "headers",
    [{}, {"Idempotency-Key": ""}, {"Idempotency-Key": "k" * 256}, {"Idempotency-Key": "a b"}],
)
async def test_idempotency_key_is_required_and_bounded(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    body = {"user_id": 1, "location_id": 1, "amount": "1.00"}
    response = await client.post(f"{API}/payments", json=body, headers=headers)
    assert response.status_code == 422


async def test_unknown_references(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await shop(app, client)
    loose = {"user_id": ids["user_id"], "location_id": ids["location_id"], "amount": "5.00"}
    for missing in ("user_id", "location_id"):
        body = {**loose, missing: 2**62}
        response = await client.post(f"{API}/payments", json=body, headers=key())
        assert response.status_code == 422, missing
        assert response.json()["detail"] == "the user, appointment or location does not exist"
    body = {**ids, "appointment_id": 2**62, "amount": "5.00"}
    response = await client.post(f"{API}/payments", json=body, headers=key())
    assert response.status_code == 422
    assert response.json()["detail"] == f"appointment {2**62} does not exist"
    assert (await client.get(f"{API}/payments/{2**62}")).status_code == 404
    assert (await client.get(f"{API}/payments/0")).status_code == 422


async def test_concurrent_retries_make_one_payment(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await shop(app, client)
    headers = key()
    body = {**ids, "amount": "25.00"}
    responses = await asyncio.gather(
        *(client.post(f"{API}/payments", json=body, headers=headers) for _ in range(50))
    )
    assert sorted(r.status_code for r in responses) == [200] * 49 + [201]
    assert len({r.content for r in responses}) == 1
    async with factories.committed(app) as session:
        rows = await session.scalar(
            select(func.count()).where(Payment.idempotency_key == headers["Idempotency-Key"])
        )
    assert rows == 1


async def test_list_user_payments_by_keyset(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await shop(app, client)
    made = []
    for amount in ("1.00", "2.00", "3.00"):
        body = {"user_id": ids["user_id"], "location_id": ids["location_id"], "amount": amount}
        made.append((await client.post(f"{API}/payments", json=body, headers=key())).json()["id"])

    url = f"{API}/users/{ids['user_id']}/payments"
    first = (await client.get(url, params={"limit": 2})).json()
    assert [p["id"] for p in first["items"]] == made[:2]
    assert first["next_after"] == made[1]
    rest = (await client.get(url, params={"limit": 2, "after": first["next_after"]})).json()
    assert [p["amount"] for p in rest["items"]] == ["3.00"]
    assert rest["next_after"] is None
    missing = await client.get(f"{API}/users/{2**62}/payments")
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "detail": f"user {2**62} does not exist"}
    async with factories.committed(app, client) as session:
        payless = (await factories.user(session)).id
    assert (await client.get(f"{API}/users/{payless}/payments")).json() == {
        "items": [],
        "next_after": None,
    }
    for params in ({"limit": 0}, {"limit": 101}, {"after": -1}):
        assert (await client.get(url, params=params)).status_code == 422


async def test_payment_must_match_its_appointment(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await shop(app, client)
    other = await shop(app, client)
    for field in ("user_id", "location_id"):
        body = {**ids, field: other[field], "amount": "25.00"}
        response = await client.post(f"{API}/payments", json=body, headers=key())
        assert response.status_code == 422, field
        assert "a payment for it must too" in response.json()["detail"]
    async with factories.committed(app) as session:
        count = await session.scalar(
            select(func.count()).where(Payment.appointment_id == ids["appointment_id"])
        )
    assert count == 0
