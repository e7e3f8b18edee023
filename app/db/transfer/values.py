"""SQLite's loose values turned into each column's type, and one canonical text per value."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Never, NoReturn, cast

from app.db.transfer.clock import date_of, datetime_of, naive_datetime_of, time_of
from app.db.transfer.types import INT_RANGES, Kind, Type, Unfit

TRUE = {"1", "true", "t", "yes", "y", "on"}
FALSE = {"0", "false", "f", "no", "n", "off"}
# Escapes PostgreSQL's jsonb refuses: \u0000 and lone surrogates.
_BAD_ESCAPE = re.compile(r"\\u(0000|d[89ab][0-9a-f]{2}(?!\\ud[c-f])|d[c-f][0-9a-f]{2})", re.I)


@dataclass
class Options:
    round_money: bool = False
    strip_nul: bool = False
    rounded: list[str] = field(default_factory=list)


def _text(value: object, opts: Options) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError as exc:
            raise Unfit("not valid UTF-8") from exc
    elif isinstance(value, float):
        value = repr(value)
    elif not isinstance(value, str):
        value = str(value)
    elif not value.isascii():
        # Text SQLite stored as invalid UTF-8 arrives with surrogate escapes.
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            raise Unfit("not valid UTF-8") from exc
    text: str = value
    if "\x00" in text:
        if not opts.strip_nul:
            raise Unfit("text holds NUL bytes, which PostgreSQL text cannot store")
        text = text.replace("\x00", "")
    return text


def _decimal(value: object) -> Decimal:
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Unfit("not a finite number")
        return Decimal(repr(value))  # the shortest repr: 19.99, never 19.989999...
    if isinstance(value, int | Decimal):
        return Decimal(value)
    try:
        text = value.decode() if isinstance(value, bytes) else str(value).strip()
        if not text.isascii():  # Decimal() also reads other scripts' digits
            raise InvalidOperation
        result = Decimal(text)
    except (InvalidOperation, UnicodeDecodeError) as exc:
        raise Unfit("not a number") from exc
    if not result.is_finite():
        raise Unfit("not a finite number")
    return result


def _integer(value: object, kind: Kind) -> int:
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


def _numeric(value: object, t: Type, opts: Options) -> Decimal:
    number = _decimal(value)
    if t.precision is None:
        return number
    scale = t.scale or 0
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > scale and number != number.quantize(Decimal(1).scaleb(-scale)):
        if not opts.round_money:
            raise Unfit(f"more than {scale} decimal places")
        number = number.quantize(Decimal(1).scaleb(-scale), ROUND_HALF_EVEN)
        opts.rounded.append(str(value))
    if abs(number) >= Decimal(10) ** (t.precision - scale):
        raise Unfit(f"too large for numeric({t.precision}, {scale})")
    return number


def _float(value: object) -> float:
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        result = float(value)
        if int(result) != value:
            raise Unfit("not exactly a double precision number")
        return result
    try:
        written = value.decode() if isinstance(value, bytes) else str(value).strip()
        if not written.isascii():  # float() also reads other scripts' digits
            raise ValueError(written)
        result = float(written)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unfit("not a number") from exc
    text = str(value).strip()
    if not math.isfinite(result):
        if text.lower().lstrip("+-") not in ("inf", "infinity", "nan"):
            raise Unfit("out of range for double precision")
    elif Decimal(repr(result)) != _decimal(text):
        raise Unfit("not exactly a double precision number")
    return result


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value in (0.0, 1.0):
        return value == 1.0
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    text = text.strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise Unfit("not a boolean")


def _no_constant(name: str) -> NoReturn:
    raise Unfit(f"{name} is not JSON")


def _members(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise Unfit("a JSON object names a member twice, which jsonb keeps once")
    return found


def _json(value: object, opts: Options) -> str:
    text = _text(value, opts)
    try:
        json.loads(text, parse_constant=_no_constant, object_pairs_hook=_members)
    except Unfit:
        raise
    except ValueError as exc:
        raise Unfit("not JSON") from exc
    if "\\u" in text and _BAD_ESCAPE.search(text):
        raise Unfit("JSON escapes (\\u0000, lone surrogates) PostgreSQL jsonb refuses")
    return text


def _bytes(value: object) -> bytes:
    """Anything, byte for byte: bytea is where every value fits."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return (repr(value) if isinstance(value, float) else str(value)).encode()


def _uuid(value: object) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(bytes=value) if isinstance(value, bytes) else uuid.UUID(str(value))
    except ValueError as exc:
        raise Unfit("not a UUID") from exc


Converter = Callable[[object], object]


def _integer_for(t: Type, opts: Options) -> Converter:
    kind = t.kind
    return lambda v: _integer(v, kind)


def _numeric_for(t: Type, opts: Options) -> Converter:
    return lambda v: _numeric(v, t, opts)


def _varchar_for(t: Type, opts: Options) -> Converter:
    def varchar(v: object) -> str:
        text = _text(v, opts)
        if t.length is not None and len(text) > t.length:
            raise Unfit(f"longer than {t.length} characters")
        return text

    return varchar


def _text_for(t: Type, opts: Options) -> Converter:
    return lambda v: _text(v, opts)


def _json_for(t: Type, opts: Options) -> Converter:
    return lambda v: _json(v, opts)


