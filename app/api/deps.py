"""Session dependencies: each route states its intent in its signature."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.router import DatabaseRouter
from app.db.sessions import Intent
from app.db.statements import Statements, open_statements
from app.errors import BadRequest
from app.guards import COMMITTED_LSN, READ_CONSISTENCY, ReadOptions
from app.operations import Written

T = TypeVar("T")


def get_router(request: Request) -> DatabaseRouter:
    router: DatabaseRouter = request.app.state.db
    return router


def answered(request: Request, written: Written[T]) -> T:
    """A write's result; its consistency token goes out with the response."""
    if written.token:
        request.scope["state"][COMMITTED_LSN] = written.token
    return written.value


async def _close(session: AsyncSession) -> None:
    # A client that disconnects cancels the request mid-query; the connection
    # must still go back to the pool, so closing is shielded from that cancel.
    with anyio.CancelScope(shield=True):
        await session.close()


def _read_options(request: Request) -> ReadOptions:
    """The consistency headers as the edge stack parsed them (app/guards.py)."""
    options: ReadOptions | BadRequest = request.scope["state"][READ_CONSISTENCY]
    if isinstance(options, BadRequest):
        raise options
    return options


# Each dependency holds its resource in its own `async with`, never by iterating another
# generator: an error raised in the route is thrown into the dependency at its `yield`,
# and a generator merely iterated there is left suspended, its connection (or SQLite's
# write turn) held until the garbage collector finalizes it, after the response.


@asynccontextmanager
async def _reading(request: Request, intent: Intent) -> AsyncIterator[AsyncSession]:
    min_lsn, force = _read_options(request)
    session = get_router(request).session(intent, min_lsn=min_lsn, force_primary=force)
    try:
        yield session
    finally:
        await _close(session)


@asynccontextmanager
async def _writing(request: Request) -> AsyncIterator[AsyncSession]:
    router = get_router(request)
    async with router.write_turn():
        session = router.session("write")
        try:
            yield session
            # Commit before the response is sent: a failed commit never follows a 2xx.
            began = session.in_transaction()
            await session.commit()
            # The token must come after the commit record, so it is read after commit.
            token = await router.write_lsn() if began else None
            if token:
                request.scope["state"][COMMITTED_LSN] = token
        finally:
            await _close(session)


def _statements(request: Request, intent: Intent) -> Statements:
    min_lsn, force = _read_options(request)
    return open_statements(get_router(request), intent, min_lsn=min_lsn, force_primary=force)


async def read_statements(request: Request) -> AsyncIterator[Statements]:
    async with _statements(request, "read") as db:
        yield db


async def analytics_statements(request: Request) -> AsyncIterator[Statements]:
    async with _statements(request, "analytics") as db:
        yield db


async def read_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _reading(request, "read") as session:
        yield session


async def analytics_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _reading(request, "analytics") as session:
        yield session


async def write_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _writing(request) as session:
        yield session


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def method_session(request: Request) -> AsyncIterator[AsyncSession]:
    """Intent from the HTTP method: safe methods read, everything else writes."""
    opened = _reading(request, "read") if request.method in SAFE_METHODS else _writing(request)
    async with opened as session:
        yield session


ReadSession = Annotated[AsyncSession, Depends(read_session, scope="function")]
WriteSession = Annotated[AsyncSession, Depends(write_session, scope="function")]
AnalyticsSession = Annotated[AsyncSession, Depends(analytics_session, scope="function")]
MethodSession = Annotated[AsyncSession, Depends(method_session, scope="function")]
# The reads' statements handle (app/db/statements.py) for their use cases
# (app/operations/reads.py): the same whatever the backend.
ReadStatements = Annotated[Statements, Depends(read_statements, scope="function")]
AnalyticsStatements = Annotated[Statements, Depends(analytics_statements, scope="function")]

# The routes' security scheme in the OpenAPI document; the edge stack checks the token
# (app/guards.py TokenGate), before any door.
bearer_scheme = HTTPBearer(auto_error=False, description="A token from API_TOKENS")
