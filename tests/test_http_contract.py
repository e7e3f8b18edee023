"""The HTTP contract on every operation and through every door, read off the OpenAPI document.

Bodies that do not parse, path ids that are not decimal ASCII digits, integers at and past
their published bounds, and methods a path does not serve: each is tried on every operation
the document lists (so a new route is covered, or fails here until it is), on SQLite, on
PostgreSQL with the lanes in front (app/api/lane.py, app/api/write_lane.py) and on
PostgreSQL with HOT_READS=false (every request by its route). The expected answers are
written here, not derived from the code that gives them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.db.models import Appointment, Payment, User
from app.main import create_app
from tests import factories
from tests.conftest import ConsistentClient, Postgres, make_settings

API = "/api/v1"
INT64_MAX = 2**63 - 1
ABSENT = 2**62  # an id in range that no row has
# Values for the required query parameters, by name; a new one fails the tests until added.
REQUIRED_QUERY = {"start": "2031-01-01", "end": "2031-01-02"}
INVALID = {"error": "invalid_request", "detail": "the request is not valid"}
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-routes"])
async def service(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The service on SQLite; on PostgreSQL with its lanes; on PostgreSQL by its routes only."""
    if request.param == "sqlite":
        settings = make_settings(request.getfixturevalue("sqlite_url"))
    else:
        pg: Postgres = request.getfixturevalue("postgres")
        lanes = request.param == "postgresql"
        settings = make_settings(pg.primary_url, pg.replica_urls, hot_reads=lanes)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        ConsistentClient(transport=transport, base_url="http://test") as client,
    ):
        yield app, client


@dataclass
class Operation:
    method: str
    path: str
    spec: dict[str, Any]
    document: dict[str, Any]

    def parameters(self, where: str) -> list[dict[str, Any]]:
        return [p for p in self.spec.get("parameters", []) if p["in"] == where]

    @property
    def body_schema(self) -> dict[str, Any] | None:
        content = self.spec.get("requestBody", {}).get("content", {}).get("application/json")
        if content is None:
            return None
        name = content["schema"]["$ref"].rsplit("/", 1)[-1]
        schema: dict[str, Any] = self.document["components"]["schemas"][name]
        return schema

    def body(self) -> dict[str, Any] | None:
        """The schema's own example, with an email no one has."""
        schema = self.body_schema
        if schema is None:
            return None
        example = dict(schema["examples"][0])
        if "email" in example:
            example["email"] = f"{uuid.uuid4().hex}@example.test"
        return example

    def url(self, **ids: str) -> str:
        path = self.path
        for p in self.parameters("path"):
            path = path.replace("{" + p["name"] + "}", ids.get(p["name"], str(ABSENT)))
        return path

    def query(self) -> dict[str, str]:
        return {
            p["name"]: REQUIRED_QUERY[p["name"]] for p in self.parameters("query") if p["required"]
        }

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if any(p["name"] == "Idempotency-Key" for p in self.parameters("header")):
            headers["Idempotency-Key"] = uuid.uuid4().hex
        return headers


def operations(app: FastAPI) -> list[Operation]:
    document = app.openapi()
    return [
        Operation(method.upper(), path, spec, document)
        for path, item in document["paths"].items()
        if path.startswith(API)
        for method, spec in item.items()
    ]


