"""Payments: idempotent creation, exact money, one payment per appointment, pages by user."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.config import Settings
from app.db.models import Appointment, Payment
from app.db.router import DatabaseRouter
from app.main import create_app
from app.operations import reads as operations
from app.schemas import DailyRevenueRead, RevenueReport
from tests import factories, races
from tests.conftest import ConsistentClient, Postgres, make_settings
from tests.test_health import until

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

    # Completed since: a retry still answers the first call's result, byte for byte (as
    # made: pending, version 1); the payment as it is now is GET's.
    completed = await client.patch(
        f"{API}/payments/{payment['id']}", json={"status": "completed", "version": 1}
    )
    assert completed.status_code == 200, completed.text
    later = await client.post(f"{API}/payments", json=body, headers=headers)
    assert later.status_code == 200
    assert later.content == first.content
    now = (await client.get(f"{API}/payments/{payment['id']}")).json()
    assert (now["status"], now["version"]) == ("completed", 2)

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
    [
        *(19.99, 20, "0", "0.00", "-1.00", "1.999", "1e3", "NaN", "100000000.00", " 1.00", ""),
        *(None, "1.00\n", "1\n"),  # a regular expression's `$` takes a last newline
    ],
)
async def test_amount_must_be_a_positive_decimal_string(
    app: FastAPI, client: httpx.AsyncClient, amount: object
) -> None:
    ids = await shop(app, client)
    loose = {"user_id": ids["user_id"], "location_id": ids["location_id"]}
    response = await client.post(f"{API}/payments", json={**loose, "amount": amount}, headers=key())
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "amount"]
    # The same payment with a good amount is taken.
    response = await client.post(f"{API}/payments", json={**loose, "amount": "1.00"}, headers=key())
    assert response.status_code == 201, response.text


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
    # One payment made (201), every other answer a replay of it (200) or a 503 to retry.
    assert races.statuses(responses, {200, 201})[201] == 1
    assert len({r.content for r in responses if r.status_code != 503}) == 1
    async with factories.committed(app) as session:
        rows = await session.scalar(
            select(func.count()).where(Payment.idempotency_key == headers["Idempotency-Key"])
        )
    assert rows == 1


async def test_retries_let_loose_at_once_are_retries(postgres: Postgres) -> None:
    """Retries of one payment held back together (by a lock on the appointment that
    paying share-locks) and let go at once: ON CONFLICT settles the key's own race, but a
    retry can meet the first call's payment on the appointment's one payment instead.
    That too is the first call's result (200), not a 409 "already has a payment"."""
    # The retries wait on the lock for as long as the test takes to see them all there.
    settings = make_settings(postgres.primary_url, lock_timeout_ms=120_000)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            ids = await shop(app, client)
            body = {**ids, "amount": "25.00"}
            dsn = postgres.primary_url.replace("+asyncpg", "")
            holder, watcher = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
            try:
                for _ in range(4):
                    headers = key()
                    tx = holder.transaction()
                    await tx.start()
                    await holder.execute(
                        "SELECT 1 FROM appointments WHERE id = $1 FOR UPDATE",
                        ids["appointment_id"],
                    )
                    racers = [
                        asyncio.create_task(
                            client.post(f"{API}/payments", json=body, headers=headers)
                        )
                        for _ in range(12)
                    ]

                    async def held(n: int = len(racers)) -> bool:
                        # Not on the holder: in a transaction, pg_stat_activity is a snapshot.
                        waiting = await watcher.fetchval(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                        )
                        return bool(waiting >= n)

                    await until(held, what="every retry waiting on the appointment")
                    await tx.commit()
                    responses = await asyncio.gather(*racers)
                    assert races.statuses(responses, {200, 201})[201] == 1
                    assert len({r.content for r in responses if r.status_code != 503}) == 1
                    made = await holder.fetchval(
                        "SELECT id FROM payments WHERE idempotency_key = $1",
                        headers["Idempotency-Key"],
                    )
                    assert made is not None
                    # The next round pays the appointment afresh.
                    await holder.execute("DELETE FROM payments WHERE id = $1", made)
            finally:
                await holder.close()
                await watcher.close()


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


# -- lifecycle -------------------------------------------------------------------------------


async def payment_row(app: FastAPI, payment_id: int) -> tuple[str, int, str]:
    """(status, version, amount) as stored: what a refused change must leave alone."""
    async with factories.committed(app) as session:
        row = (
            await session.execute(
                select(Payment.status, Payment.version, Payment.amount).where(
                    Payment.id == payment_id
                )
            )
        ).one()
    return row[0], row[1], f"{row[2]:.2f}"


async def pending_payment(app: FastAPI, client: httpx.AsyncClient) -> dict[str, Any]:
    ids = await shop(app, client)
    created = await client.post(f"{API}/payments", json={**ids, "amount": "25.00"}, headers=key())
    assert created.status_code == 201, created.text
    payment: dict[str, Any] = created.json()
    return payment


