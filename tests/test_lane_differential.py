"""Generated requests to the hot reads, answered by the lane and by the routes: the same.

Two services on the suite's PostgreSQL primary and replica, one with the lane and one
with HOT_READS=false. Hypothesis draws requests (valid and invalid ids, every query
parameter with good and bad values, unknown and repeated parameters, raw query
oddities, bearer tokens, consistency headers, GET and HEAD) and each must get the
same status, headers that matter and body bytes from both. A parameter a route gains
and the lane ignores shows up here as a difference.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from app.db.lsn import WRITE_LSN
from app.db.models import APPOINTMENT_STATUSES
from app.queries.reads import USER_RELATIONS
from tests.conftest import Postgres, pg_fetch
from tests.test_lane import API, Pair, _pair, _shop
from tests.test_routing import until

TOKENS = [SecretStr("s3cret-a"), SecretStr("s3cret-b")]
COMPARED_HEADERS = ("content-type", "content-length", "www-authenticate", "retry-after")
# method, path, query pairs, a raw query suffix, headers
Request = tuple[str, str, list[tuple[str, str]], str, dict[str, str]]


@dataclass
class World:
    pair: Pair
    shop: dict[str, Any]
    fast: httpx.AsyncClient
    slow: httpx.AsyncClient


async def _replayed_past(replica: str, lsn: str) -> bool:
    replayed = "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn"
    return bool((await pg_fetch(replica, replayed, lsn))[0][0])


async def _world(postgres: Postgres, **overrides: Any) -> AsyncIterator[World]:
    async for pair in _pair(postgres, **overrides):
        headers = {"Authorization": "Bearer s3cret-a"} if overrides.get("api_tokens") else {}
        pair.lane.client.headers.update(headers)
        shop = await _shop(pair)
        # Both sides may read from the replica: it must hold the whole shop first, i.e.
        # have replayed past where the primary's WAL was once the shop was made. Its insert
        # position: with synchronous_commit off (the test clusters), pg_current_wal_lsn()
        # may not have reached the shop's commits yet (app/db/lsn.py).
        made = (await pg_fetch(postgres.primary_url, WRITE_LSN))[0][0]
        for replica in postgres.replica_urls:
            await until(partial(_replayed_past, replica, made), what="the replica to hold the shop")
        transports = [httpx.ASGITransport(app=side.app) for side in (pair.lane, pair.routes)]
        async with (
            httpx.AsyncClient(transport=transports[0], base_url="http://test") as fast,
            httpx.AsyncClient(transport=transports[1], base_url="http://test") as slow,
        ):
            yield World(pair, shop, fast, slow)


@pytest.fixture
async def open_world(postgres: Postgres) -> AsyncIterator[World]:
    async for world in _world(postgres):
        yield world


@pytest.fixture
async def token_world(postgres: Postgres) -> AsyncIterator[World]:
    async for world in _world(postgres, api_tokens=TOKENS):
        yield world


# -- requests ---------------------------------------------------------------------------

ENDPOINTS = {
    "user": "users/{}",
    "barber": "barbers/{}/appointments",
    "location": "locations/{}/revenue",
}
ODD_IDS = ["0", "-1", "abc", "1.0", "+1", " 1", str(2**63 - 1), str(2**63), str(10**19), "١٢"]


def _often(value: Any, rest: st.SearchStrategy[Any], weight: int = 3) -> st.SearchStrategy[Any]:
    """`value` about `weight` times in `weight` + 1, else something from `rest`."""
    return st.one_of(*[st.just(value)] * weight, rest)


@st.composite
def requests(draw: st.DrawFn, shop: dict[str, Any]) -> Request:
    kind = draw(st.sampled_from(sorted(ENDPOINTS)))
    known = shop[kind]
    others = st.one_of(
        st.just(f"00{known}"),
        st.integers(1, 2**62).map(str),  # unknown ids: 404
        st.sampled_from(ODD_IDS),
    )
    key = draw(_often(str(known), others, 2))
    day: dt.date = shop["day"]
    odd_dates = [
        *("", "2033-02-30", "20330301", "9999-12-31", "9999-12-30", "0001-01-01"),
        *(f"{day}T00:00:00", f"{day}T01:00:00", f"{day} ", "today"),
    ]
    dates = st.one_of(
        st.dates(day - dt.timedelta(days=800), day + dt.timedelta(days=800)).map(str),
        st.sampled_from(odd_dates),
    )
    relations = [*USER_RELATIONS, *USER_RELATIONS, "bogus", "", "Payments"]
    include = st.one_of(
        st.lists(st.sampled_from(relations), max_size=4).map(",".join),
        st.sampled_from(["appointments\n", "payments," * 40, "payments"]),
    )
    statuses = st.sampled_from(
        [*APPOINTMENT_STATUSES, *APPOINTMENT_STATUSES, "bogus", "", "Pending"]
    )
    query: list[tuple[str, str]] = []
    if kind == "user":
        query += [("include", v) for v in draw(st.lists(include, max_size=1))]
    elif draw(_often(True, st.just(False))):  # a plausible range
        start = draw(st.dates(day - dt.timedelta(days=3), day))
        end = start + dt.timedelta(days=draw(st.integers(-1, 10)))
        query += [("start", str(start)), ("end", str(end))]
        if kind == "barber":
            query += [("status", s) for s in draw(st.lists(statuses, max_size=3))]
    noise = st.one_of(
        st.tuples(st.sampled_from(["start", "end"]), dates),
        st.tuples(st.just("include"), include),
        st.tuples(st.just("status"), statuses),
        st.tuples(
            st.sampled_from(["statuses", "limit", "x", "Start", "include[]", "start "]),
            st.text(max_size=4),
        ),
    )
    query += draw(_often([], st.lists(noise, min_size=1, max_size=3)))
    query = draw(st.permutations(query))
    raw = draw(_often("", st.sampled_from(["&", "&flag", "&=1", "&start", "&%ZZ=1", "&&"]), 5))
    bearer = "Bearer s3cret-a"
    authorization = st.sampled_from(
        [
            "bearer s3cret-b",
            "Bearer wrong",
            "Basic s3cret-a",
            "Bearer",
            "s3cret-a",
            "Bearer  s3cret-a ",
        ]
    )
    headers = draw(
        st.fixed_dictionaries(
            {"Authorization": _often(bearer, authorization)},
            optional={
                "X-Consistency-Token": _often(
                    "0/1", st.sampled_from(["0/0", "FF/0", "not-an-lsn", "", "1/ZZ"])
                ),
                "X-Read-Consistency": _often(
                    "primary", st.sampled_from(["any", "", "strong", "Primary"])
                ),
            },
        )
    )
    method = draw(_often("GET", st.just("HEAD")))
    return method, f"{API}/{ENDPOINTS[kind].format(key)}", query, raw, headers


async def _same_answer(world: World, request: Request) -> None:
    method, path, query, raw, headers = request
    url = httpx.URL(path, params=query)
    if raw:
        url = url.copy_with(query=(url.query + raw.encode()).lstrip(b"&"))
    fast = await world.fast.request(method, url, headers=headers)
    slow = await world.slow.request(method, url, headers=headers)
    seen = (method, str(url), headers)
    assert fast.status_code == slow.status_code, (seen, fast.text, slow.text)
    for name in COMPARED_HEADERS:
        assert fast.headers.get(name) == slow.headers.get(name), (seen, name)
    assert fast.content == slow.content, (seen, fast.text, slow.text)
    assert fast.status_code < 500, (seen, fast.text)


SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(data=st.data())
async def test_lane_and_routes_answer_alike(open_world: World, data: st.DataObject) -> None:
    await _same_answer(open_world, data.draw(requests(open_world.shop)))


@SETTINGS
@given(data=st.data())
async def test_lane_and_routes_answer_alike_with_tokens(
    token_world: World, data: st.DataObject
) -> None:
    await _same_answer(token_world, data.draw(requests(token_world.shop)))


async def test_the_generated_requests_reach_the_lane(open_world: World) -> None:
    """The comparison is worth something only if the lane answers many of them itself."""
    lane = open_world.pair.lane
    shop = open_world.shop
    day = shop["day"]
    week = {"start": str(day), "end": str(day + dt.timedelta(days=6))}
    for path in (f"barbers/{shop['barber']}/appointments", f"locations/{shop['location']}/revenue"):
        response = await open_world.fast.get(f"{API}/{path}", params=week)
        assert response.status_code == 200
        assert lane.answered[-1]
    assert (await open_world.fast.get(f"{API}/users/{shop['user']}")).status_code == 200
    assert lane.answered[-1]
