from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from sqlalchemy.exc import IntegrityError

from app.api.deps import ReadSession, WriteSession
from app.api.responses import errors_doc
from app.db.errors import FOREIGN_KEY_VIOLATION
from app.errors import BadRequest, Conflict, NotFound
from app.queries import violation
from app.queries.users import USER_RELATIONS, UserRepository
from app.schemas import INT64_MAX, UserCreate, UserDetail, UserPage, UserRead, UserRole

router = APIRouter(tags=["users"])

UserId = Annotated[int, Path(gt=0, le=INT64_MAX)]
_RELATION = "|".join(USER_RELATIONS)
INCLUDE_PATTERN = rf"^(({_RELATION})(,({_RELATION}))*)?$"
INCLUDE_MAX_LENGTH = 200
Include = Annotated[
    str | None,
    Query(
        max_length=INCLUDE_MAX_LENGTH,
        pattern=INCLUDE_PATTERN,
        description=f"Comma-separated relations to embed: {', '.join(USER_RELATIONS)}",
        examples=["appointments,payments,organizations"],
    ),
]


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    responses=errors_doc(409, conflict="An account with this email, in any case, exists"),
)
async def create_user(body: UserCreate, session: WriteSession) -> UserRead:
    try:
        user = await UserRepository(session).add(**body.model_dump())
    except IntegrityError as exc:
        if violation(exc) == FOREIGN_KEY_VIOLATION:
            raise BadRequest(f"location {body.location_id} does not exist") from None
        raise
    if user is None:
        raise Conflict("a user with this email already exists")
    return UserRead.model_validate(user)


@router.get(
    "/users/{user_id}",
    response_model=UserDetail,
    response_model_exclude_unset=True,
    responses=errors_doc(404),
)
async def get_user(user_id: UserId, session: ReadSession, include: Include = None) -> UserDetail:
    relations = set(include.split(",")) if include else set()
    user = await UserRepository(session).get_with(user_id, relations)
    if user is None:
        raise NotFound(f"user {user_id} does not exist")
    return UserDetail.model_validate(user)


@router.get("/users", response_model=UserPage, responses=errors_doc())
async def list_users(
    session: ReadSession,
    q: Annotated[
        str | None, Query(max_length=200, description="Words of the name (full-text search)")
    ] = None,
    role: UserRole | None = None,
    email: Annotated[
        str | None, Query(max_length=320, description="The account with this email, any case")
    ] = None,
    after: Annotated[
        int, Query(ge=0, le=INT64_MAX, description="Last id of the previous page")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> UserPage:
    for name, value in (("q", q), ("email", email)):
        if value is not None and "\x00" in value:
            raise BadRequest(f"{name} must not contain NUL characters")
    users = await UserRepository(session).list_users(
        q=q.strip() or None if q else None, role=role, after=after, limit=limit + 1, email=email
    )
    more = len(users) > limit
    page = users[:limit]
    return UserPage(
        items=[UserRead.model_validate(u) for u in page],
        next_after=page[-1].id if more else None,
    )
