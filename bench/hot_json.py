"""The hot reads on PostgreSQL, body included: CPU in this process and in the backend.

    uv run python bench/hot_json.py [--scale 0.05] [--rounds 5] [--calls 300] [--before REV]

Starts a PostgreSQL primary of its own, migrates and seeds it with the demo data, then
answers each hot read (a client with every relation, a barber's week, a location's
month of revenue) `--calls` times in a row on one connection, three ways, for
`--rounds` rounds:

- "json in SQL": the one statement of app/queries/hot_sql.py at git revision `--before`,
  whose result is the body (PostgreSQL writes the JSON);
- "use case: JSON in SQL": the use cases of app/operations/reads.py on a handle that
  answers `document` as PostgresStatements does: this checkout's JSON statement
  (app/queries/documents.py, derived from the Shapes), its text encoded, where the
  document has one (the revenue's month), else as below;
- "use case: rows + shape": the same use cases, the handle answering `document` as
  TransactionStatements does on SQLite: the rows statements (app/queries/reads.py) and
  the body written in Python by app/queries/shapes.py;
- "reference": bench/reference.py's own statements and orjson.

Prints, per call, the median wall time, this process's CPU (time.process_time) and
the PostgreSQL backend's CPU (utime + stime of its /proc/<pid>/stat, clock ticks), and
the body's size. The cluster is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import reference  # noqa: E402

from app.db.engine import create_engine  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.db.seed import seed_demo  # noqa: E402
from app.db.statements import Statement  # noqa: E402
from app.operations import reads as operations  # noqa: E402
from app.queries.analytics import utc_days  # noqa: E402
from app.queries.shapes import Document  # noqa: E402
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
    found = await conn.fetchrow(
        "SELECT barber_id, appointment_date FROM appointments "
        "WHERE status IN ('confirmed', 'in_progress') ORDER BY id LIMIT 1"
    )
    assert found is not None, "the bench database has no confirmed appointment"
    barber, day = found
    location = await conn.fetchval("SELECT location_id FROM payments ORDER BY id LIMIT 1")
    week = (barber, day, day + dt.timedelta(days=6), ["confirmed", "in_progress"])
    first = day.replace(day=1)
    since, until = utc_days(first, first + dt.timedelta(days=30))
    month = (location, since, until, first, first + dt.timedelta(days=30))
    relations = frozenset({"appointments", "payments", "organizations", "stripe_account"})
    return {
        "user, all relations": ("user", (client,)),
        "barber's week": ("week", week),
        "location's month": ("month", month),
    }, relations


Answer = Callable[[asyncpg.Connection], Awaitable[bytes]]


def _json_in_sql(
    module: Any, case: str, args: tuple[Any, ...], relations: frozenset[str]
) -> Answer:
    name = {"user": "user", "week": "SCHEDULE", "month": "REVENUE"}[case]
    sql = str(module.user_statement(relations)) if name == "user" else str(getattr(module, name))

    async def answer(conn: asyncpg.Connection) -> bytes:
        text: str = await conn.fetchval(sql, *args)
        return text.encode()

    return answer


class _Connection:
    """app/db/statements.py's handle on one asyncpg connection.

    `document` as PostgresStatements answers it (the JSON statement, its text encoded) or,
    with `rows`, as TransactionStatements does on SQLite (the rows statement, the Shapes).
    """

    backend = "postgresql"

    def __init__(self, conn: asyncpg.Connection, *, rows: bool) -> None:
        self.conn, self.rows = conn, rows

    async def fetch(self, statement: Statement, *args: Any) -> Any:
        return await self.conn.fetch(statement.postgresql, *args)

    async def fetchrow(self, statement: Statement, *args: Any) -> Any:
        return await self.conn.fetchrow(statement.postgresql, *args)

    async def document(self, document: Document, *args: Any) -> bytes | None:
        if not self.rows and document.json is not None:
            text: str | None = await self.conn.fetchval(document.json.postgresql, *args)
            return text.encode() if text is not None else None
        rows = await self.fetch(document.rows, *args)
        if not rows and document.parent is not None:
            assert await self.fetchrow(document.parent, args[0]) is not None
        return document.render(rows, args)


def _use_case(case: str, args: tuple[Any, ...], relations: frozenset[str], *, rows: bool) -> Answer:
    """The use cases themselves (app/operations/reads.py) on the bench's connection."""

    async def user(conn: asyncpg.Connection) -> bytes:
        db: Any = _Connection(conn, rows=rows)
        return await operations.read_user(db, args[0], relations)

    async def week(conn: asyncpg.Connection) -> bytes:
        barber, start, end, statuses = args
        db: Any = _Connection(conn, rows=rows)
        return await operations.read_schedule(db, barber, start, end, statuses)

    async def month(conn: asyncpg.Connection) -> bytes:
        location, _since, _until, first, last = args
        db: Any = _Connection(conn, rows=rows)
        return await operations.read_revenue(db, location, first, last)

    return {"user": user, "week": week, "month": month}[case]


