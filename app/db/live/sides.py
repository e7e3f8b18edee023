"""The two databases of a live migration: connections, the state row, row reads and writes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, Table, bindparam, delete, event, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.config import async_url
from app.db.engine import sqlite_on_connect
from app.db.live import capture
from app.urls import asyncpg_dsn

Backend = Literal["sqlite", "postgresql"]
CONNECT_SECONDS = 5.0
COMMAND_SECONDS = 30.0


@dataclass
class State:
    active: Backend
    epoch: int
    reason: str | None
    frozen_until: float
    owner: str | None
    block_end: int = 0
    # Changes a side still held when it stopped serving (an automatic rollback), as the
    # sync last counted them: which side, how many (None: unreachable), when.
    left_on: str | None = None
    left_count: int | None = None

    def agrees(self, other: State) -> bool:
        """The same switch, the same newest key block."""
        return (self.active, self.epoch, self.block_end) == (
            other.active,
            other.epoch,
            other.block_end,
        )


class LiveDatabase:
    """One database of a live migration, with a small pool of its own (never the service's)."""

    def __init__(self, url: str) -> None:
        self.url = async_url(url)
        sqlite = self.url.startswith("sqlite")
        # A PostgreSQL that hangs (stopped, or a silent peer) must fail a call, not hold it.
        limits = {} if sqlite else {"timeout": CONNECT_SECONDS, "command_timeout": COMMAND_SECONDS}
        self.engine: AsyncEngine = create_async_engine(
            self.url, poolclass=NullPool, hide_parameters=True, connect_args=limits
        )
        self.backend: Backend = "sqlite" if sqlite else "postgresql"
        if self.backend == "sqlite":
            event.listen(self.engine.sync_engine, "connect", sqlite_on_connect)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)

    @property
    def url_plain(self) -> str:
        """The URL asyncpg takes directly (postgresql://, libpq's sslmode)."""
        return asyncpg_dsn(self.url)

    @property
    def sqlite(self) -> bool:
        return self.backend == "sqlite"

    async def dispose(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """One consistent snapshot: a deferred read on SQLite, REPEATABLE READ on PostgreSQL."""
        async with self.engine.connect() as conn:
            if not self.sqlite:
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def writing(self, *, apply: bool = False) -> AsyncIterator[AsyncConnection]:
        """A write transaction; `apply` lets it past the guard and the capture.

        SQLite's begins IMMEDIATE (the write lock first, never a deadlock upgrading a
        read); every other connection of a side's reads without it.
        """
        async with self.engine.connect() as conn:
            conn.info["begin"] = "BEGIN IMMEDIATE"
            async with conn.begin():
                if apply and self.sqlite:
                    await conn.execute(text(f"INSERT INTO {capture.APPLYING} VALUES (1)"))
                elif apply:
                    await conn.execute(text("SET LOCAL bookedbarber.applying = 'on'"))
                yield conn
                if apply and self.sqlite:
                    await conn.execute(text(f"DELETE FROM {capture.APPLYING}"))

    async def install(self, active: Backend) -> None:
        statements = capture.sqlite_install(active) if self.sqlite else capture.pg_install(active)
        async with self.writing() as conn:
            for statement in statements:
                await conn.exec_driver_sql(statement)

    async def installed(self) -> bool:
        async with self.engine.connect() as conn:
            if self.sqlite:
                found = await conn.scalar(
                    text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :n"),
                    {"n": capture.STATE},
                )
            else:
                found = await conn.scalar(text("SELECT to_regclass(:n)"), {"n": capture.STATE})
        return found is not None

    async def state(self, conn: AsyncConnection | None = None) -> State:
        lock = "" if self.sqlite or conn is None else " FOR UPDATE"
        query = text(
            "SELECT active, epoch, reason, frozen_until, owner, block_end, left_on, left_count "
            f"FROM {capture.STATE} WHERE id = 1{lock}"
        )
        if conn is None:
            async with self.engine.connect() as own:
                row = (await own.execute(query)).one()
        else:
            row = (await conn.execute(query)).one()
        count = None if row[7] is None else int(row[7])
        return State(row[0], int(row[1]), row[2], float(row[3]), row[4], int(row[5]), row[6], count)

    async def set_state(self, conn: AsyncConnection, **values: object) -> None:
        assignments = ", ".join(f"{name} = :{name}" for name in values)
        await conn.execute(text(f"UPDATE {capture.STATE} SET {assignments} WHERE id = 1"), values)

    async def cursor(self, conn: AsyncConnection, direction: str) -> int | None:
        lock = "" if self.sqlite else " FOR UPDATE"
        value = await conn.scalar(
            text(f"SELECT last_seq FROM {capture.CURSOR} WHERE direction = :d{lock}"),
            {"d": direction},
        )
        return None if value is None else int(value)

    async def set_cursor(self, conn: AsyncConnection, direction: str, seq: int) -> None:
        statement = (
            f"INSERT INTO {capture.CURSOR} (direction, last_seq, applied_at) "
            "VALUES (:d, :s, :t) ON CONFLICT (direction) "
            "DO UPDATE SET last_seq = excluded.last_seq, applied_at = excluded.applied_at"
        )
        await conn.execute(text(statement), {"d": direction, "s": seq, "t": time.time()})

    async def changes(
        self, conn: AsyncConnection, limit: int | None
    ) -> Sequence[tuple[int, str, int]]:
        """The oldest changes not applied yet (applied ones are consumed: see consume); with
        no limit, all of them."""
        listed = f"SELECT seq, tbl, key FROM {capture.CHANGES} ORDER BY seq"
        if limit is None:
            rows = await conn.execute(text(listed))
        else:
            rows = await conn.execute(text(f"{listed} LIMIT :limit"), {"limit": limit})
        return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]

    async def backlog(self, conn: AsyncConnection) -> tuple[int, float | None]:
        """Changes waiting and the time of the oldest of them."""
        row = (await conn.execute(text(f"SELECT count(*), min(at) FROM {capture.CHANGES}"))).one()
        return int(row[0]), None if row[1] is None else float(row[1])

    async def consume(self, seqs: Sequence[int]) -> None:
        """Drop changes the destination has committed.

        By their numbers, not up to one: on PostgreSQL numbers are taken at insert and
        committed in another order, so a lower number can become visible later.
        """
        statement = text(f"DELETE FROM {capture.CHANGES} WHERE seq IN :seqs").bindparams(
            bindparam("seqs", expanding=True)
        )
        async with self.writing() as conn:
            for start in range(0, len(seqs), 1000):
                await conn.execute(statement, {"seqs": list(seqs[start : start + 1000])})

    async def rows(
        self, conn: AsyncConnection, table: Table, keys: Sequence[int]
    ) -> list[dict[str, object]]:
        column = table.c[capture.key_column(table)]
        found: list[dict[str, object]] = []
        for start in range(0, len(keys), 500):
            result = await conn.execute(select(table).where(column.in_(keys[start : start + 500])))
            found += [dict(r._mapping) for r in result]
        return found

    async def upsert(
        self, conn: AsyncConnection, table: Table, rows: list[dict[str, object]]
    ) -> None:
        if not rows:
            return
        key = capture.key_column(table)
        insert = postgresql.insert(table) if not self.sqlite else sqlite.insert(table)
        statement = insert.on_conflict_do_update(
            index_elements=[key],
            set_={c.name: insert.excluded[c.name] for c in table.columns if c.name != key},
        )
        for start in range(0, len(rows), 1000):
            await conn.execute(statement, rows[start : start + 1000])

    async def delete(self, conn: AsyncConnection, table: Table, keys: Sequence[int]) -> None:
        if keys:
            column = table.c[capture.key_column(table)]
            await conn.execute(delete(table).where(column.in_(list(keys))))

    async def applied_mark(self, conn: AsyncConnection) -> int:
        """How far the applied log goes: it grows with every applier's commit."""
        value = await conn.scalar(text(capture.APPLIED_MARK))
        return int(value or 0)

    async def log_applied(self, conn: AsyncConnection, keys: dict[str, set[int]]) -> None:
        """Which keys the sync wrote here, in commit order (app/db/live/agreement)."""
        now = time.time()
        rows = [{"t": t, "k": k, "at": now} for t, ks in keys.items() for k in ks]
        if rows:
            await conn.execute(
                text(f"INSERT INTO {capture.APPLIED} (tbl, key, at) VALUES (:t, :k, :at)"), rows
            )


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql(connection.info.get("begin", "BEGIN"))
