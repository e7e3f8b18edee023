"""Structured logs: JSON lines with the request id, extra fields kept, no parameters."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app import logs
from app.api.deps import ReadSession
from app.config import Settings
from app.main import create_app
from tests.conftest import Postgres, collect_earlier_garbage
from tests.test_edges import TOKEN, running

GENERATED = re.compile(r"[0-9a-f]{32}")


def _lines(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text().splitlines()
    assert lines
    return [json.loads(line) for line in lines]  # every line, or the test fails here


def test_json_lines_carry_the_request_id(postgres: Postgres, tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": postgres.primary_url,
        "REPLICA_URLS": ",".join(postgres.replica_urls),
        "API_TOKENS": TOKEN,
        "LOG_FORMAT": "json",
        "SLOW_QUERY_SECONDS": "0.000001",  # every statement is logged as slow: extra fields
    }
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with running(tmp_path, env) as server, httpx.Client(base_url=server.base, timeout=10) as http:
        given = http.get("/health/live", headers={"X-Request-ID": "edge-1.a:b"})
        assert given.headers["x-request-id"] == "edge-1.a:b"
        for insane in ("has spaces", "x" * 129, 'quote"d'):
            response = http.get("/health/live", headers={"X-Request-ID": insane})
            assert GENERATED.fullmatch(response.headers["x-request-id"]), insane
        assert GENERATED.fullmatch(http.get("/health/live").headers["x-request-id"])
        # The hot reads' lane answers this one on PostgreSQL: it gets its id all the same.
        lane = http.get("/api/v1/users/987654321", headers={**auth, "X-Request-ID": "lane-1"})
        assert (lane.status_code, lane.headers["x-request-id"]) == (404, "lane-1")
        listed = http.get("/api/v1/users?limit=1", headers={**auth, "X-Request-ID": "r-2"})
        assert (listed.status_code, listed.headers["x-request-id"]) == (200, "r-2")
        refused = http.post("/api/v1/users", content=b"{", headers={"X-Request-ID": "r-3"})
        assert (refused.status_code, refused.headers["x-request-id"]) == (401, "r-3")
    lines = _lines(server.log)
    for line in lines:
        assert {"timestamp", "level", "logger", "message", "request_id"} <= line.keys(), line
    access = {line["request_id"]: line for line in lines if line["logger"] == "uvicorn.access"}
    for request_id, status in (("edge-1.a:b", 200), ("lane-1", 404), ("r-2", 200), ("r-3", 401)):
        assert access[request_id]["status"] == status
        assert access[request_id]["method"] in ("GET", "POST")
    slow = [line for line in lines if line["logger"] == "app.db.slow_queries"]
    assert {line["request_id"] for line in slow} >= {"r-2"}
    assert all(line["statement"] and line["role"] for line in slow)
    assert all(line["duration_seconds"] > 0 for line in slow)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger's lines, formatted as the service formats them in production."""
    collect_earlier_garbage()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


async def test_an_unhandled_error_is_logged_once_without_parameters(
    settings: Settings, captured: io.StringIO
) -> None:
    personal = "pw-personal-data-42"
    app = create_app(settings)

    @app.get("/_broken")
    async def broken(session: ReadSession) -> None:
        await session.execute(text("SELECT * FROM no_such_table WHERE name = :p"), {"p": personal})

    async with app.router.lifespan_context(app):
        # raise_app_exceptions (the default): an exception leaving the app fails the test,
        # as uvicorn would log it a second time.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/_broken", headers={"X-Request-ID": "broken-1"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "detail": "internal error"}
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert len(errors) == 1, errors
    [error] = errors
    assert error["request_id"] == "broken-1"
    assert "no_such_table" in error["exc_info"]
    assert personal not in captured.getvalue()


def test_new_request_ids_are_uuid4_hex_and_distinct() -> None:
    ids = [logs.new_request_id() for _ in range(1000)]  # past several refills of the buffer
    assert len(set(ids)) == len(ids)
    for made in ids:
        parsed = uuid.UUID(made)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, made)
