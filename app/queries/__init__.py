"""Repositories: one per aggregate. They build statements and never commit."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.errors import violation
from app.db.models import Base

__all__ = ["dialect_name", "insert_for", "moves", "returning", "violation"]


def dialect_name(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def insert_for(
    session: AsyncSession, table: Table | type[Base]
) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that knows ON CONFLICT on the session's backend."""
    if dialect_name(session) == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def returning(schema: type[BaseModel]) -> str:
    """The columns a statement returns for `schema`: its fields, named once there."""
    return ", ".join(schema.model_fields)


def moves(transitions: dict[str, tuple[str, ...]]) -> str:
    """A transitions table (status -> the statuses it may be reached from) as SQL rows
    ('from', 'to'), for `(status, $n) IN (VALUES ...)`."""
    return ", ".join(f"('{old}', '{new}')" for new, olds in transitions.items() for old in olds)
