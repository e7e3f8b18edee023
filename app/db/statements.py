"""The handle a use case runs its statements through, whatever the backend.

A `Statement` is written once: its PostgreSQL text (asyncpg's $1, $2 placeholders) and,
where SQLite's differs, SQLite's; its result columns' types make rows alike on both
backends (datetimes aware UTC, money Decimal). A `Statements` handle owns one unit of
work: the statements, the commit that ends it and the write's consistency token.

- PostgreSQL through asyncpg (`PostgresStatements`): each statement in autocommit on a
  routed pooled connection (app/db/sessions.py's RoutedConnection), one round trip; a write's
  token is the WAL position read once after it, on the same connection.
- SQLite (`TransactionStatements`): one SQLAlchemy
  connection in one transaction (SQLite: BEGIN IMMEDIATE, after the service's writer
  turn), committed by `commit`, rolled back by `close` otherwise.

The backends differ in how a statement is executed and rendered, never in what it
checks or returns.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self

import anyio
from sqlalchemy import Column, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import TypeEngine

from app.db.live.capture import FROZEN_MESSAGE, SQLITE_FROZEN, Frozen
from app.db.lsn import WRITE_LSN
from app.db.sessions import Intent, RoutedConnection

if TYPE_CHECKING:
    import asyncpg

    from app.db.router import DatabaseRouter
    from app.queries.shapes import Document

Backend = Literal["postgresql", "sqlite"]
# The statement's time as a timestamp column holds it: SQLite's as SQLAlchemy writes it.
NOW = ("now()", "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'")
Row = Mapping[str, object]
# $3 or $3::bigint (a cast only PostgreSQL needs to type its parameter)
_PLACEHOLDER = re.compile(r"\$(\d+)(?:::[a-z]+(?:\[\])?)?")
_Processor = Callable[[object], object]


@dataclass(frozen=True, eq=False)
class Statement:
    """One statement in each backend's words, with the types of its parameters and columns.

    The types matter where the driver does not speak them (SQLite: aware datetimes,
    Decimal): there the dialect's own bind and result processors convert them, as the
    ORM would. asyncpg speaks them all: on PostgreSQL values pass through.
    """

    postgresql: str
    sqlite: str
    # TypeEngine and Column are invariant in their Python type: [Any] is SQLAlchemy's own
    # spelling of "of whatever type" (Table.c holds Column[Any]).
    params: tuple[TypeEngine[Any] | None, ...] = ()
    columns: Mapping[str, TypeEngine[Any]] = field(default_factory=dict)
    _cache: dict[str, tuple[list[_Processor | None], dict[str, _Processor]]] = field(
        default_factory=dict, repr=False
    )

    def processors(self, dialect: Dialect) -> tuple[list[_Processor | None], dict[str, _Processor]]:
        """(a bind processor per parameter, a result processor per column) for `dialect`."""
        found = self._cache.get(dialect.name)
        if found is None:
            binds: list[_Processor | None] = [
                None if t is None else t.dialect_impl(dialect).bind_processor(dialect)
                for t in self.params
            ]
            results: dict[str, _Processor] = {
                name: processor
                for name, t in self.columns.items()
                if (processor := t.dialect_impl(dialect).result_processor(dialect, None))
            }
            found = self._cache[dialect.name] = (binds, results)
        return found


def statement(
    postgresql: str,
    *,
    sqlite: str | None = None,
    params: Sequence[TypeEngine[Any] | Column[Any] | None] = (),
    columns: Iterable[Column[Any]] | Mapping[str, TypeEngine[Any]] = (),
    **pieces: tuple[str, str],
) -> Statement:
    """A Statement written once: PostgreSQL's text, SQLite's derived from it.

    SQLite's text is PostgreSQL's with ?N for $N (their casts dropped) and each
    {piece} in its own words: `pieces` name (PostgreSQL's, SQLite's) fragments, such as
    now(). `sqlite` replaces the derivation where the statements differ more.
    `params`: the type (or column) of $1, $2, ... where a backend needs it;
    `columns`: the table columns (or name -> type) the statement returns.
    """
    kinds = tuple(p.type if isinstance(p, Column) else p for p in params)
    types = (
        dict(columns)
        if isinstance(columns, Mapping)
        else {column.name: column.type for column in columns}
    )
    postgres_text, lite = postgresql, postgresql
    if pieces:  # formatted only then: a statement without pieces may hold braces
        postgres_text = postgresql.format(**{name: pg for name, (pg, _) in pieces.items()})
        lite = postgresql.format(**{name: lite for name, (_, lite) in pieces.items()})
    if sqlite is None:
        sqlite = _PLACEHOLDER.sub(r"?\1", lite)
    return Statement(postgres_text, sqlite, kinds, types)


async def rendered(db: Statements, document: Document, args: tuple[object, ...]) -> bytes | None:
    """`document`'s body written by the Shapes from its rows (None: no parent)."""
    rows = await db.fetch(document.rows, *args)
    # Only no rows can hide a missing parent (the rows name it by a foreign key).
    parent = document.parent
    if not rows and parent is not None and await db.fetchrow(parent, args[0]) is None:
        return None
    return document.render(rows, args)


def _encoded(row: asyncpg.Record | None) -> bytes | None:
    """The `body` column of a JSON statement's row as bytes; None for NULL or no row."""
    text: str | None = row["body"] if row is not None else None
    return text.encode() if text is not None else None


