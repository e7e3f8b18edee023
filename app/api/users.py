from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from app.api.contract import DECIMAL, ContractRoute, PathId
from app.api.deps import ReadSession, ReadStatements, answered, get_router
from app.api.reads import JSON, UserQuery, user_body
from app.api.responses import errors_doc
from app.errors import BadRequest
from app.operations import users as user_writes
from app.queries.users import UserRepository
from app.schemas import INT64_MAX, UserCreate, UserDetail, UserPage, UserRead, UserRole

router = APIRouter(tags=["users"], route_class=ContractRoute)

UserId = PathId


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    responses=errors_doc(409, conflict="An account with this email, in any case, exists"),
)
async def create_user(body: UserCreate, request: Request) -> UserRead:
    return answered(request, await user_writes.create_user(get_router(request), body))


@router.get(
    "/users/{user_id}",
    response_model=UserDetail,
    response_model_exclude_unset=True,
    responses=errors_doc(404),
)
async def get_user(
    user_id: UserId, query: Annotated[UserQuery, Query()], db: ReadStatements
) -> Response:
    return Response(await user_body(db, user_id, query), media_type=JSON)


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
        int, Query(ge=0, le=INT64_MAX, description="Last id of the previous page"), DECIMAL
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=100), DECIMAL] = 50,
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
