"""The CPU one request costs this process, in-process, by door: what the edges add.

    uv run --frozen python bench/stack_cost.py                      # this checkout
    mkdir /tmp/before && git archive REV | tar -x -C /tmp/before
    uv run --frozen python bench/stack_cost.py --against /tmp/before   # both, interleaved

Starts a PostgreSQL primary (tests/pgcluster.py), builds the checkout's application
with API tokens and drives it with raw ASGI messages (no HTTP client, no server): a hot
read the lane answers (GET /api/v1/users/{id}), the same read with the lane off, a
barber's week and a location's month of the demo data (seeded at --seed-scale) through the
lane, a write through FastAPI's route (POST /api/v1/users), and the week's operation on a
bare asyncpg pool (the service's own cost around the same statement: the lane's week minus
it). `--clients N` keeps N requests in flight at once: past the pool's size
(DEFAULT_POOL_CAP) most checkouts wait for a connection given back, as under bench/run.py's
64 connections. Prints, as JSON, the
process CPU (time.process_time) per request, in microseconds, for each, best of --rounds. With
--against, each checkout runs --repeats times in its own process, alternately, on the
same database, and the best and the median of each are printed: on a shared machine the
minimum is what the code costs, the rest is its neighbours.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl


async def _drive(app: Any, method: str, path: str, body: bytes, headers: list[Any]) -> int:
    return (await _exchange(app, method, path, body, headers))[0]


async def _exchange(
    app: Any, method: str, path: str, body: bytes, headers: list[Any]
) -> tuple[int, bytes]:
    sent = False
    status = 0
    answer = b""

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect while the request runs
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, answer
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            answer += message.get("body", b"")

    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    await app(scope, receive, send)
    return status, answer


async def _per_request(
    app: Any, n: int, rounds: int, make: Any, expect: int, clients: int = 1
) -> float:
    """Least CPU per request over `rounds` of `n` requests, sent by `clients` at once."""

    async def one(i: int) -> None:
        status = await _drive(app, *make(i))
        assert status == expect, status

    return await _best(n, rounds, clients, one)


async def _best(n: int, rounds: int, clients: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Least CPU per call of `one` over `rounds` of `n` calls, `clients` at once."""
    best = float("inf")
    each = max(n // clients, 1)

    async def client(first: int) -> None:
        for i in range(first, first + each):
            await one(i)

    for _ in range(rounds):
        began = time.process_time()
        await asyncio.gather(*(client(c * each) for c in range(clients)))
        best = min(best, (time.process_time() - began) / (each * clients) * 1e6)
    return round(best, 1)


async def _seeded_reads(url: str) -> dict[str, str]:
    """A barber's week and a location's month of the demo data (bench/hot_json.py's picks)."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        found = await conn.fetchrow(
            "SELECT barber_id, appointment_date FROM appointments "
            "WHERE status IN ('confirmed', 'in_progress') ORDER BY id LIMIT 1"
        )
        location = await conn.fetchval("SELECT location_id FROM payments ORDER BY id LIMIT 1")
    finally:
        await conn.close()
    if found is None or location is None:
        return {}
    barber, day = found
    first, last = day.replace(day=1), day + dt.timedelta(days=6)
    return {
        "week": f"/api/v1/barbers/{barber}/appointments?start={day}&end={last}",
        "revenue": f"/api/v1/locations/{location}/revenue?start={first}"
        f"&end={first + dt.timedelta(days=30)}",
    }


async def _week_on_a_pool(url: str, path: str, n: int, rounds: int, clients: int) -> float:
    """The week's own operation and statement on a bare asyncpg pool (30 connections, its
    reset on release), no HTTP edges, lane, routing or SQLAlchemy pool: what the service adds
    around the same statement is the lane's figure minus this one."""
    import asyncpg

    from app.api import reads
    from app.queries.shapes import Document

    pool = await asyncpg.create_pool(url.replace("+asyncpg", ""), min_size=30, max_size=30)

    class OnThePool:  # the one method of the statements handle the week's operation calls
        async def document(self, document: Document, *args: object) -> bytes | None:
            async with pool.acquire() as conn:  # the week's rows: no parent to ask for
                rows = await conn.fetch(document.rows.postgresql, *args)
            # An asyncpg Record is a read-only mapping, which its stubs do not declare.
            return document.render(rows, args)  # type: ignore[arg-type]

    route, _, query = path.partition("?")
    barber = int(route.split("/")[4])
    week = reads.ScheduleQuery.model_validate(dict(parse_qsl(query)))
    db: Any = OnThePool()

    async def one(_: int) -> None:
        assert await reads.SCHEDULE.body(db, barber, week)

    try:
        await _best(200, 1, clients, one)  # warm the pool and asyncpg's statement cache
        return await _best(n, rounds, clients, one)
    finally:
        await pool.close()


