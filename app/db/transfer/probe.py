"""What each SQLite column really holds: a home for every value, or a refusal naming it."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from app.db.transfer.report import Finding, describe
from app.db.transfer.schema import Table, quote
from app.db.transfer.types import INT_RANGES, Type, Unfit, wider
from app.db.transfer.values import Converter, Options, to_python

SAMPLES = 3


@dataclass
class Probe:
    failed: int = 0
    failures: list[tuple[Any, Any, str]] = field(default_factory=list)  # key, value, reason
    all_numbers: bool = True
    converted: int = 0
    nul_removed: list[Any] = field(default_factory=list)
    conversions: list[tuple[Any, Any, Any]] = field(default_factory=list)  # key, value, result
    # Values read as another kind of thing: 'true' as a boolean, a number as Unix seconds.
    reinterpreted: list[tuple[Any, Any, str]] = field(default_factory=list)
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


def _reinterpreted(t: Type, value: Any) -> str | None:
    if t.kind == "bool" and isinstance(value, str | bytes):
        return "text read as a boolean"
    if t.kind in ("timestamptz", "timestamp", "date") and isinstance(value, int | float):
        return "a number read as Unix seconds"
    return None


def _is_number(value: Any) -> bool:
    if isinstance(value, int | float):
        return True
    try:
        return Decimal(str(value).strip()).is_finite()
    except (InvalidOperation, ValueError):
        return False


WORDS = "('1', 'true', 't', 'yes', 'y', 'on', '0', 'false', 'f', 'no', 'n', 'off')"
TRUE_WORDS = "('1', 'true', 't', 'yes', 'y', 'on')"
_SIX = "[0-9]" * 6
# What may follow 'YYYY-MM-DD[T ]HH:MM:SS': read alike by Python and PostgreSQL.
_SUFFIXES = [
    f".{_SIX}",
    "Z",
    f".{_SIX}Z",
    "[+-]0[0-9]:[0-5][0-9]",
    "[+-]1[0-4]:[0-5][0-9]",
    f".{_SIX}[+-]0[0-9]:[0-5][0-9]",
    f".{_SIX}[+-]1[0-4]:[0-5][0-9]",
]


def _iso_slow(q: str) -> str:
    rest = " OR ".join(f"substr({q}, 20) GLOB '{g}'" for g in _SUFFIXES)
    return (
        f"substr({q}, 11, 1) IN (' ', 'T') AND (length({q}) = 19 OR {rest}) "
        f"AND datetime(julianday(substr({q}, 1, 19))) = replace(substr({q}, 1, 19), 'T', ' ')"
    )


_ISO = "????-??-??[ T]??:??:??"
# By length, the ISO forms iso_instant() takes: '?' costs less than a class, and
# julianday() (which accepts nothing else there) checks the digits and the offset's range.
_SHAPES = {
    19: _ISO,
    20: f"{_ISO}Z",
    25: f"{_ISO}[+-]??:??",
    26: f"{_ISO}.{_SIX}",
    27: f"{_ISO}.{_SIX}Z",
    32: f"{_ISO}.{_SIX}[+-]??:??",
}


def _iso_quick(q: str, lengths: tuple[int, ...]) -> str:
    """True only for text of those lengths in an ISO shape whose day is at most 28 and hour
    at most 23: julianday() then reads a real instant, with no date to check by printing it
    back (the costly part). False leaves the question open, never answered no."""
    shapes = " ".join(f"WHEN {n} THEN {q} GLOB '{_SHAPES[n]}'" for n in lengths)
    return (
        f"CASE length({q}) {shapes} ELSE 0 END AND julianday({q}) IS NOT NULL "
        f"AND substr({q}, 9, 2) <= '28' AND substr({q}, 12, 2) < '24'"
    )


def iso_instant(q: str) -> str:
    """ISO text naming one instant (T or space, Z or an offset): PostgreSQL parses it as is."""
    return f"typeof({q}) = 'text' AND ({_iso_quick(q, tuple(_SHAPES))} OR ({_iso_slow(q)}))"


def _text_suspect(q: str) -> str:
    """NUL bytes, or (only where a character is not printable ASCII) invalid UTF-8."""
    return (
        f"(instr(CAST({q} AS BLOB), x'00') > 0 "
        f"OR ({q} GLOB '*[^ -~]*' AND bb_suspect(CAST({q} AS BLOB))))"
    )


def _plain_slow(q: str) -> str:
    # The shape first, then the date parsed (julianday() first: date() alone passes
    # 2024-02-30 through unchanged).
    return (
        f"(length({q}) = 19 OR (length({q}) = 26 AND substr({q}, 20, 1) = '.' "
        f"AND substr({q}, 21) GLOB '{_SIX}')) "
        f"AND datetime(julianday({q})) = replace(substr({q}, 1, 19), 'T', ' ')"
    )


def _plain_quick(q: str) -> str:
    """Implies _plain_slow: a fraction from .999 on is left to it (julianday() keeps
    milliseconds, rounded, and datetime() may print the next second)."""
    return f"{_iso_quick(q, (19, 26))} AND substr({q}, 21, 3) <> '999'"


def candidates(q: str, t: Type) -> str:
    """SQL true for values that need a look in Python; the rest fit t as they are."""
    k = t.kind
    if k in INT_RANGES:
        top = INT_RANGES[k]
        return f"NOT (typeof({q}) = 'integer' AND {q} BETWEEN {-top} AND {top - 1})"
    if k == "numeric":
        if t.precision is None:
            return f"typeof({q}) NOT IN ('integer', 'real') OR abs({q}) > 1.7e308"
        scale = t.scale or 0
        return (
            f"NOT (typeof({q}) IN ('integer', 'real') AND round({q}, {scale}) = {q} "
            f"AND abs({q}) < 1e{t.precision - scale})"
        )
    if k == "float":
        return (
            f"typeof({q}) NOT IN ('integer', 'real') "
            f"OR (typeof({q}) = 'integer' AND abs({q}) > 9007199254740992)"
        )
    if k == "bool":
        return f"NOT (typeof({q}) = 'integer' AND {q} IN (0, 1))"
    if k in ("text", "varchar", "any"):
        longer = f" OR length({q}) > {t.length}" if k == "varchar" and t.length else ""
        # text takes numbers as the converter writes them (fastpath.copy_text does too).
        kinds = "'text', 'integer', 'real'" if k == "text" else "'text'"
        return f"typeof({q}) NOT IN ({kinds}) OR {_text_suspect(q)}{longer}"
    if k in ("timestamptz", "timestamp"):
        return f"NOT (typeof({q}) = 'text' AND ({_plain_quick(q)} OR ({_plain_slow(q)})))"
    if k == "date":
        return f"NOT (typeof({q}) = 'text' AND length({q}) = 10 AND date(julianday({q})) = {q})"
    if k == "time":
        return (
            f"NOT (typeof({q}) = 'text' AND time(julianday({q})) = substr({q}, 1, 8) "
            f"AND (length({q}) = 8 "
            f"OR (length({q}) = 15 AND substr({q}, 9, 1) = '.' "
            f"AND substr({q}, 10) GLOB '[0-9][0-9][0-9][0-9][0-9][0-9]')))"
        )
    if k in ("json", "jsonb"):
        return (
            f"typeof({q}) <> 'text' OR NOT json_valid({q}) OR instr({q}, '\\u') > 0 "
            f"OR {_text_suspect(q)}"
        )
    if k == "bytea":
        return "0"
    return "1"


def key_sql(table: Table) -> list[str]:
    return [quote(k) for k in table.primary_key] or ["rowid"]


def _key(row: tuple[Any, ...], n: int) -> Any:
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
        sure = _sure(q, t)
        hit = f"CASE WHEN {sure} THEN {_BOTH} ELSE 1 END" if sure else "1"
        parts.append(f"sum(CASE WHEN {where} THEN {hit} ELSE 0 END)")
    if not parts:
        return []
    row = conn.execute(f"SELECT {', '.join(parts)} FROM {quote(table.name)}").fetchone()
    counts = []
    for value in row:
        both = int(value or 0)  # fewer than 2**31 sure values: the sum stays an int64
        counts.append((both & _LOW, both >> 32))
    return counts


def probe(
    conn: sqlite3.Connection,
    table: Table,
    column: str,
    t: Type,
    opts: Options,
    counts: Counts | None = None,
) -> Probe:
    """Run the loader's own conversion over every value SQL cannot vouch for.

    counts (from looks()) spare the scans they already answer."""
    q = quote(column)
    keys = key_sql(table)
    convert = to_python(t, Options(opts.round_money, opts.strip_nul))
    result = Probe()
    if counts is not None and counts[0] == 0:
        return result
    where = f"{q} IS NOT NULL AND ({candidates(q, t)})"
    sure = _sure(q, t)
    if sure and counts is not None and counts[0] == counts[1]:
        _count_sure(conn, table, q, t, f"{where} AND {sure}", result, counts[1])
        return result
    if sure:
        # Loose forms SQL can vouch for are counted (and sampled) without Python.
        known = counts[1] if counts is not None else None
        _count_sure(conn, table, q, t, f"{where} AND {sure}", result, known)
        where = f"{where} AND NOT ({sure})"
    cursor = conn.execute(
        f"SELECT {', '.join(keys)}, {q} FROM {quote(table.name)} "
        f"WHERE {where} ORDER BY {', '.join(keys)}"
    )
    result.scan(cursor, len(keys), t, convert)
    return result


def _sure(q: str, t: Type) -> str | None:
    if t.kind == "timestamptz":
        return iso_instant(q)
    if t.kind == "bool":
        return f"typeof({q}) = 'text' AND lower({q}) IN {WORDS}"
    return None


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
    result.conversions += [(_key(r, len(keys)), r[-1], convert(r[-1])) for r in sample]
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
        f"{t.pg()} ({reason}; {p.failed} such values){what}"
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
                f"({p.failures[0][2]}, e.g. {describe(p.failures[0][1])}); created as "
                f"{new.pg()} to keep them exact",
                p.failed,
                [f[0] for f in p.failures],
            )
        )
        t = new
        p = probe(conn, table, column, t, opts)
    if strict and p.reinterpreted:
        p.failures, p.failed = p.reinterpreted, p.reinterpreted_count
        return t, findings, [_refusal(table.name, column, t, p, " (--strict)")], False
    findings += _converted(table.name, column, t, p)
    return t, findings, [], p.converted == p.sure


def _converted(table: str, column: str, t: Type, p: Probe) -> list[Finding]:
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
