"""The libraries' private parts the service relies on (app/adapters/), held to the installed
releases: a test here fails, naming the attribute, when an upgrade changes one of them.

Each is checked by what the adapter does with it on a real pool, a real socket or a real
FastAPI app, not only by its presence.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import weakref
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, get_origin

import httpx
import pytest
from fastapi import FastAPI, Query
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.util.queue import Empty, Full, QueueCommon
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.adapters.sqlalchemy_pool import CountingPool, FairQueue, in_greenlet, max_overflow
from app.api.contract import route_contract
from app.db.engine import create_engine
from app.db.sessions import checkout
from tests.conftest import Postgres, make_settings
from tests.edge_server import edge_server

ROOT = Path(__file__).resolve().parents[1]


def private(owner: object, name: str) -> Any:
    """owner.name, or a failure naming what the installed library no longer has."""
    where = owner.__qualname__ if isinstance(owner, type) else type(owner).__qualname__
    if not hasattr(owner, name):
        pytest.fail(f"{where}.{name} is gone: app/adapters/ relies on it")
    return getattr(owner, name)


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


# -- SQLAlchemy (app/adapters/sqlalchemy_pool.py) ----------------------------------------


def test_fair_queue_has_the_interface_queue_pool_calls() -> None:
    for name in ("empty", "full", "qsize", "put_nowait", "put", "get_nowait", "get"):
        theirs, ours = private(QueueCommon, name), getattr(FairQueue, name)
        assert parameters(theirs) == parameters(ours), f"QueueCommon.{name}'s signature changed"
    assert parameters(QueueCommon.__init__) == ["self", "maxsize", "use_lifo"], (
        "QueueCommon.__init__'s signature changed"
    )
    assert issubclass(Empty, Exception), "sqlalchemy.util.queue.Empty changed"
    assert issubclass(Full, Exception), "sqlalchemy.util.queue.Full changed"


async def test_queue_pool_keeps_its_idle_connections_in_the_fair_queue(postgres: Postgres) -> None:
    url = postgres.primary_url
    settings = make_settings(url, pool_size=2, max_overflow=1, pool_timeout=5)
    engine = create_engine(url, settings)
    try:
        pool = engine.sync_engine.pool
        assert isinstance(pool, CountingPool)
        assert private(pool, "_queue_class") is not None
        assert isinstance(private(pool, "_pool"), FairQueue), "QueuePool ignores _queue_class"
        assert max_overflow(pool) == 1, "QueuePool._max_overflow is not MAX_OVERFLOW"
        assert private(pool, "_overflow") == -2, "QueuePool._overflow no longer counts from -size"
        assert private(pool, "_pre_ping") is False
        assert private(pool, "_recycle") == settings.pool_recycle
        assert private(pool, "_invalidate_time") == 0
        assert private(pool, "_timeout") == 5, "QueuePool._timeout is not POOL_TIMEOUT"
        conn = await engine.raw_connection()
        await in_greenlet(conn.close)
        assert pool._pool.qsize() == 1, "a connection given back did not go to the FairQueue"
        await engine.dispose()  # recreates the pool
        recreated = engine.sync_engine.pool
        assert isinstance(recreated, CountingPool)
        assert isinstance(recreated._pool, FairQueue), "a recreated pool lost the FairQueue"
    finally:
        await engine.dispose()


async def test_a_checkout_timeout_passes_through_do_get(postgres: Postgres) -> None:
    url = postgres.primary_url
    engine = create_engine(url, make_settings(url, pool_size=1, max_overflow=0, pool_timeout=0.2))
    pool = engine.sync_engine.pool
    assert isinstance(pool, CountingPool)
    assert parameters(private(type(pool).__mro__[1], "_do_get")) == ["self"]
    timeouts: list[int] = []
    pool.on_timeout = lambda: timeouts.append(1)
    try:
        held = await engine.raw_connection()
        with pytest.raises(PoolTimeout):
            await engine.raw_connection()
        assert timeouts == [1], "QueuePool._do_get no longer raises the checkout's timeout"
        await in_greenlet(held.close)
    finally:
        await engine.dispose()


async def test_a_quick_checkout_gone_stale_starts_over_awaited(postgres: Postgres) -> None:
    """The pool said no await, then the connection left the ping window before the
    checkout read its time (a pause of the process): a working connection all the same."""
    url = postgres.primary_url
    engine = create_engine(url, make_settings(url, pool_size=1, max_overflow=0, pool_timeout=5))
    pool = engine.sync_engine.pool
    assert isinstance(pool, CountingPool)
    assert pool.ping_after_idle is not None
    try:
        first = await engine.raw_connection()
        assert pool.checkin_without_io(first)
        pool.checkin_reset(first)
        said = pool.checkout_without_io

        def then_a_pause() -> bool:
            quick = said()
            record = pool._pool.newest_idle()
            assert record is not None
            record.info["returned_at"] -= 60  # the ping window passed meanwhile
            return quick

        pool.checkout_without_io = then_a_pause  # type: ignore[method-assign]
        pooled = await checkout(engine)
        driver: Any = pooled.driver_connection
        assert await driver.fetchval("SELECT 41 + 1") == 42
        assert (pool.checkedout(), pool.checkedin()) == (1, 0)
        await in_greenlet(pooled.close)
        assert (pool.checkedout(), pool.checkedin()) == (0, 1)
        await engine.dispose()  # a new pool, its checkout event the same
        renewed = engine.sync_engine.pool
        assert isinstance(renewed, CountingPool)
        assert renewed is not pool
        assert renewed.ping_after_idle == pool.ping_after_idle
    finally:
        await engine.dispose()


async def test_the_quick_checkout_hands_out_a_working_connection(postgres: Postgres) -> None:
    url = postgres.primary_url
    engine = create_engine(url, make_settings(url, pool_size=1, max_overflow=1, pool_timeout=5))
    pool = engine.sync_engine.pool
    assert isinstance(pool, CountingPool)
    try:
        first = await engine.raw_connection()
        assert private(first, "_pool") is pool, "a checked-out connection's _pool changed"
        assert private(first.dbapi_connection, "_transaction") is None
        assert pool.checkin_without_io(first)
        special = private(first, "_close_special")
        assert parameters(special) == ["transaction_reset"], "_close_special's signature"
        pool.checkin_reset(first)  # no greenlet, no rollback: back to the queue as it is
        assert (pool.checkedout(), pool.checkedin()) == (0, 1)
        record = pool._pool.newest_idle()
        assert isinstance(private(record, "starttime"), float), "an entry's starttime changed"
        assert private(record, "_soft_invalidate_time") == 0
        assert pool.checkout_without_io()
        quick = engine.sync_engine.raw_connection()  # no greenlet either
        driver: Any = quick.driver_connection
        assert await driver.fetchval("SELECT 41 + 1") == 42

        # A transaction the asyncpg adapter began is rolled back on return: awaited.
        await in_greenlet(quick.dbapi_connection.cursor().execute, "SELECT 1")
        assert quick.dbapi_connection._transaction is not None, "the adapter's _transaction"
        assert not pool.checkin_without_io(quick)
        # An overflow connection is closed on return: awaited.
        extra = await engine.raw_connection()
        assert not pool.checkin_without_io(extra), "QueuePool._overflow is not counted"
        await in_greenlet(extra.close)
        await in_greenlet(quick.close)

        # A soft-invalidated connection is replaced at its next checkout: awaited.
        again = engine.sync_engine.raw_connection() if pool.checkout_without_io() else None
        assert again is not None, "a connection rolled back on return is not reused"
        again.invalidate(soft=True)
        await in_greenlet(again.close)
        assert not pool.checkout_without_io(), "_soft_invalidate_time is not set by invalidate"
    finally:
        await engine.dispose()


async def test_a_recycled_connection_is_not_handed_out_quickly(postgres: Postgres) -> None:
    url = postgres.primary_url
    engine = create_engine(url, make_settings(url, pool_size=1, pool_recycle=1))
    pool = engine.sync_engine.pool
    assert isinstance(pool, CountingPool)
    try:
        conn = await engine.raw_connection()
        await in_greenlet(conn.close)
        assert not pool.checkout_without_io(), "QueuePool._recycle is not the recycle age"
    finally:
        await engine.dispose()


async def test_a_pool_invalidated_by_a_lost_connection_hands_out_nothing_quickly(
    postgres: Postgres,
) -> None:
    url = postgres.primary_url
    engine = create_engine(url, make_settings(url, pool_size=3, pool_pre_ping=False))
    pool = engine.sync_engine.pool
    assert isinstance(pool, CountingPool)
    try:
        admin = await engine.raw_connection()
        killer: Any = admin.driver_connection
        async with engine.connect() as conn:
            idle = await engine.raw_connection()
            await in_greenlet(idle.close)
            assert pool.checkout_without_io()
            pid = (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
            await killer.execute("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(DBAPIError) as lost:
                await conn.exec_driver_sql("SELECT 1")
            assert lost.value.connection_invalidated
        assert private(pool, "_invalidate_time") > 0, "a lost connection no longer invalidates"
        # The lost one reconnected and held: `idle`, opened before the invalidation, is the
        # newest idle entry, and must go the awaited way (SQLAlchemy reconnects it).
        fresh = await engine.raw_connection()
        assert not pool.checkout_without_io(), "QueuePool._invalidate_time is not compared"
        for held in (fresh, admin):
            await in_greenlet(held.close)
    finally:
        await engine.dispose()


# -- uvicorn (app/adapters/uvicorn_http.py) -------------------------------------------------

CALLBACKS = {
    "connection_made": ["self", "transport"],
    "connection_lost": ["self", "exc"],
    "data_received": ["self", "data"],
    "on_message_begin": ["self"],
    "on_url": ["self", "url"],
    "on_headers_complete": ["self"],
    "on_body": ["self", "body"],
    "on_message_complete": ["self"],
    "on_response_complete": ["self"],
    "_start_asgi_task": ["self", "cycle", "app"],
    "timeout_keep_alive_handler": ["self"],
    "_unset_keepalive_if_required": ["self"],
    "send_400_response": ["self", "msg"],
}


def test_httptools_protocol_has_the_callbacks_edge_protocol_overrides() -> None:
    for name, expected in CALLBACKS.items():
        assert parameters(private(HttpToolsProtocol, name)) == expected, (
            f"HttpToolsProtocol.{name}'s signature changed"
        )


async def test_edge_protocol_serves_and_refuses_on_a_real_socket() -> None:
    body_may_go = asyncio.Event()

    async def held(scope: Any, receive: Any, send: Any) -> None:
        """A 5-byte answer, its body held back until the test has looked at the request."""
        headers = [(b"content-length", b"5")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await body_may_go.wait()
        await send({"type": "http.response.body", "body": b"hello"})

    edge = await edge_server(held, keep_alive=30, header_timeout=10.0)
    server, port, made = edge.server, edge.port, edge.made
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0)
        protocol = made[0]
        for name in ("loop", "transport", "client", "timeout_keep_alive", "pipeline"):
            private(protocol, name)
        private(private(protocol, "server_state"), "total_requests")
        private(private(protocol, "flow"), "resume_reading")
        assert private(protocol, "timeout_keep_alive_task") is not None, (
            "EdgeProtocol no longer arms uvicorn's keep-alive timer on connect"
        )
        writer.write(b"GET / HTTP/1.1\r\nHost: test\r\nX-One: 1\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")  # the head only: the response is under way
        assert (b"x-one", b"1") in private(protocol, "headers"), "HttpToolsProtocol.headers"
        cycle = private(protocol, "cycle")
        assert private(cycle, "scope") is private(protocol, "scope"), "cycle.scope"
        body_may_go.set()
        assert await reader.readexactly(5) == b"hello"
        assert cycle.response_complete is True, "cycle.response_complete"
        assert protocol.timeout_keep_alive_task is not None, "keep-alive re-armed after a response"
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(101))
        writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n" + many + b"\r\n")
        refused = await reader.read(4096)
        assert refused.startswith(b"HTTP/1.1 431"), refused
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def _kept(scope: Any, receive: Any, send: Any) -> None:
    """Puts a marker of the request into its scope, as apps and middleware put state."""
    marker = _Marker()
    scope["marker"] = marker
    _markers.append(weakref.ref(marker))
    body = scope["path"].encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Marker:
    pass


_markers: list[weakref.ref[_Marker]] = []


async def _answer(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return await reader.readexactly(length)


async def _ended(state: ServerState) -> None:
    if state.tasks:
        await asyncio.wait(list(state.tasks))


async def test_an_idle_connection_keeps_nothing_of_its_last_request() -> None:
    edge = await edge_server(_kept, keep_alive=30, header_timeout=10.0)
    server, port, state = edge.server, edge.port, edge.state
    _markers.clear()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /one HTTP/1.1\r\nHost: test\r\n\r\n")
        assert await _answer(reader) == b"/one"
        await _ended(state)  # the request's task ends just after its last byte is sent
        # Freed by reference counting alone, the connection still open: nothing of the
        # request (scope, cycle, headers) is reachable from its protocol any more.
        assert _markers[0]() is None, "an idle connection still holds its last request"
        # Pipelined: the second request waits behind the first, then both are answered
        # in order, and the connection serves on.
        writer.write(
            b"GET /two HTTP/1.1\r\nHost: test\r\n\r\nGET /three HTTP/1.1\r\nHost: test\r\n\r\n"
        )
        assert [await _answer(reader), await _answer(reader)] == [b"/two", b"/three"]
        writer.write(b"GET /four HTTP/1.1\r\nHost: test\r\n\r\n")
        assert await _answer(reader) == b"/four"
        await _ended(state)
        assert [m() for m in _markers] == [None] * 4
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


# -- FastAPI (app/api/contract.py): which query parameters it reads as lists -----------------

ANNOTATIONS: list[Any] = [
    int,
    str,
    int | None,
    list[int],
    list[str] | None,
    tuple[int, ...],
    set[str],
    frozenset[int],
    Sequence[int],
    deque[int],
    Annotated[list[int], Query()],
    Annotated[int, Query()],
]


def _endpoint(annotation: Any) -> Any:
    async def endpoint(q: Any = None) -> dict[str, Any]:
        return {"q": sorted(q) if isinstance(q, set | frozenset) else q}

    default = None if get_origin(annotation) is Annotated else Query(None)
    parameter = inspect.Parameter(
        "q", inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )
    endpoint.__signature__ = inspect.Signature([parameter])  # type: ignore[attr-defined]
    return endpoint


async def test_the_query_contract_repeats_what_fastapi_reads_as_a_list() -> None:
    app = FastAPI()
    for i, annotation in enumerate(ANNOTATIONS):
        app.add_api_route(f"/{i}", _endpoint(annotation), methods=["GET"])
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        for i, annotation in enumerate(ANNOTATIONS):
            response = await client.get(f"/{i}?q=1&q=2")
            assert response.status_code == 200, (annotation, response.text)
            fastapi_lists = isinstance(response.json()["q"], list)
            repeatable = "q" in route_contract(routes[i]).repeatable
            assert repeatable == fastapi_lists, (
                f"FastAPI reads q: {annotation} {'as' if fastapi_lists else 'not as'} a list"
            )


# -- prometheus_client (app/adapters/prometheus_values.py): multiprocess mode at its import -----

_CHILD = """
import os, sys
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.multiprocess import MultiProcessCollector
if sys.argv[1] == "late":
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[2]
from app.db import metrics
try:
    registry = metrics.app_registry()
