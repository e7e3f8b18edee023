"""Generated bookings, answered by the booking lane and by the route: the same, row for row.

Bookings change what the next one meets, so each service has a database of its own: the
shop is seeded once and its database cloned (CREATE DATABASE ... TEMPLATE), so both start
with the same rows and the same sequence positions. One service books with the lane
(app/api/write_lane.py), the other with HOT_READS=false, where FastAPI's route answers.
Hypothesis draws requests (every field of the booking with good, bad, missing, extra and
wrong-typed values, ids of the wrong rows, past, far and overlapping times, JSON oddities,
raw bytes, content types, bearer tokens, headers the route ignores, query strings) and
each goes to both in the same order: the same status, headers that matter and body, the
same HTTP metrics, and after it the same appointments, ids included, and the same id
sequence. The lane's own counter (booking_lane_requests_total) shows it answered most.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from app.db.migrate import upgrade_async
from app.db.models import Service
from app.main import create_app
from tests import factories
from tests.conftest import (
    ConsistentClient,
    Postgres,
    _plain,
    create_database,
    drop_database,
    make_settings,
    unique,
)
from tests.test_booking_rules import DAY, shop

ROUTE = "/api/v1/appointments"
TOKENS = [SecretStr("book-a"), SecretStr("book-b")]
MAX_BODY = 4_096
COMPARED_HEADERS = ("content-type", "www-authenticate", "retry-after", "connection")
STAMPS = ("created_at", "updated_at")  # now() on each side
# An appointment the seed holds, so that generated bookings can overlap what was there.
SEEDED = DAY + dt.timedelta(hours=10)


@dataclass
class Side:
    app: Any
    client: httpx.AsyncClient
    db: asyncpg.Connection

    def lane_count(self, answered_by: str) -> float:
        registry = self.app.state.metrics_registry
        labels = {"answered_by": answered_by}
        return registry.get_sample_value("booking_lane_requests_total", labels) or 0.0

    def http_counts(self) -> dict[tuple[str, ...], float]:
        counts: dict[tuple[str, ...], float] = {}
        for family in self.app.state.metrics_registry.collect():
            for s in family.samples:
                if s.name == "http_requests_total" and s.labels["handler"] == ROUTE:
                    counts[(s.labels["method"], s.labels["status"])] = s.value
        return counts

    async def appointments(self) -> tuple[list[dict[str, Any]], tuple[Any, ...]]:
        rows = await self.db.fetch("SELECT * FROM appointments ORDER BY id")
        sequence = await self.db.fetchrow("SELECT last_value, is_called FROM appointments_id_seq")
        assert sequence is not None
        kept = [{k: v for k, v in r.items() if k not in STAMPS} for r in rows]
        return kept, tuple(sequence)


@dataclass
class World:
    ids: dict[str, int]
    lane: Side
    route: Side
    sent: int = 0


async def _seed(url: str) -> dict[str, int]:
    app = create_app(make_settings(url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with ConsistentClient(transport=transport, base_url="http://t") as client:
            ids = await shop(app, client)
            async with factories.committed(app) as session:
                await factories.appointment(
                    session,
                    user_id=ids["other_client"],
                    barber_id=ids["other_barber"],
                    service_id=ids["service_id"],
                    location_id=ids["location_id"],
                    start=SEEDED,
                    status="pending",
                )
                far = await session.get(Service, ids["far_service"])
                assert far is not None
                ids["elsewhere"] = far.location_id
    return ids


async def _replica_has(postgres: Postgres, name: str) -> None:
    """The new database replayed on every replica, so each service starts with them all."""
    for url in postgres.replica_urls:
        for _ in range(300):
            try:
                conn = await asyncpg.connect(_plain(postgres.with_database(url, name)))
            except asyncpg.InvalidCatalogNameError:
                await asyncio.sleep(0.05)
                continue
            await conn.close()
            break
        else:
            raise AssertionError(f"{name} never reached the replica")


@pytest.fixture
async def world(postgres: Postgres) -> AsyncIterator[World]:
    first, second = (unique(n).replace("-", "_") for n in ("lane", "route"))
    url = await create_database(postgres, first)
    try:
        await upgrade_async(url)
        ids = await _seed(url)
        admin = await asyncpg.connect(_plain(postgres.with_database(url, "postgres")))
        try:
            await admin.execute(f'CREATE DATABASE "{second}" TEMPLATE "{first}"')
        finally:
            await admin.close()
        async with (
            _side(postgres, first) as lane,
            _side(postgres, second, hot_reads=False) as route,
        ):
            w = World(ids, lane, route)
            assert await lane.appointments() == await route.appointments()
            yield w
            # Worth something only if the lane answered most of them itself, and booked some.
            assert route.lane_count("lane") == 0
            assert route.lane_count("route") == w.sent
            assert lane.lane_count("lane") + lane.lane_count("route") == w.sent
            if w.sent >= 100:
                assert lane.lane_count("lane") >= 0.45 * w.sent, (lane.lane_count("lane"), w.sent)
                rows, _ = await lane.appointments()
                assert len(rows) >= 50, len(rows)
    finally:
        await drop_database(postgres, first)
        await drop_database(postgres, second)


@asynccontextmanager
async def _side(postgres: Postgres, name: str, **overrides: Any) -> AsyncIterator[Side]:
    await _replica_has(postgres, name)
    urls = [postgres.with_database(u, name) for u in (postgres.primary_url, *postgres.replica_urls)]
    app = create_app(
        make_settings(urls[0], urls[1:], api_tokens=TOKENS, max_body_bytes=MAX_BODY, **overrides)
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            db = await asyncpg.connect(_plain(urls[0]))
            try:
                yield Side(app, client, db)
            finally:
                await db.close()


# -- requests ---------------------------------------------------------------------------


def _weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each about as often as its weight says.

    Not one_of(s, s, ..., t): one_of keeps one of equal branches, whatever their number.
    """
    picks = [i for i, (weight, _) in enumerate(choices) for _ in range(weight)]
    return st.sampled_from(picks).flatmap(lambda i: choices[i][1])


