"""An independent value-by-value comparison of a SQLite file and a PostgreSQL schema.

Shares no code with app.db.transfer: its own reads (sqlite3 returning raw bytes with
each value's storage class, PostgreSQL values as their ::text output), and its own
reading of each value by the PostgreSQL column's type. Used by the tests and by
bench/transfer.py to judge both this tool and pgloader the same way."""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import asyncpg

TRUE = {"1", "t", "true", "y", "yes", "on"}
FALSE = {"0", "f", "false", "n", "no", "off"}
CHUNK = 20_000


class Bad:
    """A value that cannot be read as the column's type: equal only to the same raw value."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bad) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(("bad", repr(self.raw)))

    def __repr__(self) -> str:
        return f"Bad({self.raw!r})"


@dataclass
class Result:
    tables: int = 0
    source_rows: int = 0
    target_rows: int = 0
    lost: int = 0  # rows the target lacks
    extra: int = 0  # rows only the target has
    changed: int = 0  # rows present on both sides whose values differ
    missing_tables: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not (self.lost or self.extra or self.changed or self.missing_tables)


def _moment(text: str) -> dt.datetime:
    text = text.strip().replace("Z", "+00:00")
    if len(text) == 10:
        text += " 00:00:00"
    if text[-3:-2] in "+-" and text[-6:-5] != ":" and text[-3:].isdigit() and ":" in text[-9:]:
        text += ":00"  # PostgreSQL writes +00, not +00:00
    return dt.datetime.fromisoformat(text)


def _utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def _exact_number(storage: str, raw: Any) -> Decimal:
    if storage == "integer":
        return Decimal(raw)
    if storage == "real":
        if not math.isfinite(raw):
            raise ValueError("infinite")
        return Decimal(repr(raw))
    number = Decimal(raw.decode().strip())
    if not number.is_finite():
        raise ValueError("infinite")
    return number


def _plain(storage: str, raw: Any, strip_nul: bool) -> str:
    if storage == "integer":
        return str(raw)
    if storage == "real":
        return repr(raw)
    text: str = raw.decode()  # strict: invalid UTF-8 is not text
    return text.replace("\x00", "") if strip_nul else text


def _bytes(storage: str, raw: Any) -> bytes:
    if storage in ("text", "blob"):
        return bytes(raw)
    return (repr(raw) if storage == "real" else str(raw)).encode()


def _freeze(value: Any) -> Any:
    """JSON as a hashable value; numbers by value (1, 1.0 and 1.00 alike)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("[", *(_freeze(v) for v in value))
    return value


def _json(text: str) -> Any:
    return _freeze(json.loads(text, parse_float=Decimal))


def _kind(pg_type: str) -> str:
    if pg_type in ("smallint", "integer", "bigint"):
        return "int"
    if pg_type.startswith("numeric"):
        return "numeric"
    if pg_type in ("double precision", "real"):
        return "float"
    if pg_type.startswith("timestamp") and "with time zone" in pg_type:
        return "timestamptz"
    if pg_type.startswith("timestamp"):
        return "timestamp"
    if pg_type.startswith("time"):
        return "time"
    if pg_type == "boolean":
        return "bool"
    if pg_type in ("date", "bytea", "json", "jsonb", "uuid"):
        return pg_type.replace("jsonb", "json")
    return "text"


def _lite_int(storage: str, raw: Any) -> int:
    number = _exact_number(storage, raw)
    if number != number.to_integral_value():
        raise ValueError("fraction")
    return int(number)


def _lite_float(storage: str, raw: Any) -> float:
    return float(raw.decode()) if storage in ("text", "blob") else float(raw)


def _lite_bool(storage: str, raw: Any) -> bool:
    if storage == "integer" and raw in (0, 1):
        return bool(raw)
    word = _plain(storage, raw, False).strip().lower()
    if word in TRUE | FALSE:
        return word in TRUE
    raise ValueError("not a boolean")