async def test_payment_lifecycle(app: FastAPI, client: httpx.AsyncClient) -> None:
    payment = await pending_payment(app, client)
    url = f"{API}/payments/{payment['id']}"
    assert (payment["status"], payment["version"]) == ("pending", 1)

    completed = await client.patch(url, json={"status": "completed", "version": 1})
    assert completed.status_code == 200, completed.text
    assert {k: completed.json()[k] for k in ("status", "version", "amount")} == {
        "status": "completed",
        "version": 2,
        "amount": "25.00",
    }
    # A retry of the change just made (its response was lost): the same answer, no change.
    retry = await client.patch(url, json={"status": "completed", "version": 1})
    assert retry.status_code == 200
    assert retry.json() == completed.json()
    assert await payment_row(app, payment["id"]) == ("completed", 2, "25.00")

    refunded = await client.patch(url, json={"status": "refunded", "version": 2})
    assert refunded.status_code == 200, refunded.text
    assert (refunded.json()["status"], refunded.json()["version"]) == ("refunded", 3)
    assert (await client.patch(url, json={"status": "refunded", "version": 2})).json() == (
        refunded.json()
    )
    assert (await client.get(url)).json() == refunded.json()
    assert await payment_row(app, payment["id"]) == ("refunded", 3, "25.00")


@pytest.mark.parametrize(
    ("steps", "change", "detail"),
    [
        ([], ("refunded", 1), "a payment cannot go from pending to refunded"),
        ([], ("pending", 1), "a payment cannot go from pending to pending"),
        ([("completed", 1)], ("failed", 2), "a payment cannot go from completed to failed"),
        ([("completed", 1)], ("pending", 2), "a payment cannot go from completed to pending"),
        ([("completed", 1)], ("refunded", 1), "payment {id} is completed at version 2, not 1"),
        ([("completed", 1)], ("failed", 1), "payment {id} is completed at version 2, not 1"),
        (
            [("completed", 1), ("refunded", 2)],
            ("completed", 3),
            "a payment cannot go from refunded to completed",
        ),
        ([("failed", 1)], ("completed", 2), "a payment cannot go from failed to completed"),
        ([("failed", 1)], ("refunded", 2), "a payment cannot go from failed to refunded"),
    ],
)
async def test_payment_transitions_refused(
    app: FastAPI,
    client: httpx.AsyncClient,
    steps: list[tuple[str, int]],
    change: tuple[str, int],
    detail: str,
) -> None:
    payment = await pending_payment(app, client)
    url = f"{API}/payments/{payment['id']}"
    for status, version in steps:
        assert (
            await client.patch(url, json={"status": status, "version": version})
        ).status_code == 200
    before = await payment_row(app, payment["id"])
    response = await client.patch(url, json={"status": change[0], "version": change[1]})
    assert response.status_code == 409
    assert response.json() == {"error": "conflict", "detail": detail.format(id=payment["id"])}
    assert await payment_row(app, payment["id"]) == before


async def test_failed_payment_is_tried_again(app: FastAPI, client: httpx.AsyncClient) -> None:
    payment = await pending_payment(app, client)
    url = f"{API}/payments/{payment['id']}"
    for status, version in (("failed", 1), ("pending", 2), ("completed", 3)):
        response = await client.patch(url, json={"status": status, "version": version})
        assert response.status_code == 200, response.text
    assert await payment_row(app, payment["id"]) == ("completed", 4, "25.00")


async def test_payment_change_bad_input(app: FastAPI, client: httpx.AsyncClient) -> None:
    payment = await pending_payment(app, client)
    url = f"{API}/payments/{payment['id']}"
    for body in (
        {"status": "settled", "version": 1},
        {"status": "completed"},
        {"status": "completed", "version": "1"},
        {"status": "completed", "version": 1.0},
        {"status": "completed", "version": 0},
        {"status": "completed", "version": 1, "amount": "1.00"},
    ):
        response = await client.patch(url, json=body)
        assert response.status_code == 422, body
        assert response.json()["detail"] == "the request is not valid"
    assert await payment_row(app, payment["id"]) == ("pending", 1, "25.00")
    missing = await client.patch(
        f"{API}/payments/{2**62}", json={"status": "completed", "version": 1}
    )
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "detail": f"payment {2**62} does not exist"}


async def count_payments(app: FastAPI, appointment_id: int) -> int:
    async with factories.committed(app) as session:
        count = await session.scalar(
            select(func.count()).where(Payment.appointment_id == appointment_id)
        )
    return int(count or 0)


