"""Benchmark: a live migration of a serving SQLite deployment, there and back.

    uv run python bench/live.py [--writes 50] [--reads 200] [--seconds 6] [--scale 0.01]

Starts its own PostgreSQL (tests/pgcluster.py), seeds a SQLite file with the demo data,
serves it with `bookedbarber serve` (MIGRATION_TARGET_URL set), runs `db sync`, and
sends the mixed load of tests/live_load.py (bookings, payments, status changes,
sign-ups, reads). Under that load: `db cutover`, some seconds on PostgreSQL, then
`db cutover --back`. Reports per direction the write pause (the tool's freeze and the
longest gap between two successful writes a client saw), failed reads, the sync's lag
under load, then the change-apply throughput on a backlog made with the service
stopped (every appointment touched once: one change each).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from app.cli import _seed  # noqa: E402
from app.db.live.sync import Pair, catch_up, lag  # noqa: E402
from app.db.migrate import upgrade_async  # noqa: E402
from tests import live_helpers as live  # noqa: E402
from tests import pgcluster  # noqa: E402
from tests.live_load import Load, Plan  # noqa: E402
from tests.test_edges import launch, wait_port  # noqa: E402
from tests.test_health import stop as halt  # noqa: E402

LAG = re.compile(r"lag (\d+) changes, ([\d.]+) s behind")
PAUSED = re.compile(r"writes were paused ([\d.]+) s")


async def migrate(args: argparse.Namespace, tmp: Path, pg_url: str) -> None:
    path = tmp / "live.db"
    lite = f"sqlite+aiosqlite:///{path}"
    await upgrade_async(lite)
    await asyncio.to_thread(_seed, lite, args.scale)
    await upgrade_async(pg_url)
    plan = Plan.from_sqlite(path)
    sync = live.cli(tmp, "sync", "db", "sync", lite, pg_url, "--interval", "0.05")
    server = launch(
        tmp,
        live.env(DATABASE_URL=lite, MIGRATION_TARGET_URL=pg_url, MIGRATION_POLL_SECONDS="0.05"),
        "--no-access-log",
    )
    stop = asyncio.Event()
    load = Load(server.base, plan, writes_per_second=args.writes, reads_per_second=args.reads)
    try:
        wait_port(server)
        await sync.wait_for("lag")
        running = asyncio.create_task(load.run(stop))
        for where, extra in (("postgresql", ()), ("sqlite", ("--back",))):
            await asyncio.sleep(args.seconds)
            seen = len(sync.text())
            begun = len(load.answers)
            cutover = live.cli(tmp, f"cutover-{where}", "db", "cutover", lite, pg_url, *extra)
            assert await live.finished(cutover) == 0, cutover.text()
            await asyncio.sleep(args.seconds)
            window = Load(server.base, plan)
            window.answers = load.answers[begun:]
            lags = [(int(c), float(s)) for c, s in LAG.findall(sync.text()[seen:])]
            paused = PAUSED.search(cutover.text())
            print(f"cut over to {where}:")
            print(f"  freeze (tool): {paused[1] if paused else '?'} s")
            print(f"  longest gap between successful writes: {window.longest_write_pause():.2f} s")
            print(f"  {window.timeline()}")
            print(f"  failed reads: {len(window.failed_reads())}")
            worst = max(lags, default=(0, 0.0))
            print(f"  sync lag under load: worst {worst[0]} changes, {worst[1]:.1f} s behind")
        stop.set()
        await running
        writes, reads = load.rates()
        print(f"load answered: {writes:.0f} writes/s, {reads:.0f} reads/s")
        await live.converged(lite_pg(path, pg_url))
        print("SQLite and PostgreSQL equal row by row at the end")
    finally:
        stop.set()
        halt(server.proc)
        sync.stop()
    await throughput(lite, pg_url, path)


def lite_pg(path: Path, pg_url: str) -> live.Databases:
    return live.Databases(path, f"sqlite+aiosqlite:///{path}", pg_url)


async def throughput(lite: str, pg_url: str, path: Path) -> None:
    """A backlog of one change per appointment applied, each direction, no other load."""
    pair = Pair.open(lite, pg_url)
    try:
        db = sqlite3.connect(path)
        with db:
            db.execute("UPDATE appointments SET notes = coalesce(notes, '') || '.'")
        db.close()
        behind = await lag(pair, "to_postgresql")
        began = time.monotonic()
        applied = await catch_up(pair, "to_postgresql")
        took = time.monotonic() - began
        print(
            f"apply SQLite -> PostgreSQL: {applied} changes in {took:.2f} s "
            f"({applied / took:,.0f} changes/s; backlog was {behind.changes})"
        )
        # PostgreSQL takes writes only while it serves: switched there for the backlog.
        conn = await asyncpg.connect(pair.pg.url_plain)
        try:
            await conn.execute(
                "UPDATE _bookedbarber_live SET active = 'postgresql'; "
                "UPDATE appointments SET notes = notes || ','; "
                "UPDATE _bookedbarber_live SET active = 'sqlite'"
            )
        finally:
            await conn.close()
        began = time.monotonic()
        applied = await catch_up(pair, "to_sqlite")
        took = time.monotonic() - began
        print(
            f"apply PostgreSQL -> SQLite: {applied} changes in {took:.2f} s "
            f"({applied / took:,.0f} changes/s)"
        )
    finally:
        await pair.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=float, default=50)
    parser.add_argument("--reads", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--scale", type=float, default=0.01)
    args = parser.parse_args()
    cluster = pgcluster.start_cluster(replicas=0)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
            asyncio.run(migrate(args, Path(tmp), cluster.primary.url()))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
