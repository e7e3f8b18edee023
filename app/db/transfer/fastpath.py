"""Rows SQLite can hand over as PostgreSQL text, and one digest text per value on all sides.

A value SQL vouches for (the probe's candidates() is false and nothing here needs
Python) travels as COPY text built by SQLite itself, and its digest text is built by
SQLite too; other values go through the Python converters. The digest texts are the
same from SQLite SQL, from converted Python values and from PostgreSQL SQL, so the
checksums are computed where the data is."""

from __future__ import annotations

import array
import datetime as dt
import functools
import hashlib
import importlib
import json
import struct
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Never, Protocol, cast

from app.db.transfer.checks import TRUE_WORDS, WORDS, candidates, iso_instant
from app.db.transfer.schema import quote
from app.db.transfer.types import INT_RANGES, Type

SEP = "\x1f"
NULL = "\\N"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MICRO = dt.timedelta(microseconds=1)


def _esc(x: str) -> str:
    """COPY text format escapes: a backslash, tab, newline or carriage return.

    Four instr() calls first (most values have nothing to escape): each costs less than
    one GLOB with a character class, which is parsed again at every position."""
    found = " OR ".join(f"instr({x}, {c})" for c in ("'\\'", "char(9)", "char(10)", "char(13)"))
    return (
        f"CASE WHEN {found} THEN "
        f"replace(replace(replace(replace({x}, '\\', '\\\\'), char(9), '\\t'), "
        f"char(10), '\\n'), char(13), '\\r') ELSE {x} END"
    )


# SQLite's printf takes at most 127 arguments; wider rows are joined with ||.
_PRINTF_ARGS = 100


def joined(parts: list[str], sep: str) -> str:
    """SQL for the parts' texts joined by sep (one character): one printf where it can."""
    if not parts:
        return "''"
    if len(parts) > _PRINTF_ARGS:
        return f" || char({ord(sep)}) || ".join(parts)
    return f"printf('{sep.join(['%s'] * len(parts))}', {', '.join(parts)})"


def fast(q: str, t: Type, clean: bool = False) -> str:
    """SQL true where the value can travel as text SQLite builds (NULL always can).

    clean: the probe found no value of the column needing Python, so only the
    conditions of this module's own (not the probe's) remain to be checked."""
    k = t.kind
    extra = ""
    if k == "numeric":
        if t.precision is None or (t.scale or 0) > 4:
            extra = f" AND typeof({q}) = 'integer'"
        else:
            # Fifteen significant digits print a double as the decimal it stands for.
            extra = (
                f" AND (typeof({q}) = 'integer' OR ({q} <> 0 "
                f"AND abs({q}) < 1e{15 - (t.scale or 0)}))"
            )
    elif k == "bytea":
        extra = f" AND typeof({q}) IN ('blob', 'text')"
    elif k in ("uuid", "any"):
        return "0"
    if clean:
        return f"({q} IS NULL OR (1{extra}))" if extra else "1"
    if k == "timestamptz":
        return f"({q} IS NULL OR ({iso_instant(q)}))"
    if k == "bool":
        return (
            f"({q} IS NULL OR (typeof({q}) = 'integer' AND {q} IN (0, 1)) "
            f"OR (typeof({q}) = 'text' AND lower({q}) IN {WORDS}))"
        )
    return f"({q} IS NULL OR NOT ({candidates(q, t)}){extra})"


def copy_text(q: str, t: Type) -> str:
    """The value as COPY text, for rows fast() vouches for."""
    k = t.kind
    if k == "numeric":
        value = f"CASE typeof({q}) WHEN 'integer' THEN {q} || '' ELSE printf('%.15g', {q}) END"
    elif k == "float":
        value = f"CASE typeof({q}) WHEN 'integer' THEN {q} || '' ELSE printf('%!.17g', {q}) END"
    elif k == "bool":
        value = f"CASE WHEN {q} = 1 OR lower({q}) IN {TRUE_WORDS} THEN 't' ELSE 'f' END"
    elif k == "text":
        # A real as the converter writes it (repr: the shortest text that reads back).
        value = f"CASE typeof({q}) WHEN 'real' THEN bb_repr({q}) ELSE {_esc(q)} END"
    elif k in ("varchar", "json", "jsonb"):
        value = _esc(q)
    elif k == "bytea":
        value = f"'\\\\x' || hex(CAST({q} AS BLOB))"
    else:
        # As it is: joined() turns it into its text (integers in decimal).
        return f"coalesce({q}, '\\N')"
    return f"CASE WHEN {q} IS NULL THEN '\\N' ELSE {value} END"


def _micros_sql(q: str) -> str:
    # unixepoch() is strftime('%s') as an integer without the text in between.
    return (
        f"unixepoch(substr({q}, 1, 19)) * 1000000 + "
        f"CASE WHEN length({q}) = 26 THEN CAST(substr({q}, 21) AS INTEGER) ELSE 0 END"
    )


