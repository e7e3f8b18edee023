"""Booking rules and the strict body contract: each refusal names its reason and changes nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.models import Appointment, Payment, Service, User
from app.main import create_app
from tests import factories, races
from tests.conftest import ConsistentClient, make_settings

API = "/api/v1"


def _day(days: int) -> dt.datetime:
    return dt.datetime.combine(
        dt.datetime.now(dt.UTC).date() + dt.timedelta(days=days), dt.time(), dt.UTC
    )


DAY = _day(40)


async def shop(app: FastAPI, client: httpx.AsyncClient) -> dict[str, int]:
    """A booking's ids, and the wrong ones the rules must refuse."""
    async with factories.committed(app, client) as session:
        loc = await factories.location(session)
        elsewhere = await factories.location(session)
        barber = await factories.user(session, "barber", location_id=loc.id)
        user = await factories.user(session)
        svc = await factories.service(session, loc.id)
        return {
            "user_id": user.id,
            "barber_id": barber.id,
            "service_id": svc.id,
            "location_id": loc.id,
            "other_client": (await factories.user(session, location_id=loc.id)).id,
            "other_barber": (await factories.user(session, "barber", location_id=loc.id)).id,
            "far_barber": (await factories.user(session, "barber", location_id=elsewhere.id)).id,
            "far_service": (await factories.service(session, elsewhere.id)).id,
            "retired_service": (await retired_service(session, loc.id)).id,
        }


async def retired_service(session: AsyncSession, location_id: int) -> Service:
    service = await factories.service(session, location_id)
    service.is_active = False
    return service


BOOKING_FIELDS = ("user_id", "barber_id", "service_id", "location_id")


def booking(ids: dict[str, int], start: dt.datetime, minutes: int = 30, **extra: Any) -> dict:
    return {
        **{k: ids[k] for k in BOOKING_FIELDS},
        "start_time": start.isoformat(),
        "end_time": (start + dt.timedelta(minutes=minutes)).isoformat(),
        **extra,
    }


async def appointments_of(app: FastAPI, *user_ids: int) -> int:
    """Rows naming any of these users as client or barber: what a refusal must not add."""
    async with factories.committed(app) as session:
        count = await session.scalar(
            select(func.count()).where(
                Appointment.user_id.in_(user_ids) | Appointment.barber_id.in_(user_ids)
            )
        )
    return int(count or 0)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


