"""Keys never collide across the two sides: each serving period draws from a block of its own.

Every switch, planned or automatic, gives the side that starts serving the block
after everything either side has handed out: [start, start + BLOCK) for every table.
PostgreSQL's sequences are capped at the block's end (MAXVALUE), so a PostgreSQL that
failed and still takes a straggling write can only use keys of its own block; SQLite
cannot write at all once it stops serving (its guard is checked under its write lock).
The state row keeps the end of the newest block (`block_end`) on both sides, so a
switch made while the other side is unreachable still knows where that side's keys end.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.live import capture

BLOCK = 100_000_000  # keys per table per serving period


def next_block(block_end: int, highest: int) -> tuple[int, int]:
    """The block after the newest one and after every key handed out: (start, end)."""
    start = max(block_end, highest + 1, 1)
    start = -(-start // BLOCK) * BLOCK
    return start, start + BLOCK


def _sqlite_highest_sql() -> str:
    parts = [f"SELECT max(id) AS m FROM {t.name}" for t in capture.tables()]
    parts.append("SELECT max(seq) FROM sqlite_sequence")
    return f"SELECT coalesce(max(m), 0) FROM ({' UNION ALL '.join(parts)})"


def _sqlite_claim_sql() -> list[str]:
    """sqlite_sequence set so that every table's next key is :start (never lowered)."""
    statements = []
    for table in capture.tables():
        statements += [
            f"INSERT INTO sqlite_sequence (name, seq) SELECT '{table.name}', 0 "
            f"WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = '{table.name}')",
            f"UPDATE sqlite_sequence SET seq = max(seq, :start - 1) WHERE name = '{table.name}'",
        ]
    return statements


def sqlite_claim_sync(db: sqlite3.Connection, block_end: int) -> tuple[int, int]:
    """The next block for SQLite, inside the caller's write transaction (sqlite3)."""
    highest = int(db.execute(_sqlite_highest_sql()).fetchone()[0])
    start, end = next_block(block_end, highest)
    for statement in _sqlite_claim_sql():
        db.execute(statement, {"start": start})
    return start, end


async def claim(conn: AsyncConnection, sqlite: bool, block_end: int, other: int = 0) -> int:
    """Give this side the next block, inside the caller's write transaction; its end.

    `other` is the highest key known on the side that stops serving (0 if unknown:
    `block_end` already covers every key it can hand out).
    """
    start, end = next_block(block_end, max(await highest(conn, sqlite), other))
    if sqlite:
        for statement in _sqlite_claim_sql():
            await conn.execute(text(statement), {"start": start})
        return end
    for table in capture.tables():
        sequence = await conn.scalar(
            text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table.name}
        )
        await conn.execute(
            text(f"ALTER SEQUENCE {sequence} MAXVALUE {end - 1} RESTART WITH {start}")
        )
    return end


async def highest(conn: AsyncConnection, sqlite: bool) -> int:
    """The highest key this side has handed out, in any table."""
    if sqlite:
        return int(await conn.scalar(text(_sqlite_highest_sql())) or 0)
    parts = " UNION ALL ".join(f"SELECT max(id) AS m FROM {t.name}" for t in capture.tables())
    return int(await conn.scalar(text(f"SELECT coalesce(max(m), 0) FROM ({parts}) AS k")) or 0)
