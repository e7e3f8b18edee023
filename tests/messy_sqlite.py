"""SQLite files the way real ones are: loose types, broken rules, awkward names."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE "order" ("select" TEXT PRIMARY KEY, "from" VARCHAR(20), "where" INTEGER);
CREATE TABLE "group" (id INTEGER PRIMARY KEY, "user" TEXT NOT NULL, "limit" REAL);
CREATE TABLE people (
    id INTEGER PRIMARY KEY, name TEXT, email VARCHAR(80), is_active BOOLEAN,
    created_at DATETIME, birthday DATE, profile JSON, nickname TEXT, photo BLOB
);
CREATE UNIQUE INDEX ux_people_email ON people (email);
CREATE INDEX ix_people_name ON people (name);
CREATE INDEX ix_people_active_partial ON people (name) WHERE is_active = 1;
CREATE TABLE departments (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL,
    head_id INTEGER REFERENCES employees (id)
);
CREATE TABLE employees (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL,
    department_id INTEGER REFERENCES departments (id),
    manager_id INTEGER REFERENCES employees (id),
    salary NUMERIC(10, 2)
);
CREATE TABLE purchases (
    id INTEGER PRIMARY KEY, person_id INTEGER NOT NULL REFERENCES people (id),
    amount NUMERIC(10, 2), paid_at TIMESTAMP, quantity INTEGER, code VARCHAR(5)
);
CREATE INDEX ix_purchases_person ON purchases (person_id);
CREATE TABLE courses (code TEXT PRIMARY KEY, title TEXT) WITHOUT ROWID;
CREATE TABLE enrollments (
    person_id INTEGER REFERENCES people (id), course_code TEXT REFERENCES courses (code),
    grade NUMERIC(3, 1), PRIMARY KEY (person_id, course_code)
);
CREATE TABLE event_log (at DATETIME, level TEXT, message TEXT);
CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
CREATE TABLE untyped (id INTEGER PRIMARY KEY, a, b, c);
CREATE TABLE settings (key TEXT PRIMARY KEY, value JSON) WITHOUT ROWID;
CREATE TABLE prices (id INTEGER PRIMARY KEY, price NUMERIC(10, 2), ratio DOUBLE);
"""

DATETIMES = [
    "2024-01-02 03:04:05",
    "2024-01-02T03:04:05Z",
    "2024-01-02 03:04:05.123456",
    "2024-01-02T05:04:05+02:00",
    "2024-03-10",
    1_704_164_645,
    None,
]
BOOLEANS = [0, 1, "true", "false", "t", "f", "TRUE", None]
NAMES = ["Zoë", "José", "Łukasz", "李雷", "Ægir", "O'Brien", 'say "hi"', "", None, "🙂 emoji"]


