"""The copy's own check: checksums taken while loading, and what makes it look again."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.db.transfer import pg
from tests.conftest import db_cli as cli
from tests.conftest import pg_fetch
from tests.conftest import sqlite_file_url as url
from tests.copy_kills import kill_copy_blocked
from tests.messy_sqlite import build_backend
from tests.transfer_checker import compare

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def target(scratch_db: str) -> str:
    return scratch_db


async def kill_during_constraints(source: Path, target: str) -> None:
    """Kills a copy once every row is loaded (blocked adding keys)."""
    locked = f"{pg.STAGING}.appointments"
    # Small batches: the lock must be taken while the table loads, before its keys.
    await kill_copy_blocked(source, target, locked, "ALTER TABLE", batch_size=100)


async def test_checksums_from_the_load_match_a_fresh_scan(target: str, tmp_path: Path) -> None:
    source = tmp_path / "backend.db"
    build_backend(source, appointments=1_500)
    await kill_during_constraints(source, target)
    # The load committed each table's checksums: the source's (from its own read) and
    # the staged table's (computed by PostgreSQL once the table was in).
    stored = await pg_fetch(
        target,
        f"SELECT table_name, rows, digest::text, staged_rows, staged_digest::text "
        f"FROM {pg.STATE}.progress WHERE table_name = 'appointments'",
    )
    assert stored
    assert stored[0]["staged_rows"] == stored[0]["rows"] == 1_500
    assert stored[0]["staged_digest"] == stored[0]["digest"]
    rerun = cli("copy", url(source), target)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming" in rerun.stderr
    # db verify scans both sides afresh and agrees.
    assert cli("verify", url(source), target).returncode == 0
    assert (await compare(source, target)).exact


async def test_a_source_changed_after_the_load_is_scanned_again(
    target: str, tmp_path: Path
) -> None:
    source = tmp_path / "backend.db"
    build_backend(source, appointments=1_500)
    await kill_during_constraints(source, target)
    # Same row count, one value changed: only a fresh scan of the source can tell.
    with sqlite3.connect(source) as conn:
        conn.execute("UPDATE appointments SET notes = 'changed after the load' WHERE id = 42")
    rerun = cli("copy", url(source), target)
    assert rerun.returncode != 0
    assert "verification failed" in rerun.stderr
    assert "appointments: 1,500 rows vs 1,500, content differs at keys: 42" in rerun.stderr
    live = await pg_fetch(target, "SELECT 1 FROM pg_tables WHERE schemaname = 'public'")
    assert not live


async def test_numbers_in_a_text_column_travel_as_the_converter_writes_them(
    target: str, tmp_path: Path
) -> None:
    source = tmp_path / "numbers.db"
    reals = [0.1 + 0.2, -0.0, 1e16, 1e-05, 123.0, 153.23, 5e-324, 1.7976931348623157e308]
    values: list[object] = [*reals, float("inf"), -float("inf"), 42, -7, 2**63 - 1, "text"]
    with sqlite3.connect(source) as conn:
        # No declared type: the column keeps reals, integers and text as they are.
        conn.execute("CREATE TABLE mixed (id INTEGER PRIMARY KEY, v)")
        conn.executemany("INSERT INTO mixed (v) VALUES (?)", [(v,) for v in values])
        kinds = [r[0] for r in conn.execute("SELECT typeof(v) FROM mixed ORDER BY id")]
    assert kinds.count("real") == len(reals) + 2
    assert kinds.count("integer") == 3
    result = cli("copy", url(source), target)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = await pg_fetch(target, "SELECT v FROM mixed ORDER BY id")
    assert [r[0] for r in rows] == [repr(v) if isinstance(v, float) else str(v) for v in values]
    assert cli("verify", url(source), target).returncode == 0
    assert (await compare(source, target)).exact
