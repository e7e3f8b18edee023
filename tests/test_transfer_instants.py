"""Date and time text SQLite vouches for: the quick checks decide as printing the date back
would, and the digest of an instant is the one PostgreSQL computes from the stored value."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console

from app.db import transfer
from app.db.transfer import checks, fastpath, values
from app.db.transfer.types import Type
from tests.conftest import pg_fetch

_SIX = "[0-9]" * 6
_OFFSETS = ("[+-]0[0-9]:[0-5][0-9]", "[+-]1[0-4]:[0-5][0-9]")
_SUFFIXES = [f".{_SIX}", "Z", f".{_SIX}Z", *_OFFSETS, *(f".{_SIX}{o}" for o in _OFFSETS)]


def plain_instant(q: str) -> str:
    """iso_instant() written as it reads: the shape, then the date printed back."""
    rest = " OR ".join(f"substr({q}, 20) GLOB '{g}'" for g in _SUFFIXES)
    return (
        f"typeof({q}) = 'text' AND substr({q}, 11, 1) IN (' ', 'T') "
        f"AND (length({q}) = 19 OR {rest}) "
        f"AND datetime(julianday(substr({q}, 1, 19))) = replace(substr({q}, 1, 19), 'T', ' ')"
    )


def plain_candidate(q: str) -> str:
    """candidates() for timestamps, written as it reads."""
    return (
        f"NOT (typeof({q}) = 'text' "
        f"AND (length({q}) = 19 OR (length({q}) = 26 AND substr({q}, 20, 1) = '.' "
        f"AND substr({q}, 21) GLOB '{_SIX}')) "
        f"AND datetime(julianday({q})) = replace(substr({q}, 1, 19), 'T', ' '))"
    )


def edge_texts() -> list[str]:
    dates = [
        f"{y}-{m}-{d}"
        for y in ("0000", "0001", "1900", "1969", "2000", "2023", "2024", "2100", "9999")
        for m in ("00", "01", "02", "04", "12", "13")
        for d in ("00", "01", "28", "29", "30", "31", "32")
    ]
    dates += ["2024-1-01", "24-01-01x", "+024-01-01", "-024-01-01"]
    times = ["00:00:00", "23:59:59", "24:00:00", "23:60:00", "23:59:60", "9:00:00x", "10:00 00"]
    seps = [" ", "T", "t", "x"]
    tails = [
        "",
        "Z",
        "z",
        ".000000",
        ".500000",
        ".998999",
        ".999000",
        ".999499",
        ".999500",
        ".999600",
        ".999999",
        ".12345 ",
        ".1Z    ",
        ".12345a",
        "+00:00",
        "-00:00",
        "+01:00",
        "-01:00",
        "+05:45",
        "+14:00",
        "+14:59",
        "+15:00",
        "-12:00",
        "+1:00 ",
        "+01:60",
        " +01:0",
        ".500000Z",
        ".999600Z",
        ".999999+14:00",
        ".000001-12:00",
        ".999600-01:00",
        ".999999-12:00",
        ".999999-01:00",
        ".000001+01:00",
        "Z     ",
    ]
    texts = [f"{d}{s}{t}{tail}" for d, s, t, tail in itertools.product(dates, seps, times, tails)]
    return [*texts, "", "now", "2460000.5", "2024-01-01", "10:00:00", "2024-01-01 10:00"]


def test_quick_checks_decide_as_printing_the_date_back() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (v)")
    conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in edge_texts()])
    conn.executemany("INSERT INTO t VALUES (?)", [(1,), (1.5,), (b"2024-01-01 10:00:00",)])
    for kind in ("timestamptz", "timestamp"):
        q, t = "v", Type(kind)
        rows = conn.execute(
            f"SELECT v, CASE WHEN {checks.candidates(q, t)} THEN 1 ELSE 0 END, "
            f"CASE WHEN {plain_candidate(q)} THEN 1 ELSE 0 END, "
            f"CASE WHEN {checks.iso_instant(q)} THEN 1 ELSE 0 END, "
            f"CASE WHEN {plain_instant(q)} THEN 1 ELSE 0 END FROM t"
        ).fetchall()
        assert [r for r in rows if r[1] != r[2] or r[3] != r[4]] == []
        # Both answers occur: the edges are on both sides of each check.
        assert {r[1] for r in rows} == {r[3] for r in rows} == {0, 1}


async def test_instant_digests_match_postgresql(scratch_db: str) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (v)")
    conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in edge_texts()])
    t = Type("timestamptz")
    ours = dict(
        conn.execute(
            f"SELECT v, {fastpath.digest_sqlite('v', t)} FROM t WHERE {checks.iso_instant('v')}"
        ).fetchall()
    )
    # Pre-1970 with fractions, offsets at both ends, a fraction julianday() rounds up,
    # and local times whose UTC is past 9999.
    for text in (
        "1969-12-31 23:59:59.500000",
        "1900-02-28T23:59:59.999999-12:00",
        "2024-02-29T00:00:00+14:00",
        "2024-01-01 00:00:00.999600",
        "9999-12-31T23:59:59.999999-01:00",
        "0001-01-01T00:00:00.000001+01:00",
    ):
        assert text in ours
    assert len(ours) > 1000
    # Text without a Z or an offset is UTC (the copy's sessions run in UTC).
    stored = (
        "CASE WHEN v ~ '(Z|[+-][0-9]{2}:[0-9]{2})$' THEN v::timestamptz "
        "ELSE v::timestamp AT TIME ZONE 'UTC' END"
    )
    # PostgreSQL has no year 0 (SQLite's 0000 is refused there, not compared here).
    texts = [v for v in ours if not v.startswith("0000")]
    theirs = await pg_fetch(
        scratch_db,
        f"SELECT v, {fastpath.digest_pg('s', t)} FROM "
        f"(SELECT v, {stored} AS s FROM unnest($1::text[]) v) x",
        texts,
    )
    assert len(theirs) == len(texts)
    assert [(r[0], ours[r[0]]) for r in theirs if r[1] != ours[r[0]]] == []


def test_instants_written_for_sqlite_read_back() -> None:
    """The way back writes every instant as text SQLite's own date functions read as the
    same moment: years before 1000 included (four digits), offsets turned into UTC."""
    conn = sqlite3.connect(":memory:")
    write = {k: values.to_sqlite(Type(k), values.Options()) for k in ("timestamptz", "timestamp")}
    moments = [
        dt.datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=dt.UTC),
        dt.datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
        dt.datetime(2024, 2, 29, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=14))),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
    ]
    for moment in moments:
        utc = moment.astimezone(dt.UTC)
        for kind, value in (("timestamptz", moment), ("timestamp", utc.replace(tzinfo=None))):
            text = write[kind](value)
            assert text == utc.strftime("%Y-%m-%d %H:%M:%S.%f").zfill(26)
            seconds = conn.execute("SELECT datetime(substr(?, 1, 19))", (text,)).fetchone()[0]
            assert seconds == text[:19]


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"), width=120)


def _utc_text(value: dt.datetime) -> str:
    """The text the way back must write, built field by field: UTC, no offset, six digits."""
    u = value.astimezone(dt.UTC) if value.tzinfo else value
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d} "
        f"{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{u.microsecond:06d}"
    )


async def test_the_way_back_writes_each_instant_and_checks_it(
    scratch_db: str, tmp_path: Path
) -> None:
    """PostgreSQL writes the way back's date and time text: the file holds each value in
    UTC to the microsecond (years before 1000 in four digits, offsets applied), and a
    value changed afterwards by one microsecond is caught by verification."""
    await pg_fetch(
        scratch_db,
        "CREATE TABLE stamps (id int PRIMARY KEY, at timestamptz, local timestamp)",
    )
    await pg_fetch(
        scratch_db,
        "INSERT INTO stamps VALUES "
        "(1, '0001-01-01 00:00:00.000001+00', '0999-12-31 23:59:59.999999'), "
        "(2, '2024-02-29 12:00:00+14', '2024-02-29 12:00:00'), "
        "(3, '9999-12-31 23:59:59.999999+00', '9999-12-31 23:59:59.999999'), "
        "(4, NULL, NULL), "
        "(5, '1969-12-31 23:59:59.5-03:30', '1969-12-31 23:59:59.5')",
    )
    source = await pg_fetch(scratch_db, "SELECT id, at, local FROM stamps ORDER BY id")
    back = tmp_path / "back.db"
    report = await transfer.copy(scratch_db, f"sqlite:///{back}", transfer.CopyOptions(), quiet())
    assert report.ok
    with sqlite3.connect(back) as db:
        stored = db.execute("SELECT id, at, local FROM stamps ORDER BY id").fetchall()
    assert stored == [
        (r[0], *(None if v is None else _utc_text(v) for v in (r[1], r[2]))) for r in source
    ]
    assert stored[1][1] == "2024-02-28 22:00:00.000000"
    assert (await transfer.verify(scratch_db, f"sqlite:///{back}")).ok

    with sqlite3.connect(back) as db:
        db.execute("UPDATE stamps SET at = '2024-02-28 22:00:00.000001' WHERE id = 2")
    changed = await transfer.verify(scratch_db, f"sqlite:///{back}")
    failed = [c for c in changed.checks if not c.ok]
    assert [(c.table, c.differing_keys) for c in failed] == [("stamps", ["2"])]


@pytest.mark.parametrize(
    ("declared", "value", "shown"),
    [
        ("timestamptz", "infinity", "infinity"),
        ("timestamptz", "-infinity", "-infinity"),
        ("timestamp", "infinity", "infinity"),
        ("timestamptz", "0044-03-15 12:00:00+00 BC", "0044-03-15 12:00:00+00 BC"),
        ("timestamptz", "0001-01-01 00:00:00+01", "0001-12-31 23:00:00+00 BC"),
        ("timestamptz", "10000-01-01 00:00:00+00", "10000-01-01 00:00:00+00"),
        ("date", "infinity", "infinity"),
        ("date", "0001-01-01 BC", "0001-01-01 BC"),
        ("time", "24:00:00", "24:00:00"),
    ],
)
async def test_values_sqlite_cannot_hold_are_refused_by_key(
    scratch_db: str, tmp_path: Path, declared: str, value: str, shown: str
) -> None:
    """Values PostgreSQL holds beyond SQLite's dates (and Python's): the way back refuses
    them, naming table, column, key and value, before their batch is written. Before, an
    infinity was written as the last microsecond of 9999 (asyncpg reads it so) and the
    verification then failed on it with no location; a date or time before year 1 or at
    24:00 stopped the copy with Python's error alone."""
    await pg_fetch(scratch_db, f"CREATE TABLE odd (id int PRIMARY KEY, at {declared})")
    await pg_fetch(
        scratch_db,
        f"INSERT INTO odd VALUES (1, NULL), (2, '{value}'::{declared}), (3, NULL)",
    )
    back = tmp_path / "back.db"
    with pytest.raises(transfer.TransferError) as refused:
        await transfer.copy(scratch_db, f"sqlite:///{back}", transfer.CopyOptions(), quiet())
    assert str(refused.value).startswith(f"odd.at: key 2: {shown} is beyond what SQLite's")
    with sqlite3.connect(back) as db:
        assert db.execute("SELECT count(*) FROM odd").fetchone() == (0,)