def _always(convert: Converter) -> Callable[[Type, Options], Converter]:
    """A converter that needs neither the column's type details nor the options."""
    return lambda t, opts: convert


# Column kind -> the factory of its converter.
_TO_PYTHON: dict[str, Callable[[Type, Options], Converter]] = {
    **dict.fromkeys(INT_RANGES, _integer_for),
    "numeric": _numeric_for,
    "float": _always(_float),
    "bool": _always(_bool),
    "varchar": _varchar_for,
    "text": _text_for,
    "any": _text_for,
    "timestamptz": _always(datetime_of),
    "timestamp": _always(naive_datetime_of),
    "date": _always(date_of),
    "time": _always(time_of),
    "json": _json_for,
    "jsonb": _json_for,
    "bytea": _always(_bytes),
    "uuid": _always(_uuid),
}


def to_python(t: Type, opts: Options) -> Converter:
    """Turn a source value into what the target column takes (None stays None)."""
    factory = _TO_PYTHON.get(t.kind)
    if factory is None:
        raise Unfit(f"no conversion to {t.kind}")
    return factory(t, opts)


def to_sqlite(t: Type, opts: Options) -> Converter:
    """Values for a SQLite column: what SQLAlchemy's SQLite dialect writes and reads."""
    convert = to_python(t, opts) if t.kind != "text" else lambda v: v
    if t.kind == "bool":
        return lambda v: int(_bool(v))
    if t.kind == "numeric":
        return lambda v: str(convert(v))
    if t.kind in ("timestamptz", "timestamp"):
        return _sqlite_stamp
    if t.kind in ("date", "time", "uuid"):
        # to_python's converters for date and time return a dt.date or a dt.time.
        timely = cast(Callable[[object], dt.date | dt.time], convert)
        return lambda v: timely(v).isoformat() if t.kind != "uuid" else str(convert(v))
    if t.kind in ("json", "jsonb"):
        return lambda v: v if isinstance(v, str) else json.dumps(v)
    return convert


def _sqlite_stamp(v: object) -> str:
    """A date and time as SQLite keeps it: UTC, without an offset, to the microsecond.

    isoformat() writes the year in four digits (strftime's %Y leaves year 999 at three,
    which SQLite's date functions cannot read), at a third of the cost. What PostgreSQL
    hands over (naive, or in UTC) needs no conversion to UTC: its first 26 characters
    are the text."""
    if type(v) is dt.datetime and (v.tzinfo is None or v.tzinfo is dt.UTC):
        return v.isoformat(" ", "microseconds")[:26]
    return datetime_of(v).replace(tzinfo=None).isoformat(" ", "microseconds")


def _plain_json(value: object) -> object:
    if isinstance(value, dict):
        return {k: _plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_json(v) for v in value]
    if isinstance(value, Decimal):
        d = value.normalize()
        return "#" + ("0" if d.is_zero() else format(d, "f"))
    return value


def canonical_json(text: str) -> str:
    """JSON as jsonb keeps it: keys sorted, numbers by value (1.0 and 1 alike)."""
    data = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    return json.dumps(_plain_json(data), sort_keys=True, separators=(",", ":"))


def _render_numeric(v: object) -> str:
    d = _decimal(v).normalize()
    return "0" if d.is_zero() else format(d, "f")


def _render_plain(v: object) -> str:
    return v.hex() if isinstance(v, bytes) else str(v)


def _render_bool(v: object) -> str:
    return "true" if v else "false"


def _render_float(v: float) -> str:
    return repr(float(v))


def _render_instant(v: dt.datetime) -> str:
    return v.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _render_clock(v: dt.datetime | dt.time) -> str:
    return v.isoformat(timespec="microseconds")


# Column kind -> the text of a converted value; every other kind renders plainly. Each
# takes what its kind's converter returns: a pairing by kind, which the dict's type
# cannot say (canonical() states it once).
_RENDER: dict[str, Callable[[Never], str]] = {
    "numeric": _render_numeric,
    "bool": _render_bool,
    "float": _render_float,
    "timestamptz": _render_instant,
    "timestamp": _render_clock,
    "time": _render_clock,
    "json": canonical_json,
    "jsonb": canonical_json,
}


def canonical(t: Type, opts: Options) -> Callable[[object], str]:
    """One text form per value, whichever side it came from: the checksum's input.

    A value the type cannot hold gets a form of its own (never an exception), so it
    shows as a difference."""
    convert = to_python(replace(t, length=None) if t.kind == "varchar" else t, opts)
    k = t.kind
    # The renderer of t's kind takes what the converter of t's kind returns.
    render = cast(Callable[[object], str], _RENDER.get(k, _render_plain))
    plain_int = k in INT_RANGES
    plain_text = k in ("text", "varchar")

    def form(value: object) -> str:
        if value is None:
            return "\\N"
        cls = type(value)
        if plain_int and cls is int:
            return str(value)
        # cls is str, but mypy narrows by isinstance() or type() itself, not through cls;
        # a cast would cost a call for each value.
        if plain_text and cls is str and value.isascii() and "\x00" not in value:  # type: ignore[attr-defined, operator]
            return value  # type: ignore[return-value]
        try:
            return render(convert(value))
        except (Unfit, ValueError):
            return f"\\unfit {type(value).__name__} {value!r}"

    return form
