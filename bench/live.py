"""Benchmark: a live migration of a serving SQLite deployment, there and back.

    uv run python bench/live.py [--writes 50] [--reads 200] [--seconds 6] [--scale 0.01]
                                [--workers 1] [--rollback] [--no-throughput]

Starts its own PostgreSQL (tests/pgcluster.py, durable commits), seeds a SQLite file with
the demo data, serves it with `bookedbarber serve` (MIGRATION_TARGET_URL set, automatic
rollback on), runs `db sync`, and sends the mixed load of tests/live_load.py (bookings,
payments, status changes, sign-ups, reads). Under that load: `db cutover`, some seconds
on PostgreSQL, then `db cutover --back`. Reports per direction the write pause (the
tool's freeze and the longest gap between two successful writes a client saw), the
comparison made while writes went on, failed reads, the sync's lag under load.
With --rollback, a third cutover, then PostgreSQL stopped with `-m immediate` under the
load: time to the automatic rollback and to writes served again, changes left on
PostgreSQL, time to reconcile them once it is back. At the end every acknowledged write
is looked up in both databases (the test's own comparison, tests/test_live_migration).
Then the change-apply throughput on a backlog made with the service stopped (every
appointment touched once: one change each).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402

from app.cli import _seed  # noqa: E402
from app.db.live.sync import Pair, catch_up, lag  # noqa: E402
from app.db.migrate import upgrade_async  # noqa: E402
from tests import live_helpers as live  # noqa: E402
from tests import pgcluster  # noqa: E402
from tests.live_load import Load, Plan  # noqa: E402
from tests.test_edges import launch, wait_port  # noqa: E402
from tests.test_health import stop as halt  # noqa: E402
from tests.test_live_migration import _check_reflected  # noqa: E402

LAG = re.compile(r"lag (\d+) changes, ([\d.]+) s behind")
PAUSED = re.compile(r"writes were paused ([\d.]+) s")
BROUGHT = re.compile(r"brought (\d+) changes left on postgresql")
AGREED = re.compile(r"([\d,]+) rows compared in ([\d.]+) s; (\d+) keys")


async def _cutover(tmp: Path, name: str, lite: str, pg_url: str, *extra: str) -> str:
    began = time.monotonic()
    cutover = live.cli(tmp, name, "db", "cutover", lite, pg_url, *extra)
    assert await live.finished(cutover, 1800) == 0, cutover.text()
    agreed = AGREED.search(cutover.text())
    if agreed:
        print(
            f"  compared while writes went on: {agreed[1]} rows in {agreed[2]} s "
            f"({agreed[3]} keys left for the freeze); cutover took {time.monotonic() - began:.1f} s"
        )
    return cutover.text()


def _latencies(load: Load, start: float, end: float) -> str:
    took = sorted(
        a.finished - a.started
        for a in load.writes()
        if start <= a.started < end and 200 <= a.status < 300
    )
    if not took:
        return "no writes"
    p50, p99 = took[len(took) // 2], took[min(len(took) - 1, len(took) * 99 // 100)]
    return f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms ({len(took)} writes)"


async def _health(base: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        return dict((await client.get("/health/db")).json().get("backend", {}))


async def _until(base: str, check: Callable[[dict[str, Any]], bool], limit: float) -> float:
    began = time.monotonic()
    while not check(await _health(base)):
        assert time.monotonic() - began < limit, await _health(base)
        await asyncio.sleep(0.05)
    return time.monotonic()


async def rollback(
    args: argparse.Namespace,
    tmp: Path,
    lite: str,
    pg_url: str,
    server: Any,
    load: Load,
    node: pgcluster.PgNode,
    sync: live.Process,
) -> None:
    """Cut over once more, then stop PostgreSQL under the load: the emergency path."""
    print("automatic rollback, PostgreSQL stopped with -m immediate:")
    await _cutover(tmp, "cutover-again", lite, pg_url)
    await _until(server.base, lambda b: b.get("active") == "postgresql", 30)
    await asyncio.sleep(args.seconds)
    node.stop("immediate")
    faulted = time.monotonic()
    switched = await _until(server.base, lambda b: b.get("active") == "sqlite", 60)
    served = None
    while served is None:
        await asyncio.sleep(0.05)
        served = min(
            (a.finished for a in load.writes() if a.started > switched and 200 <= a.status < 300),
            default=None,
        )
    left = (await _health(server.base)).get("unsynced", {})
    print(f"  rolled back {switched - faulted:.2f} s after the fault")
    print(f"  writes served again {served - faulted:.2f} s after the fault")
    print(f"  unsynced at the rollback: {left} (None: PostgreSQL unreachable, count unknown)")
    await asyncio.sleep(args.seconds)
    node.start()
    back = time.monotonic()
    settled = await _until(server.base, live.nothing_left_on_postgresql, 300)
    health = await _health(server.base)
    brought = sum(int(n) for n in BROUGHT.findall(sync.text()))
    print(f"  PostgreSQL back: {brought} changes it kept reconciled {settled - back:.2f} s later")
    print(f"  conflicts reported: {health.get('conflicts')}")


async def migrate(args: argparse.Namespace, tmp: Path, pg_url: str, node: pgcluster.PgNode) -> None:
    path = tmp / "live.db"
    lite = f"sqlite+aiosqlite:///{path}"
    await upgrade_async(lite)
    await asyncio.to_thread(_seed, lite, args.scale)
    await upgrade_async(pg_url)
    plan = Plan.from_sqlite(path)
    began = time.monotonic()
    sync = live.cli(tmp, "sync", "db", "sync", lite, pg_url, "--interval", "0.05")
    server = launch(
        tmp,
        live.env(
            DATABASE_URL=lite,
            MIGRATION_TARGET_URL=pg_url,
            MIGRATION_POLL_SECONDS="0.05",
            MIGRATION_AUTO_ROLLBACK="true",
            MIGRATION_ROLLBACK_WINDOW_SECONDS="2",
            MIGRATION_ROLLBACK_ERROR_RATE="2",
            CONNECT_TIMEOUT="1",
            POOL_TIMEOUT="1",
        ),
        "--no-access-log",
        "--workers",
        str(args.workers),
    )
    stop = asyncio.Event()
    load = Load(server.base, plan, writes_per_second=args.writes, reads_per_second=args.reads)
    try:
        wait_port(server)
        await sync.wait_for("lag", 1800)
        print(f"db sync's bulk copy done {time.monotonic() - began:.1f} s after it started")
        running = asyncio.create_task(load.run(stop))
        for where, extra in (("postgresql", ()), ("sqlite", ("--back",))):
            await asyncio.sleep(args.seconds)
            seen = len(sync.text())
            begun = len(load.answers)
            print(f"cut over to {where}:")
            cut_began = time.monotonic()
            said = await _cutover(tmp, f"cutover-{where}", lite, pg_url, *extra)
            cut_ended = time.monotonic()
            before = _latencies(load, cut_began - args.seconds, cut_began)
            during = _latencies(load, cut_began, cut_ended - 3)  # the freeze is in the last 3 s
            print(f"  write latency before the cutover: {before}; while it compared: {during}")
            await asyncio.sleep(args.seconds)
            window = Load(server.base, plan)
            window.answers = load.answers[begun:]
            lags = [(int(c), float(s)) for c, s in LAG.findall(sync.text()[seen:])]
            paused = PAUSED.search(said)
            print(f"  freeze (tool): {paused[1] if paused else '?'} s")
            print(f"  longest gap between successful writes: {window.longest_write_pause():.2f} s")
            waited = load.longest_write_wait(load.answers[begun].started, time.monotonic())
            print(
                f"  longest a write waited, first try to answer (retries included): {waited:.2f} s"
            )
            print(f"  {window.timeline()}")
            print(f"  failed reads: {len(window.failed_reads())}")
            worst = max(lags, default=(0, 0.0))
            print(f"  sync lag under load: worst {worst[0]} changes, {worst[1]:.1f} s behind")
        if args.rollback:
            await rollback(args, tmp, lite, pg_url, server, load, node, sync)
        stop.set()
        await running
        writes, reads = load.rates()
        print(f"load answered: {writes:.0f} writes/s, {reads:.0f} reads/s")
        found = await live.converged(lite_pg(path, pg_url), 600)
        print("SQLite and PostgreSQL equal row by row at the end")
        _check_reflected(load, found)
        acknowledged = len(load.appointments) + len(load.payments) + len(load.users)
        print(f"acknowledged writes lost: 0 of {acknowledged} rows written (each looked up)")
    finally:
        stop.set()
        halt(server.proc)
        sync.stop()
    if args.throughput:
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
        # PostgreSQL takes writes only while it serves: switched there for the backlog
        # (both states, as a cutover would), and back once the backlog is applied.
        conn = await asyncpg.connect(pair.pg.url_plain)
        db = sqlite3.connect(path)
        try:
            with db:
                db.execute("UPDATE _bookedbarber_live SET active = 'postgresql'")
            await conn.execute(
                "UPDATE _bookedbarber_live SET active = 'postgresql'; "
                "UPDATE appointments SET notes = notes || ','"
            )
            began = time.monotonic()
            applied = await catch_up(pair, "to_sqlite")
            took = time.monotonic() - began
            await conn.execute("UPDATE _bookedbarber_live SET active = 'sqlite'")
            with db:
                db.execute("UPDATE _bookedbarber_live SET active = 'sqlite'")
        finally:
            db.close()
            await conn.close()
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
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rollback", action="store_true")
    parser.add_argument("--no-throughput", dest="throughput", action="store_false")
    args = parser.parse_args()
    cluster = pgcluster.start_cluster(replicas=0)
    try:
        cluster.primary._append_conf({"synchronous_commit": "on"})  # acknowledged = durable
        cluster.primary.restart()
        with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
            asyncio.run(migrate(args, Path(tmp), cluster.primary.url(), cluster.primary))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