except RuntimeError as exc:
    print("refused:", exc)
    raise SystemExit(0)
Counter("shapes_total", "a test counter", registry=registry).inc(3)
scrape = CollectorRegistry()
MultiProcessCollector(scrape, path=sys.argv[2])
print("value:", scrape.get_sample_value("shapes_total"))
"""


def _child(mode: str, directory: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if mode == "early":
        env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(directory)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def test_multiprocess_values_go_to_files_when_the_process_starts_with_the_directory(
    tmp_path: Path,
) -> None:
    assert _child("early", tmp_path / "early") == "value: 3.0"
    late = _child("late", tmp_path / "late")
    assert late.startswith("refused: PROMETHEUS_MULTIPROC_DIR was set"), late


def test_lock_free_recorders_scrape_as_the_library_records() -> None:
    """counting/observing swap a child's values and bucket search: the scrape must not change."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, Summary, generate_latest

    from app.adapters.prometheus_values import LoopValue, counting, observing

    def series(registry: CollectorRegistry) -> tuple[Counter, Histogram, Summary]:
        return (
            Counter("shape_total", "c", ["k"], registry=registry),
            Histogram("shape_seconds", "h", ["k"], buckets=(0.1, 0.5, 1), registry=registry),
            Summary("shape_bytes", "s", ["k"], registry=registry),
        )

    def without_created(registry: CollectorRegistry) -> list[str]:
        return [
            line
            for line in generate_latest(registry).decode().splitlines()
            if "_created" not in line
        ]

    amounts = [0.0, 0.05, 0.1, 0.1000001, 0.5, 0.7, 1.0, 2.0, float("inf"), -3.0, 0.3]
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    counter, histogram, summary = series(theirs)
    for amount in amounts:
        counter.labels("a").inc(abs(amount))
        histogram.labels("a").observe(amount)
        summary.labels("a").observe(amount)
    counter, histogram, summary = series(ours)
    # The first ones through the library: a swap keeps what was counted before it.
    counter.labels("a").inc(abs(amounts[0]))
    histogram.labels("a").observe(amounts[0])
    summary.labels("a").observe(amounts[0])
    add = counting(counter.labels("a"))
    observe = observing(histogram.labels("a"))
    size = observing(summary.labels("a"))
    assert isinstance(private(counter.labels("a"), "_value"), LoopValue)
    assert all(isinstance(b, LoopValue) for b in private(histogram.labels("a"), "_buckets"))
    assert private(histogram.labels("a"), "_upper_bounds") == [0.1, 0.5, 1.0, float("inf")]
    assert isinstance(private(summary.labels("a"), "_count"), LoopValue)
    for amount in amounts[1:-1]:
        add(abs(amount))
        observe(amount)
        size(amount)
    # A second recorder of the same child adds to the same values; so does the library.
    observing(histogram.labels("a"))(amounts[-1])
    counter.labels("a").inc(abs(amounts[-1]))
    summary.labels("a").observe(amounts[-1])
    assert without_created(ours) == without_created(theirs)
    # NaN: no bucket, as the library counts it (its sum turns NaN).
    before = histogram.labels("a")._buckets[0].get()
    observe(float("nan"))
    assert histogram.labels("a")._buckets[0].get() == before
