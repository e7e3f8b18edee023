"""The practical Python limit for the same endpoints: raw ASGI, asyncpg, hand-written SQL, orjson.

Answers the three hot reads and the booking write with the service's JSON shapes and data,
without a framework, an ORM, validation models or transactions around single statements.
The reads are its own SQL, a statement per relation, shaped in Python and written by orjson.
The booking runs the service's own statement (app/queries/booking.py): the same locks,
rules and constraints.
Reads go to REPLICA_URL, the write to DATABASE_URL (plain postgresql:// URLs).

    python bench/reference.py --port 8100
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import orjson
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# The booking runs the service's own statement (app/queries/booking.py: booking locks,
# booking rules, INSERT ... RETURNING under the exclusion constraints), so the write
# comparison measures everything around it. The reads are this server's own: plain
# statements per relation, rows shaped into the API's JSON here and written by orjson,
# as a hand-written asyncpg service would (the service's statements are its own,
# app/queries/reads.py); bench/run.py checks both answer the same JSON.
from app.queries.analytics import utc_days  # noqa: E402
from app.queries.booking import BOOK, CHECK  # noqa: E402

_APPOINTMENT = """a.id, a.user_id, a.barber_id, a.service_id, a.location_id, a.appointment_date,
    a.start_time, a.end_time, a.status, a.notes, a.version, a.created_at, a.updated_at"""
_APPOINTMENT_FIELDS = tuple(c.strip().removeprefix("a.") for c in _APPOINTMENT.split(","))
_PAYMENT = """p.id, p.user_id, p.appointment_id, p.location_id, p.amount::text AS amount,
    p.currency, p.status, p.version, p.created_at"""

USER = """
SELECT id, email, name, phone, unified_role, location_id, is_active, created_at
FROM users WHERE id = $1
"""
USER_APPOINTMENTS = (
    f"SELECT {_APPOINTMENT} FROM appointments a WHERE a.user_id = $1 ORDER BY a.start_time, a.id"
)
USER_PAYMENTS = f"SELECT {_PAYMENT} FROM payments p WHERE p.user_id = $1 ORDER BY p.id"
USER_ORGANIZATIONS = """
SELECT m.organization_id, o.name, o.slug, m.role
FROM user_organizations m JOIN organizations o ON o.id = m.organization_id
WHERE m.user_id = $1 ORDER BY m.id
"""

SCHEDULE = f"""
SELECT {_APPOINTMENT},
       u.name AS u_name, u.email AS u_email, u.phone AS u_phone,
       s.name AS s_name, s.duration_minutes AS s_minutes, s.price::text AS s_price,
       p.id AS p_id, p.user_id AS p_user_id, p.location_id AS p_location_id,
       p.amount::text AS p_amount, p.currency AS p_currency, p.status AS p_status,
       p.version AS p_version, p.created_at AS p_created_at
FROM appointments a
JOIN users u ON u.id = a.user_id
JOIN services s ON s.id = a.service_id
LEFT JOIN payments p ON p.appointment_id = a.id
WHERE a.barber_id = $1 AND a.appointment_date >= $2 AND a.appointment_date <= $3
  AND a.status = ANY($4::text[])
ORDER BY a.appointment_date, a.start_time, a.id
"""
# The same days and sums as the service's revenue read (REVENUE in app/queries/reads.py);
# PostgreSQL's round() on numeric rounds halves away from zero, as ROUND_HALF_UP does.
REVENUE = """
SELECT (created_at AT TIME ZONE 'UTC')::date AS date,
       coalesce(sum(amount) FILTER (WHERE status = 'completed'), 0.00)::text AS total_revenue,
       count(*) FILTER (WHERE status = 'completed') AS transaction_count,
       coalesce(round(sum(amount) FILTER (WHERE status = 'completed')
                      / nullif(count(*) FILTER (WHERE status = 'completed'), 0), 2), 0.00)::text
         AS average_transaction,
       coalesce(sum(amount) FILTER (WHERE status = 'refunded'), 0.00)::text AS refunded_total,
       count(*) FILTER (WHERE status = 'refunded') AS refund_count
FROM payments
WHERE location_id = $1 AND status IN ('completed', 'refunded')
  AND created_at >= $2 AND created_at < $3
