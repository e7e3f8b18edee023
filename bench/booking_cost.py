"""A booking's cost on PostgreSQL: this checkout's booking against an earlier revision's.

    uv run python bench/booking_cost.py [--before REV] [--rounds 5] [--calls 400]

Starts a PostgreSQL primary of its own and migrates it. For each round, and for each of
this checkout and git revision `--before` (exported to a temporary directory), a child
process starts the service (create_app, its lifespan), makes a shop, then books
`--calls` appointments one after another through the function the booking lane calls
(the use case `app.operations.booking.book`, or before it the lane's
`check_request` + `book_in_one_statement`). Prints, per side, the median over rounds of
the wall time and of the process's CPU time per booking, and the statements per booking
the service counted. The cluster is stopped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _export(revision: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", revision, "app", "tests", "alembic", "alembic.ini"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


async def _measure(url: str, calls: int, offset: int) -> dict[str, float]:
    # Imported here, in the child: from the tree being measured (sys.path set by _child).
    import httpx

    from app.db.models import utcnow
    from app.main import create_app
    from app.schemas import AppointmentCreate
    from tests.conftest import make_settings
    from tests.test_booking_rules import shop

    try:
        from app.operations.booking import book

        async def booked(router: Any, body: AppointmentCreate) -> None:
            await book(router, body, utcnow())

    except ImportError:  # the revision before the use case
        from app.api import appointments

        earlier = vars(appointments)  # names this checkout no longer has

        async def booked(router: Any, body: AppointmentCreate) -> None:
            earlier["check_request"](body, router.settings, utcnow())
            fields = earlier["booking_fields"](body)
            await earlier["book_in_one_statement"](router, body, fields)

    settings = make_settings(url, booking_horizon_days=33_000, replica_probe_interval_seconds=3600)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://b") as client,
    ):
        ids = await shop(app, client)
        start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=offset)
        bodies = [
            AppointmentCreate.model_validate(
                {
                    **{k: ids[k] for k in ("user_id", "barber_id", "service_id", "location_id")},
                    "start_time": (start + dt.timedelta(minutes=30 * i)).isoformat(),
                    "end_time": (start + dt.timedelta(minutes=30 * i + 30)).isoformat(),
                }
            )
            for i in range(calls + 20)
        ]
        router = app.state.db
        for body in bodies[:20]:  # warm: the pool's connection, asyncpg's statement cache
            await booked(router, body)
        counted = (await client.get("/metrics")).text
        wall, cpu = time.perf_counter(), time.process_time()
        for body in bodies[20:]:
            await booked(router, body)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        after = (await client.get("/metrics")).text
    return {
        "wall_us": wall / calls * 1e6,
        "cpu_us": cpu / calls * 1e6,
        "statements": (_queries(after) - _queries(counted)) / calls,
    }


def _queries(scrape: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in scrape.splitlines()
        if line.startswith("database_queries_total{") and 'role="primary"' in line
    )


def _child(tree: Path, url: str, calls: int, offset: int) -> dict[str, float]:
    code = (
        "import asyncio, json, sys;"
        "sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2]);"
        "from booking_cost import _measure;"
        "import os; url = os.environ['BENCH_DATABASE_URL'];"
        "print(json.dumps(asyncio.run(_measure(url, int(sys.argv[3]), int(sys.argv[4])))))"
    )
    # The URL (a password in it) by the environment: never in a command line or a traceback.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "BENCH_DATABASE_URL": url}
    child = subprocess.run(
        [sys.executable, "-c", code, str(tree), str(ROOT / "bench"), str(calls), str(offset)],
        check=False,
        capture_output=True,
        text=True,
        cwd=tree,
        env=env,
    )
    if child.returncode != 0:
        raise SystemExit(f"the measuring process failed:\n{child.stderr[-3000:]}")
    result: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from app.db.migrate import upgrade
    from tests.pgcluster import start_cluster

    with tempfile.TemporaryDirectory() as tmp, start_cluster(replicas=0) as cluster:
        url = cluster.primary.url()
        upgrade(url)
        sides = {"before": _export(args.before, Path(tmp) / "before"), "after": ROOT}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
        for round_ in range(args.rounds):
            for index, (name, tree) in enumerate(sides.items()):
                offset = (round_ * len(sides) + index) * 400
                results[name].append(_child(tree, str(url), args.calls, offset))
        for name, runs in results.items():
            wall = statistics.median(r["wall_us"] for r in runs)
            cpu = statistics.median(r["cpu_us"] for r in runs)
            statements = statistics.median(r["statements"] for r in runs)
            print(
                f"{name:>6}: {wall:7.0f} us wall, {cpu:6.0f} us CPU per booking, "
                f"{statements:.2f} statements (median of {len(runs)} rounds)"
            )


if __name__ == "__main__":
    main()
