from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnClause, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import User, email_key
from app.queries import dialect_name, insert_for

# A literal regconfig, so the expression matches idx_users_name_search.
_ENGLISH: ColumnClause[Any] = literal_column("'english'::regconfig")


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, **fields: Any) -> User | None:
        """Insert a user; None when the email is taken in any case (the unique index decides).

        No conflict target: the arbiter is uq_users_email_key (email_key, the column's
        default folds the email), or the exact email's own unique constraint.
        """
        stmt = (
            insert_for(self.session, User).values(**fields).on_conflict_do_nothing().returning(User)
        )
        result = await self.session.scalars(stmt)
        return result.one_or_none()

    async def list_users(
        self, *, q: str | None, role: str | None, after: int, limit: int, email: str | None = None
    ) -> Sequence[User]:
        stmt = select(User).where(User.id > after).order_by(User.id).limit(limit)
        if email is not None:
            stmt = stmt.where(User.email_key == email_key(email))
        if q:
            if dialect_name(self.session) == "postgresql":
                stmt = stmt.where(
                    func.to_tsvector(_ENGLISH, User.name).bool_op("@@")(
                        func.plainto_tsquery(_ENGLISH, q)
                    )
                )
            else:
                stmt = stmt.where(User.name.ilike(_like_pattern(q), escape="\\"))
        if role:
            stmt = stmt.where(User.unified_role == role)
        return (await self.session.scalars(stmt)).all()
