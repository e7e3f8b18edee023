"""prometheus_client's value storage: its choice of it, and a lock-free one for hot series.

Relies on `prometheus_client.values.ValueClass` and `MutexValue` (read, never replaced):
the library has no public way to ask whether its values go to PROMETHEUS_MULTIPROC_DIR.
It buys a clear start-up error instead of a scrape that silently misses every value when
the directory is set after the import (app/db/metrics.py settle_multiprocess).

For the series every request records (app/http_metrics.py, app/db/metrics.py), `counting`
and `observing` also rely on a metric child's value attributes: a Counter's `_value`, a
Summary's `_count` and `_sum`, a Histogram's `_sum`, `_buckets` and `_upper_bounds`. In
memory (single-process mode) they replace those values with `LoopValue`s, which take no
lock, and hand back a recorder that adds to them directly, a Histogram's bucket found by
bisection: a request's dozen increments cost what the lock and the library's checks
around each cost before (microseconds per request). The child stays the library's, so
the scrape reads it as before: same samples, same order, same `_created`. Multiprocess
mode keeps the library's own calls (its values are shared files).

tests/test_library_shapes.py fails when an installed prometheus_client changes any of these
names; pyproject.toml bounds it to the minor release they were read from.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Histogram, Summary, values


def file_backed() -> bool:
    """Whether this process's metric values are kept in files (multiprocess mode)."""
    return values.ValueClass is not values.MutexValue


class LoopValue:
    """A metric value without a lock: MutexValue's interface, for a value that only the
    event loop's thread changes (the requests and their statements all run there; a
    scrape reading it from elsewhere sees the value before or after an increment)."""

    __slots__ = ("_exemplar", "_value")
    _multiprocess = False

    def __init__(self, value: float = 0.0) -> None:
        self._value = value
        self._exemplar: object = None

    def inc(self, amount: float) -> None:
        self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._value = value

    def set_exemplar(self, exemplar: object) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self._value

    def get_exemplar(self) -> object:
        return self._exemplar


def _unlocked(child: object, name: str) -> LoopValue:
    """The child's value `name` as a LoopValue (its count so far kept), put in its place."""
    value: Any = getattr(child, name)
    if isinstance(value, LoopValue):
        return value
    unlocked = LoopValue(value.get())
    setattr(child, name, unlocked)
    return unlocked


def counting(child: Counter) -> Callable[[float], None]:
    """`child.inc` for a labelled child (or an unlabelled Counter), without its lock."""
    if file_backed():
        return child.inc
    return _unlocked(child, "_value").inc


def observing(child: Histogram | Summary) -> Callable[[float], None]:
    """`child.observe`, without its locks and, for a Histogram, its scan of the buckets."""
    if file_backed():
        return child.observe
    total = _unlocked(child, "_sum")
    if isinstance(child, Summary):
        count = _unlocked(child, "_count")

        def observe_summary(amount: float) -> None:
            count._value += 1
            total._value += amount

        return observe_summary
    found: Any = child
    buckets: list[LoopValue] = [
        bucket if isinstance(bucket, LoopValue) else LoopValue(bucket.get())
        for bucket in found._buckets
    ]
    found._buckets = buckets
    bounds: list[float] = list(found._upper_bounds)  # ascending, the last +Inf

    def observe_histogram(amount: float) -> None:
        total._value += amount
        # The first bound at or above the amount: the library's bucket (none for NaN).
        i = bisect_left(bounds, amount)
        if amount <= bounds[i]:
            buckets[i]._value += 1

    return observe_histogram
