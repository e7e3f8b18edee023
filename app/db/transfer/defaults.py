"""Column defaults from one dialect to the other (None when there is no faithful translation)."""

from __future__ import annotations

import datetime as dt
import re
from typing import cast

from app.db.transfer.types import Type, Unfit
from app.db.transfer.values import Options, to_python

_NUMBER = re.compile(r"^\(?\s*([+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*\)?$")
_STRING = re.compile(r"^\(?\s*'((?:[^']|'')*)'\s*\)?$", re.DOTALL)
_PG_LITERAL = re.compile(
    r"^\(?'((?:[^']|'')*)'(?:::[\w ]+(?:\(\d+(?:,\s*\d+)?\))?)*\)?$", re.DOTALL
)
_PG_NUMBER = re.compile(r"^\(?([+-]?\d+(?:\.\d+)?)\)?(?:::[\w ]+)*$")
_CLOCK = {
    "current_timestamp": "CURRENT_TIMESTAMP",
    "(datetime('now'))": "CURRENT_TIMESTAMP",
    "datetime('now')": "CURRENT_TIMESTAMP",
    "now()": "CURRENT_TIMESTAMP",
    "current_date": "CURRENT_DATE",
    "(date('now'))": "CURRENT_DATE",
    "current_time": "CURRENT_TIME",
}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _value(raw: str, t: Type) -> str | None:
    """A literal as the target column's own value, or None when it does not fit."""
    try:
        value = to_python(t, Options())(raw)
    except (Unfit, ValueError):
        return None
    if t.kind == "bool":
        return "true" if value else "false"
    if t.kind in ("timestamptz", "timestamp", "date", "time"):
        # to_python's converters for these kinds return a dt.date (datetime) or a dt.time.
        return _literal(cast(dt.date | dt.time, value).isoformat())
    if isinstance(value, bytes):
        return "'\\x" + value.hex() + "'"
    return _literal(str(value))


def sqlite_to_pg(expr: str, t: Type) -> str | None:
    text = expr.strip()
    lowered = text.lower()
    if lowered in ("null", "(null)"):
        return None
    if lowered in _CLOCK:
        return _CLOCK[lowered]
    if lowered in ("true", "false"):
        text = "1" if lowered == "true" else "0"
    if match := _NUMBER.match(text):
        return _value(match.group(1), t)
    if match := _STRING.match(text):
        return _value(match.group(1).replace("''", "'"), t)
    return None


def pg_to_sqlite(expr: str, t: Type) -> str | None:
    text = expr.strip()
    lowered = text.lower()
    if lowered.startswith("nextval("):
        return None
    if lowered in _CLOCK or lowered.startswith("current_timestamp") or lowered == "now()":
        return _CLOCK.get(lowered, "CURRENT_TIMESTAMP")
    if lowered in ("true", "false"):
        return "1" if lowered == "true" else "0"
    if match := _PG_NUMBER.match(text):
        return match.group(1)
    if match := _PG_LITERAL.match(text):
        raw = match.group(1).replace("''", "'")
        if t.kind == "bool":
            return "1" if raw.lower() in ("t", "true", "1", "yes", "on") else "0"
        return _literal(raw)
    return None
