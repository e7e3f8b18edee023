"""SQLAlchemy's connection pool where its public API has no answer: the one place that
reads or replaces its private parts. tests/test_library_shapes.py fails, naming the
attribute, when an installed SQLAlchemy changes any of them; pyproject.toml bounds it to
the minor release they were read from.

What it relies on, and what each buys:

- `QueuePool._queue_class`, and `sqlalchemy.util.queue` (`QueueCommon`, `Empty`, `Full`)
  as the interface QueuePool calls on it: the idle connections sit in FairQueue, which
  hands a returned connection to the longest waiter. SQLAlchemy's asyncio queue lets a
  newcomer take it first, and under a busy pool a few requests waited seconds while the
  median waited nothing (bench/tails.py, "Where the tail comes from").
  `sqlalchemy.util.await_only` lets FairQueue wait from the pool's synchronous code.
- `QueuePool._do_get`: where a checkout gives up after POOL_TIMEOUT, counted for
  `database_pool_timeouts_total` (the pool has no event for it).
- `QueuePool._pool`, `_pre_ping`, `_recycle`, `_invalidate_time`, `_overflow`, an entry's
  `starttime` and `_soft_invalidate_time`, a checked-out connection's `_pool` and the
  asyncpg adapter's `_transaction`: enough to tell that a checkout or a checkin would not
  await, so that the hot reads (app/db/sessions.py RoutedConnection) take and give back their
  connection without a greenlet: a large share of the client CPU of a checkout, one
  statement and a return (bench/pool_fast_path.py; the hot reads of bench/run.py).
- `_ConnectionFairy._close_special(transaction_reset=True)`, as SQLAlchemy's own Connection
  gives back a connection it rolled back: for a connection `checkin_without_io` approved
  (no transaction on the driver), the reset-on-return rollback would do nothing; the
  hot reads skip the call (`checkin_reset`).
- `QueuePool._max_overflow`, `_overflow` and `_timeout`: the configured overflow, for the
  start-up budget (app/db/budget.py), which has no public getter; and whether a checkout
  must wait for a connection given back, and how long, so that the hot reads wait in
  line without a greenlet (`must_wait`, `wait_turn`: FairQueue hands the turn's
  connection to the very next `get`, which QueuePool._do_get makes).
- `sqlalchemy.util.greenlet_spawn`: closes or invalidates a raw connection from async
  code when the pool may await (AsyncEngine.raw_connection has no async counterpart).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import (
    AsyncAdaptedQueuePool,
    ConnectionPoolEntry,
    PoolProxiedConnection,
    QueuePool,
)
from sqlalchemy.util import await_only, greenlet_spawn
from sqlalchemy.util.queue import Empty, Full, QueueCommon

if TYPE_CHECKING:
    import asyncpg
    from sqlalchemy.pool.base import _ConnectionFairy, _ConnectionRecord

_T = TypeVar("_T")


# Runs a synchronous pool operation that may await (close, invalidate) from async code.
in_greenlet = greenlet_spawn


def max_overflow(pool: QueuePool) -> int:
    """MAX_OVERFLOW as the pool was made with it (-1: unbounded)."""
    return int(pool._max_overflow)


class FairQueue(QueueCommon[_T]):
    """The pools' queue of idle connections, handing them to waiters in arrival order.

    A connection given back wakes the first waiter of SQLAlchemy's own queue, but the
    waiter runs only on a later turn of the event loop; a request arriving before that
    takes the connection, and the woken waiter, finding none, queues again at the back.
    Here a connection given back goes straight to the longest waiter, and a checkout
    queues behind anyone already waiting: the tail is the queue's length, not bad luck.
    Idle connections stay last-in first-out when the pool asks for it (pool_use_lifo).
    """

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        self._items: deque[_T] = deque()
        self._waiters: deque[asyncio.Future[_T]] = deque()
        # What the next get() returns before anything else (`hand`): an item, or None
        # for Empty, as a wait that expired says.
        self._handed: tuple[_T | None] | None = None

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._items)

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: _T) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        if self.full():
            raise Full()
        self._items.append(item)

    def put(self, item: _T, block: bool = True, timeout: float | None = None) -> None:
        # The pool only gives back what it took: there is always room, or Full says
        # the connection is overflow, to be closed. Nothing to wait for.
        self.put_nowait(item)

    def newest_idle(self) -> _T | None:
        """What a checkout would take at once: the newest idle item, when LIFO and no
        one is waiting (else None)."""
        if self.use_lifo and self._items and not self._waiters:
            return self._items[-1]
        return None

    def waiting(self) -> bool:
        """Whether a get() now would wait: nothing idle, or others already waiting."""
        return not self._items or bool(self._waiters)

    async def take_turn(self, seconds: float | None) -> _T | None:
        """get(), waiting in line as it would, from async code (no greenlet): the item, or
        None when the wait expired."""
        if not self.waiting():
            return self.get_nowait()
        try:
            return await self._wait(seconds)
        except Empty:
            return None

    def hand(self, item: _T | None) -> None:
        """Make `item` what the next get() returns (None: Empty, as after a wait that expired)."""
        self._handed = (item,)

    def get_nowait(self) -> _T:
        if not self._items:
            raise Empty()
        return self._items.pop() if self.use_lifo else self._items.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> _T:
        if self._handed is not None:
            (item,), self._handed = self._handed, None
            if item is None:
                raise Empty()
            return item
        if not block or (self._items and not self._waiters):
            return self.get_nowait()
        return await_only(self._wait(timeout))

    async def _wait(self, seconds: float | None) -> _T:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_T] = loop.create_future()
        self._waiters.append(waiter)
        # A timer on the waiter itself: asyncio.wait_for would add a future and callbacks.
        timer = loop.call_later(seconds, _expire, waiter) if seconds is not None else None
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed a connection just as it was cancelled: the next waiter gets it.
                self.put_nowait(waiter.result())
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()


def _expire(waiter: asyncio.Future[_T]) -> None:
    """POOL_TIMEOUT passed: QueuePool turns Empty into its TimeoutError."""
    if not waiter.done():
        waiter.set_exception(Empty())


class CountingPool(AsyncAdaptedQueuePool):
    """A queue pool that serves waiters in arrival order (FairQueue), reports each
    checkout that gave up after POOL_TIMEOUT, and tells when a checkout or a checkin
    would not await."""

    _queue_class = FairQueue[ConnectionPoolEntry]
    on_timeout: Callable[[], None] | None = None
    # What counts and times the statements sent to this pool's drivers directly
    # (app/db/metrics.py Recorder), found here without a weak-mapping lookup.
    on_statement: Callable[[str, float, int], None] | None = None
    # Seconds after its return within which a connection is handed out unpinged
    # (the checkout event _ping), or None when that event is not attached.
    ping_after_idle: float | None = None

    def checkout_without_io(self) -> bool:
        """Would a checkout now hand out an idle connection as it is, with no await?

        Nearly every checkout under load: the newest idle connection, returned within
        the ping window, neither recycled nor invalidated, nobody waiting. Then the
        caller may check out without a greenlet; anything else (a wait, a ping, a
        reconnect) goes the awaited way.
        """
        queue = self._pool
        record = queue.newest_idle() if isinstance(queue, FairQueue) else None
        return record is not None and self._as_is(cast("_ConnectionRecord", record))

    def must_wait(self) -> bool:
        """Would a checkout now wait in line for a connection given back (none idle for it,
        no room to open another)?"""
        queue = self._pool
        full = -1 < self._max_overflow <= self._overflow
        return full and isinstance(queue, FairQueue) and queue.waiting()

    async def wait_turn(self) -> bool:
        """Wait in line for a connection given back, as a checkout would but without a
        greenlet, and hand it (or the wait's expiry) to the very next checkout, which the
        caller makes before any await. True when that checkout needs no await either.

        Under a busy pool nearly every checkout waits: waiting in a greenlet cost a read
        170 µs of CPU against 99 µs this way (bench/pool_fast_path.py, "busy").
        A wait that expired is handed on as such: that checkout times out as QueuePool's
        own does, through _do_get (counted).
        """
        queue = self._pool
        assert isinstance(queue, FairQueue)
        record = await queue.take_turn(self._timeout)
        queue.hand(record)
        return record is not None and self._as_is(cast("_ConnectionRecord", record))

    def _as_is(self, record: _ConnectionRecord) -> bool:
        """Would checking out this idle entry need no await (no ping, reconnect, recycle)?"""
        if self._pre_ping or record.dbapi_connection is None:
            return False
        started = record.starttime
        if self._recycle > -1 and time.time() - started > self._recycle - 1:
            return False
        soft = record._soft_invalidate_time
        if self._invalidate_time > started or soft > started:
            return False
        driver: asyncpg.Connection | None = record.driver_connection
        if driver is None or driver.is_closed():
            return False
        if self.ping_after_idle is not None:
            returned_at = record.info.get("returned_at")
            margin = self.ping_after_idle / 2
            if returned_at is None or time.monotonic() - returned_at > margin:
                return False
        return True

    def checkin_without_io(self, connection: PoolProxiedConnection) -> bool:
        """Would giving `connection` back need no await? It goes back to the idle
        queue as it is (no overflow to close, valid, this pool's, no transaction)."""
        driver: asyncpg.Connection | None = connection.driver_connection
        return (
            self._overflow <= 0
            and connection.is_valid
            and getattr(connection, "_pool", None) is self
            and driver is not None
            and not driver.is_closed()
            and getattr(connection.dbapi_connection, "_transaction", None) is None
        )

    @staticmethod
    def checkin_reset(connection: PoolProxiedConnection) -> None:
        """Give back a connection `checkin_without_io` approved, as already reset: its
        driver holds no transaction, so the pool's rollback on return would do nothing."""
        fairy = cast("_ConnectionFairy", connection)
        fairy._close_special(transaction_reset=True)

    def _do_get(self) -> ConnectionPoolEntry:
        try:
            return super()._do_get()
        except PoolTimeout:
            if self.on_timeout is not None:
                self.on_timeout()
            raise

    def recreate(self) -> CountingPool:
        pool = super().recreate()
        assert isinstance(pool, CountingPool)
        pool.on_timeout = self.on_timeout  # dispose() recreates the pool: keep counting
        pool.on_statement = self.on_statement
        pool.ping_after_idle = self.ping_after_idle  # the checkout event stays attached
        return pool
