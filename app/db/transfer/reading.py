"""The way back's reading side: one table's batches read from PostgreSQL and converted
for SQLite, in a worker process (to_sqlite.py writes them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.db.transfer import pg, workers
from app.db.transfer.load import collector_paused, convert_rows
from app.db.transfer.report import TransferError
from app.db.transfer.schema import Column, Table, quote
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
# Kinds whose values PostgreSQL may hold beyond what SQLite's dates (and Python) hold:
# infinity, years before 1 or after 9999 (in UTC), the time 24:00:00.
_BOUNDED = (*_STAMPS, "date", "time")
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
    bounded: list[int]  # the columns whose values may lie beyond SQLite's (_BOUNDED)
    options: Options
    size: int

    @classmethod
    def of(
        cls, dsn: str, table: Table, types: list[tuple[str, Type]], options: Options, size: int
    ) -> Reading:
        stamps = [i for i, (_n, t) in enumerate(types) if t.kind in _STAMPS]
        convert = [i for i, (_n, t) in enumerate(types) if t.kind not in (*_AS_READ, *_STAMPS)]
        bounded = [i for i, (_n, t) in enumerate(types) if t.kind in _BOUNDED]
        return cls(dsn, table, types, convert, stamps, bounded, options, size)


def _within(column: Column) -> str:
    """SQL true where the column's value is one SQLite's dates (and Python) hold."""
    q = quote(column.name)
    kind = column.type.kind
    if kind in _STAMPS:
        v = f"({q} AT TIME ZONE 'UTC')" if kind == "timestamptz" else q
        return f"{v} >= '0001-01-01' AND {v} < '10000-01-01'"
    if kind == "date":
        return f"{q} >= '0001-01-01' AND {q} <= '9999-12-31'"
    return f"{q} < '24:00:00'"


def _stamps(table: Table, stamps: list[int], bounded: list[int]) -> list[str]:
    """What to select for each column: a date and time as the text SQLite keeps (UTC,
    without an offset, to the microsecond), written by PostgreSQL (to_char() gives what
    isoformat() does, which cost about 2 us a value in Python). A value of a bounded
    column beyond what SQLite's dates hold (infinite, past year 9999, before year 1,
    24:00:00) is selected as NULL there and added at the end of the row as PostgreSQL's
    text, for _beyond() to refuse by its key."""
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
        exprs[i] = f"to_char({utc}, 'YYYY-MM-DD HH24:MI:SS.US')"
    for i in bounded:
        within = _within(table.columns[i])
        exprs[i] = f"CASE WHEN {within} THEN {exprs[i]} END"
        exprs.append(f"CASE WHEN NOT ({within}) THEN {quote(table.columns[i].name)}::text END")
    return exprs


def _beyond(
    batch: list[tuple[object, ...]], nkeys: int, reading: Reading
) -> list[tuple[object, ...]]:
    """The rows _stamps() selected, without the values added at their end; a value there
    (one SQLite's dates cannot hold) is refused, named by table, column, key and value,
    before its batch is written."""
    if not reading.bounded or not batch:
        return batch
    width = nkeys + len(reading.types)
    for row in batch:
        for j, i in enumerate(reading.bounded):
            text = row[width + j]
            if text is not None:
                column, key = reading.types[i][0], ", ".join(map(str, row[:nkeys]))
                raise TransferError(
                    f"{reading.table.name}.{column}: key {key}: {text} is beyond what "
                    "SQLite's dates hold (years 1 to 9999, times before 24:00); change it "
                    "on PostgreSQL, then copy again"
                )
    return [row[:width] for row in batch]


def read_batch(reading: Reading, after: list[object] | None) -> Rows:
    """In a worker: the batch after key `after`, converted for SQLite, and its last key."""
    table = reading.table

    async def read(conn: asyncpg.Connection) -> Rows:
        columns = [c.name for c in table.columns]
        exprs = _stamps(table, reading.stamps, reading.bounded)
        batch = await pg.read_batch(
            conn, "public", table, columns, after, reading.size, exprs=exprs
        )
        nkeys = len(pg.key_columns(table))
        last = list(batch[-1][:nkeys]) if batch else None
        batch = _beyond(batch, nkeys, reading)
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