def _often(value: Any, rest: st.SearchStrategy[Any], weight: int = 3) -> st.SearchStrategy[Any]:
    """`value` about `weight` times in `weight` + 1, else something from `rest`."""
    return _weighted((weight, st.just(value)), (1, rest))


# Hypothesis draws the same few integers again and again: most times drawn would meet a
# booking already made. A fresh slot is one no request has named yet.
_SLOTS = itertools.count()
_fresh = st.builds(lambda: DAY + dt.timedelta(days=60, minutes=30 * next(_SLOTS)))


# JSON text of ids that are no id: the model refuses them, the route words the 422.
BAD_IDS = [
    *("0", "-1", "1.0", "1e3", "true", "false", "null", '"7"', "[]", "{}", "-0"),
    *(str(2**63), "1" + "0" * 400, "NaN", "Infinity", "-Infinity", "1e400"),
]
MISSING = str(10**12)  # no such user, service or location
UNICODE = ["Fade \u00e9\u00e8", "\u7a7a", "\U0001f488 trim", "\u202eright-to-left", "a\tb\n"]
ODD_TIMES = [
    *('""', '"tomorrow"', '"2033-02-30T10:00:00Z"', '"10:00"', "null", "1.5", "[]"),
    *('"9999-12-31T23:59:59Z"', '"0001-01-01T00:30:00+01:00"', '"9999-12-31T23:00:00-02:00"'),
]


def _id(ids: dict[str, int], good: str, others: list[str], clean: bool) -> st.SearchStrategy[str]:
    wrong = st.sampled_from([str(ids[k]) for k in others] + [MISSING, str(2**63 - 1)])
    if not clean:
        wrong |= st.sampled_from(BAD_IDS) | st.integers(1, 2**63 - 1).map(str)
    return _often(str(ids[good]), wrong, 6)


def _render(moment: dt.datetime, clean: bool) -> st.SearchStrategy[str]:
    """A moment as the client writes it: UTC in either spelling, another offset, naive."""
    offsets = [dt.timedelta(hours=h) for h in (-11, 0, 5.5, 14)]
    utc = json.dumps(moment.isoformat().replace("+00:00", "Z"))
    aware = st.just(json.dumps(moment.isoformat())) | st.sampled_from(offsets).map(
        lambda o: json.dumps(moment.astimezone(dt.timezone(o)).isoformat())
    )
    if clean:
        return _often(utc, aware)
    naive = json.dumps(moment.replace(tzinfo=None).isoformat())  # refused
    epoch = str(int(moment.timestamp()))  # seconds since the epoch: pydantic takes them
    return _often(utc, aware | st.sampled_from([naive, epoch]))


