"""Deterministic demo data: locations, barbers, clients, two years of bookings."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import cast

from sqlalchemy import Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.bulk import Row, defer_constraints, reset_sequences, write_rows
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
    email_key,
)


def _words(text: str) -> list[str]:
    return text.split()


DAYS = 730
FIRST_NAMES = _words(
    "James Maria Robert Linda Michael Aisha David Sofia Daniel Mei Carlos Fatima Kwame Olivia "
    "Noah Emma Liam Ava Mateo Zara Ethan Chloe Lucas Amara Omar Nina Leo Priya"
)
LAST_NAMES = _words(
    "Smith Garcia Johnson Okafor Brown Nguyen Miller Rossi Davis Kim Wilson Haddad Moore Silva "
    "Taylor Cohen Anderson Patel Thomas Jackson Lopez Martin Lee Walker Young King"
)
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


ServiceRow = tuple[int, int, int, Decimal]  # id, location, minutes, price


def _now_midnight() -> dt.datetime:
    today = dt.datetime.now(dt.UTC).date()
    return dt.datetime(today.year, today.month, today.day, tzinfo=dt.UTC)


@dataclass
class Demo:
    """The demo world's shape: its ids and how they relate, one random stream for all.

    The generators below run in TABLES' order and draw from `rng` in that order, so a
    seed always gives the same rows. Appointments leave behind the payments and reviews
    they imply, which the later generators write.
    """

    size: Scale
    rng: random.Random
    now: dt.datetime = field(default_factory=_now_midnight)
    payments: list[Row] = field(default_factory=list)
    reviews: list[Row] = field(default_factory=list)
    # (client, start) of every active booking: no client is booked twice at once.
    booked: set[tuple[int, dt.datetime]] = field(default_factory=set)

    @property
    def first_day(self) -> dt.datetime:
        # Two years ending a month ahead: history for analytics, bookings to come.
        return self.now - dt.timedelta(days=DAYS - 30)

    @property
    def organizations(self) -> int:
        return max(1, self.size.locations // 5)

    # Users: barbers first, then one owner per location, then clients.
    @property
    def barber_ids(self) -> range:
        return range(1, self.size.barbers + 1)

    @property
    def owner_ids(self) -> range:
        return range(self.size.barbers + 1, self.size.barbers + self.size.locations + 1)

    @property
    def client_ids(self) -> range:
        start = self.owner_ids.stop
        return range(start, start + self.size.clients)

    def barber_location(self, barber: int) -> int:
        return (barber - 1) % self.size.locations + 1

    @cached_property
    def services(self) -> list[ServiceRow]:
        return [
            (i * len(SERVICES) + j + 1, i + 1, minutes, Decimal(price))
            for i in range(self.size.locations)
            for j, (_, minutes, price) in enumerate(SERVICES)
        ]

    @cached_property
    def location_services(self) -> dict[int, list[ServiceRow]]:
        by_location: dict[int, list[ServiceRow]] = {}
        for service in self.services:
            by_location.setdefault(service[1], []).append(service)
        return by_location


def organizations(demo: Demo) -> Iterator[Row]:
    for i in range(1, demo.organizations + 1):
        name = f"{demo.rng.choice(LAST_NAMES)} Grooming Group {i}"
        yield (i, name, f"org-{i}", demo.first_day)


def locations(demo: Demo) -> Iterator[Row]:
    for i in range(1, demo.size.locations + 1):
        organization = (i - 1) % demo.organizations + 1
        yield (
            i,
            organization,
            f"BookedBarber #{i}",
            f"{100 + i} Main St",
            "UTC",
            True,
            demo.first_day,
        )


def services(demo: Demo) -> Iterator[Row]:
    for sid, loc, minutes, price in demo.services:
        name = SERVICES[(sid - 1) % len(SERVICES)][0]
        yield (sid, loc, name, minutes, price, True, demo.first_day)


def users(demo: Demo) -> Iterator[Row]:
    rng, owners = demo.rng, demo.owner_ids
    for uid in range(1, demo.client_ids.stop):
        if uid in demo.barber_ids:
            role, loc, kind = "barber", demo.barber_location(uid), "barber"
        elif uid in owners:
            role, loc, kind = "shop_owner", uid - owners.start + 1, "owner"
        else:
            role, loc, kind = "client", rng.randint(1, demo.size.locations), "client"
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        trial = role != "client" and rng.random() < 0.2
        email = f"{kind}{uid}@demo.bookedbarber.com"
        active = rng.random() > 0.02
        expires = demo.now + dt.timedelta(days=rng.randint(1, 30)) if trial else None
        since = demo.first_day
        yield (
            uid,
            email,
            email_key(email),
            name,
            f"+1555{uid:07d}",
            role,
            loc,
            active,
            trial,
            expires,
            since,
            since,
        )


def stripe_accounts(demo: Demo) -> Iterator[Row]:
    for b in demo.barber_ids:
        yield (b, b, f"acct_demo{b:08d}", True, True, demo.first_day)


def user_organizations(demo: Demo) -> Iterator[Row]:
    n = demo.organizations
    members = [(uid, (demo.barber_location(uid) - 1) % n + 1, "member") for uid in demo.barber_ids]
    owners = [(uid, (uid - demo.owner_ids.start) % n + 1, "owner") for uid in demo.owner_ids]
    for i, (uid, org, role) in enumerate(members + owners, 1):
        yield (i, uid, org, role, demo.first_day)


def appointments(demo: Demo) -> Iterator[Row]:
    """Each barber's bookings spread over the two years, a few a day from 9:00."""
    size, rng = demo.size, demo.rng
    per_barber = math.ceil(size.appointments / size.barbers)
    per_day = math.ceil(per_barber / DAYS)
    days_used = math.ceil(per_barber / per_day)
    slots = ((barber, slot) for barber in demo.barber_ids for slot in range(per_barber))
    for aid, (barber, slot) in enumerate(slots, 1):
        if aid > size.appointments:
            return
        loc = demo.barber_location(barber)
        day = (slot // per_day) * DAYS // days_used
        start = demo.first_day + dt.timedelta(days=day, hours=9 + slot % per_day)
        _, _, minutes, price = service = rng.choice(demo.location_services[loc])
        end = start + dt.timedelta(minutes=minutes)
        user = rng.choice(demo.client_ids)
        status = _status(rng, end <= demo.now)
        if status in ACTIVE_APPOINTMENT_STATUSES:
            user = _free_client(demo, user, start)
        created = start - dt.timedelta(days=rng.randint(1, 14))
        if status == "completed" and rng.random() < 0.9:
            _paid(demo, (aid, user, barber, loc), price, end)
        note = "Prefers scissors over clippers" if rng.random() < 0.05 else None
        booking = (aid, user, barber, service[0], loc, start.date(), start, end)
        yield (*booking, status, note, 1, created, created)


def _free_client(demo: Demo, user: int, start: dt.datetime) -> int:
    """`user`, or the next client free at `start` (ex_appointments_client_overlap).

    Slots start on the hour and last at most an hour: a client is free unless already
    booked at that very start.
    """
    clients = demo.client_ids
    while (user, start) in demo.booked:
        user = clients[(user - clients.start + 1) % len(clients)]
    demo.booked.add((user, start))
    return user


def _paid(demo: Demo, booking: tuple[int, int, int, int], price: Decimal, at: dt.datetime) -> None:
    """A completed appointment's payment, and sometimes its review."""
    aid, user, barber, loc = booking
    session = f"cs_demo_{aid:09d}"
    demo.payments.append((aid, user, aid, loc, price, "usd", "completed", session, None, at))
    if demo.rng.random() < 0.15:
        demo.reviews.append((aid, user, barber, demo.rng.randint(3, 5), None, at))


def payments(demo: Demo) -> Iterator[Row]:
    return ((i, *row[1:]) for i, row in enumerate(demo.payments, 1))


def reviews(demo: Demo) -> Iterator[Row]:
    return ((i, *row) for i, row in enumerate(demo.reviews, 1))


def payouts(demo: Demo) -> Iterator[Row]:
    """One paid payout per barber per calendar month of the demo's span."""
    rng, end = demo.rng, demo.now.date()
    start = demo.first_day.date()
    pid = 0
    month = dt.date(start.year, start.month, 1)
    while month < end:
        following = dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)
        paid_at = dt.datetime(following.year, following.month, 2, tzinfo=dt.UTC)
        for barber in demo.barber_ids:
            pid += 1
            amount = Decimal(rng.randint(150_000, 900_000)) / 100
            last = following - dt.timedelta(days=1)
            yield (pid, barber, barber, amount, "paid", month, last, paid_at)
        month = following


