"""A live migration's pieces for tests: databases, the CLI as a process, comparisons."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.cli import _seed
from app.config import async_url
from app.db.live.capture import SQLITE_CONSTRAINT_TRIGGER
from app.db.migrate import upgrade_async
from app.db.models import Base, email_key
from tests.conftest import Postgres, create_database, unique

ROOT = Path(__file__).parent.parent
_VARIABLES = ("DATABASE_URL", "REPLICA_URLS", "API_TOKENS", "ENVIRONMENT", "MIGRATION_TARGET_URL")


@dataclass
class Databases:
    path: Path
    lite: str
    pg: str


async def databases(postgres: Postgres, tmp_path: Path, scale: float = 0.01) -> Databases:
    """A seeded SQLite file and an empty PostgreSQL database at the same revision."""
    path = tmp_path / "live.db"
    lite = f"sqlite+aiosqlite:///{path}"
    await upgrade_async(lite)
    await asyncio.to_thread(_seed, lite, scale)
    pg = await create_database(postgres, unique("live").replace("-", "_"))
    await upgrade_async(pg)
    return Databases(path, lite, pg)


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in _VARIABLES}
    return clean | {"DEMO_SEED": "false", "LOG_LEVEL": "warning", **extra}


def service_env(db: Databases, **extra: str) -> dict[str, str]:
    """A service on the file with PostgreSQL as its migration target, watching the switch
    every 50 ms."""
    return env(
        DATABASE_URL=db.lite, MIGRATION_TARGET_URL=db.pg, MIGRATION_POLL_SECONDS="0.05", **extra
    )


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_for(self, needle: str, limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        while needle not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} from the process:\n{self.text()}")
            await asyncio.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def cli(tmp_path: Path, name: str, *args: str, environ: dict[str, str] | None = None) -> Process:
    """`python -m app ARGS` in the background, its output in a file."""
    log = tmp_path / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", *args],
            cwd=ROOT,
            env=environ or env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Process(proc, log)


async def finished(process: Process, limit: float = 60.0) -> int:
    deadline = time.monotonic() + limit
    while process.proc.poll() is None:
        if time.monotonic() > deadline:
            process.stop(signal.SIGKILL)
            raise AssertionError(f"still running after {limit} s:\n{process.text()}")
        await asyncio.sleep(0.05)
    return process.proc.returncode


async def rows(url: str) -> dict[str, dict[int, dict[str, Any]]]:
    """Every application row by table and key, every column, typed by the models."""
    engine = create_async_engine(async_url(url), poolclass=NullPool)
    found: dict[str, dict[int, dict[str, Any]]] = {}
    try:
        async with engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                result = await conn.execute(select(table).order_by(table.c.id))
                found[table.name] = {r.id: dict(r._mapping) for r in result}
    finally:
        await engine.dispose()
    return found


def differences(a: dict[str, dict[int, dict[str, Any]]], b: dict[str, Any]) -> list[str]:
    problems = []
    for table, mine in a.items():
        theirs = b[table]
        for key in sorted(mine.keys() ^ theirs.keys())[:3]:
            side = "SQLite" if key in mine else "PostgreSQL"
            problems.append(f"{table} {key}: only on {side}")
        for key in sorted(mine.keys() & theirs.keys()):
            if mine[key] != theirs[key]:
                problems.append(f"{table} {key}: {mine[key]} != {theirs[key]}")
                break
    return problems


async def converged(db: Databases, limit: float = 30.0) -> dict[str, dict[int, dict[str, Any]]]:
    """Both sides equal, row by row (the sync catches up meanwhile); the rows."""
    deadline = time.monotonic() + limit
    while True:
        lite, pg = await rows(db.lite), await rows(db.pg)
        problems = differences(lite, pg)
        if not problems:
            return lite
        if time.monotonic() > deadline:
            raise AssertionError("SQLite and PostgreSQL differ:\n" + "\n".join(problems[:10]))
        await asyncio.sleep(0.3)


def nothing_left_on_postgresql(backend: dict[str, Any]) -> bool:
    """/health/db's `backend` says nothing is left on PostgreSQL after a rollback.

    `unsynced` names a side only while changes are left on it: a count, or null while
    that side is unreachable and the count unknown. So the key must be gone, not null.
    """
    return "unsynced" in backend and "postgresql" not in backend["unsynced"]


def active(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("SELECT active FROM _bookedbarber_live").fetchone()[0])
    finally:
        db.close()


class Writer:
    """Writes straight to the SQLite file in a thread (any process's writer would do).

    New users (copies of user 1 with a fresh email), renames and appointment status
    flips; every commit and every refusal is recorded with its time.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.committed: list[tuple[float, str]] = []
        self.refused: list[float] = []
        self.other: list[str] = []  # errors that were not the freeze's refusal
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        users = Base.metadata.tables["users"]
        columns = [c.name for c in users.columns if c.name != "id"]
        fresh = {"email": "? AS email", "email_key": "? AS email_key"}
        picked = ", ".join(fresh.get(c, c) for c in columns)
        self.insert = (
            f"INSERT INTO users ({', '.join(columns)}) SELECT {picked} FROM users WHERE id = 1"
        )

    def _run(self) -> None:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        n = 0
        try:
            while not self.stop_event.is_set():
                n += 1
                email = f"writer-{os.getpid()}-{n}-{time.monotonic_ns()}@example.test"
                try:
                    db.execute("BEGIN IMMEDIATE")
                    db.execute(self.insert, (email, email_key(email)))
                    db.execute("UPDATE users SET name = ? WHERE id = ?", (f"n{n}", 2 + n % 50))
                    db.execute(
                        "UPDATE appointments SET notes = ? WHERE id = ?", (f"w{n}", 1 + n % 500)
                    )
                    db.execute("COMMIT")
                    self.committed.append((time.monotonic(), email))
                except sqlite3.IntegrityError as exc:
                    db.execute("ROLLBACK")
                    if exc.sqlite_errorcode != SQLITE_CONSTRAINT_TRIGGER:
                        self.other.append(repr(exc))
                    self.refused.append(time.monotonic())
                except sqlite3.OperationalError as exc:  # the lock not had in 10 s, say
                    # Recorded and written on: a dead thread would only show as few commits.
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    self.other.append(repr(exc))
                time.sleep(0.03)
        finally:
            db.close()

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(10)