@st.composite
def _times(draw: st.DrawFn, clean: bool) -> tuple[str, str]:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    busy = st.integers(0, 11).map(lambda k: DAY + dt.timedelta(hours=9, minutes=15 * k))
    free = st.tuples(st.integers(1, 20), st.integers(0, 80)).map(
        lambda t: DAY + dt.timedelta(days=t[0], minutes=15 * t[1])
    )
    elsewhere = [
        now - dt.timedelta(days=2),  # past
        now + dt.timedelta(days=400),  # past the 365-day horizon
        now + dt.timedelta(days=360),
        SEEDED,
    ]
    start = draw(_weighted((3, _fresh), (2, busy), (1, free), (1, st.sampled_from(elsewhere))))
    durations = [45, 0, -15, 24 * 60, 24 * 60 + 1, 29]
    minutes = draw(_often(30, st.sampled_from(durations[:1] if clean else durations), 4))
    rendered = clean or draw(_often(True, st.just(False), 8))
    start_text = draw(_render(start, clean)) if rendered else draw(st.sampled_from(ODD_TIMES))
    end_text = draw(_render(start + dt.timedelta(minutes=minutes), clean))
    return start_text, end_text


def _notes(clean: bool) -> st.SearchStrategy[str]:
    good = st.text(max_size=40).map(json.dumps) | st.sampled_from(UNICODE).map(
        lambda s: json.dumps(s, ensure_ascii=False)
    )
    if clean:
        return good | st.just("null")
    return st.one_of(
        good,
        st.sampled_from(["null", "123", "[]", "{}", "true", '"\\ud800"', '"nul\\u0000"']),
        st.sampled_from([2000, 2001]).map(lambda n: json.dumps("n" * n)),
        st.just(json.dumps("\u00e9" * 1900, ensure_ascii=False)),  # past MAX_BODY: 413
    )


@st.composite
def _fields(draw: st.DrawFn, ids: dict[str, int], clean: bool) -> list[tuple[str, str]]:
    """The booking's members as (name, JSON text): unless clean, some missing, some extra,
    some twice, some of the wrong type."""
    start, end = draw(_times(clean))
    fields = [
        ("user_id", draw(_id(ids, "user_id", ["other_client", "barber_id", "far_barber"], clean))),
        (
            "barber_id",
            draw(_id(ids, "barber_id", ["other_barber", "far_barber", "user_id"], clean)),
        ),
        ("service_id", draw(_id(ids, "service_id", ["far_service", "retired_service"], clean))),
        ("location_id", draw(_id(ids, "location_id", ["elsewhere"], clean))),
        ("start_time", start),
        ("end_time", end),
    ]
    if draw(st.booleans()):
        fields.append(("notes", draw(_notes(clean))))
    if clean:
        return draw(st.permutations(fields))
    fields = [f for f in fields if draw(_often(True, st.just(False), 40))]
    extras = st.sampled_from(["colour", "id", "status", "version", "User_id", "notes ", ""])
    fields += draw(_often([], st.lists(st.tuples(extras, st.just("1")), max_size=2), 8))
    twice = st.lists(st.sampled_from(fields), max_size=2) if fields else st.just([])
    fields += draw(_often([], twice, 8))  # JSON's duplicate keys: the last one counts
    return draw(st.permutations(fields))


OTHER_BODIES = [
    *(b"", b" ", b"[]", b"null", b"1", b'"booking"', b"{", b"{}", b"{}}", b"[{}]"),
    *(b"\xff\xfe", b"\xef\xbb\xbf{}", b"{'user_id': 1}", b"[" * 2000 + b"]" * 2000),
]


@st.composite
def _body(draw: st.DrawFn, ids: dict[str, int], clean: bool) -> bytes:
    if not clean and draw(_often(False, st.just(True), 9)):
        return draw(st.sampled_from(OTHER_BODIES) | st.binary(max_size=64))
    members = draw(_fields(ids, clean))
    text = "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in members) + "}"
    if clean:
        return text.encode()
    text += draw(_often("", st.sampled_from([" \n", "x", "]", "{}", "\x00", "null"]), 12))
    encoding = draw(_often("utf-8", st.sampled_from(["utf-16", "utf-8-sig", "latin-1"]), 15))
    return text.encode(encoding, errors="replace")


CONTENT_TYPES = [
    *("application/json; charset=utf-8", "text/plain", "application/JSON", None),
    *("application/vnd.booking+json", "application/json ", "multipart/form-data", ""),
]
AUTHORIZATION = [
    *("bearer book-b", "Bearer book-a ", "Bearer wrong", "Basic book-a", "Bearer", "book-a"),
    *("Bearer  book-a", "", None),
]


