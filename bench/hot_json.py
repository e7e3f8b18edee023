"""The hot reads' statements on PostgreSQL: this version against an earlier one.

    uv run python bench/hot_json.py [--scale 0.05] [--rounds 5] [--calls 300] [--before REV]

Starts a PostgreSQL primary of its own, migrates and seeds it with the demo data, then
runs each hot read's statement (a client with every relation, a barber's week, a
location's month of revenue) `--calls` times in a row on one connection, alternating
this checkout's app/queries/hot_sql.py with the one at git revision `--before`, for
`--rounds` rounds. Prints the median time per call and the body's size for each. The
Python side of a hot read (bytes passed on) is the same for both: what differs is the
work PostgreSQL does to write the JSON. The cluster is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.db.engine import create_engine  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.db.seed import seed_demo  # noqa: E402
from app.queries import hot_sql  # noqa: E402
from app.queries.analytics import utc_days  # noqa: E402
from tests.conftest import make_settings  # noqa: E402
from tests.pgcluster import start_cluster  # noqa: E402


def _module_at(revision: str) -> Any:
    source = subprocess.run(
        ["git", "show", f"{revision}:app/queries/hot_sql.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType(f"hot_sql_{revision}")
    exec(compile(source, f"hot_sql@{revision}", "exec"), module.__dict__)  # noqa: S102
    return module


async def _seed(url: str, scale: float) -> None:
    engine = create_engine(url, make_settings(url))
    try:
        await seed_demo(engine, scale)
    finally:
        await engine.dispose()


Cases = dict[str, tuple[str, tuple[Any, ...]]]


async def _cases(conn: asyncpg.Connection) -> tuple[Cases, frozenset[str]]:
    client = await conn.fetchval(
        "SELECT user_id FROM appointments GROUP BY user_id ORDER BY count(*) DESC LIMIT 1"
    )
    barber, day = await conn.fetchrow(
        "SELECT barber_id, appointment_date FROM appointments "
        "WHERE status IN ('confirmed', 'in_progress') ORDER BY id LIMIT 1"
    )
    location = await conn.fetchval("SELECT location_id FROM payments ORDER BY id LIMIT 1")
    week = (barber, day, day + dt.timedelta(days=6), ["confirmed", "in_progress"])
    first = day.replace(day=1)
    since, until = utc_days(first, first + dt.timedelta(days=30))
    month = (location, since, until, first, first + dt.timedelta(days=30))
    relations = frozenset({"appointments", "payments", "organizations", "stripe_account"})
    return {
        "user, all relations": ("user", (client,)),
        "barber's week": ("SCHEDULE", week),
        "location's month": ("REVENUE", month),
    }, relations


def _statement(module: Any, name: str, relations: frozenset[str]) -> str:
    return str(module.user_statement(relations)) if name == "user" else str(getattr(module, name))


async def _measure(url: str, rounds: int, calls: int, before: str) -> None:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        cases, relations = await _cases(conn)
        versions = {f"before ({before})": _module_at(before), "now": hot_sql}
        timings: dict[tuple[str, str], list[float]] = {}
        sizes: dict[tuple[str, str], int] = {}
        for _ in range(rounds):
            for case, (name, args) in cases.items():
                for label, module in versions.items():
                    statement = _statement(module, name, relations)
                    body = await conn.fetchval(statement, *args)  # prepared, warm
                    started = time.perf_counter()
                    for _ in range(calls):
                        await conn.fetchval(statement, *args)
                    seconds = (time.perf_counter() - started) / calls
                    timings.setdefault((case, label), []).append(seconds)
                    sizes[(case, label)] = len(body.encode())
        print(f"| statement | version | median µs per call ({rounds} rounds) | body bytes |")
        print("|---|---|---|---|")
        for (case, label), runs in timings.items():
            median = statistics.median(runs) * 1e6
            print(f"| {case} | {label} | {median:.0f} | {sizes[(case, label)]} |")
    finally:
        await conn.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=float, default=0.05)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--before", default="cc15bde", help="git revision to compare with")
    args = p.parse_args()
    cluster = start_cluster(replicas=0)
    try:
        url = cluster.primary.url()
        upgrade(url)
        asyncio.run(_seed(url, args.scale))
        cluster.primary.psql("VACUUM ANALYZE")
        asyncio.run(_measure(url, args.rounds, args.calls, args.before))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
