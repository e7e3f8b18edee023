"""Keys a serving period hands out: SQLite's AUTOINCREMENT (migration 0006) and key blocks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.db.live import keys
from app.db.migrate import downgrade_async, upgrade_async
from tests.conftest import Postgres, create_database, unique


def _indexes(path: Path) -> set[tuple[str, str]]:
    db = sqlite3.connect(path)
    try:
        return {
            (str(r[0]), str(r[1]))
            for r in db.execute(
                "SELECT name, coalesce(sql, '') FROM sqlite_master WHERE type = 'index'"
            )
        }
    finally:
        db.close()


async def test_sqlite_keys_are_never_handed_out_twice(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade_async(url, "0005")
    before = _indexes(path)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("INSERT INTO organizations (name, slug) VALUES ('A', 'a'), ('B', 'b')")
    db.execute("INSERT INTO barbershop_locations (organization_id, name) VALUES (2, 'Main')")
    db.close()
    await upgrade_async(url, "0006")
    assert _indexes(path) == before  # every index made again, the same
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA foreign_keys = ON")
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute("SELECT id, slug FROM organizations").fetchall() == [(1, "a"), (2, "b")]
        assert db.execute("SELECT organization_id FROM barbershop_locations").fetchall() == [(2,)]
        # The newest key, deleted, does not come back (it did before 0006).
        db.execute("INSERT INTO organizations (name, slug) VALUES ('C', 'c')")
        db.execute("DELETE FROM organizations WHERE slug = 'c'")
        db.execute("INSERT INTO organizations (name, slug) VALUES ('D', 'd')")
        assert db.execute("SELECT max(id) FROM organizations").fetchone() == (4,)
    finally:
        db.close()
    await downgrade_async(url, "0005")
    assert _indexes(path) == before
    await upgrade_async(url)


def test_a_block_follows_every_key_and_the_newest_block() -> None:
    assert keys.next_block(0, 0) == (keys.BLOCK, 2 * keys.BLOCK)
    assert keys.next_block(0, 350_000) == (keys.BLOCK, 2 * keys.BLOCK)
    assert keys.next_block(2 * keys.BLOCK, 350_000) == (2 * keys.BLOCK, 3 * keys.BLOCK)
    assert keys.next_block(2 * keys.BLOCK, 2 * keys.BLOCK + 5) == (3 * keys.BLOCK, 4 * keys.BLOCK)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_a_claimed_block_is_where_new_keys_start(
    kind: str, postgres: Postgres, tmp_path: Path
) -> None:
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'block.db'}"
    else:
        url = await create_database(postgres, unique("blocks").replace("-", "_"))
    await upgrade_async(url)
    engine = create_async_engine(url, poolclass=NullPool)
    insert = text("INSERT INTO organizations (name, slug) VALUES (:n, :n) RETURNING id")
    try:
        async with engine.begin() as conn:
            first = await conn.scalar(insert, {"n": "before"})
            end = await keys.claim(conn, kind == "sqlite", 0, other=keys.BLOCK + 7)
        assert end == 3 * keys.BLOCK  # past the other side's highest key, a block further
        async with engine.begin() as conn:
            assert await conn.scalar(insert, {"n": "after"}) == 2 * keys.BLOCK
            assert await keys.highest(conn, kind == "sqlite") == 2 * keys.BLOCK
        assert first == 1
        if kind == "postgresql":  # the block's end is a hard stop for PostgreSQL's sequences
            async with engine.begin() as conn:
                await conn.execute(
                    text("SELECT setval('organizations_id_seq', :v)"), {"v": end - 1}
                )
            with pytest.raises(Exception, match="reached maximum value"):
                async with engine.begin() as conn:
                    await conn.scalar(insert, {"n": "past the end"})
    finally:
        await engine.dispose()
