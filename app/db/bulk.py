"""Bulk loading: COPY in batches on PostgreSQL, with constraints rebuilt after the load."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, cast

from sqlalchemy import Table, insert, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.models import Base

if TYPE_CHECKING:
    import asyncpg

BATCH = 20_000
Row = tuple[object, ...]


def _batches(rows: Iterator[Row], size: int = BATCH) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def write_rows(
    conn: AsyncConnection, table: Table, columns: Sequence[str], rows: Iterator[Row]
) -> int:
    count = 0
    if conn.dialect.name == "postgresql":
        raw = await conn.get_raw_connection()
        driver = cast("asyncpg.Connection", raw.driver_connection)  # the dialect is asyncpg's
        for batch in _batches(rows):
            await driver.copy_records_to_table(table.name, records=batch, columns=list(columns))
            count += len(batch)
    else:
        stmt = insert(table)
        for batch in _batches(rows):
            await conn.execute(stmt, [dict(zip(columns, row, strict=True)) for row in batch])
            count += len(batch)
    return count


async def defer_constraints(conn: AsyncConnection) -> list[str]:
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
