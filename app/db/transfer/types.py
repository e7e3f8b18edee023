"""Column types both sides understand, and how each side declares them."""

from __future__ import annotations

import re
from dataclasses import dataclass

Kind = str  # int2 int4 int8 numeric float bool text varchar date timestamp timestamptz
# time json jsonb bytea uuid any
INT_RANGES = {"int2": 2**15, "int4": 2**31, "int8": 2**63}


class Unfit(ValueError):
    """A value the target column cannot hold exactly."""


@dataclass(frozen=True)
class Type:
    kind: Kind
    length: int | None = None  # varchar(n)
    precision: int | None = None  # numeric(p, s)
    scale: int | None = None

    def pg(self) -> str:
        if self.kind == "varchar":
            return f"varchar({self.length})" if self.length else "text"
        if self.kind == "numeric":
            if self.precision is None:
                return "numeric"
            return f"numeric({self.precision}, {self.scale or 0})"
        return {
            "int2": "smallint",
            "int4": "integer",
            "int8": "bigint",
            "float": "double precision",
            "bool": "boolean",
            "text": "text",
            "any": "text",
            "date": "date",
            "timestamp": "timestamp",
            "timestamptz": "timestamptz",
            "time": "time",
            "json": "json",
            "jsonb": "jsonb",
            "bytea": "bytea",
            "uuid": "uuid",
        }[self.kind]

    def sqlite(self) -> str:
        if self.kind == "varchar":
            return f"VARCHAR({self.length})" if self.length else "TEXT"
        if self.kind == "numeric":
            if self.precision is None:
                return "NUMERIC"
            return f"NUMERIC({self.precision}, {self.scale or 0})"
        return {
            "int2": "SMALLINT",
            "int4": "INTEGER",
            "int8": "INTEGER",
            "float": "REAL",
            "bool": "BOOLEAN",
            "text": "TEXT",
            "any": "",
            "date": "DATE",
            "timestamp": "TIMESTAMP",
            "timestamptz": "DATETIME",
            "time": "TIME",
            "json": "JSON",
            "jsonb": "JSON",
            "bytea": "BLOB",
            "uuid": "UUID",
        }[self.kind]


_DECL = re.compile(r"^\s*([A-Za-z_ ]*?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*$")


# Declared names that are the type itself (none holds a word of the rules below).
_NAMED: dict[str, Kind] = {"DATE": "date", "TIME": "time"}
_NUMERIC_NAMES = ("NUMERIC", "DECIMAL", "MONEY", "NUMBER")
# SQLite's affinity rules, first match wins: words the declared type holds -> its kind.
_HOLDS: tuple[tuple[tuple[str, ...], Kind], ...] = (
    (("BOOL",), "bool"),
    (("INT",), "int8"),  # SQLite integers are 64-bit whatever the declaration
    (("DATETIME", "TIMESTAMP"), "timestamptz"),
    (("JSON",), "jsonb"),
    (("UUID",), "uuid"),
    (("REAL", "FLOA", "DOUB"), "float"),
    (("CHAR", "CLOB", "TEXT"), "varchar"),
    (("BLOB", "BINARY"), "bytea"),
)


def _declaration(declared: str) -> tuple[str, int | None, int | None]:
    """A declared type's name (upper case) and its numbers: VARCHAR(20), NUMERIC(10, 2)."""
    match = _DECL.match(declared or "")
    if not match:
        return declared.upper().strip(), None, None
    n1, n2 = match.group(2), match.group(3)
    return match.group(1).upper().strip(), int(n1) if n1 else None, int(n2) if n2 else None


def from_sqlite(declared: str) -> Type:
    """SQLite's declared type to the closest PostgreSQL type (affinity rules first)."""
    base, n1, n2 = _declaration(declared)
    if not base:
        return Type("any")
    if base in _NAMED:
        return Type(_NAMED[base])
    if base in _NUMERIC_NAMES:
        return Type("numeric", precision=n1, scale=n2 or 0 if n1 else None)
    kind = next((kind for words, kind in _HOLDS if any(w in base for w in words)), "numeric")
    if kind == "varchar":
        return Type("varchar", length=n1) if n1 else Type("text")
    return Type(kind)


_PG = re.compile(r"^([a-z ]+?)(?:\((\d+)(?:,(\d+))?\))?( with time zone| without time zone)?$")


def from_pg(formatted: str) -> Type:
    """format_type() output to a Type; unknown types raise Unfit."""
    match = _PG.match(formatted.replace(", ", ","))
    if not match:
        raise Unfit(f"type {formatted} is not supported")
    base, n1, n2, tz = match.groups()
    p = int(n1) if n1 else None
    s = int(n2) if n2 else None
    simple = {
        "smallint": "int2",
        "integer": "int4",
        "bigint": "int8",
        "real": "float",
        "double precision": "float",
        "boolean": "bool",
        "text": "text",
        "date": "date",
        "json": "json",
        "jsonb": "jsonb",
        "bytea": "bytea",
        "uuid": "uuid",
    }
    if base in simple:
        return Type(simple[base])
    if base == "numeric":
        return Type("numeric", precision=p, scale=s if p is not None else None)
    if base in ("character varying", "character"):
        return Type("varchar", length=p)
    if base == "timestamp":
        return Type("timestamptz" if tz == " with time zone" else "timestamp")
    if base == "time":
        return Type("time")
    raise Unfit(f"type {formatted} is not supported")


NUMBERS = ("int2", "int4", "int8", "numeric", "float")
TEXTS = ("text", "varchar")


def wider(t: Type, all_numbers: bool) -> Type:
    """The next home for values that do not fit t: numbers stay numbers while they can."""
    if t.kind in INT_RANGES or (t.kind == "numeric" and t.precision is not None):
        return Type("numeric") if all_numbers else Type("text")
    if t.kind == "text":
        return Type("bytea")  # invalid UTF-8, NUL bytes: kept byte for byte
    if t.kind == "bytea":
        raise Unfit("bytea holds every value")
    return Type("text")


def family(t: Type) -> str:
    """Types whose values compare with each other (and so can be tied by a foreign key)."""
    if t.kind in ("int2", "int4", "int8"):
        return "integer"
    if t.kind in TEXTS or t.kind == "any":
        return "text"
    return t.pg()


def comparable_as(a: Type, b: Type) -> str | None:
    """The cast that makes a and b comparable in an orphan check (None when they already are)."""
    if family(a) == family(b):
        return None
    if a.kind in NUMBERS and b.kind in NUMBERS:
        return "numeric"
    return "text"
