"""The demo seed: per-table generators that give the same rows for the same seed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from app.db.engine import create_engine
from app.db.migrate import upgrade_async
from app.db.models import ACTIVE_APPOINTMENT_STATUSES
from app.db.seed import TABLES, seed_demo
from tests.conftest import make_settings


async def _seeded(path: Path, seed: int) -> sqlite3.Connection:
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade_async(url)
    engine = create_engine(url, make_settings(url))
    try:
        await seed_demo(engine, scale=0.003, seed=seed)
    finally:
        await engine.dispose()
    return sqlite3.connect(path)


def _rows(db: sqlite3.Connection, table: str) -> list[tuple[object, ...]]:
    return db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


async def test_same_seed_same_rows_and_rows_that_hold_together(tmp_path: Path) -> None:
    first = await _seeded(tmp_path / "a.db", 7)
    again = await _seeded(tmp_path / "b.db", 7)
    other = await _seeded(tmp_path / "c.db", 8)
    tables = [seed.model.__tablename__ for seed in TABLES]
    assert all(_rows(first, t) == _rows(again, t) for t in tables)
    assert _rows(first, "appointments") != _rows(other, "appointments")
    # Every payment pays a completed appointment of its user, at its location, its price.
    mismatched = first.execute(
        "SELECT count(*) FROM payments p JOIN appointments a ON a.id = p.appointment_id "
        "JOIN services s ON s.id = a.service_id WHERE a.status != 'completed' "
        "OR p.user_id != a.user_id OR p.location_id != a.location_id OR p.amount != s.price "
        "OR p.created_at != a.end_time"
    ).fetchone()
    assert mismatched == (0,)
    assert first.execute("SELECT count(*) FROM payments").fetchone()[0] > 0
    # Reviews are of paid appointments, by their client, of their barber.
    unpaid = first.execute(
        "SELECT count(*) FROM reviews r JOIN appointments a ON a.id = r.appointment_id "
        "LEFT JOIN payments p ON p.appointment_id = a.id "
        "WHERE p.id IS NULL OR r.user_id != a.user_id OR r.barber_id != a.barber_id"
    ).fetchone()
    assert unpaid == (0,)
    # Barbers work where their appointments are; each service belongs to that location.
    astray = first.execute(
        "SELECT count(*) FROM appointments a JOIN users b ON b.id = a.barber_id "
        "JOIN services s ON s.id = a.service_id "
        "WHERE b.unified_role != 'barber' OR b.location_id != a.location_id "
        "OR s.location_id != a.location_id"
    ).fetchone()
    assert astray == (0,)
    # No client is booked twice at overlapping times (PostgreSQL's client-overlap
    # exclusion constraint would refuse the seed).
    active = ", ".join(f"'{s}'" for s in ACTIVE_APPOINTMENT_STATUSES)
    for db in (first, other):
        double = db.execute(
            "SELECT count(*) FROM appointments a JOIN appointments b "
            "ON b.user_id = a.user_id AND b.id > a.id "
            "AND b.start_time < a.end_time AND a.start_time < b.end_time "
            f"WHERE a.status IN ({active}) AND b.status IN ({active})"
        ).fetchone()
        assert double == (0,)
    for db in (first, again, other):
        db.close()