def _instant_micros(q: str) -> str:
    """Microseconds since 1970 UTC of text iso_instant() vouches for, exactly.

    julianday() applies the Z or the offset, but keeps milliseconds (rounded: .9996 may
    reach the next second), and its days as a double are off by far less than a
    millisecond: the seconds are the nearest whole number once the fraction written
    is taken off. Past 9999-12-31 in UTC julianday() gives NULL: the local time then
    (its fraction added), less the offset."""
    frac = f"CASE WHEN substr({q}, 20, 1) = '.' THEN CAST(substr({q}, 21, 6) AS INTEGER) ELSE 0 END"
    offset = (
        f"CASE WHEN substr({q}, -6, 1) IN ('+', '-') THEN (substr({q}, -6, 1) || '1') "
        f"* (substr({q}, -5, 2) * 60 + substr({q}, -2)) / 1440.0 ELSE 0 END"
    )
    local = f"julianday(substr({q}, 1, 19)) + ({frac}) / 86400e6"
    day = f"coalesce(julianday({q}), {local} - {offset})"
    return (
        f"(CAST(round(({day} - 2440587.5) * 86400 - ({frac}) * 1e-6) AS INTEGER) "
        f"* 1000000 + {frac})"
    )


def _instant_micros_quick(q: str) -> str:
    """_instant_micros() in fewer steps: the whole seconds from unixepoch() of the text
    without its fraction (exact: the fraction is what julianday() would round), the six
    digits of the fraction added. Past 9999-12-31 in UTC unixepoch() gives NULL, and
    _instant_micros() answers."""
    return (
        f"coalesce(CASE WHEN substr({q}, 20, 1) = '.' "
        f"THEN unixepoch(substr({q}, 1, 19) || substr({q}, 27)) * 1000000 "
        f"+ CAST(substr({q}, 21, 6) AS INTEGER) ELSE unixepoch({q}) * 1000000 END, "
        f"{_instant_micros(q)})"
    )


def digest_sqlite(q: str, t: Type) -> str:
    """The digest text in SQLite SQL, for values fast() vouches for."""
    k = t.kind
    if k in INT_RANGES:
        return f"coalesce({q}, '\\N')"  # joined() writes it in decimal
    if k == "numeric":
        value = f"CASE typeof({q}) WHEN 'integer' THEN {q} || '' ELSE printf('%.15g', {q}) END"
    elif k == "float":
        value = f"bb_f8({q})"
    elif k == "bool":
        value = f"CASE WHEN {q} = 1 OR lower({q}) IN {TRUE_WORDS} THEN 'true' ELSE 'false' END"
    elif k == "bytea":
        value = f"lower(hex(CAST({q} AS BLOB)))"
    elif k == "timestamptz":
        value = f"{_instant_micros_quick(q)} || ''"
    elif k == "timestamp":
        value = f"({_micros_sql(q)}) || ''"
    elif k == "date":
        value = f"CAST(julianday({q}) - 2440587.5 AS INTEGER) || ''"
    elif k == "time":
        value = (
            f"((CAST(substr({q}, 1, 2) AS INTEGER) * 3600 + CAST(substr({q}, 4, 2) AS INTEGER) "
            f"* 60 + CAST(substr({q}, 7, 2) AS INTEGER)) * 1000000 + CASE WHEN length({q}) = 15 "
            f"THEN CAST(substr({q}, 10) AS INTEGER) ELSE 0 END) || ''"
        )
    elif k == "jsonb":
        value = f"bb_jsonb({q})"
    elif k == "text":
        value = f"CASE typeof({q}) WHEN 'real' THEN bb_repr({q}) ELSE {q} END"
    else:
        value = q
    return f"CASE WHEN {q} IS NULL THEN '\\N' ELSE {value} END"


def digest_pg(column: str, t: Type) -> str:
    """The same digest text computed by PostgreSQL from the stored value."""
    q = quote(column)
    k = t.kind
    if k == "numeric":
        value = f"trim_scale({q})::text"
    elif k == "float":
        value = f"encode(float8send({q}::float8), 'hex')"
    elif k == "bytea":
        value = f"encode({q}, 'hex')"
    elif k in ("timestamptz", "timestamp", "time"):
        value = f"(extract(epoch FROM {q}) * 1000000)::bigint::text"
    elif k == "date":
        value = f"({q} - date '1970-01-01')::text"
    else:
        value = f"{q}::text"
    return f"coalesce({value}, '\\N')"


def f8(value: float | None) -> str | None:
    """bb_f8(): SQLite calls it on values fast() vouches for, numbers or NULL."""
    return None if value is None else struct.pack(">d", float(value)).hex()