async def send(
    client: httpx.AsyncClient,
    op: Operation,
    *,
    url: str | None = None,
    query: dict[str, Any] | None = None,
    body: Any = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    if content is None and body is not None:
        content = json.dumps(body).encode()
    return await client.request(
        op.method,
        url or op.url(),
        params=op.query() if query is None else query,
        content=content,
        headers={**op.headers(), **(headers or {})},
    )


def refused(response: httpx.Response) -> list[tuple[Any, ...]]:
    """The (loc, type) of each error of a 422 naming what did not parse."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert {k: body[k] for k in ("error", "detail")} == INVALID, body
    return [(*e["loc"], e["type"]) for e in body["errors"]]


async def row_counts(app: FastAPI) -> tuple[int, ...]:
    async with factories.committed(app) as session:
        return tuple(
            [
                await session.scalar(select(func.count()).select_from(model)) or 0
                for model in (User, Appointment, Payment)
            ]
        )


# -- bodies that do not parse -------------------------------------------------------------


def unparsable(example: dict[str, Any]) -> Iterator[tuple[bytes, list[Any], str]]:
    """(raw body, loc, msg of its json_invalid error): the operation's valid example, broken.

    Each is the example with one string value (free text where there is one) replaced, so a
    door that parsed it more leniently would meet an otherwise valid request.
    """
    name = next((k for k in ("notes", "name") if k in example), None)
    name = name or [k for k, v in example.items() if isinstance(v, str)][-1]
    good = json.dumps(example).encode()
    value = json.dumps(example[name]).encode()

    def placed(raw: bytes) -> bytes:
        key = b'"' + name.encode() + b'": '
        broken = good.replace(key + value, key + raw)
        assert broken != good
        return broken

    for raw in (b'"\xff"', b'"\xed\xa0\x80"'):  # a byte no UTF-8 has; an encoded surrogate
        body = placed(raw)
        yield body, ["body"], f"the body is not UTF-8 text (byte {body.index(raw) + 1})"
    yield json.dumps(example).encode("utf-16"), ["body"], "the body is not UTF-8 text (byte 0)"
    lone = "a JSON string holds a lone surrogate (\\ud800-\\udfff)"
    yield placed(b'"\\ud800"'), ["body"], lone
    yield placed(b'"\\udfff x"'), ["body"], lone
    yield placed(b"[" * 2000 + b"]" * 2000), ["body"], "JSON nested too deeply"
    yield placed(b"7" * 5000), ["body"], "a JSON number has too many digits"
    yield placed(b"NaN"), ["body"], "NaN is not a JSON value"
    yield placed(b"-Infinity"), ["body"], "-Infinity is not a JSON value"
    member = b'"' + name.encode() + b'": ' + value
    yield good[:-1] + b", " + member + b"}", ["body"], f"a JSON object names {name!r} twice"
    yield good[:-1], ["body", len(good) - 1], "JSON decode error"
    yield b"\xef\xbb\xbf" + good, ["body", 0], "JSON decode error"  # a byte order mark


async def test_a_body_that_does_not_parse_is_a_422_and_changes_nothing(
    service: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = service
    before = await row_counts(app)
    taking = [op for op in operations(app) if op.body_schema is not None]
    assert {(op.method, op.path) for op in taking} == {
        ("POST", f"{API}/users"),
        ("POST", f"{API}/appointments"),
        ("POST", f"{API}/payments"),
        ("PATCH", f"{API}/appointments/{{appointment_id}}"),
        ("PATCH", f"{API}/payments/{{payment_id}}"),
    }
    for op in taking:
        example = op.body()
        assert example is not None
        for content_type in ("application/json", "application/merge-patch+json"):
            for raw, loc, msg in unparsable(example):
                headers = {"content-type": content_type}
                response = await send(client, op, content=raw, headers=headers)
                seen = (op.method, op.path, content_type, raw[:60])
                assert response.status_code == 422, seen
                expected = {**INVALID, "errors": [{"loc": loc, "msg": msg, "type": "json_invalid"}]}
                assert response.json() == expected, seen
    assert await row_counts(app) == before


async def test_a_body_that_parses_is_still_read_as_before(
    service: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """Escaped surrogate pairs, unicode and a body in another content type are not refused."""
    app, client = service
    [op] = [op for op in operations(app) if (op.method, op.path) == ("POST", f"{API}/users")]
    body = op.body()
    assert body is not None
    raw = json.dumps({**body, "name": "Zoë \U0001f488"}).encode()  # ensure_ascii: a pair
    assert b"\\ud83d\\udc88" in raw
    response = await send(client, op, content=raw)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Zoë \U0001f488"
    # Not JSON by its content type: the model refuses the bytes, as FastAPI always did.
    response = await send(client, op, content=b"\xff", headers={"content-type": "text/plain"})
    assert refused(response) == [("body", "model_attributes_type")]


# -- path ids -------------------------------------------------------------------------------

# Not decimal ASCII digits, as sent (percent-encoded): a space before or after, a tab, signs,
# an underscore, ARABIC-INDIC DIGIT ONE, FULLWIDTH DIGIT ONE; int() or pydantic's lax mode
# read most of them as 1.
NOT_DIGITS = [
    "%201",
    "1%20",
    "%091",
    "+1",
    "--1",
    "-",
    "1_0",
    "%D9%A1",
    "%EF%BC%91",
    "0x1",
    "1.0",
    "1e0",
    "a",
]


def path_id_operations(app: FastAPI) -> Iterator[tuple[Operation, str]]:
    for op in operations(app):
        for p in op.parameters("path"):
            yield op, p["name"]


async def test_path_ids_are_decimal_ascii_digits_else_422(
    service: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = service
    before = await row_counts(app)
    tried = set()
    for op, name in path_id_operations(app):
        tried.add((op.method, op.path))
        for raw in NOT_DIGITS:
            response = await send(client, op, url=op.url(**{name: raw}), body=op.body())
            seen = (op.method, op.path, raw)
            assert refused(response) == [("path", name, "int_parsing")], seen
        for raw, kind in (
            ("0", "greater_than_equal"),
            ("-1", "greater_than_equal"),
            (str(INT64_MAX + 1), "less_than_equal"),
        ):
            response = await send(client, op, url=op.url(**{name: raw}), body=op.body())
            assert refused(response) == [("path", name, kind)], (op.method, op.path, raw)
    assert len(tried) == 8
    assert await row_counts(app) == before


async def test_leading_zeros_are_digits_too(service: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = service
    async with factories.committed(app, client) as session:
        user = await factories.user(session, "barber")
    days = "start=2031-01-01&end=2031-01-02"
    for path in (f"users/{user.id}", f"barbers/{user.id}/appointments?{days}"):
        plain = await client.get(f"{API}/{path}")
        padded = await client.get(f"{API}/{path.replace(str(user.id), f'00{user.id}', 1)}")
        assert plain.status_code == padded.status_code == 200
        assert plain.content == padded.content


# -- integer bounds ---------------------------------------------------------------------------


def _integer(schema: dict[str, Any]) -> dict[str, Any] | None:
    if schema.get("type") == "integer":
        return schema
    for option in schema.get("anyOf", []):
        if option.get("type") == "integer":
            return dict(option)
    return None


def _bounds(schema: dict[str, Any]) -> tuple[int, int]:
    low = schema.get("minimum", schema.get("exclusiveMinimum", -(2**64)) + 1)
    high = schema.get("maximum", schema.get("exclusiveMaximum", 2**64) - 1)
    return low, high


def integers(op: Operation) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, name, integer schema) for every integer the operation takes."""
    for where in ("path", "query"):
        for p in op.parameters(where):
            if (schema := _integer(p["schema"])) is not None:
                yield where, p["name"], schema
    body = op.body_schema
    for name, prop in (body or {}).get("properties", {}).items():
        if (schema := _integer(prop)) is not None:
            yield "body", name, schema


def test_integer_bounds_are_published_as_exact_integers(app: FastAPI) -> None:
    document = json.loads(json.dumps(app.openapi()))  # as /openapi.json sends it

    def walk(node: Any) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield key, value
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    bounds = [
        (key, value)
        for key, value in walk(document)
        if key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
    ]
    assert bounds
    assert all(type(value) is int for _, value in bounds), bounds
    ids = {
        (component, name)
        for component, schema in document["components"]["schemas"].items()
        for name, prop in schema.get("properties", {}).items()
        if (found := _integer(prop)) is not None and found.get("maximum") == INT64_MAX
    }
    assert ids == {
        ("AppointmentCreate", "user_id"),
        ("AppointmentCreate", "barber_id"),
        ("AppointmentCreate", "service_id"),
        ("AppointmentCreate", "location_id"),
        ("PaymentCreate", "user_id"),
        ("PaymentCreate", "appointment_id"),
        ("PaymentCreate", "location_id"),
        ("UserCreate", "location_id"),
    }
    for component, name in ids:
        prop = _integer(document["components"]["schemas"][component]["properties"][name]) or {}
        assert "exclusiveMinimum" not in prop
        assert (prop["minimum"], prop["maximum"]) == (1, INT64_MAX), (component, name)
    for op in operations(app):
        for p in op.parameters("path"):
            assert _bounds(p["schema"]) == (1, INT64_MAX), (op.method, op.path)
    raw = json.dumps(document)
    assert "e+18" not in raw
    assert raw.count("9223372036854775807") == 8 + 8 + 2  # body ids, path ids, after twice


async def test_the_service_takes_exactly_the_published_integers(
    service: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """At each bound an integer is taken; one past it is a 422 naming it, on every operation."""
    app, client = service
    checked = 0
    for op in operations(app):
        for where, name, schema in integers(op):
            low, high = _bounds(schema)
            for value, kind in (
                (low, None),
                (high, None),
                (low - 1, "greater_than_equal"),
                (high + 1, "less_than_equal"),
            ):
                url, query, body = op.url(), op.query(), op.body()
                if where == "path":
                    url = op.url(**{name: str(value)})
                elif where == "query":
                    query[name] = str(value)
                else:
                    assert body is not None
                    body[name] = value
                response = await send(client, op, url=url, query=query, body=body)
                seen = (op.method, op.path, where, name, value, response.text)
                assert response.status_code < 500, seen
                named = (
                    [e for e in response.json().get("errors", []) if e["loc"][-1] == name]
                    if response.status_code == 422
                    else []
                )
                if kind is None:
                    assert named == [], seen
                else:
                    assert [(*e["loc"], e["type"]) for e in named] == [(where, name, kind)], seen
                checked += 1
    assert checked == 4 * (8 + 8 + 4 + 2)  # body ids, path ids, after and limit twice, versions


# -- 405 and Allow ----------------------------------------------------------------------------


def _order(methods: set[str]) -> str:
    return ", ".join(
        m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS") if m in methods
    )


async def test_405_lists_every_method_the_path_serves(
    service: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = service
    served: dict[str, set[str]] = {"/metrics": {"GET"}}
    for path, item in app.openapi()["paths"].items():
        served.setdefault(path, set()).update(m.upper() for m in item)
    for path, methods in served.items():
        allowed = methods | ({"HEAD"} if "GET" in methods else set())
        url = path.replace("{", "").replace("}", "")  # any segment: the method comes first
        for method in METHODS:
            if method in allowed:
                continue
            response = await client.request(method, url)
            assert response.status_code == 405, (method, path)
            assert response.headers["allow"] == _order(allowed), (method, path)
            if method != "HEAD":
                assert response.json() == {
                    "error": "method_not_allowed",
                    "detail": "Method Not Allowed",
                }
    assert (await client.options(f"{API}/users")).headers["allow"] == "GET, HEAD, POST"
    response = await client.delete(f"{API}/appointments/1")
    assert response.headers["allow"] == "GET, HEAD, PATCH"
    assert (await client.put(f"{API}/appointments")).headers["allow"] == "POST"
