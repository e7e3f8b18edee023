"""The strict query contract on every route, HEAD wherever GET works, unknown parents 404."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import func, select

from app.api import appointments, users
from app.api.contract import route_contract
from app.db.models import User
from tests import factories

API = "/api/v1"


def _named(response: httpx.Response) -> list[tuple[str, str]]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    return [(e["loc"][1], e["type"]) for e in body["errors"]]


async def test_every_route_refuses_unknown_query_parameters(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    gets = [
        "/health/live",
        "/metrics",
        f"{API}/users",
        f"{API}/users/1",
        f"{API}/appointments/1",
        f"{API}/payments/1",
        f"{API}/users/1/payments",
        f"{API}/barbers/1/appointments?start=2031-01-01&end=2031-01-02",
        f"{API}/locations/1/revenue?start=2031-01-01&end=2031-01-02",
    ]
    for url in gets:
        glue = "&" if "?" in url else "?"
        response = await client.get(f"{url}{glue}statuses=pending&x=1&x=2")
        assert _named(response) == [("statuses", "extra_forbidden"), ("x", "extra_forbidden")]
        assert "statuses" in response.json()["errors"][0]["msg"]


async def test_a_write_with_an_unknown_parameter_changes_nothing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    email = f"{uuid.uuid4().hex}@example.test"
    body = {"email": email, "name": "Strict", "unified_role": "client"}
    response = await client.post(f"{API}/users?dry_run=true", json=body)
    assert _named(response) == [("dry_run", "extra_forbidden")]
    async with factories.committed(app) as session:
        assert not await session.scalar(select(func.count()).where(User.email == email))


async def test_repeated_scalars_are_refused_repeatable_lists_are_not(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(f"{API}/users?limit=1&limit=2&after=0")
    assert _named(response) == [("limit", "repeated")]
    assert "more than once" in response.json()["errors"][0]["msg"]
    days = "start=2031-01-01&end=2031-01-02"
    response = await client.get(f"{API}/barbers/1/appointments?{days}&start=2031-01-01")
    assert _named(response) == [("start", "repeated")]
    response = await client.get(f"{API}/users/1?include=payments&include=payments")
    assert _named(response) == [("include", "repeated")]
    statuses = "status=pending&status=confirmed&status=pending"
    response = await client.get(f"{API}/barbers/{2**62}/appointments?{days}&{statuses}")
    assert response.status_code == 404  # the statuses were fine; the barber is unknown


def test_the_contract_is_derived_from_the_route() -> None:
    routes = {
        (r.path, *sorted(r.methods)): r
        for api in (appointments, users)
        for r in api.router.routes
        if isinstance(r, APIRoute)
    }
    schedule = route_contract(routes["/barbers/{barber_id}/appointments", "GET"])
    assert schedule.names == {"start", "end", "status"}
    assert schedule.repeatable == {"status"}
    users_contract = {"q", "role", "email", "after", "limit"}
    assert route_contract(routes["/users", "GET"]).names == users_contract
    assert route_contract(routes["/users/{user_id}", "GET"]).names == {"include"}
    assert route_contract(routes["/appointments", "POST"]).names == set()


async def test_head_works_wherever_get_does(app: FastAPI, client: httpx.AsyncClient) -> None:
    async with factories.committed(app, client) as session:
        user = await factories.user(session)
    for url in ("/health/live", f"{API}/users?limit=2", f"{API}/users/{user.id}", "/metrics"):
        got, head = await client.get(url), await client.head(url)
        assert head.status_code == got.status_code == 200, url
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
    missing = await client.head(f"{API}/users/{2**62}")
    assert missing.status_code == 404
    assert missing.content == b""
    assert (await client.head(f"{API}/appointments")).status_code == 405


@pytest.mark.parametrize(
    "path",
    [f"barbers/{2**62}/appointments", f"locations/{2**62}/revenue"],
)
async def test_hot_reads_under_an_unknown_parent_are_404(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(f"{API}/{path}?start=2031-01-01&end=2031-01-07")
    assert response.status_code == 404
    kind = path.split("/")[0].removesuffix("s")
    assert response.json() == {"error": "not_found", "detail": f"{kind} {2**62} does not exist"}


async def test_a_known_parent_with_nothing_in_range_is_an_empty_200(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async with factories.committed(app, client) as session:
        barber = await factories.user(session, "barber")
        location = await factories.location(session)
    days = "start=1999-01-01&end=1999-01-07"
    schedule = await client.get(f"{API}/barbers/{barber.id}/appointments?{days}")
    assert (schedule.status_code, schedule.json()) == (200, [])
    revenue = await client.get(f"{API}/locations/{location.id}/revenue?{days}")
    assert (revenue.status_code, revenue.json()["days"]) == (200, [])
