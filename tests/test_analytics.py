"""Revenue per day of a location: completed payments only, exact sums, UTC days."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from fastapi import FastAPI

from tests import factories

API = "/api/v1"


async def test_daily_revenue_is_exact(app: FastAPI, client: httpx.AsyncClient) -> None:
    day = dt.datetime(2030, 7, 1, tzinfo=dt.UTC)
    async with factories.committed(app, client) as session:
        loc = await factories.location(session)
        other = await factories.location(session)
        user = await factories.user(session)

        async def pay(
            amount: str, at: dt.datetime, status: str = "completed", where: int = 0
        ) -> None:
            await factories.payment(
                session,
                user_id=user.id,
                location_id=where or loc.id,
                amount=amount,
                status=status,
                created_at=at,
            )

        await pay("0.10", day + dt.timedelta(hours=9))
        await pay("0.20", day + dt.timedelta(hours=23, minutes=59, seconds=59))
        await pay("99.99", day + dt.timedelta(hours=10), status="pending")
        await pay("50.00", day + dt.timedelta(hours=11), where=other.id)
        # 01:00 on July 2nd in UTC is still July 1st in New York: days are UTC days.
        await pay("19.99", day + dt.timedelta(days=1, hours=1))
        await pay("0.01", day + dt.timedelta(days=1, hours=2))
        await pay("0.01", day + dt.timedelta(days=1, hours=3))
        await pay("5.00", day + dt.timedelta(days=2))  # after the range

    response = await client.get(
        f"{API}/locations/{loc.id}/revenue", params={"start": "2030-07-01", "end": "2030-07-02"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "location_id": loc.id,
        "start": "2030-07-01",
        "end": "2030-07-02",
        "days": [
            {
                "date": "2030-07-01",
                "total_revenue": "0.30",
                "transaction_count": 2,
                "average_transaction": "0.15",
                "refunded_total": "0.00",
                "refund_count": 0,
            },
            {
                "date": "2030-07-02",
                "total_revenue": "20.01",
                "transaction_count": 3,
                "average_transaction": "6.67",
                "refunded_total": "0.00",
                "refund_count": 0,
            },
        ],
    }
    empty = await client.get(
        f"{API}/locations/{loc.id}/revenue", params={"start": "2030-06-01", "end": "2030-06-30"}
    )
    assert empty.json()["days"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"start": "2030-07-02", "end": "2030-07-01"},
        {"start": "2028-01-01", "end": "2030-07-01"},
        {"start": "9999-12-31", "end": "9999-12-31"},
        {"start": "2030-07-01"},
        {"start": "yesterday", "end": "2030-07-01"},
    ],
)
async def test_revenue_rejects_bad_ranges(client: httpx.AsyncClient, params: dict) -> None:
    response = await client.get(f"{API}/locations/1/revenue", params=params)
    assert response.status_code == 422, response.text


async def test_revenue_of_unknown_or_invalid_location(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    range_ = {"start": "2030-07-01", "end": "2030-07-01"}
    unknown = await client.get(f"{API}/locations/{2**62}/revenue", params=range_)
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "not_found", "detail": f"location {2**62} does not exist"}
    # The OpenAPI document says so: a 404 with the error body actually sent.
    declared = app.openapi()["paths"][f"{API}/locations/{{location_id}}/revenue"]["get"]
    not_found = declared["responses"]["404"]
    assert not_found["description"] == "The location does not exist"
    schema = not_found["content"]["application/json"]["schema"]["$ref"]
    assert schema.rsplit("/", 1)[-1] == "ErrorBody"
    assert set(unknown.json()) == set(
        app.openapi()["components"]["schemas"]["ErrorBody"]["required"]
    )
    assert (await client.get(f"{API}/locations/0/revenue", params=range_)).status_code == 422
    response = await client.get(f"{API}/locations/{2**63}/revenue", params=range_)
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("locations/1/revenue", "start", "0001-01-01"),  # PostgreSQL got -infinity
        ("locations/1/revenue", "end", "9999-12-31"),  # and infinity
        ("barbers/1/appointments", "start", "0001-01-01"),
        ("barbers/1/appointments", "end", "9999-12-31"),
    ],
)
async def test_days_past_the_apis_range_are_refused_by_name(
    client: httpx.AsyncClient, path: str, name: str, value: str
) -> None:
    """Days both backends store as themselves only: 0001-01-02 to 9999-12-30."""
    params = {"start": "0001-01-02", "end": "0001-01-02"}
    if name == "end":
        params = {"start": "9999-12-30", "end": value}
    else:
        params[name] = value
    response = await client.get(f"{API}/{path}", params=params)
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["loc"] == ["query", name]
    assert "a day from 0001-01-02 to 9999-12-30" in error["msg"]
    edges = {"start": "0001-01-02", "end": "0001-01-02"}
    for edge in (edges, {"start": "9999-12-30", "end": "9999-12-30"}):
        assert (await client.get(f"{API}/{path}", params=edge)).status_code in (200, 404)