@pytest.mark.parametrize("status", ["cancelled", "no_show"])
async def test_no_payment_for_an_appointment_that_did_not_happen(
    app: FastAPI, client: httpx.AsyncClient, status: str
) -> None:
    ids = await shop(app, client)
    async with factories.committed(app, client) as session:
        appointment = await session.get(Appointment, ids["appointment_id"])
        assert appointment is not None
        appointment.status = status
    response = await client.post(f"{API}/payments", json={**ids, "amount": "25.00"}, headers=key())
    assert response.status_code == 409
    assert response.json() == {
        "error": "conflict",
        "detail": f"appointment {ids['appointment_id']} is {status}; it cannot be paid",
    }
    assert await count_payments(app, ids["appointment_id"]) == 0


@pytest.mark.parametrize("amount", ["0.01", "24.99", "25.01", "250.00"])
async def test_amount_is_the_service_price(
    app: FastAPI, client: httpx.AsyncClient, amount: str
) -> None:
    ids = await shop(app, client)
    response = await client.post(f"{API}/payments", json={**ids, "amount": amount}, headers=key())
    assert response.status_code == 422
    assert response.json() == {
        "error": "invalid_request",
        "detail": "the amount must be the service's price, 25.00",
    }
    assert await count_payments(app, ids["appointment_id"]) == 0


