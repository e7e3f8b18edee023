"""Creating a user."""

from __future__ import annotations

from app.db.errors import FOREIGN_KEY_VIOLATION, UNIQUE_VIOLATION
from app.db.router import DatabaseRouter
from app.errors import BadRequest, Conflict
from app.operations import Written, refusal
from app.queries.users import ADD, add_arguments
from app.schemas import UserCreate, UserRead

TAKEN = "a user with this email already exists"


async def create_user(router: DatabaseRouter, body: UserCreate) -> Written[UserRead]:
    """A new account; 409 when the email is taken in any case (the unique index decides)."""
    async with router.statements("write") as db:
        try:
            row = await db.fetchrow(ADD, *add_arguments(body))
        except Exception as exc:
            error = refusal(
                exc,
                {
                    FOREIGN_KEY_VIOLATION: lambda: BadRequest(
                        f"location {body.location_id} does not exist"
                    ),
                    UNIQUE_VIOLATION: lambda: Conflict(TAKEN),
                },
            )
            if error is None:
                raise
            raise error from None
        if row is None:
            raise Conflict(TAKEN)
        token = await db.commit()
    return Written(UserRead.model_validate(dict(row)), token)
