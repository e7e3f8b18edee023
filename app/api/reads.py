"""The hot reads' doors, defined once: their query parameters and their use case.

GET /users/{id}, /barbers/{id}/appointments and /locations/{id}/revenue. Each has one
query model, declared by its route (`Annotated[Model, Query()]`) and read by the lane
(app/api/lane.py), and one `*_body` function that turns the parsed query into the call
of its use case (app/operations/reads.py), called by the route and by the lane alike.
Errors are AppErrors (app/errors.py), rendered by the same code on both ways.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from app.api.contract import QueryContract, model_contract
from app.days import DAYS_TAKEN, Day
from app.db.sessions import Intent
from app.db.statements import Statements
from app.errors import BadRequest
from app.operations import reads as operations
from app.queries.reads import USER_RELATIONS
from app.schemas import AppointmentStatus

MAX_SCHEDULE_DAYS = 366
MAX_REPORT_DAYS = 731
DEFAULT_SCHEDULE_STATUSES = ("confirmed", "in_progress")
JSON = "application/json"
_RELATION = "|".join(USER_RELATIONS)
INCLUDE_PATTERN = rf"^(({_RELATION})(,({_RELATION}))*)?$"
INCLUDE_MAX_LENGTH = 200


class _Query(BaseModel):
    model_config = ConfigDict(frozen=True)


class UserQuery(_Query):
    include: Annotated[
        str | None,
        Field(
            max_length=INCLUDE_MAX_LENGTH,
            pattern=INCLUDE_PATTERN,
            description=f"Comma-separated relations to embed: {', '.join(USER_RELATIONS)}",
            examples=["appointments,payments,organizations"],
        ),
    ] = None

    @property
    def relations(self) -> frozenset[str]:
        return frozenset((self.include or "").split(",")) - {""}


class _Days(_Query):
    start: Day
    end: Day

    def days(self, span: int) -> tuple[dt.date, dt.date]:
        if self.end < self.start:
            raise BadRequest("end must not be before start")
        if (self.end - self.start).days >= span:
            raise BadRequest(f"the range spans at most {span} days")
        return self.start, self.end


class ScheduleQuery(_Days):
    start: Day = Field(description=f"First day (appointment_date), inclusive; {DAYS_TAKEN}")
    end: Day = Field(description=f"Last day, inclusive; {DAYS_TAKEN}")
    status: list[AppointmentStatus] | None = Field(
        None, description="Repeatable; default confirmed and in_progress"
    )

    @property
    def statuses(self) -> frozenset[str]:
        return frozenset(self.status or DEFAULT_SCHEDULE_STATUSES)


class RevenueQuery(_Days):
    start: Day = Field(description=f"First day (UTC), inclusive; {DAYS_TAKEN}")
    end: Day = Field(description=f"Last day (UTC), inclusive; {DAYS_TAKEN}")

    def report_days(self) -> tuple[dt.date, dt.date]:
        return self.days(MAX_REPORT_DAYS)


async def user_body(db: Statements, user_id: int, query: UserQuery) -> bytes:
    return await operations.read_user(db, user_id, query.relations)


async def schedule_body(db: Statements, barber_id: int, query: ScheduleQuery) -> bytes:
    start, end = query.days(MAX_SCHEDULE_DAYS)
    return await operations.read_schedule(db, barber_id, start, end, query.statuses)


async def revenue_body(db: Statements, location_id: int, query: RevenueQuery) -> bytes:
    start, end = query.report_days()
    return await operations.read_revenue(db, location_id, start, end)


@dataclass(frozen=True)
class HotEndpoint:
    """What the lane needs of one hot route: all of it defined above, nothing of its own."""

    route: str  # the route's template, the HTTP metrics' handler label
    intent: Intent
    query: type[_Query]
    # Its third argument is an instance of `query`: a generic HotEndpoint would not help the
    # lane, which holds them all and validates with `query` itself.
    body: Callable[[Statements, int, Any], Awaitable[bytes]]

    @property
    def contract(self) -> QueryContract:
        return model_contract(self.query)


USER = HotEndpoint("/api/v1/users/{user_id}", "read", UserQuery, user_body)
SCHEDULE = HotEndpoint(
    "/api/v1/barbers/{barber_id}/appointments", "read", ScheduleQuery, schedule_body
)
REVENUE = HotEndpoint(
    "/api/v1/locations/{location_id}/revenue", "analytics", RevenueQuery, revenue_body
)