def _json_number(d: Decimal) -> str:
    return format(abs(d) if d.is_zero() else d, "f")


def _jsonb(value: object) -> str:
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        inner = ", ".join(f"{_jsonb(k)}: {_jsonb(value[k])}" for k in keys)
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_jsonb(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return _json_number(value)
    return json.dumps(value, ensure_ascii=False)


def _jsonb_text(text: str) -> str:
    return _jsonb(json.loads(text, parse_float=Decimal, parse_int=Decimal))


# Short documents repeat (statuses, flags, small payloads): each is canonicalised once.
# The cache holds at most 4,096 of them, 512 characters at most each.
_short_jsonb_text = functools.lru_cache(maxsize=4096)(_jsonb_text)


def jsonb_text(text: str | None) -> str | None:
    """JSON text the way PostgreSQL's jsonb prints it."""
    if text is None:
        return None
    return _short_jsonb_text(text) if len(text) <= 512 else _jsonb_text(text)


def _numeric(v: Decimal) -> str:
    return "0" if v.is_zero() else format(v.normalize(), "f")


def _float_text(v: float) -> str:
    return struct.pack(">d", v).hex()


def _bool_text(v: object) -> str:
    return "true" if v else "false"


def _bytes_text(v: bytes) -> str:
    return bytes(v).hex()


def _instant_text(v: dt.datetime) -> str:
    return str((v - EPOCH) // MICRO)


def _timestamp_text(v: dt.datetime) -> str:
    return str((v - EPOCH.replace(tzinfo=None)) // MICRO)


def _date_text(v: dt.date) -> str:
    return str((v - EPOCH.date()).days)


def _time_text(v: dt.time) -> str:
    return str(((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond)


def _jsonb_digest_text(v: str) -> str:
    return jsonb_text(v) or NULL


def digest_python(t: Type) -> Callable[[object], str]:
    """The digest text of a value already converted for t (to_python's output)."""
    # Each form takes what the converter of t's kind returns: a pairing by kind that no
    # type states, so it is asserted once here rather than for each value.
    return cast(Callable[[object], str], _digest_form(t))


def _digest_form(t: Type) -> Callable[[Never], str]:
    k = t.kind
    if k == "numeric":
        return _numeric
    if k == "float":
        return _float_text
    if k == "bool":
        return _bool_text
    if k == "bytea":
        return _bytes_text
    if k == "timestamptz":
        return _instant_text
    if k == "timestamp":
        return _timestamp_text
    if k == "date":
        return _date_text
    if k == "time":
        return _time_text
    if k == "jsonb":
        return _jsonb_digest_text
    return str


class _Hash(Protocol):
    def digest(self) -> bytes: ...


def _builtin_md5() -> Callable[[bytes], _Hash]:
    """CPython's own md5 where it has one: for rows of a hundred bytes it costs two thirds
    of hashlib's OpenSSL one, which sets up a context per call (0.39 against 0.58 us)."""
    try:
        # import_module() returns a module of unknown attributes: _md5.md5 takes bytes.
        return cast(Callable[[bytes], _Hash], importlib.import_module("_md5").md5)
    except (ImportError, AttributeError):
        return functools.partial(hashlib.md5, usedforsecurity=False)


_md5 = _builtin_md5()


def row_hash(text: str) -> int:
    """A row's 64-bit hash, as PostgreSQL computes it from md5 (signed, first 8 bytes)."""
    return int.from_bytes(_md5(text.encode()).digest()[:8], "big", signed=True)


def _halves_sum(digests: list[bytes]) -> int:
    """The sum of row hashes given whole md5 digests: their first 8 bytes read at once."""
    halves = array.array("q", b"".join(digests))[::2]
    if sys.byteorder == "little":
        halves.byteswap()
    return sum(halves)


def row_hash_pg(texts: list[str]) -> str:
    joined = " || chr(31) || ".join(texts) if texts else "''"
    return f"('x' || left(md5({joined}), 16))::bit(64)::bigint"


class Sum:
    """sum() of row hashes (of digest texts as bytes) as an exact Python integer (SQLite's
    would overflow); digests are summed 4,096 at a time."""

    def __init__(self) -> None:
        self.rows = 0
        self.total = 0
        self._digests: list[bytes] = []

    def step(self, text: bytes | None) -> None:
        if text is not None:  # rows left out by the CASE that feeds the aggregate
            self._digests.append(_md5(text).digest())
            if len(self._digests) == 4096:
                self._fold()

    def _fold(self) -> None:
        self.rows += len(self._digests)
        self.total += _halves_sum(self._digests)
        self._digests.clear()

    def finalize(self) -> str:
        """Rows hashed and their sum, as text (SQLite integers would overflow)."""
        self._fold()
        return f"{self.rows} {self.total}"
