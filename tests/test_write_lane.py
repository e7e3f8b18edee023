"""The booking lane (app/api/write_lane.py) against the route it stands in front of.

Two services on the same PostgreSQL primary and replica: one with the lanes, one with
HOT_READS=false, where every booking goes through FastAPI. Every request gets the same
status, content type and JSON (ids and timestamps aside) from both; valid bookings are
answered by the lane, everything it is unsure of goes on to the route with its body.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from app.main import Service, create_app
from tests.conftest import Postgres, make_settings
from tests.test_booking_rules import API, DAY, REFUSALS, booking, shop

TOKEN = "write-lane-token"
VARIES = {"id", "created_at", "updated_at", "start_time", "end_time", "appointment_date"}


@dataclass
class Side:
    app: Service
    client: httpx.AsyncClient
    answered: list[bool] = field(default_factory=list)
    fallbacks: int = 0


@asynccontextmanager
async def _side(postgres: Postgres, **overrides: Any) -> AsyncIterator[Side]:
    app = create_app(make_settings(postgres.primary_url, postgres.replica_urls, **overrides))
    assert isinstance(app, Service)
    async with app.router.lifespan_context(app):
        side = Side(
            app, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        )
        lane = app.booking_lane
        answer, fallback = lane.answer, lane._fallback

        async def counted(*args: Any) -> bool:
            before = side.fallbacks
            answered = await answer(*args)
            # Handed on after reading the body: the route answered.
            side.answered.append(answered and side.fallbacks == before)
            return answered

        async def fell_back(*args: Any) -> None:
            side.fallbacks += 1
            await fallback(*args)

        lane.answer = counted  # type: ignore[method-assign]
        lane._fallback = fell_back  # type: ignore[method-assign]
        async with side.client:
            yield side


@dataclass
class Pair:
    lane: Side
    route: Side

    async def post(
        self, body: Any, other: Any = None, **kwargs: Any
    ) -> tuple[httpx.Response, bool]:
        """Both answers, held equal; and whether the lane answered. `other`: the route's body
        where the two must not book the same slot."""
        seen = len(self.lane.answered)
        fast = await self.lane.client.post(f"{API}/appointments", **_content(body), **kwargs)
        slow = await self.route.client.post(
            f"{API}/appointments", **_content(body if other is None else other), **kwargs
        )
        assert fast.status_code == slow.status_code, (body, fast.text, slow.text)
        for header in ("content-type", "www-authenticate", "connection"):
            assert fast.headers.get(header) == slow.headers.get(header), header
        assert ("x-consistency-token" in fast.headers) == ("x-consistency-token" in slow.headers)
        assert "x-request-id" in fast.headers
        mine, theirs = fast.json(), slow.json()
        if fast.status_code == 201:
            mine = {k: v for k, v in mine.items() if k not in VARIES}
            theirs = {k: v for k, v in theirs.items() if k not in VARIES}
        assert mine == theirs, body
        assert not any(self.route.answered)
        # Not reached (the edge stack refused it first) is not answered either.
        return fast, len(self.lane.answered) > seen and self.lane.answered[-1]


def _content(body: Any) -> dict[str, Any]:
    return {"content": body} if isinstance(body, str | bytes) else {"json": body}


@asynccontextmanager
async def _pair(postgres: Postgres, **overrides: Any) -> AsyncIterator[Pair]:
    async with (
        _side(postgres, **overrides) as fast,
        _side(postgres, hot_reads=False, **overrides) as slow,
    ):
        yield Pair(fast, slow)


async def test_bookings_and_refusals_answer_as_the_route_does(postgres: Postgres) -> None:
    async with _pair(postgres) as pair:
        ids = await shop(pair.lane.app, pair.lane.client)
        slot = DAY + dt.timedelta(hours=9)
        made, answered = await pair.post(
            booking(ids, slot), booking(ids, slot + dt.timedelta(hours=1))
        )
        assert made.status_code == 201
        assert answered
        assert made.json()["start_time"] == (DAY + dt.timedelta(hours=9)).isoformat().replace(
            "+00:00", "Z"
        )
        # The same slot again: each side's second try meets the first side's booking.
        busy = booking(ids, DAY + dt.timedelta(hours=9))
        fast = await pair.lane.client.post(f"{API}/appointments", json=busy)
        slow = await pair.route.client.post(f"{API}/appointments", json=busy)
        assert (fast.status_code, fast.json()) == (slow.status_code, slow.json())
        assert fast.status_code == 409
        for name, (make, _) in REFUSALS.items():
            refused, answered = await pair.post(make(ids))
            assert refused.status_code == 422, name
            assert answered, name  # the lane's own words, the route's
        unknown, answered = await pair.post({**booking(ids, DAY), "user_id": 10**15})
        assert unknown.status_code == 422
        assert answered


@pytest.mark.parametrize(
    "body",
    [
        "{",
        "",
        "[]",
        "null",
        '{"user_id": "1"}',
        {"user_id": 1},
    ],
)
async def test_bodies_the_model_refuses_go_to_the_route(postgres: Postgres, body: Any) -> None:
    async with _pair(postgres) as pair:
        refused, answered = await pair.post(body, headers={"content-type": "application/json"})
        assert refused.status_code == 422
        assert not answered


async def test_unknown_fields_and_other_content_types_go_to_the_route(
    postgres: Postgres,
) -> None:
    async with _pair(postgres) as pair:
        ids = await shop(pair.lane.app, pair.lane.client)
        extra, answered = await pair.post({**booking(ids, DAY), "colour": "red"})
        assert extra.status_code == 422
        assert not answered
        plain, answered = await pair.post('{"a": 1}', headers={"content-type": "text/plain"})
        assert plain.status_code == 422
        assert not answered


async def test_tokens_and_body_limits_hold_in_the_lane(postgres: Postgres) -> None:
    async with _pair(postgres, api_tokens=[SecretStr(TOKEN)], max_body_bytes=2_000) as pair:
        ids = await shop(pair.lane.app, pair.lane.client)
        body = booking(ids, DAY + dt.timedelta(hours=11))
        missing, _ = await pair.post(body)
        assert missing.status_code == 401
        wrong, _ = await pair.post(body, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        large, _ = await pair.post({**body, "notes": "x" * 3_000}, headers=_bearer())
        assert large.status_code == 413
        later = booking(ids, DAY + dt.timedelta(hours=12))
        made, answered = await pair.post(body, later, headers=_bearer())
        assert made.status_code == 201
        assert answered


def _bearer() -> dict[str, str]:
    return {"authorization": f"Bearer {TOKEN}"}
