"""Deterministic demo data: locations, barbers, clients, two years of bookings."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db.models import (
    ACTIVE_APPOINTMENT_STATUSES,
    Appointment,
    BarbershopLocation,
    Base,
    Organization,
    Payment,
    Payout,
    Review,
    Service,
    StripeAccount,
    User,
    UserOrganization,
)

BATCH = 20_000
DAYS = 730
FIRST_NAMES = [
    "James",
    "Maria",
    "Robert",
    "Linda",
    "Michael",
    "Aisha",
    "David",
    "Sofia",
    "Daniel",
    "Mei",
    "Carlos",
    "Fatima",
    "Kwame",
    "Olivia",
    "Noah",
    "Emma",
    "Liam",
    "Ava",
    "Mateo",
    "Zara",
    "Ethan",
    "Chloe",
    "Lucas",
    "Amara",
    "Omar",
    "Nina",
    "Leo",
    "Priya",
]
LAST_NAMES = [
    "Smith",
    "Garcia",
    "Johnson",
    "Okafor",
    "Brown",
    "Nguyen",
    "Miller",
    "Rossi",
    "Davis",
    "Kim",
    "Wilson",
    "Haddad",
    "Moore",
    "Silva",
    "Taylor",
    "Cohen",
    "Anderson",
    "Patel",
    "Thomas",
    "Jackson",
    "Lopez",
    "Martin",
    "Lee",
    "Walker",
    "Young",
    "King",
]
SERVICES = (
    ("Classic cut", 30, "25.00"),
    ("Skin fade", 45, "35.00"),
    ("Beard trim", 30, "18.50"),
    ("Cut and beard", 60, "49.99"),
    ("Hot towel shave", 45, "32.00"),
)


@dataclass(frozen=True)
class Scale:
    locations: int
    barbers: int
    clients: int
    appointments: int

    @classmethod
    def of(cls, scale: float) -> Scale:
        return cls(
            locations=max(1, round(50 * scale)),
            barbers=max(2, round(2_000 * scale)),
            clients=max(10, round(100_000 * scale)),
            appointments=max(10, round(1_000_000 * scale)),
        )


@dataclass
class SeedReport:
    rows: dict[str, int]


class DatabaseNotEmpty(Exception):
    pass


Row = tuple[Any, ...]


def _batches(rows: Iterator[Row], size: int = BATCH) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def _write(
    conn: AsyncConnection, table: Table, columns: Sequence[str], rows: Iterator[Row]
) -> int:
    count = 0
    if conn.dialect.name == "postgresql":
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        for batch in _batches(rows):
            await driver.copy_records_to_table(table.name, records=batch, columns=list(columns))
            count += len(batch)
    else:
        stmt = insert(table)
        for batch in _batches(rows):
            await conn.execute(stmt, [dict(zip(columns, row, strict=True)) for row in batch])
            count += len(batch)
    return count


def _now_midnight() -> dt.datetime:
    today = dt.datetime.now(dt.UTC).date()
    return dt.datetime(today.year, today.month, today.day, tzinfo=dt.UTC)


async def seed_demo(engine: AsyncEngine, scale: float = 0.01, seed: int = 42) -> SeedReport:
    """Fill an empty database; set-based (COPY on PostgreSQL), never row-by-row ORM."""
    size = Scale.of(scale)
    rng = random.Random(seed)
    now = _now_midnight()
    # Two years ending a month ahead: history for analytics, bookings to come.
    first_day = now - dt.timedelta(days=DAYS - 30)
    report: dict[str, int] = {}

    async with engine.begin() as conn:
        if await conn.scalar(select(func.count()).select_from(User.__table__)):
            raise DatabaseNotEmpty("the database already has users; seed only an empty one")
        deferred = await _defer_constraints(conn) if conn.dialect.name == "postgresql" else []

        async def write(model: Any, columns: Sequence[str], rows: Iterator[Row]) -> None:
            table = model.__table__
            report[table.name] = await _write(conn, table, columns, rows)

        n_orgs = max(1, size.locations // 5)
        await write(
            Organization,
            ("id", "name", "slug", "created_at"),
            (
                (i, f"{rng.choice(LAST_NAMES)} Grooming Group {i}", f"org-{i}", first_day)
                for i in range(1, n_orgs + 1)
            ),
        )
        await write(
            BarbershopLocation,
            ("id", "organization_id", "name", "address", "timezone", "is_active", "created_at"),
            (
                (
                    i,
                    (i - 1) % n_orgs + 1,
                    f"BookedBarber #{i}",
                    f"{100 + i} Main St",
                    "UTC",
                    True,
                    first_day,
                )
                for i in range(1, size.locations + 1)
            ),
        )
        services: list[tuple[int, int, int, Decimal]] = []  # id, location, minutes, price
        for loc in range(1, size.locations + 1):
            for name_minutes_price in SERVICES:
                services.append(
                    (len(services) + 1, loc, name_minutes_price[1], Decimal(name_minutes_price[2]))
                )
        await write(
            Service,
            ("id", "location_id", "name", "duration_minutes", "price", "is_active", "created_at"),
            (
                (sid, loc, SERVICES[(sid - 1) % len(SERVICES)][0], minutes, price, True, first_day)
                for sid, loc, minutes, price in services
            ),
        )

        # Users: barbers first, then one owner per location, then clients.
        barber_ids = range(1, size.barbers + 1)
        owner_ids = range(size.barbers + 1, size.barbers + size.locations + 1)
        client_ids = range(owner_ids.stop, owner_ids.stop + size.clients)

        def barber_location(barber: int) -> int:
            return (barber - 1) % size.locations + 1

        def users() -> Iterator[Row]:
            for uid in range(1, client_ids.stop):
                if uid in barber_ids:
                    role, loc, kind = "barber", barber_location(uid), "barber"
                elif uid in owner_ids:
                    role, loc, kind = "shop_owner", uid - owner_ids.start + 1, "owner"
                else:
                    role, loc, kind = "client", rng.randint(1, size.locations), "client"
                name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
                trial = role != "client" and rng.random() < 0.2
                yield (
                    uid,
                    f"{kind}{uid}@demo.bookedbarber.com",
                    name,
                    f"+1555{uid:07d}",
                    role,
                    loc,
                    rng.random() > 0.02,
                    trial,
                    now + dt.timedelta(days=rng.randint(1, 30)) if trial else None,
                    first_day,
                    first_day,
                )

        await write(
            User,
            (
                "id",
                "email",
                "name",
                "phone",
                "unified_role",
                "location_id",
                "is_active",
                "trial_active",
                "trial_expires_at",
                "created_at",
                "updated_at",
            ),
            users(),
        )
        await write(
            StripeAccount,
            (
                "id",
                "user_id",
                "stripe_account_id",
                "charges_enabled",
                "payouts_enabled",
                "created_at",
            ),
            ((b, b, f"acct_demo{b:08d}", True, True, first_day) for b in barber_ids),
        )
        memberships = [
            (uid, (barber_location(uid) - 1) % n_orgs + 1, "member") for uid in barber_ids
        ] + [(uid, (uid - owner_ids.start) % n_orgs + 1, "owner") for uid in owner_ids]
        await write(
            UserOrganization,
            ("id", "user_id", "organization_id", "role", "created_at"),
            ((i, uid, org, role, first_day) for i, (uid, org, role) in enumerate(memberships, 1)),
        )

        payments: list[Row] = []
        reviews: list[Row] = []
        per_barber = math.ceil(size.appointments / size.barbers)
        per_day = math.ceil(per_barber / DAYS)
        days_used = math.ceil(per_barber / per_day)
        location_services: dict[int, list[tuple[int, int, int, Decimal]]] = {}
        for svc in services:
            location_services.setdefault(svc[1], []).append(svc)

        booked: set[tuple[int, dt.datetime]] = set()

        def appointments() -> Iterator[Row]:
            aid = 0
            for barber in barber_ids:
                loc = barber_location(barber)
                for slot in range(per_barber):
                    if aid == size.appointments:
                        return
                    aid += 1
                    day = (slot // per_day) * DAYS // days_used
                    start = first_day + dt.timedelta(days=day, hours=9 + slot % per_day)
                    sid, _, minutes, price = rng.choice(location_services[loc])
                    end = start + dt.timedelta(minutes=minutes)
                    user = rng.choice(client_ids)
                    status = _status(rng, end <= now)
                    if status in ACTIVE_APPOINTMENT_STATUSES:
                        # Slots start on the hour and last at most an hour: a client is
                        # free unless already booked at that very start.
                        while (user, start) in booked:
                            user = client_ids[(user - client_ids.start + 1) % len(client_ids)]
                        booked.add((user, start))
                    created = start - dt.timedelta(days=rng.randint(1, 14))
                    if status == "completed" and rng.random() < 0.9:
                        payments.append(
                            (
                                aid,
                                user,
                                aid,
                                loc,
                                price,
                                "usd",
                                "completed",
                                f"cs_demo_{aid:09d}",
                                None,
                                end,
                            )
                        )
                        if rng.random() < 0.15:
                            reviews.append((aid, user, barber, rng.randint(3, 5), None, end))
                    note = "Prefers scissors over clippers" if rng.random() < 0.05 else None
                    yield (
                        aid,
                        user,
                        barber,
                        sid,
                        loc,
                        start.date(),
                        start,
                        end,
                        status,
                        note,
                        1,
                        created,
                        created,
                    )

        await write(
            Appointment,
            (
                "id",
                "user_id",
                "barber_id",
                "service_id",
                "location_id",
                "appointment_date",
                "start_time",
                "end_time",
                "status",
                "notes",
                "version",
                "created_at",
                "updated_at",
            ),
            appointments(),
        )
        await write(
            Payment,
            (
                "id",
                "user_id",
                "appointment_id",
                "location_id",
                "amount",
                "currency",
                "status",
                "stripe_session_id",
                "idempotency_key",
                "created_at",
            ),
            ((i, *row[1:]) for i, row in enumerate(payments, 1)),
        )
        await write(
            Review,
            ("id", "appointment_id", "user_id", "barber_id", "rating", "comment", "created_at"),
            ((i, *row) for i, row in enumerate(reviews, 1)),
        )
        await write(
            Payout,
            (
                "id",
                "barber_id",
                "stripe_account_id",
                "amount",
                "status",
                "period_start",
                "period_end",
                "created_at",
            ),
            _payouts(barber_ids, first_day.date(), now.date(), rng),
        )
        if conn.dialect.name == "postgresql":
            await reset_sequences(conn, list(report))
            # One pass per index and constraint over the loaded rows beats
            # maintaining them row by row (1M foreign-key lookups, GiST inserts).
            await conn.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
            for statement in deferred:
                await conn.execute(text(statement))
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE"))
    return SeedReport(report)


async def _defer_constraints(conn: AsyncConnection) -> list[str]:
    """Drop secondary indexes, foreign keys and exclusion constraints; return their DDL."""
    tables = [table.name for table in Base.metadata.sorted_tables]
    constraints = (
        await conn.execute(
            text(
                "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) "
                "FROM pg_constraint c WHERE c.contype IN ('f', 'x') "
                "AND c.conrelid::regclass::text = ANY(:tables)"
            ),
            {"tables": tables},
        )
    ).all()
    indexes = (
        await conn.execute(
            text(
                "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) "
                "FROM pg_index i WHERE NOT i.indisunique AND NOT i.indisprimary "
                "AND i.indrelid::regclass::text = ANY(:tables) "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
            ),
            {"tables": tables},
        )
    ).all()
    for table, name, _ in constraints:
        await conn.execute(text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
    for name, _ in indexes:
        await conn.execute(text(f"DROP INDEX {name}"))
    return [definition for _, definition in indexes] + [
        f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'
        for table, name, definition in constraints
    ]


def _status(rng: random.Random, past: bool) -> str:
    roll = rng.random()
    if past:
        return "completed" if roll < 0.8 else "cancelled" if roll < 0.92 else "no_show"
    return "confirmed" if roll < 0.7 else "pending"


def _payouts(barbers: range, start: dt.date, end: dt.date, rng: random.Random) -> Iterator[Row]:
    pid = 0
    month = dt.date(start.year, start.month, 1)
    while month < end:
        following = dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)
        for barber in barbers:
            pid += 1
            amount = Decimal(rng.randint(150_000, 900_000)) / 100
            yield (
                pid,
                barber,
                barber,
                amount,
                "paid",
                month,
                following - dt.timedelta(days=1),
                dt.datetime(following.year, following.month, 2, tzinfo=dt.UTC),
            )
        month = following


async def reset_sequences(conn: AsyncConnection, tables: Sequence[str]) -> None:
    """Move every id sequence past the highest id, so new rows get fresh keys."""
    for table in tables:
        await conn.execute(
            text(
                "SELECT setval(pg_get_serial_sequence(:t, 'id'), "
                f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
            ),
            {"t": table},
        )
