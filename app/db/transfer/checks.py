"""SQL tests of what SQLite holds: values a PostgreSQL type takes as they are (no
candidates() for a look in Python), and loose forms SQL itself can vouch for (sure())."""

from __future__ import annotations

from app.db.transfer.types import INT_RANGES, Type

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


def _ascii(q: str) -> str:
    """Text of printable ASCII only, without a NUL byte: as many bytes as characters
    (length() stops at a NUL, and a character outside ASCII takes two bytes or more).
    Date and time checks read only the characters before a NUL; this closes the rest."""
    return f"length(CAST({q} AS BLOB)) = length({q})"


def iso_instant(q: str) -> str:
    """ISO text naming one instant (T or space, Z or an offset): PostgreSQL parses it as is."""
    return (
        f"typeof({q}) = 'text' AND ({_iso_quick(q, tuple(_SHAPES))} OR ({_iso_slow(q)})) "
        f"AND {_ascii(q)}"
    )


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


def _int_candidates(q: str, kind: str) -> str:
    if kind == "int8":
        return f"typeof({q}) <> 'integer'"  # every SQLite integer is a 64-bit one
    top = INT_RANGES[kind]
    return f"NOT (typeof({q}) = 'integer' AND {q} BETWEEN {-top} AND {top - 1})"


def candidates(q: str, t: Type) -> str:
    """SQL true for values that need a look in Python; the rest fit t as they are."""
    k = t.kind
    if k in INT_RANGES:
        return _int_candidates(q, k)
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
        return (
            f"NOT (typeof({q}) = 'text' AND ({_plain_quick(q)} OR ({_plain_slow(q)})) "
            f"AND {_ascii(q)})"
        )
    if k == "date":
        return (
            f"NOT (typeof({q}) = 'text' AND length({q}) = 10 AND date(julianday({q})) = {q} "
            f"AND {_ascii(q)})"
        )
    if k == "time":
        return (
            f"NOT (typeof({q}) = 'text' AND time(julianday({q})) = substr({q}, 1, 8) "
            f"AND (length({q}) = 8 "
            f"OR (length({q}) = 15 AND substr({q}, 9, 1) = '.' "
            f"AND substr({q}, 10) GLOB '[0-9][0-9][0-9][0-9][0-9][0-9]')) AND {_ascii(q)})"
        )
    if k in ("json", "jsonb"):
        # json_valid() takes an object naming a member twice, which jsonb keeps once: any
        # object with two members or more is looked at.
        return (
            f"typeof({q}) <> 'text' OR NOT json_valid({q}) OR instr({q}, '\\u') > 0 "
            f"OR (instr({q}, '{{') > 0 AND instr({q}, ',') > 0) OR {_text_suspect(q)}"
        )
    if k == "bytea":
        # A number is stored as the bytes of its text: looked at, and reported.
        return f"typeof({q}) IN ('integer', 'real')"
    return "1"


def sure(q: str, t: Type) -> str | None:
    if t.kind == "timestamptz":
        return iso_instant(q)
    if t.kind == "bool":
        return f"typeof({q}) = 'text' AND lower({q}) IN {WORDS}"
    return None
