"""The way back's reading side: one table's batches read from PostgreSQL and converted
for SQLite, in a worker process (to_sqlite.py writes them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.db.transfer import pg, values, workers
from app.db.transfer.load import collector_paused, convert_rows
from app.db.transfer.schema import Table, quote
from app.db.transfer.types import INT_RANGES, Type
from app.db.transfer.values import Options

if TYPE_CHECKING:
    import asyncpg

# Kinds asyncpg hands over as SQLite stores them: PostgreSQL already held each value to
# its column (range, length, UTF-8 without NUL), so their converters would return every
# value unchanged. The other kinds (numbers, booleans, times, UUIDs) are converted.
_AS_READ = {*INT_RANGES, "text", "varchar", "bytea", "json", "jsonb"}
# Kinds PostgreSQL writes out as SQLite keeps them (_stamps()).
_STAMPS = ("timestamptz", "timestamp")
# A batch converted for SQLite, and its last key (None when it is empty).
Rows = tuple[list[tuple[object, ...]], list[object] | None]


@dataclass
class Reading:
    """What a worker needs to read one table's batches and convert them for SQLite."""

    dsn: str
    table: Table
    types: list[tuple[str, Type]]  # (SQLite column, the PostgreSQL column's type)
    convert: list[int]  # the columns whose values need converting in Python
    stamps: list[int]  # the date and time columns PostgreSQL writes out (_stamps())
    options: Options
    size: int

    @classmethod
    def of(
        cls, dsn: str, table: Table, types: list[tuple[str, Type]], options: Options, size: int
    ) -> Reading:
        stamps = [i for i, (_n, t) in enumerate(types) if t.kind in _STAMPS]
        convert = [i for i, (_n, t) in enumerate(types) if t.kind not in (*_AS_READ, *_STAMPS)]
        return cls(dsn, table, types, convert, stamps, options, size)


def _stamps(table: Table, stamps: list[int]) -> list[str]:
    """What to select for each column: a date and time as the text SQLite keeps (UTC,
    without an offset, to the microsecond), written by PostgreSQL where Python could hold
    the value (to_char() gives what isoformat() does, which cost about 2 us a value in
    Python); any other (infinite, past year 9999, before year 1) added at the end of the
    row as it is, for the Python converter."""
    # A type the copy has no kind for (interval, arrays, geometric, bit strings, xml,
    # ranges...) as PostgreSQL writes it, the text its input reads back: asyncpg's Python
    # objects would be stored by their repr, which neither PostgreSQL nor anyone reads.
    exprs = [
        f"{quote(c.name)}::text" if c.type.kind == "any" else quote(c.name) for c in table.columns
    ]
    for i in stamps:
        column = table.columns[i]
        q = quote(column.name)
        utc = f"({q} AT TIME ZONE 'UTC')" if column.type.kind == "timestamptz" else q
        within = f"{utc} >= '0001-01-01' AND {utc} < '10000-01-01'"
        exprs[i] = f"CASE WHEN {within} THEN to_char({utc}, 'YYYY-MM-DD HH24:MI:SS.US') END"
        exprs.append(f"CASE WHEN NOT ({within}) THEN {q} END")
    return exprs


def _stamped(
    batch: list[tuple[object, ...]], nkeys: int, reading: Reading
) -> list[tuple[object, ...]]:
    """The rows _stamps() selected, each date and time column's text filled in from the
    value added at the end where PostgreSQL wrote none, those values then left off."""
    if not reading.stamps or not batch:
        return batch
    width = nkeys + len(reading.types)
    columns: list[Sequence[object]] = list(zip(*batch, strict=True))
    for j, i in enumerate(reading.stamps):
        raw = columns[width + j]
        if raw.count(None) == len(raw):
            continue
        convert = values.to_sqlite(reading.types[i][1], reading.options)
        columns[nkeys + i] = [
            text if value is None else convert(value)
            for text, value in zip(columns[nkeys + i], raw, strict=True)
        ]
    return list(zip(*columns[:width], strict=True))


def read_batch(reading: Reading, after: list[object] | None) -> Rows:
    """In a worker: the batch after key `after`, converted for SQLite, and its last key."""
    table = reading.table

    async def read(conn: asyncpg.Connection) -> Rows:
        columns = [c.name for c in table.columns]
        exprs = _stamps(table, reading.stamps)
        batch = await pg.read_batch(
            conn, "public", table, columns, after, reading.size, exprs=exprs
        )
        nkeys = len(pg.key_columns(table))
        last = list(batch[-1][:nkeys]) if batch else None
        batch = _stamped(batch, nkeys, reading)
        rows = convert_rows(
            table.name,
            reading.types,
            batch,
            nkeys,
            reading.options,
            target=False,
            only=reading.convert,
        )
        return rows, last

    with collector_paused():  # as in the writing process
        return workers.with_connection(reading.dsn, read)
