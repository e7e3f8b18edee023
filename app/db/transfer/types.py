"""Column types both sides understand, SQLite's loose values, and a canonical text form."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

Kind = str  # int2 int4 int8 numeric float bool text varchar date timestamp timestamptz
# time json jsonb bytea uuid any
INT_RANGES = {"int2": 2**15, "int4": 2**31, "int8": 2**63}
TRUE = {"1", "true", "t", "yes", "y", "on"}
FALSE = {"0", "false", "f", "no", "n", "off"}


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


def from_sqlite(declared: str) -> Type:
    """SQLite's declared type to the closest PostgreSQL type (affinity rules first)."""
    match = _DECL.match(declared or "")
    base = (match.group(1) if match else declared).upper().strip()
    n1 = int(match.group(2)) if match and match.group(2) else None
    n2 = int(match.group(3)) if match and match.group(3) else None
    if not base:
        return Type("any")
    if "BOOL" in base:
        return Type("bool")
    if "INT" in base:
        return Type("int8")  # SQLite integers are 64-bit whatever the declaration
    if "DATETIME" in base or "TIMESTAMP" in base:
        return Type("timestamptz")
    if base == "DATE":
        return Type("date")
    if base == "TIME":
        return Type("time")
    if "JSON" in base:
        return Type("jsonb")
    if "UUID" in base:
        return Type("uuid")
    if base in ("NUMERIC", "DECIMAL", "MONEY", "NUMBER"):
        return Type("numeric", precision=n1, scale=n2 or 0 if n1 else None)
    if any(word in base for word in ("REAL", "FLOA", "DOUB")):
        return Type("float")
    if "CHAR" in base or "CLOB" in base or "TEXT" in base:
        return Type("varchar", length=n1) if n1 else Type("text")
    if "BLOB" in base or "BINARY" in base:
        return Type("bytea")
    return Type("numeric")


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


@dataclass
class Options:
    round_money: bool = False
    strip_nul: bool = False
    rounded: list[str] = field(default_factory=list)


def _text(value: Any, opts: Options) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError as exc:
            raise Unfit("binary data in a text column") from exc
    elif isinstance(value, float):
        value = repr(value)
    elif not isinstance(value, str):
        value = str(value)
    text: str = value
    if "\x00" in text:
        if not opts.strip_nul:
            raise Unfit("text holds NUL bytes, which PostgreSQL cannot store (--strip-nul)")
        text = text.replace("\x00", "")
    return text


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Unfit("not a finite number")
        return Decimal(repr(value))  # the shortest repr: 19.99, never 19.989999...
    if isinstance(value, int | Decimal):
        return Decimal(value)
    try:
        result = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise Unfit("not a number") from exc
    if not result.is_finite():
        raise Unfit("not a finite number")
    return result


def _integer(value: Any, kind: Kind) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        result = value
    else:
        number = _decimal(value)
        if number != number.to_integral_value():
            raise Unfit("not an integer")
        result = int(number)
    if not -INT_RANGES[kind] <= result < INT_RANGES[kind]:
        raise Unfit(f"out of range for {kind}")
    return result


def _numeric(value: Any, t: Type, opts: Options) -> Decimal:
    number = _decimal(value)
    if t.precision is None:
        return number
    scale = t.scale or 0
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > scale and number != number.quantize(Decimal(1).scaleb(-scale)):
        if not opts.round_money:
            raise Unfit(f"more than {scale} decimal places (--round-money)")
        number = number.quantize(Decimal(1).scaleb(-scale), ROUND_HALF_EVEN)
        opts.rounded.append(str(value))
    if abs(number) >= Decimal(10) ** (t.precision - scale):
        raise Unfit(f"too large for numeric({t.precision}, {scale})")
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if isinstance(value, float) and value in (0.0, 1.0):
        text = str(int(value))
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise Unfit("not a boolean")


def _datetime(value: Any) -> dt.datetime:
    result: dt.datetime
    if isinstance(value, dt.datetime):
        result = value
    elif isinstance(value, dt.date):
        result = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC)  # unix seconds
    else:
        text = str(value).strip()
        try:
            result = dt.datetime.fromisoformat(text)
        except ValueError as exc:
            raise Unfit("not a date and time") from exc
    # Naive times in SQLite are UTC, as this service and most ORMs store them.
    return result.replace(tzinfo=dt.UTC) if result.tzinfo is None else result.astimezone(dt.UTC)


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        moment = _datetime(value)
        if moment.time() != dt.time(0):
            raise Unfit("a date with a time of day") from None
        return moment.date()


