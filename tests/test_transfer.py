"""db copy / db verify between SQLite and PostgreSQL, on real databases."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
from rich.console import Console

from app.config import Settings
from app.db import transfer
from app.db.engine import create_engine
from app.db.invariants import ServiceRules
from app.db.migrate import upgrade_async
from app.db.seed import seed_demo
from app.db.transfer import lite, pg
from app.main import create_app
from tests.conftest import pg_fetch
from tests.copy_kills import wait_for
from tests.messy_sqlite import build_large, build_messy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def target(scratch_db: str) -> str:
    return scratch_db


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"), width=120)


def lite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def cli(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "app", "db", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


async def test_messy_sqlite_round_trip(target: str, tmp_path: Path) -> None:
    source = tmp_path / "messy.db"
    build_messy(source)
    assert len(lite.reflect(lite.connect(source))) >= 20

    opts = transfer.CopyOptions(batch_size=7)
    report = await transfer.copy(lite_url(source), target, opts, quiet())
    assert report.ok
    assert report.kept_schema is not None
    assert report.kept_schema.startswith("public_before_")
    notes = "\n".join(f.line() for f in report.findings)
    # Orphans named by the orphaned rows' own keys (purchase ids), not the missing people.
    assert "purchases: (person_id) -> people: 4 orphaned rows kept" in notes
    assert "(keys 50, 100, 150, 200)" in notes
    assert "enrollments: (course_code) -> courses: 1 orphaned rows kept" in notes
    assert "foreign-key cycle" in notes
    assert "purchases.amount: declared numeric(10, 2) holds 1 values" in notes
    assert "purchases.code: declared varchar(5) holds 1 values" in notes
    assert "notes.body: declared text holds 1 values" in notes
    assert "created as bytea" in notes
    assert "ix_people_active_partial" in notes

    types = {
        (r["table_name"], r["column_name"]): r["data_type"]
        for r in await pg_fetch(
            target,
            "SELECT table_name, column_name, format_type(atttypid, atttypmod) AS data_type "
            "FROM information_schema.columns c JOIN pg_attribute a "
            "ON a.attrelid = ('public.' || quote_ident(c.table_name))::regclass "
            "AND a.attname = c.column_name WHERE c.table_schema = 'public'",
        )
    }
    assert types[("purchases", "amount")] == "numeric"  # 12.345 kept exact
    assert types[("purchases", "quantity")] == "numeric"  # 2.5 in an INTEGER column
    assert types[("purchases", "code")] == "text"
    assert types[("notes", "body")] == "bytea"  # a NUL byte, kept
    assert types[("prices", "price")] == "numeric(10,2)"
    assert types[("people", "is_active")] == "boolean"
    assert types[("people", "created_at")] == "timestamp with time zone"
    assert types[("people", "profile")] == "jsonb"
    validated = {
        r["conname"]: r["convalidated"]
        for r in await pg_fetch(target, "SELECT conname, convalidated FROM pg_constraint")
    }
    assert validated["fk_purchases_person_id"] is False
    assert validated["fk_employees_manager_id"] is True
    money = await pg_fetch(target, "SELECT price::text FROM prices ORDER BY id LIMIT 3")
    assert all(len(r[0].split(".")[1]) == 2 for r in money)
    exact = await pg_fetch(
        target, "SELECT amount::text, quantity::text FROM purchases WHERE id = 201"
    )
    assert tuple(exact[0]) == ("12.345", "2.5")
    nul = await pg_fetch(target, "SELECT body FROM notes WHERE id = 2")
    assert nul[0][0] == b"has\x00nul"
    # Loaded with autovacuum off, live with it on again.
    paused = await pg_fetch(
        target,
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
        "AND reloptions::text LIKE '%autovacuum%'",
    )
    assert paused == []
    # Identity past the copied ids: a new row gets a fresh key.
    new = await pg_fetch(target, "INSERT INTO people (name) VALUES ('new') RETURNING id")
    assert new[0][0] == 61
    await pg_fetch(target, "DELETE FROM people WHERE id = 61")

    check = await transfer.verify(lite_url(source), target)
    assert check.ok, [c for c in check.checks if not c.ok]

    back = tmp_path / "back.db"
    # Back in batches as small: a table ends with its short batch, never at a full one.
    report = await transfer.copy(target, lite_url(back), opts, quiet())
    assert report.ok
    assert (await transfer.verify(target, lite_url(back))).ok
    copied = sqlite3.connect(back)
    raw = copied.execute("SELECT amount, quantity, code FROM purchases WHERE id = 201").fetchone()
    assert raw == (12.345, 2.5, "TOOLONGCODE")
    assert copied.execute("SELECT body FROM notes WHERE id = 2").fetchone()[0] == b"has\x00nul"


async def test_sigkill_mid_table_then_resume(target: str, tmp_path: Path) -> None:
    source = tmp_path / "large.db"
    build_large(source, 150_000)
    proc = subprocess.Popen(  # noqa: ASYNC220
        [
            sys.executable,
            "-m",
            "app",
            "db",
            "copy",
            lite_url(source),
            target,
            "--batch-size",
            "5000",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300  # only catches a copy that never progresses
    committed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            rows = await pg_fetch(
                target, f"SELECT rows FROM {pg.STATE}.progress WHERE table_name = 'bookings'"
            )
        except asyncpg.UndefinedTableError:
            rows = []
        committed = rows[0][0] if rows else 0
        if committed >= 10_000:
            break
        await asyncio.sleep(0.05)
    assert proc.poll() is None, "the copy finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 10_000 <= committed < 150_000
    # Its worker processes died with it: no session of the copy goes on loading.
    others = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )

    async def gone() -> bool:
        return bool((await pg_fetch(target, others))[0][0] == 0)

    await wait_for("the killed copy's sessions to end", gone)
    staged = await pg_fetch(target, f"SELECT count(*) FROM {pg.STAGING}.bookings")
    assert 0 < staged[0][0] < 150_000

    result = cli("copy", lite_url(source), target, check=True)
    assert "resuming" in result.stderr
    counts = await pg_fetch(target, "SELECT count(*), count(DISTINCT id) FROM bookings")
    assert tuple(counts[0]) == (150_000, 150_000)
    # The rerun verified counts and checksums before swapping the staged copy in.
    assert not await pg_fetch(target, "SELECT 1 FROM pg_namespace WHERE nspname = $1", pg.STATE)


async def test_verify_names_the_changed_row_and_refusals(target: str, tmp_path: Path) -> None:
    source = tmp_path / "messy.db"
    build_messy(source, filler_tables=1)
    cli("copy", lite_url(source), target, check=True)
    await pg_fetch(target, "UPDATE employees SET salary = salary + 0.01 WHERE id = 3")
    result = cli("verify", lite_url(source), target)
    assert result.returncode != 0
    assert "DIFFERS" in result.stderr
    assert "employees: 4 rows vs 4, content differs at keys: 3" in result.stderr

    # Data already there and no --truncate: refused, nothing replaced.
    again = cli("copy", lite_url(source), target)
    assert again.returncode != 0
    assert "already has rows" in again.stderr

    password = "s3cret-pass"
    unreachable = f"postgresql://someone:{password}@127.0.0.1:1/nowhere"
    failed = cli("copy", lite_url(source), unreachable)
    assert failed.returncode != 0
    assert "cannot reach" in failed.stderr
    assert password not in failed.stderr + failed.stdout


async def test_service_schema_into_upgraded_database(target: str, tmp_path: Path) -> None:
    source = tmp_path / "service.db"
    source_url = f"sqlite+aiosqlite:///{source}"
    await upgrade_async(source_url)
    settings = Settings(database_url=source_url, demo_seed=False)
    engine = create_engine(source_url, settings)
    try:
        await seed_demo(engine, 0.002)
    finally:
        await engine.dispose()
    await upgrade_async(target)

    opts = transfer.CopyOptions(rules=ServiceRules())
    report = await transfer.copy(source_url, target, opts, quiet())
    assert report.ok
    assert report.actions["appointments"] == "filled"
    assert (await transfer.verify(source_url, target)).ok
    exclusion = await pg_fetch(
        target,
        "SELECT 1 FROM pg_constraint WHERE conname = 'ex_appointments_barber_overlap' "
        "AND connamespace = 'public'::regnamespace",
    )
    assert exclusion
    top_user = (await pg_fetch(target, "SELECT max(id) FROM users"))[0][0]
    top_appointment = (await pg_fetch(target, "SELECT max(id) FROM appointments"))[0][0]
    # New rows through the API get fresh ids: the copy set every sequence past its table.
    settings = Settings(database_url=target, demo_seed=False, replica_urls=[])
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            user = await client.post(
                "/api/v1/users",
                json={"email": "fresh@example.com", "name": "Fresh", "unified_role": "client"},
            )
            assert user.status_code == 201, user.text
            assert user.json()["id"] == top_user + 1
            ids = (
                await pg_fetch(
                    target,
                    "SELECT a.barber_id, a.service_id, a.location_id, s.duration_minutes "
                    "FROM appointments a JOIN services s ON s.id = a.service_id "
                    "ORDER BY a.id LIMIT 1",
                )
            )[0]
            # Tomorrow at 22:00 UTC, past the demo's hours, for the service's length.
            start = dt.datetime.combine(
                dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1), dt.time(22), dt.UTC
            )
            booked = await client.post(
                "/api/v1/appointments",
                json={
                    "user_id": user.json()["id"],
                    "barber_id": ids[0],
                    "service_id": ids[1],
                    "location_id": ids[2],
                    "start_time": start.isoformat(),
                    "end_time": (start + dt.timedelta(minutes=ids[3])).isoformat(),
                },
            )
            assert booked.status_code == 201, booked.text
            assert booked.json()["id"] == top_appointment + 1
    kept = await pg_fetch(
        target, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'public_before_%'"
    )
    assert len(kept) == 1


async def test_the_way_back_into_a_new_file_has_the_migrations_schema(
    target: str, tmp_path: Path
) -> None:
    """Rolling back to SQLite (the runbook's step 7: a new file) gives the file this
    service's schema as `db upgrade` makes it, judged against a file the migrations made:
    keys AUTOINCREMENT (the live migration's key blocks need them), CHECKs, every index,
    the stamp at the source's revision. Before, the file was derived from PostgreSQL's
    tables: no AUTOINCREMENT, no CHECK, three indexes fewer, stamped at the head."""
    await upgrade_async(target)
    settings = Settings(database_url=target, demo_seed=False, replica_urls=[])
    engine = create_engine(target, settings)
    try:
        await seed_demo(engine, 0.002)
    finally:
        await engine.dispose()
    back = tmp_path / "rollback.db"
    report = await transfer.copy(target, lite_url(back), transfer.CopyOptions(), quiet())
    assert report.ok
    assert (await transfer.verify(target, lite_url(back))).ok
    reference = tmp_path / "reference.db"
    await upgrade_async(f"sqlite+aiosqlite:///{reference}")

    def schema(path: Path) -> list[tuple[str, str, str | None]]:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            rows = conn.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                "ORDER BY type, name"
            ).fetchall()
        return [(t, n, s) for t, n, s in rows]

    assert schema(back) == schema(reference)
    with contextlib.closing(sqlite3.connect(back)) as conn:
        [[stamp]] = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        [[source_stamp]] = await pg_fetch(target, "SELECT version_num FROM alembic_version")
        assert stamp == source_stamp
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            conn.execute("UPDATE payments SET status = 'bogus' WHERE id = 1")
        # AUTOINCREMENT: the sequence holds each table's highest key, as copied.
        sequences = dict(conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
        [[top_user]] = await pg_fetch(target, "SELECT max(id) FROM users")
        assert sequences["users"] == top_user


async def test_types_without_a_sqlite_kind_go_back_as_postgresql_writes_them(
    target: str, tmp_path: Path
) -> None:
    """Intervals, arrays, points, XML, bit strings, ranges: the way back keeps each as the
    text PostgreSQL writes (and reads back), reported; --strict refuses them. Before, they
    were stored as asyncpg's Python reprs ('30 days, 0:00:00' for both '1 mon' and
    '30 days'), and verify, reading both sides the same way, said they matched."""
    columns = {
        "iv": "interval",
        "arr": "text[]",
        "pt": "point",
        "x": "xml",
        "b": "bit varying",
        "r": "int4range",
    }
    rows = [
        (1, "1 mon", '{"a,b",NULL,""}', "(1,2)", "<a>1</a>", "101", "[1,5)"),
        (2, "30 days", "{}", "(1.5,-2)", None, "", "empty"),
        (3, "-1 year 2 mons 3 days 04:05:06.789", None, None, None, None, None),
    ]
    conn = await asyncpg.connect(target.replace("+asyncpg", ""))
    try:
        declared = ", ".join(f"{name} {kind}" for name, kind in columns.items())
        await conn.execute(f"CREATE TABLE odd (id int PRIMARY KEY, {declared})")
        casts = ", ".join(f"${i + 2}::text::{kind}" for i, kind in enumerate(columns.values()))
        for row in rows:
            await conn.execute(f"INSERT INTO odd VALUES ($1, {casts})", *row)
        names = ", ".join(f"{name}::text" for name in columns)
        written = [tuple(r) for r in await conn.fetch(f"SELECT id, {names} FROM odd ORDER BY id")]
    finally:
        await conn.close()

    refused = cli("copy", "--strict", target, lite_url(tmp_path / "strict.db"))
    assert refused.returncode == 1
    for name, kind in columns.items():
        assert f"odd.{name}: type {kind} has no SQLite kind (--strict)" in refused.stderr

    back = tmp_path / "back.db"
    report = await transfer.copy(target, lite_url(back), transfer.CopyOptions(), quiet())
    assert report.ok
    noted = {f.column: f.message for f in report.findings if f.kind == "as-text"}
    assert set(noted) == set(columns)
    with contextlib.closing(sqlite3.connect(back)) as db:
        stored = db.execute(f"SELECT id, {', '.join(columns)} FROM odd ORDER BY id").fetchall()
    assert stored == written
    assert (await transfer.verify(target, lite_url(back))).ok
    with contextlib.closing(sqlite3.connect(back)) as db:
        db.execute("UPDATE odd SET iv = '30 days, 0:00:00' WHERE id = 2")
        db.commit()
    changed = await transfer.verify(target, lite_url(back))
    assert not changed.ok
    [check] = [c for c in changed.checks if c.table == "odd"]
    assert check.differing_keys == ["2"], check


def test_an_older_sqlite_library_is_refused_in_one_line() -> None:
    """The digests need unixepoch() (SQLite 3.38): an older library is named, not a
    'no such function' halfway through a copy."""
    from app.db.transfer import lite

    with pytest.raises(transfer.TransferError) as refused:
        lite.supported((3, 37, 2))
    assert str(refused.value) == (
        "the copy needs SQLite 3.38.0 or later; this Python's sqlite3 module uses 3.37.2"
    )
    lite.supported()  # this machine's library
    lite.supported((3, 38, 0))