async def test_retry_answers_the_first_result_after_a_cancel(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    ids = await shop(app, client)
    headers = key()
    first = await client.post(f"{API}/payments", json={**ids, "amount": "25.00"}, headers=headers)
    assert first.status_code == 201
    async with factories.committed(app, client) as session:
        appointment = await session.get(Appointment, ids["appointment_id"])
        assert appointment is not None
        appointment.status = "cancelled"
    retry = await client.post(f"{API}/payments", json={**ids, "amount": "25.00"}, headers=headers)
    assert retry.status_code == 200
    assert retry.json() == first.json()


async def test_completing_races_refunding(settings: Settings) -> None:
    """200 racers on one completed payment: half refund it, half retry its completion."""
    patient = make_settings(
        settings.primary_url, [u.get_secret_value() for u in settings.replica_urls], pool_timeout=60
    )
    app = create_app(patient)
    async with (
        app.router.lifespan_context(app),
        ConsistentClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        payment = await pending_payment(app, client)
        url = f"{API}/payments/{payment['id']}"
        completed = await client.patch(url, json={"status": "completed", "version": 1})
        assert completed.status_code == 200
        racers = [{"status": "refunded", "version": 2}, {"status": "completed", "version": 1}]
        responses = await asyncio.gather(
            *(client.patch(url, json=racers[i % 2]) for i in range(200))
        )
        refunds, completions = responses[0::2], responses[1::2]
        # One change: the refund, made once.
        assert await payment_row(app, payment["id"]) == ("refunded", 3, "25.00")
        # Every refund answered is the one refund (the rest retries of it); a racer the
        # contended row kept waiting may be told to come back instead (503).
        assert races.statuses(refunds, {200})[200] >= 1
        done = [r for r in refunds if r.status_code == 200]
        assert len({r.content for r in done}) == 1
        assert (done[0].json()["status"], done[0].json()["version"]) == ("refunded", 3)
        # A completion retried before the refund is answered as done; after it, refused.
        races.statuses(completions, {200, 409})
        for r in completions:
            if r.status_code == 200:
                assert r.content == completed.content
            elif r.status_code == 409:
                detail = f"payment {payment['id']} is refunded at version 3, not 1"
                assert r.json()["detail"] == detail, r.text


async def test_completing_races_failing(settings: Settings) -> None:
    """200 racers on one pending payment, half completing, half failing it: one wins."""
    patient = make_settings(
        settings.primary_url, [u.get_secret_value() for u in settings.replica_urls], pool_timeout=60
    )
    app = create_app(patient)
    async with (
        app.router.lifespan_context(app),
        ConsistentClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        payment = await pending_payment(app, client)
        url = f"{API}/payments/{payment['id']}"
        racers = [{"status": "completed", "version": 1}, {"status": "failed", "version": 1}]
        responses = await asyncio.gather(
            *(client.patch(url, json=racers[i % 2]) for i in range(200))
        )
        # One change, by whichever side came first.
        status, version, _ = await payment_row(app, payment["id"])
        assert (status, version) in {("completed", 2), ("failed", 2)}
        # The winner's side is answered as done (the rest retries of the change), the
        # other side refused; a racer the contended row kept waiting may get a 503.
        winners = [r for i, r in enumerate(responses) if racers[i % 2]["status"] == status]
        losers = [r for i, r in enumerate(responses) if racers[i % 2]["status"] != status]
        assert races.statuses(winners, {200})[200] >= 1
        done = {(r.json()["status"], r.json()["version"]) for r in winners if r.status_code == 200}
        assert done == {(status, 2)}
        races.statuses(losers, {409})
        assert {r.json()["detail"] for r in losers if r.status_code == 409} <= {
            f"payment {payment['id']} is {status} at version 2, not 1"
        }


async def test_revenue_counts_completed_and_shows_refunds_apart(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    first = await pending_payment(app, client)
    location = first["location_id"]
    today = dt.datetime.now(dt.UTC).date().isoformat()
    url = f"{API}/locations/{location}/revenue"

    async def day() -> list[dict[str, Any]]:
        response = await client.get(url, params={"start": today, "end": today})
        assert response.status_code == 200
        days: list[dict[str, Any]] = response.json()["days"]
        return days

    assert await day() == []  # pending counts nowhere
    done = await client.patch(
        f"{API}/payments/{first['id']}", json={"status": "completed", "version": 1}
    )
    assert done.status_code == 200
    assert await day() == [
        {
            "date": today,
            "total_revenue": "25.00",
            "transaction_count": 1,
            "average_transaction": "25.00",
            "refunded_total": "0.00",
            "refund_count": 0,
        }
    ]
    refund = await client.patch(
        f"{API}/payments/{first['id']}", json={"status": "refunded", "version": 2}
    )
    assert refund.status_code == 200
    assert await day() == [
        {
            "date": today,
            "total_revenue": "0.00",
            "transaction_count": 0,
            "average_transaction": "0.00",
            "refunded_total": "25.00",
            "refund_count": 1,
        }
    ]


async def test_revenue_route_and_hot_statement_agree_on_refunds(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same report through the lane and the routes (HOT_READS=false) and the test's sums.

    Both doors answer with the one use case (app/operations/reads.py's read_revenue), on
    every backend; the test sums the location's payments itself, in Python's Decimal.
    """
    urls = settings.primary_url, [u.get_secret_value() for u in settings.replica_urls]
    bodies = []
    lane_answers = []
    read_revenue = operations.read_revenue

    async def counted(*args: Any) -> bytes:
        lane_answers.append(args)
        return await read_revenue(*args)

    monkeypatch.setattr(operations, "read_revenue", counted)
    for hot_reads in (True, False):
        app = create_app(make_settings(*urls, hot_reads=hot_reads))
        async with (
            app.router.lifespan_context(app),
            ConsistentClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
        ):
            if hot_reads:
                ids = await shop(app, client)
                loose = {"user_id": ids["user_id"], "location_id": ids["location_id"]}
                for amount, status in (
                    ("25.00", "completed"),
                    ("0.10", "refunded"),
                    ("0.25", "refunded"),
                    ("0.05", "completed"),
                    ("1.00", "failed"),
                ):
                    made = await client.post(
                        f"{API}/payments", json={**loose, "amount": amount}, headers=key()
                    )
                    url = f"{API}/payments/{made.json()['id']}"
                    first = "failed" if status == "failed" else "completed"
                    assert (
                        await client.patch(url, json={"status": first, "version": 1})
                    ).status_code == 200
                    if status == "refunded":
                        assert (
                            await client.patch(url, json={"status": status, "version": 2})
                        ).status_code == 200
            today = dt.datetime.now(dt.UTC).date().isoformat()
            response = await client.get(
                f"{API}/locations/{ids['location_id']}/revenue",
                params={"start": today, "end": today},
                headers={"X-Read-Consistency": "primary"},
            )
            assert response.status_code == 200
            bodies.append(response.json())
            if not hot_reads:
                router: DatabaseRouter = app.state.db
                day = dt.date.fromisoformat(today)
                session = router.session("analytics", force_primary=True)
                try:
                    paid = (
                        await session.execute(
                            select(Payment.amount, Payment.status).where(
                                Payment.location_id == ids["location_id"]
                            )
                        )
                    ).all()
                finally:
                    await session.close()
                done = [amount for amount, status in paid if status == "completed"]
                back = [amount for amount, status in paid if status == "refunded"]
                total = sum(done, Decimal(0))
                average = (total / len(done)).quantize(Decimal("0.01"), ROUND_HALF_UP)
                report = RevenueReport(
                    location_id=ids["location_id"],
                    start=day,
                    end=day,
                    days=[
                        DailyRevenueRead(
                            date=day,
                            total_revenue=total,
                            transaction_count=len(done),
                            average_transaction=average,
                            refunded_total=sum(back, Decimal(0)),
                            refund_count=len(back),
                        )
                    ],
                )
                bodies.append(report.model_dump(mode="json"))
    assert bodies[0] == bodies[1] == bodies[2]
    # Both HTTP reports came from the one use case: the lane's (or the route's) and the route's.
    assert len(lane_answers) == 2
    [day] = bodies[0]["days"]
    assert day == {
        "date": day["date"],
        "total_revenue": "25.05",
        "transaction_count": 2,
        "average_transaction": "12.53",
        "refunded_total": "0.35",
        "refund_count": 2,
    }
