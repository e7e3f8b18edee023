"""The pools hand connections to waiters in arrival order (app/adapters/sqlalchemy_pool.py).

On the suite's PostgreSQL, a pool of 2: both connections held, waiters queue, and a
connection given back goes to the longest waiter even when a newcomer asks for one in
the same turn of the event loop (SQLAlchemy's own queue lets the newcomer take it).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from app.adapters.sqlalchemy_pool import CountingPool, FairQueue, in_greenlet
from app.db.engine import create_engine
from app.db.sessions import checkout
from tests.conftest import Postgres, make_settings


async def test_waiters_are_served_in_arrival_order(postgres: Postgres) -> None:
    url = postgres.primary_url
    engine = create_engine(url, make_settings(url, pool_size=2, max_overflow=0, pool_timeout=10))
    try:
        held = [await engine.raw_connection() for _ in range(2)]
        served: list[str] = []

        async def wait(name: str) -> None:
            conn = await engine.raw_connection()
            served.append(name)
            await in_greenlet(conn.close)

        waiters = []
        for i in range(5):
            waiters.append(asyncio.create_task(wait(f"w{i}")))
            await asyncio.sleep(0.01)  # each queued before the next
        assert served == []

        def give_back_and_take() -> PoolProxiedConnection:
            # A connection given back and, in the same turn, asked for by a newcomer.
            held[0].close()
            return engine.sync_engine.raw_connection()

        newcomer = await in_greenlet(give_back_and_take)
        served.append("newcomer")
        await asyncio.gather(*waiters)
        assert served == ["w0", "w1", "w2", "w3", "w4", "newcomer"]
        await in_greenlet(newcomer.close)
        await in_greenlet(held[1].close)
        assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_a_waiter_that_gives_up_leaves_the_queue(postgres: Postgres) -> None:
    url = postgres.primary_url
    engine = create_engine(url, make_settings(url, pool_size=1, max_overflow=0, pool_timeout=0.3))
    try:
        held = await engine.raw_connection()
        with pytest.raises(PoolTimeout):
            await engine.raw_connection()
        # A cancelled waiter leaves too.
        cancelled = asyncio.create_task(engine.raw_connection())
        await asyncio.sleep(0.05)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        # The connection given back goes to the next live waiter, not to the gone ones.
        later = asyncio.create_task(engine.raw_connection())
        await asyncio.sleep(0.05)
        await in_greenlet(held.close)
        conn = await asyncio.wait_for(later, 2)
        await in_greenlet(conn.close)
        assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_checkout_without_io_only_when_nothing_is_to_be_awaited(postgres: Postgres) -> None:
    """The RoutedConnection's greenlet-free checkout is taken only when the pool would not await."""
    url = postgres.primary_url
    engine = create_engine(url, make_settings(url, pool_size=2, max_overflow=0, pool_timeout=5))
    pool = engine.sync_engine.pool
    assert isinstance(pool, CountingPool)
    try:
        assert not pool.checkout_without_io()  # nothing open yet: a connect is due
        first = await engine.raw_connection()
        first_driver = first.driver_connection
        assert pool.checkin_without_io(first)
        first.close()  # no greenlet: nothing to roll back, room in the queue
        assert pool.checkout_without_io()  # the newest idle one, returned just now
        again = engine.sync_engine.raw_connection()  # and so no greenlet needed
        assert again.driver_connection is first_driver
        await in_greenlet(again.close)
        await asyncio.sleep(0.3)  # past half the ping window: the checkout would ping
        assert not pool.checkout_without_io()
        both = [await engine.raw_connection() for _ in range(2)]
        assert not pool.checkout_without_io()  # none idle: a checkout would wait
        waiting = asyncio.create_task(engine.raw_connection())
        await asyncio.sleep(0.05)
        await in_greenlet(both[0].close)  # handed straight to the waiter
        third = await asyncio.wait_for(waiting, 2)
        assert not pool.checkout_without_io()
        for conn in (third, both[1]):
            await in_greenlet(conn.close)
        # A connection the server closed is never handed out the quick way.
        newest = await engine.raw_connection()
        admin = await engine.raw_connection()
        driver: Any = newest.driver_connection
        killer: Any = admin.driver_connection
        pid = driver.get_server_pid()
        await in_greenlet(newest.close)
        await killer.execute("SELECT pg_terminate_backend($1)", pid)
        await in_greenlet(admin.close)
        for _ in range(100):
            if driver.is_closed():
                break
            await asyncio.sleep(0.02)
        assert driver.is_closed()
        # `admin` taken and given back again, so it was returned just now however long
        # noticing the kill took: the newest idle, within the ping window; below it the dead one.
        admin = await engine.raw_connection()
        assert admin.driver_connection is killer
        await in_greenlet(admin.close)
        quick = pool.checkout_without_io()
        conn = await engine.raw_connection()
        assert quick
        assert conn.driver_connection is killer
        assert not pool.checkout_without_io()  # now the dead one is on top
        await in_greenlet(conn.close)
    finally:
        await engine.dispose()