def _status(rng: random.Random, past: bool) -> str:
    roll = rng.random()
    if past:
        return "completed" if roll < 0.8 else "cancelled" if roll < 0.92 else "no_show"
    return "confirmed" if roll < 0.7 else "pending"


@dataclass(frozen=True)
class TableSeed:
    model: type[Base]
    column_names: str  # space separated, in the order of each generated row
    rows: Callable[[Demo], Iterator[Row]]

    @property
    def columns(self) -> list[str]:
        return _words(self.column_names)


# In foreign-key order, which is also the order the generators draw random numbers in.
TABLES = (
    TableSeed(Organization, "id name slug created_at", organizations),
    TableSeed(
        BarbershopLocation,
        "id organization_id name address timezone is_active created_at",
        locations,
    ),
    TableSeed(Service, "id location_id name duration_minutes price is_active created_at", services),
    TableSeed(
        User,
        "id email email_key name phone unified_role location_id is_active trial_active "
        "trial_expires_at created_at updated_at",
        users,
    ),
    TableSeed(
        StripeAccount,
        "id user_id stripe_account_id charges_enabled payouts_enabled created_at",
        stripe_accounts,
    ),
    TableSeed(UserOrganization, "id user_id organization_id role created_at", user_organizations),
    TableSeed(
        Appointment,
        "id user_id barber_id service_id location_id appointment_date start_time end_time "
        "status notes version created_at updated_at",
        appointments,
    ),
    TableSeed(
        Payment,
        "id user_id appointment_id location_id amount currency status stripe_session_id "
        "idempotency_key created_at",
        payments,
    ),
    TableSeed(Review, "id appointment_id user_id barber_id rating comment created_at", reviews),
    TableSeed(
        Payout,
        "id barber_id stripe_account_id amount status period_start period_end created_at",
        payouts,
    ),
)


async def seed_demo(engine: AsyncEngine, scale: float = 0.01, seed: int = 42) -> SeedReport:
    """Fill an empty database; set-based (COPY on PostgreSQL), never row-by-row ORM."""
    demo = Demo(Scale.of(scale), random.Random(seed))
    report: dict[str, int] = {}
    async with engine.begin() as conn:
        if await conn.scalar(select(func.count()).select_from(User.__table__)):
            raise DatabaseNotEmpty("the database already has users; seed only an empty one")
        postgres = conn.dialect.name == "postgresql"
        deferred = await defer_constraints(conn) if postgres else []
        for seed_table in TABLES:
            table = cast(Table, seed_table.model.__table__)
            rows = seed_table.rows(demo)
            report[table.name] = await write_rows(conn, table, seed_table.columns, rows)
        if postgres:
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
