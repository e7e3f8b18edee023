from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import ColumnClause, Table, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import User, email_key
from app.db.statements import NOW, statement
from app.queries import dialect_name, returning
from app.schemas import UserCreate, UserRead

# A literal regconfig, so the expression matches idx_users_name_search.
_ENGLISH: ColumnClause[str] = literal_column("'english'::regconfig")


_TABLE = cast(Table, User.__table__)
# No conflict target: the arbiter is uq_users_email_key (email_key: the email folded by
# app.db.models.email_key) or the exact email's own unique constraint. No row back: taken.
ADD = statement(
    f"""
INSERT INTO users (email, email_key, name, phone, unified_role, location_id, is_active,
                   trial_active, created_at, updated_at)
VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::bigint, true, false, {{now}}, {{now}})
ON CONFLICT DO NOTHING
RETURNING {returning(UserRead)}
""",
    columns=_TABLE.c,
    now=NOW,
)


def add_arguments(body: UserCreate) -> tuple[object, ...]:
    email = body.email
    return (email, email_key(email), body.name, body.phone, body.unified_role, body.location_id)


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

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