def _lite_moment(storage: str, raw: Any) -> dt.datetime:
    """An instant in UTC: numbers are Unix seconds, text is ISO 8601 (naive means UTC)."""
    if storage in ("integer", "real"):
        return dt.datetime.fromtimestamp(raw, dt.UTC)
    return _utc(_moment(raw.decode()))


def _lite_date(storage: str, raw: Any) -> dt.date:
    moment = _lite_moment(storage, raw)
    if moment.time() != dt.time(0):
        raise ValueError("time of day")
    return moment.date()


def _lite_uuid(storage: str, raw: Any) -> uuid.UUID:
    return uuid.UUID(bytes=bytes(raw)) if storage == "blob" else uuid.UUID(raw.decode())


# Column kind -> how a SQLite value (storage class, raw) reads as it; text is the rest.
_LITE: dict[str, Callable[[str, Any], Any]] = {
    "int": _lite_int,
    "numeric": _exact_number,
    "float": _lite_float,
    "bool": _lite_bool,
    "timestamptz": _lite_moment,
    "timestamp": lambda storage, raw: _lite_moment(storage, raw).replace(tzinfo=None),
    "date": _lite_date,
    "time": lambda storage, raw: dt.time.fromisoformat(raw.decode().strip()),
    "bytea": _bytes,
    "json": lambda storage, raw: _json(_plain(storage, raw, False)),
    "uuid": _lite_uuid,
}


def lite_reader(kind: str, strip_nul: bool) -> Callable[[str, Any], Any]:
    """Read one SQLite value (storage class, raw) as a value of the PostgreSQL column's type."""
    read = _LITE.get(kind) or (lambda storage, raw: _plain(storage, raw, strip_nul))

    def safe(storage: str, raw: Any) -> Any:
        if storage == "null":
            return None
        try:
            return read(storage, raw)
        except (ValueError, InvalidOperation, UnicodeDecodeError, OverflowError, OSError):
            return Bad(raw)

    return safe


# Column kind -> how PostgreSQL's text output of a value reads; text stays as it is.
_PG: dict[str, Callable[[str], Any]] = {
    "int": int,
    "numeric": Decimal,
    "float": float,
    "bool": lambda text: text == "true",
    "timestamptz": lambda text: _utc(_moment(text)),
    "timestamp": _moment,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "bytea": lambda text: bytes.fromhex(text[2:]),
    "json": _json,
    "uuid": uuid.UUID,
}


def pg_reader(kind: str) -> Callable[[str | None], Any]:
    """Read PostgreSQL's text output of a value."""
    convert = _PG.get(kind)

    def read(text: str | None) -> Any:
        if text is None or convert is None:
            return text
        return convert(text)

    return read


async def _pg_tables(conn: Any, schema: str) -> dict[str, tuple[list[tuple[str, str]], list[str]]]:
    rows = await conn.fetch(
        """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS type
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY c.relname, a.attnum
        """,
        schema,
    )
    tables: dict[str, tuple[list[tuple[str, str]], list[str]]] = {}
    for r in rows:
        tables.setdefault(r["relname"], ([], []))[0].append((r["attname"], r["type"]))
    keys = await conn.fetch(
        """
        SELECT c.relname, ARRAY(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY u(n, o)
               JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = u.n ORDER BY u.o)
        FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND x.indisprimary
        """,
        schema,
    )
    for relname, cols in keys:
        if relname in tables:
            tables[relname][1].extend(cols)
    return tables


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lite_rows(
    db: sqlite3.Connection, table: str, columns: list[str], order: str | None
) -> Iterator[tuple[tuple[str, Any], ...]]:
    parts = ", ".join(f"typeof({_q(c)}), {_q(c)}" for c in columns)
    sql = f"SELECT {parts} FROM {_q(table)}" + (f" ORDER BY {_q(order)}" if order else "")
    cursor = db.execute(sql)
    while chunk := cursor.fetchmany(CHUNK):
        for row in chunk:
            yield tuple((row[2 * i], row[2 * i + 1]) for i in range(len(columns)))


