"""What the RoutedConnection's greenlet-free checkout and checkin buy (the pool adapter).

One engine as the service makes it (create_engine, default settings) on a PostgreSQL of
its own (tests/pgcluster.py). A hot read's pool traffic, sequential: check out, one
`SELECT 1` on the driver, give back; either the quick way the RoutedConnection takes when the pool
would not await (CountingPool.checkout_without_io / checkin_without_io) or the awaited way
it takes otherwise (AsyncEngine.raw_connection, close in a greenlet). Then the same busy:
a pool of BUSY_POOL connections shared by twice as many tasks, so that nearly every
checkout waits in line: the RoutedConnection's way (app/db/sessions.py checkout, which
waits without a greenlet) against the awaited way. Interleaved rounds; prints the best
round's wall and CPU microseconds per read for each.

    uv run --frozen python bench/pool_fast_path.py --rounds 15 --calls 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.sqlalchemy_pool import CountingPool, in_greenlet
from app.db.engine import create_engine
from app.db.sessions import checkout
from tests.conftest import make_settings
from tests.pgcluster import start_cluster


async def quick(engine: AsyncEngine, pool: CountingPool) -> None:
    assert pool.checkout_without_io()
    pooled = engine.sync_engine.raw_connection()
    driver: Any = pooled.driver_connection
    await driver.fetchval("SELECT 1")
    assert pool.checkin_without_io(pooled)
    pooled.close()


async def awaited(engine: AsyncEngine, _pool: CountingPool) -> None:
    pooled = await engine.raw_connection()
    driver: Any = pooled.driver_connection
    await driver.fetchval("SELECT 1")
    await in_greenlet(pooled.close)


BUSY_POOL = 4


async def routed(engine: AsyncEngine, pool: CountingPool) -> None:
    pooled = await checkout(engine)
    driver: Any = pooled.driver_connection
    await driver.fetchval("SELECT 1")
    if pool.checkin_without_io(pooled):
        pool.checkin_reset(pooled)
    else:
        await in_greenlet(pooled.close)


def busy(way: Any) -> Any:
    async def tasks(engine: AsyncEngine, pool: CountingPool) -> None:
        async def one() -> None:
            for _ in range(BUSY_POOL):
                await way(engine, pool)

        await asyncio.gather(*(one() for _ in range(2 * BUSY_POOL)))

    return tasks


async def measure(url: str, rounds: int, calls: int) -> dict[str, dict[str, float]]:
    engine = create_engine(url, make_settings(url, pool_size=BUSY_POOL, max_overflow=0))
    pool = engine.sync_engine.pool
    assert isinstance(pool, CountingPool)
    ways = {
        "quick": quick,
        "awaited": awaited,
        "busy, routed": busy(routed),
        "busy, awaited": busy(awaited),
    }
    per_call = {name: 2 * BUSY_POOL * BUSY_POOL if name.startswith("busy") else 1 for name in ways}
    best = {name: {"wall_us": float("inf"), "cpu_us": float("inf")} for name in ways}
    try:
        await busy(awaited)(engine, pool)  # the pool's connections open, warm
        for _ in range(rounds):
            for name, way in ways.items():
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(calls // per_call[name]):
                    await way(engine, pool)
                reads = calls // per_call[name] * per_call[name]
                numbers = best[name]
                numbers["wall_us"] = min(numbers["wall_us"], (time.perf_counter() - wall) / reads)
                numbers["cpu_us"] = min(numbers["cpu_us"], (time.process_time() - cpu) / reads)
    finally:
        await engine.dispose()
    return {n: {k: round(v * 1e6, 1) for k, v in found.items()} for n, found in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    cluster = start_cluster(replicas=0)
    try:
        print(json.dumps(asyncio.run(measure(cluster.primary.url(), args.rounds, args.calls))))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
