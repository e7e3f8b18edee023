"""Session dependencies: each route states its intent in its signature."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.router import DatabaseRouter
from app.db.sessions import Intent, Reader
from app.errors import BadRequest
from app.guards import COMMITTED_LSN, READ_CONSISTENCY, ReadOptions


def get_router(request: Request) -> DatabaseRouter:
    router: DatabaseRouter = request.app.state.db
    return router


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


async def _reading(request: Request, intent: Intent) -> AsyncIterator[AsyncSession]:
    min_lsn, force = _read_options(request)
    session = get_router(request).session(intent, min_lsn=min_lsn, force_primary=force)
    try:
        yield session
    finally:
        await _close(session)


async def _hot_reading(request: Request, intent: Intent) -> AsyncIterator[Reader | AsyncSession]:
    router = get_router(request)
    if not router.raw_reads:
        async for session in _reading(request, intent):
            yield session
        return
    min_lsn, force = _read_options(request)
    reader = router.reader(intent, min_lsn=min_lsn, force_primary=force)
    try:
        yield reader
    finally:
        with anyio.CancelScope(shield=True):
            await reader.close()


async def hot_read(request: Request) -> AsyncIterator[Reader | AsyncSession]:
    async for handle in _hot_reading(request, "read"):
        yield handle


async def hot_analytics(request: Request) -> AsyncIterator[Reader | AsyncSession]:
    async for handle in _hot_reading(request, "analytics"):
        yield handle


async def read_session(request: Request) -> AsyncIterator[AsyncSession]:
    async for session in _reading(request, "read"):
        yield session


async def analytics_session(request: Request) -> AsyncIterator[AsyncSession]:
    async for session in _reading(request, "analytics"):
        yield session


async def write_session(request: Request) -> AsyncIterator[AsyncSession]:
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


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def method_session(request: Request) -> AsyncIterator[AsyncSession]:
    """Intent from the HTTP method: safe methods read, everything else writes."""
    if request.method in SAFE_METHODS:
        async for session in read_session(request):
            yield session
    else:
        async for session in write_session(request):
            yield session


ReadSession = Annotated[AsyncSession, Depends(read_session, scope="function")]
WriteSession = Annotated[AsyncSession, Depends(write_session, scope="function")]
AnalyticsSession = Annotated[AsyncSession, Depends(analytics_session, scope="function")]
MethodSession = Annotated[AsyncSession, Depends(method_session, scope="function")]
# The hot reads: on PostgreSQL through asyncpg their statements (app/queries/hot.py) on a
# routed Reader, elsewhere an ORM session.
HotRead = Annotated[Reader | AsyncSession, Depends(hot_read, scope="function")]
HotAnalytics = Annotated[Reader | AsyncSession, Depends(hot_analytics, scope="function")]

# The routes' security scheme in the OpenAPI document; the edge stack checks the token
# (app/guards.py TokenGate), before any door.
bearer_scheme = HTTPBearer(auto_error=False, description="A token from API_TOKENS")
