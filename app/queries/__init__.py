"""Repositories: one per aggregate. They build statements and never commit."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.errors import (
    CHECK_VIOLATION,
    FOREIGN_KEY_VIOLATION,
    NOT_NULL_VIOLATION,
    UNIQUE_VIOLATION,
    sqlstate,
)

# SQLite's extended result codes for constraint failures, mapped to SQLSTATEs.
_SQLITE_CONSTRAINTS = {
    275: CHECK_VIOLATION,  # SQLITE_CONSTRAINT_CHECK
    787: FOREIGN_KEY_VIOLATION,  # SQLITE_CONSTRAINT_FOREIGNKEY
    1299: NOT_NULL_VIOLATION,  # SQLITE_CONSTRAINT_NOTNULL
    1555: UNIQUE_VIOLATION,  # SQLITE_CONSTRAINT_PRIMARYKEY
    2067: UNIQUE_VIOLATION,  # SQLITE_CONSTRAINT_UNIQUE
}


def violation(exc: BaseException) -> str | None:
    """The SQLSTATE of a constraint failure on either backend."""
    code = sqlstate(exc)
    if code is not None:
        return code
    orig = getattr(exc, "orig", None)
    return _SQLITE_CONSTRAINTS.get(getattr(orig, "sqlite_errorcode", -1))


def dialect_name(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def insert_for(session: AsyncSession, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that knows ON CONFLICT on the session's backend."""
    if dialect_name(session) == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
