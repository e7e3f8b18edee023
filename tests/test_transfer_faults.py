"""db copy killed in each phase, db verify on schemas that differ, the service's own rules."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console

from app.config import Settings
from app.db import transfer
from app.db.engine import create_engine
from app.db.invariants import ServiceRules
from app.db.migrate import upgrade_async
from app.db.seed import seed_demo
from app.db.transfer import pg
from tests.conftest import db_cli as cli
from tests.conftest import pg_fetch
from tests.conftest import sqlite_file_url as url
from tests.copy_kills import kill_copy_blocked
from tests.messy_sqlite import build_backend, build_messy
from tests.transfer_checker import compare

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def target(scratch_db: str) -> str:
    return scratch_db


@pytest.mark.parametrize(
    ("locked", "blocked"),
    [
        # Keys, NOT NULL, defaults and constraints: the first DDL on appointments waits.
        (f"{pg.STAGING}.appointments", "ALTER TABLE"),
        # The swap: dropping the progress schema waits, after public was renamed.
        (f"{pg.STATE}.progress", "DROP SCHEMA"),
    ],
    ids=["during-constraints", "during-swap"],
)
async def test_sigkill_in_a_phase_then_rerun_is_exact(
    target: str, tmp_path: Path, locked: str, blocked: str
) -> None:
    source = tmp_path / "backend.db"
    build_backend(source, appointments=6_000)
    # A real lock held by another session: the copy blocks there, in that phase.
    # Small batches: the lock on appointments must be taken while it loads, before its keys.
    await kill_copy_blocked(source, target, locked, blocked, batch_size=200)
    # Nothing half-done went live: public is still the empty original.
    assert not await pg_fetch(target, "SELECT 1 FROM pg_tables WHERE schemaname = 'public'")
    # What the killed copy committed (appointments whole: its keys were being added).
    progress = await pg_fetch(
        target, f"SELECT table_name, rows, done FROM {pg.STATE}.progress ORDER BY table_name"
    )
    committed = sum(r["rows"] for r in progress)
    assert [r["done"] for r in progress if r["table_name"] == "appointments"] == [True]

    rerun = cli("copy", url(source), target)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming" in rerun.stderr
    check = await compare(source, target)
    assert check.exact, check.samples
    # The totals count whole tables; the rerun moved only what was not committed (a
    # table whose keys were interrupted is not loaded again).
    assert f"copied {check.target_rows:,} rows" in rerun.stdout
    assert f"({check.target_rows - committed:,} in this run)" in rerun.stdout
    # The orphans found when the foreign keys are checked are in the rerun's report.
    assert "coupon_redemptions: (coupon_code) -> coupons: 1 orphaned rows kept" in rerun.stderr
    assert not await pg_fetch(target, "SELECT 1 FROM pg_namespace WHERE nspname = $1", pg.STATE)


async def test_verify_reports_schema_differences_without_traceback(
    target: str, tmp_path: Path
) -> None:
    source = tmp_path / "backend.db"
    build_backend(source, appointments=200)
    assert cli("copy", url(source), target).returncode == 0
    assert cli("verify", url(source), target).returncode == 0
    await pg_fetch(target, "ALTER TABLE reviews DROP COLUMN comment")
    await pg_fetch(
        target,
        "ALTER TABLE users ALTER COLUMN unified_role TYPE varchar(3) USING left(unified_role, 3)",
    )
    result = cli("verify", url(source), target)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "- reviews.comment: column missing on the PostgreSQL side" in result.stderr
    assert "users.unified_role at key 1: value 'barber' does not fit varchar(3)" in result.stderr
    assert "the databases differ" in result.stderr


async def test_nul_bytes_compared_as_the_copy_stored_them(target: str, tmp_path: Path) -> None:
    source = tmp_path / "messy.db"
    build_messy(source, filler_tables=0)
    # --strip-nul: text without its NUL bytes, and verify must be told so to agree.
    result = cli("copy", url(source), target, "--strip-nul")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "notes.body: NUL bytes removed from 1 values (--strip-nul) (keys 2)" in result.stderr
    body = await pg_fetch(target, "SELECT body FROM notes WHERE id = 2")
    assert body[0][0] == "hasnul"
    exact = cli("verify", url(source), target)
    assert exact.returncode != 0
    assert "notes: 5 rows vs 5, content differs at keys: 2" in exact.stderr
    assert cli("verify", url(source), target, "--strip-nul").returncode == 0
    assert (await compare(source, target, strip_nul=True)).exact


async def test_service_rule_failure_keeps_the_staged_copy(target: str, tmp_path: Path) -> None:
    source = tmp_path / "service.db"
    source_url = f"sqlite+aiosqlite:///{source}"
    await upgrade_async(source_url)
    engine = create_engine(source_url, Settings(database_url=source_url, demo_seed=False))
    try:
        await seed_demo(engine, 0.002)
    finally:
        await engine.dispose()
    with sqlite3.connect(source) as conn:
        # A payment whose amount no longer adds up is still copied exactly; an orphaned
        # appointment user is what the service's rule refuses.
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("UPDATE appointments SET user_id = 999999 WHERE id = 1")
    await upgrade_async(target)
    opts = transfer.CopyOptions(rules=ServiceRules())
    quiet = Console(file=io.StringIO())
    with pytest.raises(transfer.TransferError) as failed:
        await transfer.copy(source_url, target, opts, quiet)
    assert failed.value.report is not None
    lines = [f.line() for f in failed.value.report.findings if f.kind in ("invariant", "schema")]
    assert any("appointments" in line for line in lines), lines
    assert f"stays in schema {pg.STAGING}" in str(failed.value)
    live = await pg_fetch(target, "SELECT count(*) FROM appointments")
    assert live[0][0] == 0


async def test_any_input_fails_in_one_line(target: str, tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-database.db"
    garbage.write_bytes(b"this is not SQLite at all\n" * 100)
    result = cli("copy", url(garbage), target)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: copy failed: DatabaseError")
    odd = tmp_path / "odd.db"
    build_backend(odd, appointments=60)
    with sqlite3.connect(odd) as conn:
        conn.execute("UPDATE users SET preferences = '' WHERE id = 5")
    strict = cli("copy", url(odd), target, "--strict", "--json")
    assert strict.returncode != 0
    assert "Traceback" not in strict.stderr
    assert "users.preferences at key 5: value ''" in strict.stdout
    assert not await pg_fetch(target, "SELECT 1 FROM pg_namespace WHERE nspname = $1", pg.STAGING)


async def test_keys_that_repeat_once_converted_are_reported(target: str, tmp_path: Path) -> None:
    source = tmp_path / "keys.db"
    with sqlite3.connect(source) as conn:
        conn.executescript(
            """
            CREATE TABLE slots (id INTEGER PRIMARY KEY, at DATETIME, CONSTRAINT uq_slots_at
                UNIQUE (at));
            INSERT INTO slots VALUES (1, '2024-01-02 03:04:05'), (2, '2024-01-02T03:04:05Z'),
                (3, '2024-01-02T05:04:05+01:00');
            CREATE TABLE codes (code TEXT PRIMARY KEY, n INTEGER);
            INSERT INTO codes VALUES ('a', 1), (NULL, 2);
            """
        )
    result = cli("copy", url(source), target)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "slots: (at) repeats once converted; uq_slots_at created as a plain index" in (
        result.stderr
    )
    assert "codes: primary key (code) holds NULLs or repeats once converted" in result.stderr
    check = await compare(source, target)
    assert check.exact, check.samples