async def test_a_checkout_that_waits_needs_no_greenlet_and_keeps_its_place(
    postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The RoutedConnection's checkout waits in line on a busy pool without a greenlet,
    behind and before the awaited checkouts, and is handed a working connection."""
    url = postgres.primary_url
    engine = create_engine(url, make_settings(url, pool_size=1, max_overflow=0, pool_timeout=10))
    pool = engine.sync_engine.pool
    assert isinstance(pool, CountingPool)
    try:
        held = await engine.raw_connection()
        served: list[str] = []
        spawned: list[str] = []
        spawn = AsyncEngine.raw_connection

        async def counted(self: Any) -> PoolProxiedConnection:
            spawned.append("greenlet")
            return await spawn(self)

        async def wait(name: str, quick: bool) -> None:
            conn = await (checkout(engine) if quick else engine.raw_connection())
            served.append(name)
            driver: Any = conn.driver_connection
            assert await driver.fetchval("SELECT 41 + 1") == 42
            await in_greenlet(conn.close)

        monkeypatch.setattr(AsyncEngine, "raw_connection", counted)
        waiters = []
        for i, quick in enumerate((True, False, True, True)):
            waiters.append(asyncio.create_task(wait(f"w{i}", quick)))
            await asyncio.sleep(0.01)
        assert pool.must_wait()
        await in_greenlet(held.close)
        await asyncio.gather(*waiters)
        assert served == ["w0", "w1", "w2", "w3"]
        assert spawned == ["greenlet"]  # w1's: the quick waiters were handed theirs without
        assert (pool.checkedout(), pool.checkedin()) == (0, 1)
    finally:
        await engine.dispose()


async def test_a_checkout_that_waits_in_vain_times_out_as_the_pool_does(
    postgres: Postgres,
) -> None:
    url = postgres.primary_url
    engine = create_engine(url, make_settings(url, pool_size=1, max_overflow=0, pool_timeout=0.2))
    pool = engine.sync_engine.pool
    assert isinstance(pool, CountingPool)
    timeouts: list[int] = []
    pool.on_timeout = lambda: timeouts.append(1)
    try:
        held = await engine.raw_connection()
        assert pool.must_wait()
        with pytest.raises(PoolTimeout, match="QueuePool limit of size 1"):
            await checkout(engine)
        assert timeouts == [1]
        await in_greenlet(held.close)
        # Nothing of the expired wait is left over: the next checkout is served.
        conn = await checkout(engine)
        driver: Any = conn.driver_connection
        assert await driver.fetchval("SELECT 1") == 1
        await in_greenlet(conn.close)
        assert (pool.checkedout(), pool.checkedin()) == (0, 1)
    finally:
        await engine.dispose()


async def test_a_connection_handed_to_a_waiter_past_the_ping_window_is_pinged(
    postgres: Postgres,
) -> None:
    """The wait outlasted the ping window (a pause of the process): the waiter's checkout
    goes the awaited way and pings the connection before handing it out."""
    url = postgres.primary_url
    engine = create_engine(url, make_settings(url, pool_size=1, max_overflow=0, pool_timeout=10))
    pool = engine.sync_engine.pool
    assert isinstance(pool, CountingPool)
    queue = pool._pool
    assert isinstance(queue, FairQueue)
    take_turn = queue.take_turn

    async def then_a_pause(seconds: float | None) -> Any:
        record = await take_turn(seconds)
        assert record is not None
        record.info["returned_at"] -= 60
        return record

    try:
        held = await engine.raw_connection()
        driver: Any = held.driver_connection
        pid = await driver.fetchval("SELECT pg_backend_pid() /* before */")
        queue.take_turn = then_a_pause  # type: ignore[method-assign]
        waiter = asyncio.create_task(checkout(engine))
        await asyncio.sleep(0.05)
        await in_greenlet(held.close)
        conn = await asyncio.wait_for(waiter, 5)
        assert conn.driver_connection is driver
        admin = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            last = await admin.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
        finally:
            await admin.close()
        assert last == ";", "the connection was handed out unpinged"
        await in_greenlet(conn.close)
    finally:
        await engine.dispose()
