"""What each SQLite column really holds: a home for every value, or a refusal naming it."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from app.db.transfer.checks import candidates, sure
from app.db.transfer.report import Finding, describe
from app.db.transfer.schema import Table, quote
from app.db.transfer.types import INT_RANGES, Type, Unfit, wider
from app.db.transfer.values import Converter, Options, to_python

SAMPLES = 3


@dataclass
class Probe:
    failed: int = 0
    failures: list[tuple[object, object, str]] = field(default_factory=list)  # key, value, reason
    all_numbers: bool = True
    converted: int = 0
    nul_removed: list[object] = field(default_factory=list)
    # key, value, result
    conversions: list[tuple[object, object, object]] = field(default_factory=list)
    # Values read as another kind of thing: 'true' as a boolean, a number as Unix seconds.
    reinterpreted: list[tuple[object, object, str]] = field(default_factory=list)
    reinterpreted_count: int = 0
    sure: int = 0  # converted values SQL vouched for (counted, never run through Python)

    def scan(self, cursor: sqlite3.Cursor, n: int, t: Type, convert: Converter) -> None:
        """Convert the value after the n keys of every row, noting failures and samples."""
        while rows := cursor.fetchmany(5_000):
            for row in rows:
                value = row[n]
                try:
                    out = convert(value)
                except Unfit as exc:
                    self.failed += 1
                    if len(self.failures) < SAMPLES:
                        self.failures.append((_key(row, n), value, str(exc)))
                    if self.all_numbers and not _is_number(value):
                        self.all_numbers = False
                    continue
                self.converted += 1
                if why := _reinterpreted(t, value):
                    self.reinterpreted_count += 1
                    if len(self.reinterpreted) < SAMPLES:
                        self.reinterpreted.append((_key(row, n), value, why))
                if isinstance(value, str) and "\x00" in value:
                    self.nul_removed.append(_key(row, n))
                if len(self.conversions) < SAMPLES:
                    self.conversions.append((_key(row, n), value, out))


def _reinterpreted(t: Type, value: object) -> str | None:
    if t.kind == "bool" and isinstance(value, str | bytes):
        return "text read as a boolean"
    if t.kind in ("timestamptz", "timestamp", "date") and isinstance(value, int | float):
        return "a number read as Unix seconds"
    if t.kind == "bytea" and isinstance(value, int | float):
        return "a number stored as the bytes of its text"
    return None


def _shown(convert: Converter, value: object) -> object:
    """A value SQL vouched for, as the report shows it converted: Python may not hold it
    (0001-01-01 00:00+01:00 is a time in 1 BC once in UTC, which PostgreSQL keeps), and
    then it is shown as written."""
    try:
        return convert(value)
    except Unfit:
        return value


def _is_number(value: object) -> bool:
    if isinstance(value, int | float):
        return True
    try:
        return Decimal(str(value).strip()).is_finite()
    except (InvalidOperation, ValueError):
        return False


def key_sql(table: Table) -> list[str]:
    return [quote(k) for k in table.primary_key] or ["rowid"]


def _key(row: tuple[object, ...], n: int) -> object:
    return row[0] if n == 1 else tuple(row[:n])


Counts = tuple[int, int]  # values needing a look, and of those the ones SQL vouches for
_BOTH = 1 + (1 << 32)
_LOW = (1 << 32) - 1


def looks(conn: sqlite3.Connection, table: Table, types: list[Type]) -> list[Counts]:
    """One scan for the whole table: per column, what needs a closer look.

    Each column's test runs once per row: a value needing a look adds 1, and 2**32 more
    when SQL vouches for it, so one sum carries both counts."""
    parts = []
    for column, t in zip(table.columns, types, strict=True):
        q = quote(column.name)
        where = f"{q} IS NOT NULL AND ({candidates(q, t)})"
        vouched = sure(q, t)
        hit = f"CASE WHEN {vouched} THEN {_BOTH} ELSE 1 END" if vouched else "1"
        parts.append(f"sum(CASE WHEN {where} THEN {hit} ELSE 0 END)")
    if not parts:
        return []
    row = conn.execute(f"SELECT {', '.join(parts)} FROM {quote(table.name)}").fetchone()
    counts = []
    for value in row:
        both = int(value or 0)  # fewer than 2**31 sure values: the sum stays an int64
        counts.append((both & _LOW, both >> 32))
    return counts


# Kinds whose plain values (storage class and range, JSON validity, no suspect bytes, dates
# and times in printable ASCII) fit every wider home as well: once such a column widens,
# only the values the declared kind did not take need another look.
_NESTED = frozenset(INT_RANGES) | {
    "numeric",
    "float",
    "bool",
    "json",
    "jsonb",
    "varchar",
    "text",
    "timestamptz",
    "timestamp",
    "date",
    "time",
}


def probe(
    conn: sqlite3.Connection,
    table: Table,
    column: str,
    t: Type,
    opts: Options,
    counts: Counts | None = None,
    within: tuple[str, int] | None = None,
) -> Probe:
    """Run the loader's own conversion over every value SQL cannot vouch for.

    counts (from looks()) spare the scans they already answer, and stop the scan at the
    last value needing a look. within: (a condition, how many rows meet it) holding every
    value that may need a look; the scan stops once it has seen them all."""
    q = quote(column)
    key_list = key_sql(table)
    keys = ", ".join(key_list)
    name = quote(table.name)
    convert = to_python(t, Options(opts.round_money, opts.strip_nul))
    result = Probe()
    if counts is not None and counts[0] == 0:
        return result
    where = f"{q} IS NOT NULL AND ({candidates(q, t)})"
    vouched = sure(q, t)
    if vouched and counts is not None and counts[0] == counts[1]:
        _count_sure(conn, table, q, t, f"{where} AND {vouched}", result, counts[1])
        return result
    if vouched:
        # Loose forms SQL can vouch for are counted (and sampled) without Python.
        known = counts[1] if counts is not None else None
        _count_sure(conn, table, q, t, f"{where} AND {vouched}", result, known)
        where = f"{where} AND NOT ({vouched})"
    if counts is not None:
        sql = f"SELECT {keys}, {q} FROM {name} WHERE {where} ORDER BY {keys} LIMIT ?"
        args: list[object] = [counts[0] - counts[1]]
    elif within is not None:
        inner = f"SELECT {keys}, {q} FROM {name} WHERE {within[0]} ORDER BY {keys} LIMIT ?"
        sql = f"SELECT * FROM ({inner}) WHERE {where} ORDER BY {keys}"
        args = [within[1]]
    else:
        sql = f"SELECT {keys}, {q} FROM {name} WHERE {where} ORDER BY {keys}"
        args = []
    result.scan(conn.execute(sql, args), len(key_list), t, convert)
    return result


def _count_sure(
    conn: sqlite3.Connection,
    table: Table,
    q: str,
    t: Type,
    where: str,
    result: Probe,
    known: int | None = None,
) -> None:
    keys = key_sql(table)
    name = quote(table.name)
    n = (
        known
        if known is not None
        else conn.execute(f"SELECT count(*) FROM {name} WHERE {where}").fetchone()[0]
    )
    if not n:
        return
    result.converted += n
    result.sure += n
    convert = to_python(t, Options())
    sample = conn.execute(
        f"SELECT {', '.join(keys)}, {q} FROM {name} WHERE {where} "
        f"ORDER BY {', '.join(keys)} LIMIT {SAMPLES}"
    ).fetchall()
    result.conversions += [(_key(r, len(keys)), r[-1], _shown(convert, r[-1])) for r in sample]
    if t.kind == "bool":
        result.reinterpreted_count += n
        result.reinterpreted += [
            (k, v, "text read as a boolean") for k, v, _o in result.conversions
        ]


def initial_any(conn: sqlite3.Connection, table: Table, column: str) -> Type:
    """A home for a column declared without a type, from the storage classes it holds."""
    q = quote(column)
    ints, reals, texts, blobs = conn.execute(
        f"SELECT sum(typeof({q}) = 'integer'), sum(typeof({q}) = 'real'), "
        f"sum(typeof({q}) = 'text'), sum(typeof({q}) = 'blob') FROM {quote(table.name)}"
    ).fetchone()
    if texts:
        return Type("text")
    if blobs:
        return Type("bytea")
    if reals:
        return Type("numeric")
    return Type("int8") if ints else Type("text")


def _refusal(table: str, column: str, t: Type, p: Probe, what: str) -> str:
    key, value, reason = p.failures[0]
    return (
        f"{table}.{column} at key {describe(key)}: value {describe(value)} does not fit "
        f"{t.pg()} ({reason}; {p.failed} values in all do not fit){what}"
    )


def home(
    conn: sqlite3.Connection,
    table: Table,
    column: str,
    t: Type,
    opts: Options,
    strict: bool,
    counts: Counts | None = None,
) -> tuple[Type, list[Finding], list[str], bool]:
    """The type that holds every value of a column the copy creates, widening as needed."""
    findings: list[Finding] = []
    declared = t
    p = probe(conn, table, column, t, opts, counts)
    within = None
    if counts is not None and t.kind in _NESTED:
        within = (f"{quote(column)} IS NOT NULL AND ({candidates(quote(column), t)})", counts[0])
    while p.failed:
        if strict:
            return t, findings, [_refusal(table.name, column, t, p, " (--strict)")], False
        new = wider(t, p.all_numbers)
        findings.append(
            Finding(
                "widened",
                table.name,
                column,
                f"declared {declared.pg()} holds {p.failed} values that do not fit {t.pg()} "
                f"(e.g. {describe(p.failures[0][1])}: {p.failures[0][2]}); created as "
                f"{new.pg()} to keep them exact",
                p.failed,
                [f[0] for f in p.failures],
            )
        )
        t = new
        p = probe(conn, table, column, t, opts, within=within)
    if strict and p.reinterpreted:
        p.failures, p.failed = p.reinterpreted, p.reinterpreted_count
        return t, findings, [_refusal(table.name, column, t, p, " (--strict)")], False
    findings += _converted(table.name, column, t, p, widened=t != declared)
    return t, findings, [], p.converted == p.sure


def _converted(table: str, column: str, t: Type, p: Probe, widened: bool) -> list[Finding]:
    if p.nul_removed:
        return [
            Finding(
                "nul-removed",
                table,
                column,
                f"NUL bytes removed from {len(p.nul_removed)} values (--strip-nul)",
                len(p.nul_removed),
                p.nul_removed[:SAMPLES],
            )
        ]
    if t.kind == "bytea" and p.reinterpreted and not widened:  # widened: said already
        _key0, value, why = p.reinterpreted[0]
        return [
            Finding(
                "converted",
                table,
                column,
                f"{p.reinterpreted_count} values of bytea are numbers, each stored as the "
                f"bytes of its text (e.g. {describe(value)}): {why}",
                p.reinterpreted_count,
                [r[0] for r in p.reinterpreted],
            )
        ]
    if not p.converted or t.kind in ("text", "bytea", "any"):
        return []
    _key0, value, out = p.conversions[0]
    return [
        Finding(
            "converted",
            table,
            column,
            f"{p.converted} values read into {t.pg()} from other forms (e.g. "
            f"{describe(value)} -> {describe(out)})",
            p.converted,
            [c[0] for c in p.conversions],
        )
    ]


def fits(
    conn: sqlite3.Connection,
    table: Table,
    column: str,
    t: Type,
    opts: Options,
    counts: Counts | None = None,
) -> tuple[list[str], bool]:
    """Filling an existing column: every value must fit it as it is (and is it clean?)."""
    p = probe(conn, table, column, t, opts, counts)
    if p.failed:
        return [_refusal(table.name, column, t, p, " (the existing target column)")], False
    return [], p.converted == p.sure
