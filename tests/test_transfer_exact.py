"""db copy on a file shaped like BookedBarber's own, both ways, judged by an independent checker."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from rich.console import Console

from app.db import transfer
from app.db.invariants import ServiceRules
from tests.conftest import Postgres, create_database, drop_database, pg_fetch, unique
from tests.conftest import db_cli as cli
from tests.conftest import sqlite_file_url as url
from tests.messy_sqlite import LONG, ODDITIES, build_backend, build_messy
from tests.transfer_checker import compare


@pytest.fixture
async def databases(postgres: Postgres) -> AsyncIterator[Callable[[], object]]:
    """Fresh PostgreSQL databases on demand, dropped after the test."""
    made: list[str] = []

    async def make() -> str:
        name = unique("exact").replace("-", "_")
        made.append(name)
        return await create_database(postgres, name)

    yield make
    for name in made:
        await drop_database(postgres, name)


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"), width=120)


def not_null_count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return sum(
            sum(1 for r in conn.execute(f'PRAGMA table_info("{t}")') if r[3] and not r[5])
            for t in tables
        )
    finally:
        conn.close()


async def test_backend_file_both_ways_exact(
    databases: Callable[[], object], tmp_path: Path
) -> None:
    source = tmp_path / "backend.db"
    build_backend(source, appointments=1_500)
    target = await databases()  # type: ignore[misc]
    result = cli("copy", url(source), target)
    assert result.returncode == 0, result.stderr[-3000:]
    # Piped: the whole report, no 80-column cut of the 59-character table name's row.
    assert any(line.startswith(LONG + " ") for line in result.stderr.splitlines())
    check = await compare(source, target)
    assert check.exact, check.samples
    assert check.tables == 33
    assert check.source_rows == check.target_rows > 4_000
    assert f"copied {check.target_rows:,} rows" in result.stdout

    # NOT NULL (primary keys aside), defaults and named unique constraints survive.
    not_null = await pg_fetch(
        target,
        "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
        "AND c.relkind = 'r' AND a.attnum > 0 AND a.attnotnull AND NOT EXISTS ("
        "SELECT 1 FROM pg_index x WHERE x.indrelid = c.oid AND x.indisprimary "
        "AND a.attnum = ANY(x.indkey))",
    )
    assert not_null[0][0] == not_null_count(source)
    defaults = await pg_fetch(
        target,
        "SELECT table_name, column_name, column_default FROM information_schema.columns "
        "WHERE table_schema = 'public' AND column_default IS NOT NULL "
        "AND column_default NOT LIKE 'nextval%' ORDER BY 1, 2",
    )
    shown = {(r[0], r[1]): r[2] for r in defaults}
    assert shown[("appointments", "status")] == "'pending'::character varying"
    assert shown[("barbershop_locations", "is_active")] == "true"
    assert shown[("organizations", "created_at")] == "CURRENT_TIMESTAMP"
    assert len(shown) == 9
    constraints = {
        r[0]: r[1]
        for r in await pg_fetch(
            target,
            "SELECT conname, contype::text FROM pg_constraint "
            "WHERE connamespace = 'public'::regnamespace",
        )
    }
    assert constraints["uq_users_email"] == "u"
    assert constraints["pk_users"] == "p"
    assert constraints["fk_users_primary_location_id_barbershop_locations"] == "f"
    long_fk = [n for n in constraints if n.startswith(f"fk_{LONG}"[:40])]
    assert len(long_fk) == 1, long_fk
    assert len(long_fk[0]) <= 63
    # A VARCHAR column referencing an INTEGER key: checked by value, reported, not added.
    assert "webhook_endpoints: (created_by) -> users: types differ" in result.stderr
    assert not any(n.startswith("fk_webhook_endpoints_created_by") for n in constraints)

    back = tmp_path / "back.db"
    again = cli("copy", target, url(back), "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads(again.stdout)
    assert report["ok"] is True
    assert report["rows_total"] == check.target_rows
    back_check = await compare(back, target)
    assert back_check.exact, back_check.samples
    assert not_null_count(back) == not_null_count(source)
    schema = "\n".join(
        r[0]
        for r in sqlite3.connect(back).execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"
        )
    )
    assert "sqlite_autoindex" not in schema
    assert 'CONSTRAINT "uq_users_email" UNIQUE ("email")' in schema
    assert "DEFAULT 'pending'" in schema
    verified = cli("verify", target, url(back))
    assert verified.returncode == 0, verified.stderr[-2000:]


async def test_checker_can_tell(databases: Callable[[], object], tmp_path: Path) -> None:
    source = tmp_path / "messy.db"
    build_messy(source, filler_tables=0)
    target = await databases()  # type: ignore[misc]
    await transfer.copy(url(source), target, transfer.CopyOptions(), quiet())
    assert (await compare(source, target)).exact
    await pg_fetch(target, "UPDATE purchases SET amount = amount + 0.001 WHERE id = 7")
    await pg_fetch(target, "DELETE FROM prices WHERE id = 3")
    changed = await compare(source, target)
    assert (changed.changed, changed.lost) == (1, 1)
    assert any("purchases (7,): amount" in s for s in changed.samples)


@pytest.mark.parametrize(
    ("change", "reported", "refused"), [o[1:] for o in ODDITIES], ids=[o[0] for o in ODDITIES]
)
async def test_oddity_gets_a_home_or_strict_refuses(
    databases: Callable[[], object], tmp_path: Path, change: str, reported: str, refused: str
) -> None:
    source = tmp_path / "odd.db"
    build_backend(source, appointments=120)
    with sqlite3.connect(source) as conn:
        conn.execute(change)
    target = await databases()  # type: ignore[misc]
    report = await transfer.copy(url(source), target, transfer.CopyOptions(), quiet())
    assert report.ok
    assert reported in "\n".join(f.line() for f in report.findings)
    check = await compare(source, target)
    assert check.exact, check.samples

    strict = await databases()  # type: ignore[misc]
    with pytest.raises(transfer.TransferError) as refusal:
        await transfer.copy(url(source), strict, transfer.CopyOptions(strict=True), quiet())
    assert refused in str(refusal.value)
    assert "(--strict)" in str(refusal.value)


async def test_instants_outside_pythons_years_are_copied_as_they_are(
    databases: Callable[[], object], tmp_path: Path
) -> None:
    """Text naming an instant in 1 BC or 10000 once in UTC: PostgreSQL keeps it, Python's
    datetime cannot (the report's sample shows it as written; the copy once crashed there)."""
    source = tmp_path / "edges.db"
    build_backend(source, appointments=120)
    edges = {13: "0001-01-01 00:00:00+01:00", 14: "9999-12-31T23:30:00-01:00"}
    with sqlite3.connect(source) as conn:
        for key, text in edges.items():
            conn.execute("UPDATE appointments SET created_at = ? WHERE id = ?", (text, key))
    target = await databases()  # type: ignore[misc]
    report = await transfer.copy(url(source), target, transfer.CopyOptions(strict=True), quiet())
    assert report.ok
    for key, text in edges.items():
        rows = await pg_fetch(
            target,
            "SELECT created_at = $1::text::timestamptz FROM appointments WHERE id = $2",
            text,
            key,
        )
        assert rows[0][0] is True, (key, text)


async def test_infinity_in_real_fits_double_precision(
    databases: Callable[[], object], tmp_path: Path
) -> None:
    source = tmp_path / "inf.db"
    build_backend(source, appointments=120)
    with sqlite3.connect(source) as conn:
        conn.execute("UPDATE barbershop_locations SET latitude = 9e999 WHERE id = 2")
        conn.execute("UPDATE barbershop_locations SET longitude = -9e999 WHERE id = 3")
    target = await databases()  # type: ignore[misc]
    report = await transfer.copy(url(source), target, transfer.CopyOptions(strict=True), quiet())
    assert report.ok
    rows = await pg_fetch(
        target,
        "SELECT (SELECT latitude::text FROM barbershop_locations WHERE id = 2), "
        "(SELECT longitude::text FROM barbershop_locations WHERE id = 3)",
    )
    assert tuple(rows[0]) == ("Infinity", "-Infinity")
    assert (await compare(source, target)).exact


async def test_service_rules_only_on_the_service_schema(
    databases: Callable[[], object], tmp_path: Path
) -> None:
    # The backend-shaped file has appointments without a user (legacy NULLs) and no
    # service migrations on the target: the service's rules do not apply, the copy is exact.
    source = tmp_path / "backend.db"
    build_backend(source, appointments=200)
    target = await databases()  # type: ignore[misc]
    opts = transfer.CopyOptions(rules=ServiceRules())
    report = await transfer.copy(url(source), target, opts, quiet())
    assert report.ok
    assert not [f for f in report.findings if f.kind == "invariant"]
    # A source without the service's columns never reaches them either.
    messy = tmp_path / "messy.db"
    build_messy(messy, filler_tables=0)
    other = await databases()  # type: ignore[misc]
    assert (await transfer.copy(url(messy), other, opts, quiet())).ok
