"""Steady mixed load on the API, valid under the booking rules, every answer recorded.

Writes (bookings, payments for them, status changes of both, new clients) at
`writes_per_second`; reads (users, appointments) at `reads_per_second`. A write
answered 503 is retried after its Retry-After, as a booking client does; every
answer is kept for the checks (what a 2xx said must be in the database).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

NEXT = {"pending": "confirmed", "confirmed": "in_progress", "in_progress": "completed"}
PAY_NEXT = {"pending": "completed", "completed": "refunded"}


@dataclass
class Plan:
    """What valid requests need, read from the service's database before the load."""

    barbers: list[tuple[int, int]]  # (barber id, location id)
    services: dict[int, list[tuple[int, int, Decimal]]]  # location -> (id, minutes, price)
    clients: list[int]

    @classmethod
    def from_sqlite(cls, path: Path) -> Plan:
        db = sqlite3.connect(path)
        try:
            barbers = db.execute(
                "SELECT id, location_id FROM users WHERE unified_role = 'barber' "
                "AND location_id IS NOT NULL ORDER BY id"
            ).fetchall()
            services: dict[int, list[tuple[int, int, Decimal]]] = {}
            for sid, loc, minutes, price in db.execute(
                "SELECT id, location_id, duration_minutes, price FROM services WHERE is_active"
            ):
                services.setdefault(loc, []).append((sid, minutes, Decimal(str(price))))
            clients = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM users WHERE unified_role = 'client' ORDER BY id LIMIT 400"
                )
            ]
        finally:
            db.close()
        barbers = [b for b in barbers if b[1] in services]
        return cls([(int(b), int(loc)) for b, loc in barbers], services, clients)


@dataclass
class Answer:
    op: str
    status: int
    started: float
    finished: float
    retry_after: str | None = None
    body: dict[str, Any] | None = None