@st.composite
def requests(draw: st.DrawFn, ids: dict[str, int]) -> tuple[str, dict[str, str], bytes]:
    """Half of them clean (the lane's to answer: booked or refused by a rule), half messy."""
    clean = draw(st.booleans())
    headers: dict[str, str] = {}
    kind = draw(_often("application/json", st.sampled_from(CONTENT_TYPES), 10))
    if kind is not None or clean:
        headers["content-type"] = "application/json" if clean else kind
    token = draw(_often("Bearer book-a", st.sampled_from(AUTHORIZATION), 10))
    if token is not None or clean:
        headers["authorization"] = "Bearer book-a" if clean else token
    optional = {
        "x-consistency-token": st.sampled_from(["0/1", "FF/0", "not-an-lsn", ""]),
        "x-read-consistency": st.sampled_from(["primary", "any", "strong"]),
        "idempotency-key": st.sampled_from(["k-1", "k-1", ""]),
        "x-request-id": st.sampled_from(["req-1", "req-2"]),
    }
    headers.update(draw(st.fixed_dictionaries({}, optional=optional)))
    query = draw(_often("", st.sampled_from(["?", "?x=1", "?notes=a", "?&", "?user_id=1"]), 12))
    return ROUTE + ("" if clean else query), headers, draw(_body(ids, clean))


async def _same_answer(world: World, url: str, headers: dict[str, str], body: bytes) -> None:
    world.sent += 1
    before = world.lane.http_counts(), world.route.http_counts()
    fast = await world.lane.client.post(url, content=body, headers=headers)
    slow = await world.route.client.post(url, content=body, headers=headers)
    seen = (url, headers, body[:300])
    assert fast.status_code == slow.status_code, (seen, fast.text, slow.text)
    assert fast.status_code < 500, (seen, fast.text)
    for name in COMPARED_HEADERS:
        assert fast.headers.get(name) == slow.headers.get(name), (seen, name)
    for response in (fast, slow):
        assert response.headers["content-length"] == str(len(response.content)), seen
        echoed = response.headers["x-request-id"]  # the client's, or one made up
        assert echoed == headers["x-request-id"] if "x-request-id" in headers else echoed
    assert ("x-consistency-token" in fast.headers) == ("x-consistency-token" in slow.headers)
    mine, theirs = fast.json(), slow.json()
    if fast.status_code == 201:  # the same row: ids included, the insert's now() aside
        assert all(mine.pop(k) and theirs.pop(k) for k in STAMPS)
    assert mine == theirs, (seen, fast.text, slow.text)
    grew = [
        _grown(b, side.http_counts())
        for b, side in zip(before, (world.lane, world.route), strict=True)
    ]
    assert grew[0] == grew[1], (seen, grew)
    assert await world.lane.appointments() == await world.route.appointments(), seen


def _grown(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


SETTINGS = settings(
    max_examples=700,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(data=st.data())
async def test_lane_and_route_book_alike(world: World, data: st.DataObject) -> None:
    url, headers, body = data.draw(requests(world.ids), label="request")
    await _same_answer(world, url, headers, body)


async def test_the_differences_found_stay_fixed(world: World) -> None:
    """What the generated requests found, held here as examples; the lane's share shown."""
    ids = world.ids
    good = {"content-type": "application/json", "authorization": "Bearer book-a"}
    start = DAY + dt.timedelta(days=200, hours=9)

    def booking(minutes_later: int) -> bytes:
        at = start + dt.timedelta(minutes=minutes_later)
        times = {"start_time": at.isoformat(), "end_time": (at + dt.timedelta(minutes=30))}
        fields = {k: ids[k] for k in ("user_id", "barber_id", "service_id", "location_id")}
        return json.dumps({**fields, **times}, default=dt.datetime.isoformat).encode()

    async def lane_answers(url: str, headers: dict[str, str], body: bytes) -> bool:
        before = world.lane.lane_count("lane")
        await _same_answer(world, url, headers, body)
        return world.lane.lane_count("lane") == before + 1

    assert await lane_answers(ROUTE, good, booking(0))  # booked
    assert await lane_answers(ROUTE, good, booking(0))  # taken: 409
    assert await lane_answers(ROUTE + "?", good, booking(60))  # an empty query is none
    # The route has no query parameters: it names the unknown one in its 422.
    assert not await lane_answers(ROUTE + "?x=1", good, booking(120))
    assert not await lane_answers(ROUTE + "?&", good, booking(180))  # the route books it
    # The lane's own edge refusals count in the HTTP metrics as the route's do.
    assert await lane_answers(ROUTE, {**good, "authorization": "Bearer wrong"}, b"")
    assert await lane_answers(ROUTE, good, json.dumps({"notes": "n" * MAX_BODY}).encode())
    # JSON nested past the parser's recursion limit: the route's 400, not a 500.
    assert not await lane_answers(ROUTE, good, b"[" * 2000 + b"]" * 2000)