# name -> (the request body from the shop's ids, the detail it must answer)
REFUSALS: dict[str, tuple[Callable[[dict[str, int]], dict], str]] = {
    "past": (lambda ids: booking(ids, _now() - dt.timedelta(hours=1)), "start_time is in the past"),
    "2020": (
        lambda ids: booking(ids, dt.datetime(2020, 1, 6, 10, tzinfo=dt.UTC)),
        "start_time is in the past",
    ),
    "beyond horizon": (
        lambda ids: booking(ids, _day(366)),
        "start_time is more than 365 days ahead",
    ),
    "year 9999": (
        lambda ids: booking(ids, dt.datetime(9999, 1, 4, 10, tzinfo=dt.UTC)),
        "start_time is more than 365 days ahead",
    ),
    "own barber": (
        lambda ids: booking({**ids, "user_id": ids["barber_id"]}, DAY),
        "a client cannot be their own barber",
    ),
    "client as barber": (
        lambda ids: booking({**ids, "barber_id": ids["other_client"]}, DAY),
        "user {other_client} is not a barber",
    ),
    "barber elsewhere": (
        lambda ids: booking({**ids, "barber_id": ids["far_barber"]}, DAY),
        "barber {far_barber} does not work at location {location_id}",
    ),
    "service elsewhere": (
        lambda ids: booking({**ids, "service_id": ids["far_service"]}, DAY),
        "service {far_service} is not offered at location {location_id}",
    ),
    "retired service": (
        lambda ids: booking({**ids, "service_id": ids["retired_service"]}, DAY),
        "service {retired_service} is not offered at location {location_id}",
    ),
    "too long": (
        lambda ids: booking(ids, DAY, minutes=45),
        "service {service_id} lasts 30 minutes: end_time must be start_time plus that",
    ),
    "too short": (
        lambda ids: booking(ids, DAY, minutes=15),
        "service {service_id} lasts 30 minutes: end_time must be start_time plus that",
    ),
    "a minute long": (
        lambda ids: booking(ids, DAY, minutes=31),
        "service {service_id} lasts 30 minutes: end_time must be start_time plus that",
    ),
    "a minute short": (
        lambda ids: booking(ids, DAY, minutes=29),
        "service {service_id} lasts 30 minutes: end_time must be start_time plus that",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_booking_rules_refuse_by_name(
    app: FastAPI, client: httpx.AsyncClient, case: str
) -> None:
    ids = await shop(app, client)
    body, detail = REFUSALS[case]
    response = await client.post(f"{API}/appointments", json=body(ids))
    assert response.status_code == 422, response.text
    assert response.json() == {"error": "invalid_request", "detail": detail.format(**ids)}
    people = [ids[k] for k in ("user_id", "barber_id", "other_client", "far_barber")]
    assert await appointments_of(app, *people) == 0


async def test_clock_skew_allowance(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await shop(app, client)
    # Two minutes ago is within the default five minutes of clock skew.
    recent = await client.post(
        f"{API}/appointments", json=booking(ids, _now() - dt.timedelta(minutes=2))
    )
    assert recent.status_code == 201, recent.text
    horizon = await client.post(
        f"{API}/appointments", json=booking(ids, _now() + dt.timedelta(days=364))
    )
    assert horizon.status_code == 201, horizon.text


async def test_horizon_and_skew_are_settings(settings: Settings) -> None:
    strict = make_settings(
        settings.primary_url,
        [u.get_secret_value() for u in settings.replica_urls],
        booking_horizon_days=7,
        booking_clock_skew_seconds=0,
    )
    app = create_app(strict)
    async with (
        app.router.lifespan_context(app),
        ConsistentClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        ids = await shop(app, client)
        late = await client.post(f"{API}/appointments", json=booking(ids, _day(8)))
        assert late.json()["detail"] == "start_time is more than 7 days ahead"
        past = await client.post(
            f"{API}/appointments", json=booking(ids, _now() - dt.timedelta(minutes=2))
        )
        assert past.json()["detail"] == "start_time is in the past"
        assert (late.status_code, past.status_code) == (422, 422)
        assert await appointments_of(app, ids["user_id"]) == 0


async def test_client_cannot_be_in_two_places(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await shop(app, client)
    first = await client.post(f"{API}/appointments", json=booking(ids, DAY))
    assert first.status_code == 201, first.text
    # Another barber, free, at a time overlapping the first booking.
    other = {**ids, "barber_id": ids["other_barber"]}
    clash = await client.post(
        f"{API}/appointments", json=booking(other, DAY + dt.timedelta(minutes=15))
    )
    assert clash.status_code == 409
    assert clash.json() == {
        "error": "conflict",
        "detail": f"user {ids['user_id']} already has an appointment overlapping that time",
    }
    assert await appointments_of(app, ids["user_id"]) == 1
    # Back to back is fine; a cancelled appointment holds no time.
    after = await client.post(
        f"{API}/appointments", json=booking(other, DAY + dt.timedelta(minutes=30))
    )
    assert after.status_code == 201, after.text
    cancel = {"status": "cancelled", "version": 1}
    assert (
        await client.patch(f"{API}/appointments/{first.json()['id']}", json=cancel)
    ).status_code == 200
    again = await client.post(
        f"{API}/appointments", json=booking(other, DAY - dt.timedelta(minutes=15))
    )
    assert again.status_code == 201, again.text


async def test_one_client_racing_two_barbers(settings: Settings) -> None:
    # 200 bookings of one client at one time, half with each of two free barbers.
    patient = make_settings(
        settings.primary_url, [u.get_secret_value() for u in settings.replica_urls], pool_timeout=60
    )
    app = create_app(patient)
    async with (
        app.router.lifespan_context(app),
        ConsistentClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        ids = await shop(app, client)
        bodies = [
            booking({**ids, "barber_id": ids[b]}, DAY + dt.timedelta(hours=10))
            for b in ("barber_id", "other_barber")
        ]
        responses = await asyncio.gather(
            *(client.post(f"{API}/appointments", json=bodies[i % 2]) for i in range(200))
        )
        assert races.statuses(responses, {201, 409})[201] == 1
        details = {r.json()["detail"] for r in responses if r.status_code == 409}
        assert details <= {
            f"user {ids['user_id']} already has an appointment overlapping that time",
            f"barber {ids['barber_id']} already has an appointment overlapping that time",
            f"barber {ids['other_barber']} already has an appointment overlapping that time",
        }
        assert await appointments_of(app, ids["user_id"]) == 1


# -- one strict contract for bodies ---------------------------------------------------------


def extra_field(field: str) -> dict[str, Any]:
    return {
        "loc": ["body", field],
        "msg": "Extra inputs are not permitted",
        "type": "extra_forbidden",
    }


def refused(response: httpx.Response, *issues: dict[str, Any]) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert (body["error"], body["detail"]) == ("invalid_request", "the request is not valid")
    for issue in issues:
        assert issue in body["errors"], body["errors"]


async def test_unknown_body_fields_are_named(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await shop(app, client)
    response = await client.post(
        f"{API}/appointments", json=booking(ids, DAY, colour="blue", barber="Kwame")
    )
    refused(response, extra_field("colour"), extra_field("barber"))
    assert await appointments_of(app, ids["user_id"]) == 0

    email = f"strict-{ids['user_id']}@example.com"
    user = await client.post(f"{API}/users", json={"email": email, "name": "A", "nickname": "a"})
    refused(user, extra_field("nickname"))
    async with factories.committed(app) as session:
        assert await session.scalar(select(func.count()).where(User.email == email)) == 0

    key = {"Idempotency-Key": f"strict-{ids['user_id']}"}
    pay = {"user_id": ids["user_id"], "location_id": ids["location_id"], "amount": "5.00"}
    payment = await client.post(f"{API}/payments", json={**pay, "tip": "1.00"}, headers=key)
    refused(payment, extra_field("tip"))
    async with factories.committed(app) as session:
        count = await session.scalar(
            select(func.count()).where(Payment.idempotency_key == key["Idempotency-Key"])
        )
    assert count == 0


@pytest.mark.parametrize("value", ["501", 501.0, True, "0x1f5"])
async def test_ids_are_json_integers_only(
    app: FastAPI, client: httpx.AsyncClient, value: object
) -> None:
    ids = await shop(app, client)
    for field in BOOKING_FIELDS:
        response = await client.post(
            f"{API}/appointments", json={**booking(ids, DAY), field: value}
        )
        refused(response)
        [issue] = response.json()["errors"]
        assert issue["loc"] == ["body", field]
        assert issue["type"] == "int_type"
    assert await appointments_of(app, ids["user_id"], ids["barber_id"]) == 0


async def test_patch_with_a_field_it_cannot_apply(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await shop(app, client)
    created = (await client.post(f"{API}/appointments", json=booking(ids, DAY))).json()
    url = f"{API}/appointments/{created['id']}"
    moved = (DAY + dt.timedelta(hours=3)).isoformat()
    response = await client.patch(
        url, json={"status": "confirmed", "version": 1, "start_time": moved}
    )
    refused(response, extra_field("start_time"))
    for version in ("1", 1.0):
        response = await client.patch(url, json={"status": "confirmed", "version": version})
        refused(
            response,
            {
                "loc": ["body", "version"],
                "msg": "Input should be a valid integer",
                "type": "int_type",
            },
        )
    assert (await client.get(url)).json() == created