@dataclass
class Load:
    base: str
    plan: Plan
    writes_per_second: float = 50.0
    reads_per_second: float = 200.0
    seed: int = 1
    in_flight: int = 32  # at most this many requests at once; past it the load waits
    answers: list[Answer] = field(default_factory=list)
    appointments: dict[int, dict[str, Any]] = field(default_factory=dict)
    payments: dict[int, dict[str, Any]] = field(default_factory=dict)
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    waits: list[tuple[float, float]] = field(default_factory=list)  # a write's first try, end
    _slot: int = 0
    _busy: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        # Far past the seeded bookings, a slot of its own per booking: no overlaps.
        now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        self.start = now + dt.timedelta(days=200)
        self.run_id = uuid.uuid4().hex[:8]

    async def _send(
        self,
        client: httpx.AsyncClient,
        op: str,
        method: str,
        url: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        first = time.monotonic()
        while True:
            started = time.monotonic()
            try:
                response = await client.request(method, url, json=body, headers=headers)
                status, answered = response.status_code, response.headers
                payload = response.json() if response.content else None
            except Exception as exc:  # refused, reset, timed out: recorded as status 0
                status, answered, payload = 0, httpx.Headers(), {"exception": repr(exc)}
            answer = Answer(
                op, status, started, time.monotonic(), answered.get("retry-after"), payload
            )
            self.answers.append(answer)
            if status != 503 or method == "GET":
                if method != "GET":
                    self.waits.append((first, answer.finished))
                return answer
            wait = float(answer.retry_after or 1)
            await asyncio.sleep(min(wait, 0.1))  # a client that honours it, capped for the test

    async def write(self, client: httpx.AsyncClient) -> None:
        roll = self.rng.random()
        if roll < 0.4 or not self.appointments:
            await self.book(client)
        elif roll < 0.6:
            await self.pay(client)
        elif roll < 0.85:
            await self.advance(client)
        else:
            await self.sign_up(client)

    async def book(self, client: httpx.AsyncClient) -> None:
        barber, location = self.rng.choice(self.plan.barbers)
        service, minutes, price = self.rng.choice(self.plan.services[location])
        self._slot += 1
        start = self.start + dt.timedelta(hours=self._slot)
        user = self.rng.choice(self.plan.clients)
        body = {
            "user_id": user,
            "barber_id": barber,
            "service_id": service,
            "location_id": location,
            "start_time": start.isoformat(),
            "end_time": (start + dt.timedelta(minutes=minutes)).isoformat(),
            "notes": f"live {self.run_id}",
        }
        answer = await self._send(client, "book", "POST", "/api/v1/appointments", body)
        if answer.status == 201 and answer.body:
            self.appointments[answer.body["id"]] = answer.body | {"price": str(price)}

    async def pay(self, client: httpx.AsyncClient) -> None:
        unpaid = [a for a in self.appointments.values() if "paid" not in a]
        if not unpaid:
            return
        appointment = self.rng.choice(unpaid)
        appointment["paid"] = True
        body = {
            "user_id": appointment["user_id"],
            "appointment_id": appointment["id"],
            "location_id": appointment["location_id"],
            "amount": appointment["price"],
        }
        answer = await self._send(
            client, "pay", "POST", "/api/v1/payments", body, {"Idempotency-Key": uuid.uuid4().hex}
        )
        if answer.status in (200, 201) and answer.body:
            self.payments[answer.body["id"]] = answer.body

    async def advance(self, client: httpx.AsyncClient) -> None:
        """The next status of a booking (or of a payment), by version."""
        pool: dict[int, dict[str, Any]]
        kind, pool, steps = (
            ("appointments", self.appointments, NEXT)
            if self.rng.random() < 0.7 or not self.payments
            else ("payments", self.payments, PAY_NEXT)
        )
        ready = [r for i, r in pool.items() if r["status"] in steps and i not in self._busy]
        if not ready:
            return
        row = self.rng.choice(ready)
        self._busy.add(row["id"])
        try:
            body = {"status": steps[row["status"]], "version": row["version"]}
            answer = await self._send(
                client, "advance", "PATCH", f"/api/v1/{kind}/{row['id']}", body
            )
            if answer.status == 200 and answer.body:
                row.update({k: answer.body[k] for k in ("status", "version")})
        finally:
            self._busy.discard(row["id"])

    async def sign_up(self, client: httpx.AsyncClient) -> None:
        body = {"email": f"live-{uuid.uuid4().hex[:16]}@example.test", "name": "Live Load"}
        answer = await self._send(client, "sign_up", "POST", "/api/v1/users", body)
        if answer.status == 201 and answer.body:
            self.users[answer.body["id"]] = answer.body

    async def read(self, client: httpx.AsyncClient) -> None:
        if self.appointments and self.rng.random() < 0.5:
            key = self.rng.choice(list(self.appointments))
            await self._send(client, "read", "GET", f"/api/v1/appointments/{key}")
        else:
            await self._send(
                client, "read", "GET", f"/api/v1/users/{self.rng.choice(self.plan.clients)}"
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Requests at the set rates until `stop`; then waits for those in flight."""
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=self.base, timeout=30, limits=limits) as client:
            tasks: set[asyncio.Task[None]] = set()
            began = time.monotonic()
            writes = reads = 0
            while not stop.is_set():
                elapsed = time.monotonic() - began
                while writes < elapsed * self.writes_per_second and len(tasks) < self.in_flight:
                    writes += 1
                    tasks.add(asyncio.create_task(self.write(client)))
                while reads < elapsed * self.reads_per_second and len(tasks) < self.in_flight:
                    reads += 1
                    tasks.add(asyncio.create_task(self.read(client)))
                tasks = {t for t in tasks if not t.done()}
                await asyncio.sleep(0.01)
            await asyncio.gather(*tasks)
            self.elapsed = time.monotonic() - began

    elapsed: float = 0.0

    def rates(self) -> tuple[float, float]:
        """Writes and reads answered per second over the run."""
        reads = sum(1 for a in self.answers if a.op == "read")
        span = self.elapsed or 1.0
        return (len(self.answers) - reads) / span, reads / span

    # -- what the answers say ---------------------------------------------------------
    def writes(self) -> list[Answer]:
        return [a for a in self.answers if a.op != "read"]

    def longest_write_pause(self) -> float:
        """The longest time between two successful writes' answers."""
        done = sorted(a.finished for a in self.writes() if 200 <= a.status < 300)
        return max((b - a for a, b in itertools.pairwise(done)), default=0.0)

    def longest_write_wait(self, after: float = 0.0, before: float = float("inf")) -> float:
        """The longest a write took from its first try to its answer, retries included."""
        return max(
            (end - first for first, end in self.waits if after <= first < before), default=0.0
        )

    def timeline(self) -> str:
        """When writes were refused and when they went through again."""
        frozen = [a for a in self.writes() if a.status == 503]
        if not frozen:
            return "no write refused"
        first, last = min(a.started for a in frozen), max(a.finished for a in frozen)
        after = [a.finished for a in self.writes() if 200 <= a.status < 300 and a.started > last]
        back = min(after, default=float("nan")) - first
        return (
            f"writes refused for {last - first:.2f} s ({len(frozen)} answers 503); "
            f"the first write after them succeeded {back:.2f} s after the first 503"
        )

    def failed_reads(self) -> list[Answer]:
        return [a for a in self.answers if a.op == "read" and a.status not in (200, 404)]
