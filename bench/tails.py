"""The service with tail-latency instruments, for bench/run.py --tails (one worker).

    python bench/tails.py --port 8000 --keep-alive 75

Serves app.main:create_app as `bookedbarber serve` does (uvloop, httptools, no access
log) and measures, per request and in the background, what a slow request waited for:

- in the app: from the ASGI call to the last body byte sent;
- the pool: how long each checkout of a pooled connection waited;
- the event loop: how late a 5 ms timer fires (lag every ready callback waits behind);
- the garbage collector: each collection's pause, by generation, in wall time and in the
  CPU time it took (the pause on a machine with a core to spare); before each full
  collection, the objects it is about to walk, by type ("heap": counting them stalls the
  server a little more, outside the pause recorded).

GET /_tails answers the histograms since the last GET /_tails/reset as JSON. GET
/_tails/census counts the objects a full collection would walk now, then runs one and
times it. Like `bookedbarber serve`, it freezes the start-up heap and, after full collections, what
lives long (app/boot.py LiveHeap). Bench-only:
nothing here is imported by the service.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.sqlalchemy_pool import CountingPool
from app.adapters.uvicorn_http import protocol
from app.adapters.uvloop_accept import UVICORN_LOOP
from app.boot import freeze_live_heap
from app.config import load_settings
from app.main import create_app

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

TICK = 0.005
series: dict[str, list[float]] = {}
_gc_started: dict[int, tuple[float, float]] = {}


def record(name: str, seconds: float) -> None:
    series.setdefault(name, []).append(seconds * 1000)


def _on_gc(phase: str, info: dict[str, int]) -> None:
    generation = info["generation"]
    if phase == "start" and generation == 2:
        heap.append(_heap())
    if phase == "start":
        _gc_started[generation] = (time.perf_counter(), time.thread_time())
    elif generation in _gc_started:
        wall, cpu = _gc_started.pop(generation)
        record(f"gc gen{generation} pause", time.perf_counter() - wall)
        # The CPU the collection took: the pause a machine with a core to spare would see.
        record(f"gc gen{generation} cpu", time.thread_time() - cpu)


heap: list[dict[str, Any]] = []


def _heap() -> dict[str, Any]:
    """What a full collection is about to walk: its objects by type."""
    walked = gc.get_objects(2) + gc.get_objects(1) + gc.get_objects(0)
    kinds = Counter(type(o).__qualname__ for o in walked)
    return {
        "objects": len(walked),
        "frozen": gc.get_freeze_count(),
        "types": dict(kinds.most_common(25)),
    }


def census() -> dict[str, Any]:
    """The heap a full collection walks now, then one run and timed (without this bench's
    own callback, which would count the heap again and record the pause)."""
    sample = _heap()
    gc.callbacks.remove(_on_gc)
    try:
        wall, cpu = time.perf_counter(), time.thread_time()
        sample["collected"] = gc.collect()
        sample["full collection ms"] = (time.perf_counter() - wall) * 1000
        sample["full collection cpu ms"] = (time.thread_time() - cpu) * 1000
    finally:
        gc.callbacks.append(_on_gc)
    return sample


_raw_connection = AsyncEngine.raw_connection


async def _timed_raw_connection(self: AsyncEngine) -> Any:
    started = time.perf_counter()
    try:
        return await _raw_connection(self)
    finally:
        record("pool checkout wait", time.perf_counter() - started)


_wait_turn = CountingPool.wait_turn


async def _timed_wait_turn(self: CountingPool) -> bool:
    # The hot reads' waits for a busy pool's connection, taken without a greenlet (not
    # through raw_connection; one that then needs an await is timed there too, near 0).
    started = time.perf_counter()
    try:
        return await _wait_turn(self)
    finally:
        record("pool checkout wait", time.perf_counter() - started)


async def _lag() -> None:
    while True:
        due = time.perf_counter() + TICK
        await asyncio.sleep(TICK)
        record("event-loop lag", max(0.0, time.perf_counter() - due))


def summary() -> dict[str, Any]:
    out: dict[str, Any] = {}
    if heap:
        out["heap"] = heap
    for name, values in sorted(series.items()):
        ordered = sorted(values)
        n = len(ordered)

        def pct(p: float, ordered: list[float] = ordered, n: int = n) -> float:
            return ordered[min(n - 1, int(p / 100 * n))]

        out[name] = {
            "count": n,
            "total_ms": sum(ordered),
            "p50": pct(50),
            "p90": pct(90),
            "p99": pct(99),
            "p99.9": pct(99.9),
            "max": ordered[-1],
        }
    return out


class Tails:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.lag: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            self.lag = asyncio.create_task(_lag())
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"].startswith("/_tails"):
            if scope["path"] == "/_tails/census":
                body = json.dumps(census()).encode()
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": body})
                return
            if scope["path"] == "/_tails/reset":
                series.clear()
                heap.clear()
            body = json.dumps(summary()).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            record("in the app", time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--keep-alive", type=int, default=75)
    args = parser.parse_args()
    gc.callbacks.append(_on_gc)
    AsyncEngine.raw_connection = _timed_raw_connection  # type: ignore[method-assign]
    CountingPool.wait_turn = _timed_wait_turn  # type: ignore[method-assign]
    settings = load_settings()
    app = Tails(create_app(settings))
    freeze_live_heap()  # as `bookedbarber serve` does once the service is loaded
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop=UVICORN_LOOP,
        http=protocol(settings),
        timeout_keep_alive=args.keep_alive,
        # The listen queue of `bookedbarber serve` (app/cli.py LISTEN_BACKLOG): uvicorn's
        # 2048 overflows when scenario c opens 10,000 connections at once.
        backlog=16384,
        access_log=False,
        log_level="warning",
        server_header=False,
    )


if __name__ == "__main__":
    main()