async def measure(url: str, n: int, rounds: int, clients: int = 1) -> dict[str, float]:
    from pydantic import SecretStr

    from app.main import create_app
    from tests.conftest import make_settings

    token = "stack-cost-token"
    base = [
        (b"host", b"bench"),
        (b"authorization", f"Bearer {token}".encode()),
        (b"x-request-id", b"bench-1"),
    ]
    results: dict[str, float] = {}
    seeded = await _seeded_reads(url)
    for hot in (True, False):
        app = create_app(make_settings(url, api_tokens=[SecretStr(token)], hot_reads=hot))
        async with app.router.lifespan_context(app):
            user = json.dumps({"email": f"b{time.time_ns()}@example.com", "name": "B"}).encode()
            json_headers = [*base, (b"content-type", b"application/json")]
            made, answer = await _exchange(app, "POST", "/api/v1/users", user, json_headers)
            assert made == 201, made
            path = f"/api/v1/users/{json.loads(answer)['id']}"

            def read(_: int, path: str = path) -> tuple[str, str, bytes, list[Any]]:
                return "GET", path, b"", base

            name = "hot read, lane" if hot else "hot read, route"
            await _per_request(app, 200, 1, read, 200, clients)  # warm the pools and caches
            results[name] = await _per_request(app, n, rounds, read, 200, clients)
            for read_name, seeded_path in seeded.items() if hot else ():

                def seeded_read(_: int, path: str = seeded_path) -> tuple[str, str, bytes, Any]:
                    return "GET", path, b"", base

                await _per_request(app, 200, 1, seeded_read, 200, clients)
                results[f"{read_name}, lane"] = await _per_request(
                    app, n, rounds, seeded_read, 200, clients
                )
            if hot:

                def write(i: int, json_headers: list[Any] = json_headers) -> Any:
                    body = json.dumps({"email": f"w{i}-{time.time_ns()}@example.com", "name": "W"})
                    headers = [*json_headers, (b"content-length", str(len(body)).encode())]
                    return "POST", "/api/v1/users", body.encode(), headers

                results["write, route"] = await _per_request(
                    app, n // 4, rounds, write, 201, clients
                )
    try:
        from app.api.reads import SCHEDULE, ScheduleQuery  # noqa: F401
    except ImportError:  # a checkout from before the hot reads' endpoints (--against)
        return results
    if "week" in seeded:
        results["week, asyncpg pool"] = await _week_on_a_pool(
            url, seeded["week"], n, rounds, clients
        )
    return results


async def _seed(url: str, scale: float) -> None:
    from app.db.engine import create_engine
    from app.db.seed import seed_demo
    from tests.conftest import make_settings

    engine = create_engine(url, make_settings(url))
    try:
        await seed_demo(engine, scale)
    finally:
        await engine.dispose()


def _compare(url: str, roots: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    found: dict[str, dict[str, list[float]]] = {str(root): {} for root in roots}
    for _ in range(args.repeats):
        for root in roots:
            command = [sys.executable, __file__, "--root", str(root), "--url", url]
            command += ["-n", str(args.n), "--rounds", str(args.rounds)]
            command += ["--clients", str(args.clients)]
            run = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
            for door, micros in run.items():
                found[str(root)].setdefault(door, []).append(micros)
    # The least of the repeats: what the code costs; the median: how far its neighbours moved it.
    return {
        root: {
            door: {"best": min(runs), "median": round(statistics.median(runs), 1)}
            for door, runs in doors.items()
        }
        for root, doors in found.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=Path(__file__).parent.parent)
    parser.add_argument("--against", type=Path, help="another checkout, measured alternately")
    parser.add_argument("--url", help="a migrated PostgreSQL database to use")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--clients", type=int, default=1, help="requests in flight at once")
    parser.add_argument("--seed-scale", type=float, default=0.02, help="demo data for the reads")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    from app.db.migrate import upgrade
    from tests import pgcluster

    if args.url:
        print(json.dumps(asyncio.run(measure(args.url, args.n, args.rounds, args.clients))))
        return
    cluster = pgcluster.start_cluster(replicas=0)
    try:
        url = cluster.primary.url()
        upgrade(url)
        if args.seed_scale:
            asyncio.run(_seed(url, args.seed_scale))
            cluster.primary.psql("VACUUM ANALYZE")
        if args.against:
            found = _compare(url, [args.root, args.against], args)
        else:
            found = asyncio.run(measure(url, args.n, args.rounds, args.clients))
        print(json.dumps(found, indent=2))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