GROUP BY 1 ORDER BY 1
"""


def schedule_items(rows: Iterable[asyncpg.Record]) -> list[dict[str, Any]]:
    """SCHEDULE's flat rows as ScheduledAppointment's nested shape."""
    items = []
    for r in rows:
        payment = None
        if r["p_id"] is not None:
            payment = {
                "id": r["p_id"],
                "user_id": r["p_user_id"],
                "appointment_id": r["id"],
                "location_id": r["p_location_id"],
                "amount": r["p_amount"],
                "currency": r["p_currency"],
                "status": r["p_status"],
                "version": r["p_version"],
                "created_at": r["p_created_at"],
            }
        items.append(
            {
                **{name: r[name] for name in _APPOINTMENT_FIELDS},
                "user": {
                    "id": r["user_id"],
                    "name": r["u_name"],
                    "email": r["u_email"],
                    "phone": r["u_phone"],
                },
                "service": {
                    "id": r["service_id"],
                    "name": r["s_name"],
                    "duration_minutes": r["s_minutes"],
                    "price": r["s_price"],
                },
                "payment": payment,
            }
        )
    return items


SKEW = dt.timedelta(seconds=300)
HORIZON = dt.timedelta(days=33_000)  # bench/run.py's BOOKING_HORIZON_DAYS
LSN = "SELECT pg_current_wal_insert_lsn()::text"
DEFAULT_STATUSES = ["confirmed", "in_progress"]

USER_PATH = re.compile(r"^/api/v1/users/(\d{1,18})$")
SCHEDULE_PATH = re.compile(r"^/api/v1/barbers/(\d{1,18})/appointments$")
REVENUE_PATH = re.compile(r"^/api/v1/locations/(\d{1,18})/revenue$")
JSON_HEADERS = [(b"content-type", b"application/json")]


class NoReset(asyncpg.Connection):
    """A connection the pool gives back as it is (the service's hot reads leave no state)."""

    def get_reset_query(self) -> str:
        return ""


class Problem(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        self.status, self.error, self.detail = status, error, detail


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)


def _query(scope: Scope) -> dict[str, list[str]]:
    return parse_qs(scope["query_string"].decode("latin-1"))


def _date(query: dict[str, list[str]], name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(query[name][0])
    except (KeyError, ValueError):
        raise Problem(422, "validation_error", f"{name}: a date is required") from None


class Reference:
    def __init__(self, primary: str, replica: str, pool_size: int, reset: bool = True) -> None:
        self.dsns = primary, replica
        self.pool_size = pool_size
        # asyncpg's pool resets every connection it takes back: one more statement
        # (pg_advisory_unlock_all, CLOSE ALL, UNLISTEN *, RESET ALL) per request.
        self.connection_class = asyncpg.Connection if reset else NoReset
        self.primary: asyncpg.Pool | None = None
        self.replica: asyncpg.Pool | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        try:
            status, body, headers = await self.route(scope, receive)
        except Problem as exc:
            status, headers = exc.status, JSON_HEADERS
            body = dumps({"error": exc.error, "detail": exc.detail})
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                options: dict[str, Any] = {
                    "min_size": 2,
                    "max_size": self.pool_size,
                    "connection_class": self.connection_class,
                }
                self.primary = await asyncpg.create_pool(self.dsns[0], **options)
                self.replica = await asyncpg.create_pool(self.dsns[1], **options)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for pool in (self.primary, self.replica):
                    if pool is not None:
                        await pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def route(self, scope: Scope, receive: Receive) -> tuple[int, bytes, list[Any]]:
        path, method = scope["path"], scope["method"]
        if method == "GET":
            if match := USER_PATH.match(path):
                return 200, await self.user(int(match[1]), _query(scope)), JSON_HEADERS
            if match := SCHEDULE_PATH.match(path):
                return 200, await self.schedule(int(match[1]), _query(scope)), JSON_HEADERS
            if match := REVENUE_PATH.match(path):
                return 200, await self.revenue(int(match[1]), _query(scope)), JSON_HEADERS
            if path == "/health/live":
                return 200, b'{"status":"ok"}', JSON_HEADERS
        elif method == "POST" and path == "/api/v1/appointments":
            return await self.create_appointment(await _body(receive))
        raise Problem(404, "not_found", "no such route")

    async def user(self, user_id: int, query: dict[str, list[str]]) -> bytes:
        include = set(",".join(query.get("include", [])).split(",")) - {""}
        assert self.replica is not None
        async with self.replica.acquire() as conn:
            row = await conn.fetchrow(USER, user_id)
            if row is None:
                raise Problem(404, "not_found", f"user {user_id} does not exist")
            user = dict(row)
            if "appointments" in include:
                user["appointments"] = [
                    dict(r) for r in await conn.fetch(USER_APPOINTMENTS, user_id)
                ]
            if "payments" in include:
                user["payments"] = [dict(r) for r in await conn.fetch(USER_PAYMENTS, user_id)]
            if "organizations" in include:
                orgs = await conn.fetch(USER_ORGANIZATIONS, user_id)
                user["organizations"] = [dict(r) for r in orgs]
        return dumps(user)

    async def schedule(self, barber_id: int, query: dict[str, list[str]]) -> bytes:
        start, end = _date(query, "start"), _date(query, "end")
        statuses = query.get("status") or DEFAULT_STATUSES
        assert self.replica is not None
        rows = await self.replica.fetch(SCHEDULE, barber_id, start, end, statuses)
        return dumps(schedule_items(rows))

    async def revenue(self, location_id: int, query: dict[str, list[str]]) -> bytes:
        start, end = _date(query, "start"), _date(query, "end")
        assert self.replica is not None
        rows = await self.replica.fetch(REVENUE, location_id, *utc_days(start, end))
        report = {"location_id": location_id, "start": start, "end": end}
        report["days"] = [dict(r) for r in rows]
        return dumps(report)

    async def create_appointment(self, raw: bytes) -> tuple[int, bytes, list[Any]]:
        try:
            body = orjson.loads(raw)
            start = dt.datetime.fromisoformat(body["start_time"]).astimezone(dt.UTC)
            end = dt.datetime.fromisoformat(body["end_time"])
            args = [int(body[k]) for k in ("user_id", "barber_id", "service_id", "location_id")]
        except (ValueError, KeyError, TypeError):
            raise Problem(422, "validation_error", "invalid appointment") from None
        if start.tzinfo is None or end.tzinfo is None or end <= start:
            raise Problem(422, "validation_error", "aware start_time < end_time required")
        now = dt.datetime.now(dt.UTC)
        if not now - SKEW <= start <= now + HORIZON or args[0] == args[1]:
            raise Problem(422, "bad_request", "the booking breaks a rule")
        end = end.astimezone(dt.UTC)
        assert self.primary is not None
        async with self.primary.acquire() as conn:
            try:
                length = (end - start) // dt.timedelta(microseconds=1)
                booking = (*args, start.date(), start, end, body.get("notes"), length)
                row = await conn.fetchrow(BOOK.postgresql, *booking)
            except asyncpg.ExclusionViolationError:
                raise Problem(409, "conflict", "the barber is already booked then") from None
            except asyncpg.ForeignKeyViolationError:
                raise Problem(
                    422, "bad_request", "unknown user, barber, service or location"
                ) from None
            if row is None:
                verdicts = await conn.fetchrow(CHECK.postgresql, *booking)
                raise Problem(
                    422, "bad_request", f"the booking breaks a rule: {dict(verdicts or {})}"
                )
            # The service's read-your-writes token, read after the (auto)commit as it does.
            lsn = await conn.fetchval(LSN)
        headers = [*JSON_HEADERS, (b"x-consistency-token", lsn.encode())]
        return 201, dumps(dict(row)), headers


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def from_environment() -> Reference:
    """The server main() describes in the environment: what each worker process builds."""
    return Reference(
        os.environ["DATABASE_URL"],
        os.environ["REPLICA_URL"],
        int(os.environ["REFERENCE_POOL_SIZE"]),
        reset=os.environ["REFERENCE_POOL_RESET"] == "1",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--pool-size", type=int, default=30, help="per worker")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (uvicorn's)"
    )
    parser.add_argument("--keep-alive", type=int, default=75)
    parser.add_argument(
        "--no-pool-reset",
        action="store_true",
        help="give connections back without asyncpg's reset statement",
    )
    args = parser.parse_args()
    os.environ["REFERENCE_POOL_SIZE"] = str(args.pool_size)
    os.environ["REFERENCE_POOL_RESET"] = "0" if args.no_pool_reset else "1"
    uvicorn.run(
        # An import string, so that each of uvicorn's workers builds its own.
        "reference:from_environment",
        factory=True,
        workers=args.workers,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        server_header=False,
        date_header=True,
        timeout_keep_alive=args.keep_alive,
        # The listen queue of `bookedbarber serve` (app/cli.py LISTEN_BACKLOG): uvicorn's
        # 2048 overflows when scenario c opens 10,000 connections at once.
        backlog=16384,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
