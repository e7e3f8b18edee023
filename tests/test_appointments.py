"""Appointments: booking without double-booking, status changes by version, the barber dashboard."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.config import Settings
from app.db.models import Appointment
from app.main import create_app
from tests import factories, races
from tests.conftest import ConsistentClient, make_settings

API = "/api/v1"
# Bookings must start within the booking horizon (365 days by default): a month ahead.
DAY = dt.datetime.combine(dt.datetime.now(dt.UTC).date() + dt.timedelta(days=30), dt.time(), dt.UTC)


async def shop(app: FastAPI, client: httpx.AsyncClient) -> dict[str, int]:
    """A location with a barber, a client and a service: the ids a booking needs."""
    async with factories.committed(app, client) as session:
        loc = await factories.location(session)
        barber = await factories.user(session, "barber", name="Kwame Barber", location_id=loc.id)
        user = await factories.user(session, name="Ana Client")
        svc = await factories.service(session, loc.id)
        return {
            "user_id": user.id,
            "barber_id": barber.id,
            "service_id": svc.id,
            "location_id": loc.id,
        }


def booking(ids: dict[str, int], start: dt.datetime, minutes: int = 30, **extra: Any) -> dict:
    return {
        **ids,
        "start_time": start.isoformat(),
        "end_time": (start + dt.timedelta(minutes=minutes)).isoformat(),
        **extra,
    }


async def test_create_and_get_appointment(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await shop(app, client)
    # 23:30 in New York is the next day in UTC: appointment_date follows UTC.
    start = dt.datetime.combine(DAY.date(), dt.time(23, 30), dt.timezone(dt.timedelta(hours=-5)))
    created = await client.post(f"{API}/appointments", json=booking(ids, start, notes="fade"))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "pending"
    assert body["version"] == 1
    next_day = (DAY + dt.timedelta(days=1)).date().isoformat()
    assert body["appointment_date"] == next_day
    assert body["start_time"] == f"{next_day}T04:30:00Z"
    assert body["end_time"] == f"{next_day}T05:00:00Z"
    assert body["notes"] == "fade"
    assert {k: body[k] for k in ids} == ids

    fetched = await client.get(f"{API}/appointments/{body['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == body
    assert (await client.get(f"{API}/appointments/{2**63 - 1}")).status_code == 404
    assert (await client.get(f"{API}/appointments/{2**63}")).status_code == 422


@pytest.mark.parametrize(
    "change",
    [
        {"start_time": "2031-03-03T10:00:00", "end_time": "2031-03-03T10:30:00"},  # naive
        {"start_time": "2031-03-03T10:00:00Z", "end_time": "2031-03-03T10:00:00Z"},
        {"start_time": "2031-03-03T10:00:00Z", "end_time": "2031-03-03T09:00:00Z"},
        {"start_time": "2031-03-03T10:00:00Z", "end_time": "2031-03-05T10:00:00Z"},
        {"start_time": "0001-01-01T00:00:00+05:00", "end_time": "0001-01-01T01:00:00+05:00"},
        {"start_time": "tomorrow"},
        {"barber_id": 0},
        {"user_id": 2**63},
        {"notes": "x" * 2001},
        {"notes": "nul \x00"},
    ],
)
async def test_create_appointment_rejects_bad_input(
    app: FastAPI, client: httpx.AsyncClient, change: dict
) -> None:
    body = {**booking({"user_id": 1, "barber_id": 1, "service_id": 1, "location_id": 1}, DAY)}
    response = await client.post(f"{API}/appointments", json={**body, **change})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("written", [int, str, lambda seconds: seconds + 0.5])
async def test_times_as_seconds_since_1970_are_refused(
    app: FastAPI, client: httpx.AsyncClient, written: Any
) -> None:
    """Date-times with an offset, as the OpenAPI document says: pydantic alone would take a
    number of seconds, as a JSON number or text, and book it."""
    ids = await shop(app, client)
    start = DAY + dt.timedelta(hours=15)
    seconds = {"start_time": start, "end_time": start + dt.timedelta(minutes=30)}
    body = {**ids, **{k: written(int(v.timestamp())) for k, v in seconds.items()}}
    response = await client.post(f"{API}/appointments", json=body)
    assert response.status_code == 422, response.text
    assert {e["loc"][1] for e in response.json()["errors"]} == {"start_time", "end_time"}
    day = {"start": start.date().isoformat(), "end": start.date().isoformat()}
    url = f"{API}/barbers/{ids['barber_id']}/appointments"
    assert (await client.get(url, params=day)).json() == []
    # The same booking written as the document says is taken.
    assert (await client.post(f"{API}/appointments", json=booking(ids, start))).status_code == 201


@pytest.mark.parametrize(
    ("start", "end", "out"),
    [
        ("0001-01-01T00:00:00Z", "0001-01-01T00:30:00Z", {"start_time", "end_time"}),
        ("0001-01-02T00:30:00+01:00", "0001-01-02T01:00:00+01:00", {"start_time"}),
        ("9999-12-30T23:30:00Z", "9999-12-31T00:00:00Z", {"end_time"}),
        ("9999-12-31T23:00:00-02:00", "9999-12-31T23:30:00-02:00", {"start_time", "end_time"}),
    ],
)
async def test_instants_past_the_apis_days_are_refused_by_name(
    client: httpx.AsyncClient, start: str, end: str, out: set[str]
) -> None:
    """Instants whose UTC day is outside 0001-01-02..9999-12-30 (asyncpg's infinities)."""
    body = {**booking({"user_id": 1, "barber_id": 1, "service_id": 1, "location_id": 1}, DAY)}
    response = await client.post(
        f"{API}/appointments", json={**body, "start_time": start, "end_time": end}
    )
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert {e["loc"][1] for e in errors} == out, errors
    for e in errors:
        assert e["loc"][0] == "body"
        assert "a day from 0001-01-02 to 9999-12-30 once in UTC" in e["msg"]


@pytest.mark.parametrize(
    ("missing", "detail"),
    [
        ("user_id", "user {user_id} or location {location_id} does not exist"),
        ("barber_id", "barber {barber_id} does not exist"),
        ("service_id", "service {service_id} does not exist"),
        ("location_id", "barber {barber_id} does not work at location {location_id}"),
    ],
)
async def test_create_appointment_with_unknown_reference(
    app: FastAPI, client: httpx.AsyncClient, missing: str, detail: str
) -> None:
    ids = {**await shop(app, client), missing: 2**62}
    response = await client.post(f"{API}/appointments", json=booking(ids, DAY))
    assert response.status_code == 422
    assert response.json()["detail"] == detail.format(**ids)


async def test_overlap_is_a_conflict(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await shop(app, client)
    async with factories.committed(app, client) as session:
        hour = (await factories.service(session, ids["location_id"], minutes=60)).id
        other = (await factories.user(session, "barber", location_id=ids["location_id"])).id
        someone = (await factories.user(session)).id
    first = await client.post(
        f"{API}/appointments", json=booking({**ids, "service_id": hour}, DAY, 60)
    )
    assert first.status_code == 201, first.text

    # Another client, the same barber, inside the first hour.
    inside = await client.post(
        f"{API}/appointments",
        json=booking({**ids, "user_id": someone}, DAY + dt.timedelta(minutes=30)),
    )
    assert inside.status_code == 409
    assert inside.json() == {
        "error": "conflict",
        "detail": f"barber {ids['barber_id']} already has an appointment overlapping that time",
    }
    # Half-open ranges: a booking may start when the previous one ends.
    after = await client.post(f"{API}/appointments", json=booking(ids, DAY + dt.timedelta(hours=1)))
    assert after.status_code == 201
    # Another barber is free at the same time, for another client.
    elsewhere = await client.post(
        f"{API}/appointments", json=booking({**ids, "barber_id": other, "user_id": someone}, DAY)
    )
    assert elsewhere.status_code == 201

    # Cancelling frees the slot.
    cancel = {"status": "cancelled", "version": 1}
    cancelled = await client.patch(f"{API}/appointments/{first.json()['id']}", json=cancel)
    assert cancelled.status_code == 200
    again = await client.post(
        f"{API}/appointments", json=booking({**ids, "service_id": hour}, DAY, 60)
    )
    assert again.status_code == 201


async def test_which_statuses_hold_the_barbers_time(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Pending, confirmed and in-progress appointments keep the barber's time; completed,
    cancelled and missed ones free it (spelled out here, not read from the code)."""
    ids = await shop(app, client)
    holding = {"pending": True, "confirmed": True, "in_progress": True}
    holding |= {"completed": False, "cancelled": False, "no_show": False}
    async with factories.committed(app, client) as session:
        someone = (await factories.user(session)).id
        for hour, status in enumerate(holding):
            await factories.appointment(
                session,
                user_id=someone,
                barber_id=ids["barber_id"],
                service_id=ids["service_id"],
                location_id=ids["location_id"],
                start=DAY + dt.timedelta(hours=hour),
                status=status,
            )
    answered = {}
    for hour, status in enumerate(holding):
        start = DAY + dt.timedelta(hours=hour, minutes=15)
        response = await client.post(f"{API}/appointments", json=booking(ids, start))
        answered[status] = response.status_code == 409
    assert answered == holding


async def test_status_changes_by_version(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await shop(app, client)
    created = (await client.post(f"{API}/appointments", json=booking(ids, DAY))).json()
    url = f"{API}/appointments/{created['id']}"

    confirmed = await client.patch(url, json={"status": "confirmed", "version": 1})
    assert confirmed.status_code == 200
    assert confirmed.json()["status"] == "confirmed"
    assert confirmed.json()["version"] == 2
    assert confirmed.json()["updated_at"] >= created["updated_at"]

    stale = await client.patch(url, json={"status": "cancelled", "version": 1})
    assert stale.status_code == 409
    assert stale.json()["detail"] == f"appointment {created['id']} is at version 2, not 1"

    skip = await client.patch(url, json={"status": "completed", "version": 2})
    assert skip.status_code == 409
    assert skip.json()["detail"] == "an appointment cannot go from confirmed to completed"

    for status, version in (("in_progress", 2), ("completed", 3)):
        step = await client.patch(url, json={"status": status, "version": version})
        assert step.status_code == 200, step.text
    for status in ("pending", "confirmed", "cancelled", "no_show", "in_progress"):
        final = await client.patch(url, json={"status": status, "version": 4})
        assert final.status_code == 409, status
    assert (await client.get(url)).json()["status"] == "completed"

    missing = await client.patch(
        f"{API}/appointments/{2**62}", json={"status": "confirmed", "version": 1}
    )
    assert missing.status_code == 404
    for bad in ({"status": "done", "version": 1}, {"status": "confirmed", "version": 0}, {}):
        assert (await client.patch(url, json=bad)).status_code == 422


async def test_concurrent_versions_one_winner(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await shop(app, client)
    created = (await client.post(f"{API}/appointments", json=booking(ids, DAY))).json()
    url = f"{API}/appointments/{created['id']}"
    responses = await asyncio.gather(
        *(
            client.patch(url, json={"status": s, "version": 1})
            for s in ["confirmed", "cancelled"] * 10
        )
    )
    # One change (version 2, by its one 200), every other racer refused or told to retry.
    assert races.statuses(responses, {200, 409})[200] == 1
    [won] = [r.json() for r in responses if r.status_code == 200]
    async with factories.committed(app) as session:
        row = await session.get(Appointment, created["id"])
        assert row is not None
        assert (row.status, row.version) == (won["status"], 2)


async def test_barber_dashboard(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await shop(app, client)
    made = []
    for offset_hours in (26, 2, 1):  # booked out of order: the response is ordered
        start = DAY + dt.timedelta(hours=offset_hours)
        made.append((await client.post(f"{API}/appointments", json=booking(ids, start))).json())
    late, second, first = made
    for appointment in (late, first):
        url = f"{API}/appointments/{appointment['id']}"
        assert (
            await client.patch(url, json={"status": "confirmed", "version": 1})
        ).status_code == 200
    async with factories.committed(app, client) as session:
        await factories.payment(
            session,
            user_id=ids["user_id"],
            location_id=ids["location_id"],
            appointment_id=first["id"],
            amount="25.00",
        )

    url = f"{API}/barbers/{ids['barber_id']}/appointments"
    day = DAY.date().isoformat()
    default = await client.get(url, params={"start": day, "end": day})
    assert default.status_code == 200
    [only] = default.json()
    assert only["id"] == first["id"]
    assert only["user"]["name"] == "Ana Client"
    assert only["service"]["price"] == "25.00"
    assert only["payment"]["amount"] == "25.00"

    both_days = {"start": day, "end": (DAY + dt.timedelta(days=1)).date().isoformat()}
    listed = (
        await client.get(url, params={**both_days, "status": ["confirmed", "pending"]})
    ).json()
    assert [a["id"] for a in listed] == [first["id"], second["id"], late["id"]]
    assert listed[1]["payment"] is None
    assert (await client.get(url, params={**both_days, "status": "no_show"})).json() == []

    for params in (
        {"start": day},
        {"start": "2031-03-05", "end": day},
        {"start": "2030-01-01", "end": "2031-12-31"},
        {"start": day, "end": day, "status": "done"},
        {"start": "someday", "end": day},
        # Only YYYY-MM-DD: pydantic alone takes a midnight's date-time, and seconds.
        {"start": f"{day}T00:00:00Z", "end": day},
        {"start": str(int(DAY.timestamp())), "end": day},
    ):
        assert (await client.get(url, params=params)).status_code == 422, params


async def test_concurrent_bookings_of_one_slot(settings: Settings) -> None:
    # SQLite serializes the 200 writers through its busy handler, which can keep
    # the last ones waiting for a pooled connection longer than the suite's 5 s.
    patient = make_settings(
        settings.primary_url,
        [u.get_secret_value() for u in settings.replica_urls],
        pool_timeout=30,
    )
    app = create_app(patient)
    async with (
        app.router.lifespan_context(app),
        ConsistentClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        ids = await shop(app, client)
        slot = booking(ids, DAY + dt.timedelta(hours=9))
        responses = await asyncio.gather(
            *(client.post(f"{API}/appointments", json=slot) for _ in range(200))
        )
        assert races.statuses(responses, {201, 409})[201] == 1
        async with factories.committed(app) as session:
            rows = await session.scalar(
                select(func.count()).where(Appointment.barber_id == ids["barber_id"])
            )
        assert rows == 1