async def sqlite_fetch(
    connection: AsyncConnection, statement: Statement, *args: object
) -> list[Row]:
    """`statement`'s SQLite text on a SQLAlchemy connection, in whatever transaction it is in."""
    binds, results = statement.processors(connection.dialect)
    values = tuple(
        bind(value) if bind is not None else value
        for bind, value in zip(binds + [None] * (len(args) - len(binds)), args, strict=True)
    )
    result = await connection.exec_driver_sql(statement.sqlite, values)
    if not result.returns_rows:
        return []
    names = list(result.keys())
    rows: list[Row] = []
    for fetched in result.all():
        row = dict(zip(names, fetched, strict=True))
        for name, processor in results.items():
            if name in row:
                row[name] = processor(row[name])
        rows.append(row)
    return rows


class Statements(Protocol):
    """One unit of work's statements; used as `async with router.statements(intent) as db`."""

    backend: Backend

    async def fetch(self, statement: Statement, *args: object) -> Sequence[Row]: ...

    async def fetchrow(self, statement: Statement, *args: object) -> Row | None: ...

    async def document(self, document: Document, *args: object) -> bytes | None:
        """A read's whole body (None: its parent does not exist): the Shapes write it from
        the read's rows, or PostgreSQL writes it where the document says (its `json`)."""

    async def commit(self) -> str | None:
        """End the unit of work; a write's consistency token (PostgreSQL with replicas)."""

    async def close(self) -> None:
        """Give the connection back (rolling back what was not committed); never cancelled."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class PostgresStatements:
    """Autocommit statements on a routed asyncpg connection: each one its own commit."""

    __slots__ = ("_connection", "_replicas", "_write")
    backend: Backend = "postgresql"

    def __init__(self, connection: RoutedConnection, *, write: bool, replicas: bool) -> None:
        self._connection, self._write, self._replicas = connection, write, replicas

    async def fetch(self, statement: Statement, *args: object) -> Sequence[Row]:
        # An asyncpg Record is a read-only mapping, which its stubs do not declare.
        return await self._connection.fetch(statement.postgresql, *args)  # type: ignore[return-value]

    async def fetchrow(self, statement: Statement, *args: object) -> Row | None:
        return await self._connection.fetchrow(statement.postgresql, *args)  # type: ignore[return-value]

    async def document(self, document: Document, *args: object) -> bytes | None:
        if document.json is None:
            return await rendered(self, document, args)
        return _encoded(await self._connection.fetchrow(document.json.postgresql, *args))

    async def commit(self) -> str | None:
        if not (self._write and self._replicas):
            return None
        # After the statements' own commits, on the same connection: the token covers them.
        row = await self._connection.fetchrow(WRITE_LSN)
        return str(row["lsn"]) if row is not None and row["lsn"] else None

    async def close(self) -> None:
        # A return that needs no await cannot be cancelled halfway: only the awaited one
        # takes a cancel scope (microseconds per request on asyncio).
        if self._connection.close_without_io():
            return
        with anyio.CancelScope(shield=True):
            await self._connection.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class TransactionStatements:
    """SQLite: one SQLAlchemy connection in one transaction (PostgreSQL, PgBouncer included,
    takes PostgresStatements)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        turn: AbstractAsyncContextManager[object] | None,
        token: Callable[[], Awaitable[str | None]] | None,
        live: bool = False,
    ) -> None:
        self.backend: Backend = "sqlite"
        self._engine, self._turn, self._token = engine, turn, token
        self._connection: AsyncConnection | None = None
        self._in_turn = False
        self._live = live  # a write on the file a live migration moves (app/db/live)

    async def __aenter__(self) -> Self:
        if self._turn is not None:
            await self._turn.__aenter__()
            self._in_turn = True
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            # A refusal the operation worded from what it read (app/errors.py: a 4xx).
            refused = exc is not None and 400 <= getattr(exc, "status", 0) < 500
            if refused and self._live and await self._frozen():
                raise Frozen(FROZEN_MESSAGE) from exc
        finally:
            await self.close()

    async def _frozen(self) -> bool:
        """Whether writes are paused, read in this unit's own transaction."""
        if self._connection is None:
            return False
        try:
            return bool((await self._connection.execute(text(SQLITE_FROZEN))).first())
        except OperationalError:  # no live state in the file (yet): nothing is paused
            return False

    async def fetch(self, statement: Statement, *args: object) -> Sequence[Row]:
        connection = self._connection
        if connection is None:
            connection = self._connection = await self._engine.connect()
            await connection.begin()  # the engine's BEGIN (SQLite: BEGIN IMMEDIATE)
        return await sqlite_fetch(connection, statement, *args)

    async def fetchrow(self, statement: Statement, *args: object) -> Row | None:
        rows = await self.fetch(statement, *args)
        return rows[0] if rows else None

    async def document(self, document: Document, *args: object) -> bytes | None:
        return await rendered(self, document, args)

    async def commit(self) -> str | None:
        connection = self._connection
        if connection is None:
            return None
        await connection.commit()
        if self._token is None:
            return None
        token: str | None = await self._token()
        return token

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            connection, self._connection = self._connection, None
            try:
                if connection is not None:
                    await connection.close()  # rolls back what was not committed
            finally:
                if self._in_turn and self._turn is not None:
                    self._in_turn = False
                    await self._turn.__aexit__(None, None, None)


def open_statements(
    router: DatabaseRouter,
    intent: Intent,
    *,
    min_lsn: int | None = None,
    force_primary: bool = False,
) -> Statements:
    """The handle for `intent`: asyncpg autocommit where it can, else one transaction."""
    write = intent == "write"
    if router.uses_asyncpg:
        connection = router.routed_connection(intent, min_lsn=min_lsn, force_primary=force_primary)
        return PostgresStatements(connection, write=write, replicas=bool(router.replicas))
    target = router.target(intent, min_lsn=min_lsn, force_primary=force_primary)
    return TransactionStatements(
        target.engine,
        turn=router.write_turn() if write else None,
        token=router.write_lsn if write else None,
        live=write and router.sqlite and router.settings.migration_target_url is not None,
    )