def _reference(case: str, args: tuple[Any, ...], relations: frozenset[str]) -> Answer:
    async def user(conn: asyncpg.Connection) -> bytes:
        row = await conn.fetchrow(reference.USER, *args)
        assert row is not None, f"no user {args[0]}"
        found = dict(row)
        for name, sql in (
            ("appointments", reference.USER_APPOINTMENTS),
            ("payments", reference.USER_PAYMENTS),
            ("organizations", reference.USER_ORGANIZATIONS),
        ):
            found[name] = [dict(r) for r in await conn.fetch(sql, *args)]
        return reference.dumps(found)

    async def week(conn: asyncpg.Connection) -> bytes:
        return reference.dumps(
            reference.schedule_items(await conn.fetch(reference.SCHEDULE, *args))
        )

    async def month(conn: asyncpg.Connection) -> bytes:
        location, since, until, first, last = args
        found = await conn.fetch(reference.REVENUE, location, since, until)
        report = {"location_id": location, "start": first, "end": last}
        return reference.dumps({**report, "days": [dict(r) for r in found]})

    return {"user": user, "week": week, "month": month}[case]


def _backend_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


async def _measure(url: str, rounds: int, calls: int, before: str) -> None:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        cases, relations = await _cases(conn)
        pid: int = await conn.fetchval("SELECT pg_backend_pid()")
        tick = os.sysconf("SC_CLK_TCK")
        earlier = _module_at(before)
        results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        sizes: dict[tuple[str, str], int] = {}
        for _ in range(rounds):
            for case, (name, args) in cases.items():
                ways = {
                    f"json in SQL ({before})": _json_in_sql(earlier, name, args, relations),
                    "use case: JSON in SQL": _use_case(name, args, relations, rows=False),
                    "use case: rows + shape": _use_case(name, args, relations, rows=True),
                    "reference": _reference(name, args, relations),
                }
                for label, answer in ways.items():
                    body = await answer(conn)  # prepared, warm
                    ticks, cpu, started = (
                        _backend_ticks(pid),
                        time.process_time(),
                        time.perf_counter(),
                    )
                    for _ in range(calls):
                        await answer(conn)
                    wall = (time.perf_counter() - started) / calls
                    cpu = (time.process_time() - cpu) / calls
                    backend = (_backend_ticks(pid) - ticks) / tick / calls
                    results.setdefault((case, label), []).append((wall, cpu, backend))
                    sizes[(case, label)] = len(body)
        print("| read | way | wall µs | service CPU µs | PostgreSQL CPU µs | body bytes |")
        print("|---|---|---|---|---|---|")
        for (case, label), runs in results.items():
            wall, cpu, backend = (statistics.median(r[i] for r in runs) * 1e6 for i in range(3))
            size = sizes[(case, label)]
            print(f"| {case} | {label} | {wall:.0f} | {cpu:.0f} | {backend:.0f} | {size} |")
    finally:
        await conn.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=float, default=0.05)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--before", default="712c286", help="git revision to compare with")
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