def build_messy(path: Path, filler_tables: int = 10) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    rng = random.Random(7)
    conn.executemany(
        'INSERT INTO "order" VALUES (?, ?, ?)',
        [("alpha", "x", 1), ("beta", "", None), ("Gamma", None, 3), ("δέλτα", "uni", 4)],
    )
    conn.executemany(
        'INSERT INTO "group" VALUES (?, ?, ?)', [(1, "a", 0.5), (2, "b", None), (3, "c", 1e-7)]
    )
    people = []
    for i in range(1, 61):
        people.append(
            (
                i,
                NAMES[i % len(NAMES)],
                f"p{i}@example.com" if i % 7 else None,
                BOOLEANS[i % len(BOOLEANS)],
                DATETIMES[i % len(DATETIMES)],
                f"19{50 + i % 40}-0{1 + i % 9}-1{i % 10}",
                '{"b": 1, "a": [1, 2, {"x": null}], "s": "ü"}' if i % 3 else None,
                "" if i % 4 == 0 else None if i % 4 == 1 else f"nick{i}",
                bytes([i % 256, 0, 255]) if i % 5 == 0 else None,
            )
        )
    conn.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", people)
    # A cycle (departments <-> employees) and a self-reference (manager_id).
    conn.executemany(
        "INSERT INTO departments VALUES (?, ?, ?)",
        [(1, "Cuts", 1), (2, "Color", 3), (3, "Ops", None)],
    )
    conn.executemany(
        "INSERT INTO employees VALUES (?, ?, ?, ?, ?)",
        [
            (1, "Ana", 1, None, 5200.5),
            (2, "Ben", 1, 1, 4100),
            (3, "Cy", 2, 1, "3999.99"),
            (4, "Di", 2, 3, 4100.1),
        ],
    )
    purchases = []
    amounts = [19.99, 5, 0.1, 100.25, "42.50", 7.5]
    for i in range(1, 201):
        person = i % 60 + 1 if i % 50 else 999 + i  # orphans: people 1049, 1099, ...
        purchases.append(
            (
                i,
                person,
                amounts[i % len(amounts)],
                DATETIMES[i % (len(DATETIMES) - 1)],
                i % 9,
                f"C{i % 100}",
            )
        )
    purchases.append((201, 1, 12.345, "2024-05-05 10:00:00", 2.5, "TOOLONGCODE"))  # must widen
    conn.executemany("INSERT INTO purchases VALUES (?, ?, ?, ?, ?, ?)", purchases)
    conn.executemany(
        "INSERT INTO courses VALUES (?, ?)", [("MATH-1", "Algebra"), ("ART", "Färben"), ("bio", "")]
    )
    conn.executemany(
        "INSERT INTO enrollments VALUES (?, ?, ?)",
        [(1, "MATH-1", 3.5), (1, "ART", 4), (2, "ART", None), (3, "GONE", 2.0)],  # orphan course
    )
    conn.executemany(
        "INSERT INTO event_log VALUES (?, ?, ?)",
        [(DATETIMES[i % 6], ["info", "warn"][i % 2], f"event {i % 4}") for i in range(30)],
    )
    conn.executemany(
        "INSERT INTO notes VALUES (?, ?)",
        [(1, "plain"), (2, "has\x00nul"), (3, "tab\tnewline\n"), (4, ""), (5, None)],
    )
    conn.executemany(
        "INSERT INTO untyped VALUES (?, ?, ?, ?)",
        [(1, 1, 1.5, "x"), (2, 2, 2, 3), (3, None, 3.25, None)],
    )
    conn.executemany(
        "INSERT INTO settings VALUES (?, ?)",
        [("theme", '{"dark": true}'), ("limits", "[1, 2.5, null]"), ("empty", "{}")],
    )
    conn.executemany(
        "INSERT INTO prices VALUES (?, ?, ?)",
        [(i, rng.randint(1, 99_999) / 100, rng.random()) for i in range(1, 101)],
    )
    for t in range(filler_tables):
        conn.execute(
            f"CREATE TABLE filler_{t:02d} (id INTEGER PRIMARY KEY, "
            "person_id INTEGER REFERENCES people (id), label TEXT, at DATETIME)"
        )
        conn.executemany(
            f"INSERT INTO filler_{t:02d} VALUES (?, ?, ?, ?)",
            [(i, i % 60 + 1, f"row {i}", "2023-12-31 23:59:59") for i in range(1, 21)],
        )
    conn.commit()
    conn.close()


def build_large(path: Path, rows: int) -> None:
    """One big table (and a small parent) for resumability and the benchmark."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE shops (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
        CREATE TABLE bookings (
            id INTEGER PRIMARY KEY, shop_id INTEGER NOT NULL REFERENCES shops (id),
            customer TEXT, starts_at DATETIME, price NUMERIC(10, 2), paid BOOLEAN, notes TEXT
        );
        CREATE INDEX ix_bookings_shop ON bookings (shop_id);
        """
    )
    conn.executemany("INSERT INTO shops VALUES (?, ?)", [(i, f"shop {i}") for i in range(1, 51)])
    rng = random.Random(1)

    def generate() -> object:
        for i in range(1, rows + 1):
            yield (
                i,
                i % 50 + 1,
                f"customer {rng.randint(1, 100_000)}",
                f"2024-{1 + i % 12:02d}-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:00",
                rng.randint(500, 20_000) / 100,
                i % 2,
                None if i % 3 else "regular",
            )

    conn.executemany("INSERT INTO bookings VALUES (?, ?, ?, ?, ?, ?, ?)", generate())  # type: ignore[arg-type]
    conn.commit()
    conn.close()
