"""On PostgreSQL a booking is one statement, plus the consistency token when replicas read."""

from __future__ import annotations

import httpx

from app.main import create_app
from tests.conftest import Postgres, make_settings
from tests.test_booking_rules import API, DAY, booking, shop
from tests.test_metrics import samples


def _primary_statements(scrape: str) -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for (name, labels), count in samples(scrape).items():
        found = dict(labels)
        if name == "database_queries_total" and found["role"] == "primary":
            key = (found["operation"], found["table"])
            counts[key] = counts.get(key, 0.0) + count
    return counts


async def _statements_per_booking(replicas: list[str], postgres: Postgres) -> tuple[dict, str]:
    settings = make_settings(postgres.primary_url, replicas, replica_probe_interval_seconds=3600)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        ids = await shop(app, client)
        before = _primary_statements((await client.get("/metrics")).text)
        made = await client.post(f"{API}/appointments", json=booking(ids, DAY))
        assert made.status_code == 201, made.text
        after = _primary_statements((await client.get("/metrics")).text)
        # A refused booking: the statement inserts nothing, a second read names the rule.
        refused = await client.post(f"{API}/appointments", json=booking(ids, DAY, minutes=45))
        assert refused.status_code == 422, refused.text
        last = _primary_statements((await client.get("/metrics")).text)
    grew = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    refusal = {k: v - after.get(k, 0.0) for k, v in last.items() if v != after.get(k, 0.0)}
    assert refusal == {("INSERT", "appointments"): 1, ("SELECT", "users"): 1}
    return grew, made.headers.get("x-consistency-token", "")


async def test_a_booking_is_one_statement(postgres: Postgres) -> None:
    grew, token = await _statements_per_booking([], postgres)
    assert grew == {("INSERT", "appointments"): 1}
    assert token == ""


async def test_with_replicas_the_token_is_the_second(postgres: Postgres) -> None:
    grew, token = await _statements_per_booking(postgres.replica_urls, postgres)
    assert grew == {("INSERT", "appointments"): 1, ("SELECT", "other"): 1}
    assert "/" in token


async def test_a_payment_is_one_statement_and_a_retry_two(postgres: Postgres) -> None:
    settings = make_settings(postgres.primary_url, [], replica_probe_interval_seconds=3600)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        ids = await shop(app, client)
        body = {"user_id": ids["user_id"], "location_id": ids["location_id"], "amount": "12.50"}
        key = {"Idempotency-Key": f"one-statement-{ids['user_id']}"}

        async def statements() -> tuple[int, dict]:
            before = _primary_statements((await client.get("/metrics")).text)
            answer = await client.post(f"{API}/payments", json=body, headers=key)
            after = _primary_statements((await client.get("/metrics")).text)
            grew = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k)}
            return answer.status_code, grew

        assert await statements() == (201, {("INSERT", "payments"): 1})
        # The retry: the insert does nothing, the key's row answers.
        assert await statements() == (200, {("INSERT", "payments"): 1, ("SELECT", "payments"): 1})
        body["amount"] = "13.00"
        status, _ = await statements()
        assert status == 409
