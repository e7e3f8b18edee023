"""Hypothesis strategies of booking requests (POST /api/v1/appointments), good and bad.

Half of them clean: the right content type and token, a body the model takes, with ids
of the right or the wrong rows and times free, taken, past or too far ahead (the lane
books them or refuses them by a rule). Half messy: every field good, wrong-typed,
missing, extra or twice; JSON oddities and raw bytes; other content types, tokens and
query strings. tests/test_write_lane_differential.py sends them to the lane and the route.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from typing import Any

from hypothesis import strategies as st

from tests.test_booking_rules import DAY

ROUTE = "/api/v1/appointments"
MAX_BODY = 4_096  # the services' MAX_BODY_BYTES: long unicode notes pass it
# An appointment the seed holds, so that generated bookings can overlap what was there.
SEEDED = DAY + dt.timedelta(hours=10)


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


# Each id field's wrong rows: a client as barber, a barber elsewhere, a retired service...
WRONG_ROWS = {
    "user_id": ["other_client", "barber_id", "far_barber"],
    "barber_id": ["other_barber", "far_barber", "user_id"],
    "service_id": ["far_service", "retired_service"],
    "location_id": ["elsewhere"],
}


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
    epoch = str(int(moment.timestamp()))  # seconds since the epoch: refused
    return _often(utc, aware | st.sampled_from([naive, epoch]))


@st.composite
def _times(draw: st.DrawFn, clean: bool) -> tuple[str, str]:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    busy = st.integers(0, 11).map(lambda k: DAY + dt.timedelta(hours=9, minutes=15 * k))
    elsewhere = [
        now - dt.timedelta(days=2),  # past
        now + dt.timedelta(days=400),  # past the 365-day horizon
        now + dt.timedelta(days=360),
        SEEDED,
    ]
    start = draw(_weighted((3, _fresh), (2, busy), (1, st.sampled_from(elsewhere))))
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
    fields = [(name, draw(_id(ids, name, others, clean))) for name, others in WRONG_ROWS.items()]
    fields += [("start_time", start), ("end_time", end)]
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
