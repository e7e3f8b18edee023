"""The OpenAPI document: the error bodies actually sent, examples that work, docs offline."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.db.engine import create_engine
from app.db.migrate import upgrade_async
from app.db.seed import seed_demo
from app.main import create_app
from tests.conftest import Postgres, create_database, drop_database, make_settings, unique

API = "/api/v1"


def operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    paths: dict[str, dict[str, Any]] = app.openapi()["paths"]
    return [
        (method.upper(), path, op)
        for path, item in paths.items()
        if path.startswith(API)
        for method, op in item.items()
    ]


def schema_ref(response: dict[str, Any]) -> str:
    ref: str = response["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[-1]


def test_every_route_states_its_errors_with_the_real_body(app: FastAPI) -> None:
    document = app.openapi()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for method, path, op in operations(app):
        responses = op["responses"]
        for status in ("401", "422", "503"):
            assert status in responses, (method, path, status)
        assert schema_ref(responses["422"]) == "ValidationErrorBody", (method, path)
        for status in ("401", "503", "404", "409"):
            if status in responses:
                assert schema_ref(responses[status]) == "ErrorBody", (method, path, status)
        if "{" in path:
            assert "404" in responses, (method, path)
        if method in ("PATCH",) or (
            path.endswith(("/appointments", "/payments", "/users")) and (method == "POST")
        ):
            assert "409" in responses, (method, path)
    error = document["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"error", "detail"}
    invalid = document["components"]["schemas"]["ValidationErrorBody"]
    assert set(invalid["properties"]) == {"error", "detail", "errors"}


async def test_errors_sent_match_the_declared_bodies(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    document = app.openapi()["components"]["schemas"]
    allowed = {
        "ErrorBody": set(document["ErrorBody"]["properties"]),
        "ValidationErrorBody": set(document["ValidationErrorBody"]["properties"]),
    }
    issue_keys = set(document["ValidationIssue"]["properties"])
    sent = [
        (404, await client.get(f"{API}/payments/{2**62}")),
        (404, await client.get(f"{API}/users/{2**62}/payments")),
        (422, await client.post(f"{API}/users", json={"email": "x@y.z", "name": "X", "n": 1})),
        (422, await client.get(f"{API}/payments/0")),
        (
            422,
            await client.post(
                f"{API}/payments",
                json={"user_id": 1, "appointment_id": 2**62, "location_id": 1, "amount": "1.00"},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            ),
        ),
    ]
    for status, response in sent:
        assert response.status_code == status, response.text
        body = response.json()
        declared = "ValidationErrorBody" if status == 422 else "ErrorBody"
        assert {"error", "detail"} <= set(body) <= allowed[declared], body
        for issue in body.get("errors", []):
            assert set(issue) == issue_keys


@pytest.fixture
async def demo_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """A new database, migrated and seeded with the demo data as `bookedbarber serve` does."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
        dropped = None
    else:
        pg: Postgres = request.getfixturevalue("postgres")
        dropped = unique("demo").replace("-", "_")
        url = await create_database(pg, dropped)
    try:
        await upgrade_async(url)
        engine = create_engine(url, make_settings(url))
        try:
            await seed_demo(engine, scale=0.01)  # what `serve` seeds
        finally:
            await engine.dispose()
        yield url
    finally:
        if dropped is not None:
            await drop_database(request.getfixturevalue("postgres"), dropped)


def _example(op: dict[str, Any], app: FastAPI) -> dict[str, Any] | None:
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return None
    ref = content["schema"]["$ref"].rsplit("/", 1)[-1]
    [example] = app.openapi()["components"]["schemas"][ref]["examples"]
    return dict(example)


async def test_every_example_succeeds_on_the_demo_data(demo_url: str) -> None:
    app = create_app(make_settings(demo_url))
    made: dict[str, int] = {"user_id": 100, "barber_id": 1, "location_id": 1}
    tried = []
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        # Creations first, so the changes have something to change.
        ordered = sorted(operations(app), key=lambda o: ("POST", "PATCH", "GET").index(o[0]))
        for method, path, op in ordered:
            body = _example(op, app)
            queries = {
                p["name"]: p["examples"][0] if "examples" in p else p["schema"]["examples"][0]
                for p in op.get("parameters", [])
                if p["in"] == "query" and ("examples" in p or "examples" in p.get("schema", {}))
            }
            if body is None and not queries:
                continue
            url = re.sub(r"\{(\w+)\}", lambda m: str(made[m.group(1)]), path)
            headers = {"Idempotency-Key": uuid.uuid4().hex}
            response = await client.request(method, url, json=body, params=queries, headers=headers)
            assert response.status_code in (200, 201), (method, path, body, response.text)
            tried.append((method, path))
            if method == "POST" and path != f"{API}/users":
                made[path.rsplit("/", 1)[-1].removesuffix("s") + "_id"] = response.json()["id"]
    assert sorted(tried) == sorted(
        [
            ("POST", f"{API}/users"),
            ("POST", f"{API}/appointments"),
            ("POST", f"{API}/payments"),
            ("PATCH", f"{API}/appointments/{{appointment_id}}"),
            ("PATCH", f"{API}/payments/{{payment_id}}"),
            ("GET", f"{API}/users/{{user_id}}"),
        ]
    )


async def test_docs_work_offline(app: FastAPI, client: httpx.AsyncClient) -> None:
    for page in ("/docs", "/redoc"):
        response = await client.get(page)
        assert response.status_code == 200
        html = response.text
        assert "https://" not in html, page
        assert "http://" not in html, page
        assets = re.findall(r"""(?:src|href)=["']?([^"' >]+)""", html)
        assert assets, page
        assert all(a.startswith("/docs-assets/") for a in assets), assets
        for asset in assets:
            fetched = await client.get(asset)
            assert fetched.status_code == 200, asset
            assert len(fetched.content) > 1000, asset
        assert "/openapi.json" in html