async def compare(
    sqlite_file: Path, pg_url: str, schema: str = "public", strip_nul: bool = False
) -> Result:
    """Every SQLite table against the PostgreSQL table of the same name, value by value."""
    result = Result()
    db = sqlite3.connect(sqlite_file)
    db.text_factory = bytes
    conn = await asyncpg.connect(
        pg_url.replace("+asyncpg", ""), server_settings={"TimeZone": "UTC"}
    )
    try:
        pg_tables = await _pg_tables(conn, schema)
        names = [
            r[0].decode()
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "AND name NOT LIKE '_bookedbarber%'"
            )
        ]
        for name in sorted(names):
            if name not in pg_tables:
                result.missing_tables.append(name)
                result.source_rows += db.execute(f"SELECT count(*) FROM {_q(name)}").fetchone()[0]
                continue
            result.tables += 1
            await _table(db, conn, schema, name, *pg_tables[name], strip_nul, result)
    finally:
        db.close()
        await conn.close()
    return result


async def _table(
    db: sqlite3.Connection,
    conn: Any,
    schema: str,
    name: str,
    pg_columns: list[tuple[str, str]],
    key: list[str],
    strip_nul: bool,
    result: Result,
) -> None:
    lite_columns = {
        r[1].decode() if isinstance(r[1], bytes) else r[1]
        for r in db.execute(f"PRAGMA table_info({_q(name)})")
    }
    columns = [(c, t) for c, t in pg_columns if c in lite_columns]
    for c in lite_columns - {c for c, _t in pg_columns}:
        result.samples.append(f"{name}.{c}: column lost")
        result.changed += 1
    names = [c for c, _t in columns]
    lite_read = [lite_reader(_kind(t), strip_nul) for _c, t in columns]
    pg_read = [pg_reader(_kind(t)) for _c, t in columns]
    at = [names.index(k) for k in key if k in names] if key and set(key) <= set(names) else []
    select = ", ".join(f"{_q(c)}::text" for c in names)

    def from_lite(row: tuple[tuple[str, Any], ...]) -> tuple[Any, ...]:
        return tuple(
            f(s.decode() if isinstance(s, bytes) else s, v)
            for f, (s, v) in zip(lite_read, row, strict=True)
        )

    source: Counter[tuple[Any, ...]] | dict[tuple[Any, ...], tuple[Any, ...]]
    if at:
        source = {}
        for row in _lite_rows(db, name, names, None):
            values = from_lite(row)
            source[tuple(values[i] for i in at)] = values
    else:
        source = Counter(from_lite(row) for row in _lite_rows(db, name, names, None))
    result.source_rows += len(source) if at else sum(source.values())  # type: ignore[arg-type]
    async with conn.transaction():
        cursor = conn.cursor(f"SELECT {select} FROM {_q(schema)}.{_q(name)}", prefetch=CHUNK)
        async for record in cursor:
            values = tuple(f(v) for f, v in zip(pg_read, record, strict=True))
            result.target_rows += 1
            if at:
                k = tuple(values[i] for i in at)
                mine = source.pop(k, None)  # type: ignore[call-overload]
                if mine is None:
                    result.extra += 1
                    _sample(result, f"{name} {k}: only in PostgreSQL")
                elif mine != values:
                    result.changed += 1
                    diff = [
                        f"{n}: {a!r} vs {b!r}"
                        for n, a, b in zip(names, mine, values, strict=True)
                        if a != b
                    ]
                    _sample(result, f"{name} {k}: {'; '.join(diff)}")
            elif source[values]:  # type: ignore[index]
                source[values] -= 1  # type: ignore[index]
            else:
                result.extra += 1
                _sample(result, f"{name}: row only in PostgreSQL {values}")
    left = len(source) if at else sum(source.values())  # type: ignore[arg-type]
    if left:
        result.lost += left
        _sample(result, f"{name}: {left} rows missing from PostgreSQL, e.g. {next(iter(source))}")


def _sample(result: Result, text: str) -> None:
    if len(result.samples) < 20:
        result.samples.append(text[:300])
