"""A column's home decided from looks()'s counts (scans that stop at the last value
needing a look, re-probes limited to the values the declared type refused) is the home
the plain full scans decide, wherever the odd values sit in the table."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from app.db.transfer import lite, probe
from app.db.transfer.values import Options

ROWS = 3_000
# Declared type, plain values, odd values (some fit a wider home, some only text or bytea).
CASES: dict[str, tuple[str, Any, list[Any]]] = {
    "int": ("BIGINT", lambda i: i, ["forty", 2.5, b"\xff\x00", "9223372036854775808", "7"]),
    "money": ("NUMERIC(10, 2)", lambda i: i / 4, [float("inf"), 1.234, "x", 12345678901.5]),
    "flag": ("BOOLEAN", lambda i: i % 2, ["yes", "maybe", 2, b"\x01"]),
    "code": ("VARCHAR(5)", lambda i: f"c{i % 999}", ["toolongvalue", "f\udcffo", "a\x00b"]),
    "doc": ("JSON", lambda i: f'{{"n": {i}}}', ["{oops", "", '{"a": "\\u0041"}', 3]),
    "at": (
        "DATETIME",
        lambda i: f"2024-01-{1 + i % 28:02d} 10:00:00",
        ["", "2024-02-30 10:00:00", "2024-01-01T10:00:00Z", "2024-01-01 10:00:00\x00x", 5],
    ),
    "day": ("DATE", lambda i: f"2024-03-{1 + i % 28:02d}", ["", "2024-02-30", "03/04/2024"]),
    # Only text past a NUL byte sets these apart from a plain instant: never stored cut short.
    "cut": (
        "DATETIME",
        lambda i: f"2024-01-{1 + i % 28:02d} 10:00:00",
        ["2024-01-01 10:00:00\x00x", "2024-01-01T10:00:00Z\x00y"],
    ),
    "cut_day": ("DATE", lambda i: f"2024-03-{1 + i % 28:02d}", ["2024-03-01\x00z"]),
}


def _build(path: Path, declared: str, plain: Any, odd: list[Any], where: str) -> None:
    rng = random.Random(f"{declared}-{where}")
    values = [plain(i) for i in range(ROWS)]
    spots = {
        "start": list(range(len(odd))),
        "end": list(range(ROWS - len(odd), ROWS)),
        "spread": sorted(rng.sample(range(ROWS), len(odd))),
    }[where]
    for spot, value in zip(spots, odd, strict=True):
        values[spot] = value
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, v {declared})")
    for i, value in enumerate(values, start=1):
        if isinstance(value, str) and "\udcff" in value:
            value = value.encode("utf-8", "surrogateescape")
            conn.execute("INSERT INTO t VALUES (?, CAST(? AS TEXT))", (i, value))
        else:
            conn.execute("INSERT INTO t VALUES (?, ?)", (i, value))
    conn.commit()
    conn.close()


@pytest.mark.parametrize("where", ["start", "end", "spread"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_home_from_counts_is_the_home_of_full_scans(tmp_path: Path, case: str, where: str) -> None:
    declared, plain, odd = CASES[case]
    path = tmp_path / "probe.db"
    _build(path, declared, plain, odd, where)
    conn = lite.connect(path)
    try:
        table = lite.reflect(conn)["t"]
        column = table.column("v")
        assert column is not None
        counts = probe.looks(conn, table, [c.type for c in table.columns])[1]
        fast = probe.home(conn, table, "v", column.type, Options(), False, counts)
        full = probe.home(conn, table, "v", column.type, Options(), False)
        assert fast == full
        for strict in (True, False):
            assert probe.home(conn, table, "v", column.type, Options(), strict, counts) == (
                probe.home(conn, table, "v", column.type, Options(), strict)
            )
        # The odd values were found wherever they sit: the home is never the declared type.
        assert fast[0] != column.type
    finally:
        conn.close()