def _time(value: Any) -> dt.time:
    if isinstance(value, dt.time):
        return value
    try:
        return dt.time.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise Unfit("not a time of day") from exc


def _json(value: Any, opts: Options) -> str:
    text = _text(value, opts)
    try:
        json.loads(text)
    except ValueError as exc:
        raise Unfit("not JSON") from exc
    if "\\u0000" in text:
        raise Unfit("JSON holds \\u0000, which PostgreSQL jsonb cannot store")
    return text


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    raise Unfit("not binary data")


def _uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(bytes=value) if isinstance(value, bytes) else uuid.UUID(str(value))
    except ValueError as exc:
        raise Unfit("not a UUID") from exc


def _any(value: Any, opts: Options) -> Any:
    return _text(value, opts) if isinstance(value, str) else value


Converter = Callable[[Any], Any]


def to_python(t: Type, opts: Options) -> Converter:
    """Turn a source value into what the target column takes (None stays None)."""
    k = t.kind
    if k in INT_RANGES:
        return lambda v: _integer(v, k)
    if k == "numeric":
        return lambda v: _numeric(v, t, opts)
    if k == "float":
        return lambda v: float(_decimal(v)) if not isinstance(v, float) else v
    if k == "bool":
        return _bool
    if k == "varchar":

        def varchar(v: Any) -> str:
            text = _text(v, opts)
            if t.length is not None and len(text) > t.length:
                raise Unfit(f"longer than {t.length} characters")
            return text

        return varchar
    if k == "text":
        return lambda v: _text(v, opts)
    if k == "timestamptz":
        return _datetime
    if k == "timestamp":
        return lambda v: _datetime(v).replace(tzinfo=None)
    if k == "date":
        return _date
    if k == "time":
        return _time
    if k in ("json", "jsonb"):
        return lambda v: _json(v, opts)
    if k == "bytea":
        return _bytes
    if k == "uuid":
        return _uuid
    return lambda v: _any(v, opts)


def to_sqlite(t: Type, opts: Options) -> Converter:
    """Values for a SQLite column: what SQLAlchemy's SQLite dialect writes and reads."""
    convert = to_python(t, opts) if t.kind != "text" else lambda v: v
    if t.kind == "bool":
        return lambda v: int(_bool(v))
    if t.kind == "numeric":
        return lambda v: str(convert(v))
    if t.kind in ("timestamptz", "timestamp"):
        return lambda v: _datetime(v).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    if t.kind in ("date", "time", "uuid"):
        return lambda v: convert(v).isoformat() if t.kind != "uuid" else str(convert(v))
    if t.kind in ("json", "jsonb"):
        return lambda v: v if isinstance(v, str) else json.dumps(v)
    return convert


def canonical(t: Type, opts: Options) -> Callable[[Any], str]:
    """One text form per value, whichever side it came from: the checksum's input."""
    convert = to_python(replace(t, length=None) if t.kind == "varchar" else t, opts)
    k = t.kind

    def numeric(v: Any) -> str:
        d = _decimal(v).normalize()
        return "0" if d.is_zero() else format(d, "f")

    render: Callable[[Any], str]
    if k == "numeric":
        render = numeric
    elif k == "bool":
        render = lambda v: "true" if v else "false"  # noqa: E731
    elif k == "float":
        render = lambda v: repr(float(v))  # noqa: E731
    elif k == "timestamptz":
        render = lambda v: v.astimezone(dt.UTC).isoformat(timespec="microseconds")  # noqa: E731
    elif k in ("timestamp", "time"):
        render = lambda v: v.isoformat(timespec="microseconds")  # noqa: E731
    elif k in ("json", "jsonb"):
        render = lambda v: json.dumps(json.loads(v), sort_keys=True, separators=(",", ":"))  # noqa: E731
    else:

        def render(v: Any) -> str:
            if isinstance(v, bytes):
                return v.hex()
            if k == "any" and isinstance(v, int | float | Decimal):
                return numeric(v)
            return str(v)

    plain_int = k in INT_RANGES
    plain_text = k in ("text", "varchar")

    def form(value: Any) -> str:
        if value is None:
            return "\\N"
        cls = type(value)
        if plain_int and cls is int:
            return str(value)
        if plain_text and cls is str and "\x00" not in value:
            return value  # type: ignore[no-any-return]
        return render(convert(value))

    return form
