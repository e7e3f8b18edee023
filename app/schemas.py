"""Request and response bodies. Money travels as a decimal string, never a float."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.config import JsonDict
from sqlalchemy import inspect

from app.days import Instant
from app.db.models import APPOINTMENT_STATUSES, PAYMENT_STATUSES, USER_ROLES, User

INT64_MAX = 2**63 - 1

Id = Annotated[int, Strict(), Field(ge=1, le=INT64_MAX)]  # JSON integers only: not "5", 5.0
Version = Annotated[int, Strict(), Field(ge=1, le=2**31 - 1)]
UserRole = Literal["client", "barber", "shop_owner", "admin"]
AppointmentStatus = Literal[
    "pending", "confirmed", "in_progress", "completed", "cancelled", "no_show"
]
PaymentStatus = Literal["pending", "completed", "failed", "refunded"]
assert set(UserRole.__args__) == set(USER_ROLES)  # type: ignore[attr-defined]
assert set(AppointmentStatus.__args__) == set(APPOINTMENT_STATUSES)  # type: ignore[attr-defined]
assert set(PaymentStatus.__args__) == set(PAYMENT_STATUSES)  # type: ignore[attr-defined]


# PostgreSQL text cannot hold NUL: refused here rather than in the driver, by a pattern the
# OpenAPI document publishes (a validator alone would refuse what the schema allows).
_NO_NUL = r"^[^\x00]*$"
# A name says something: at least one character that is not white space.
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00]*[^\s\x00][^\x00]*$")
]
Phone = Annotated[str, StringConstraints(max_length=40, pattern=_NO_NUL)]
Notes = Annotated[str, StringConstraints(max_length=2000, pattern=_NO_NUL)]


_MONEY = re.compile(r"^[0-9]{1,8}(\.[0-9]{1,2})?$")


def _money_in(value: object) -> Decimal:
    if not isinstance(value, str) or not _MONEY.fullmatch(value):  # `$` takes a last \n
        raise ValueError('a decimal string with at most 2 decimals, such as "19.99"')
    amount = Decimal(value)
    if amount <= 0:
        raise ValueError("must be greater than 0")
    return amount


MoneyIn = Annotated[
    Decimal,
    BeforeValidator(_money_in),
    WithJsonSchema(
        {"type": "string", "pattern": _MONEY.pattern, "examples": ["19.99"]}, mode="validation"
    ),
]
Money = Annotated[
    Decimal,
    PlainSerializer(lambda v: f"{v:.2f}", return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "examples": ["19.99"]}, mode="serialization"),
]


class ORM(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Body(BaseModel):
    """A request body: a field the model does not know is refused (422 naming it)."""

    model_config = ConfigDict(extra="forbid")


# -- users ---------------------------------------------------------------------------


class UserCreate(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"email": "ana@example.com", "name": "Ana Silva", "unified_role": "client"}
            ]
        }
    )

    email: Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s\x00]+@[^@\s\x00]+$")]
    name: Name
    phone: Phone | None = None
    unified_role: UserRole = "client"
    location_id: Id | None = None


class UserRead(ORM):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "email": "ana@example.com",
                    "name": "Ana Silva",
                    "phone": None,
                    "unified_role": "client",
                    "location_id": None,
                    "is_active": True,
                    "created_at": "2025-01-01T09:00:00Z",
                }
            ]
        }
    )

    id: int
    email: str
    name: str
    phone: str | None
    unified_role: str
    location_id: int | None
    is_active: bool
    created_at: dt.datetime


class UserPage(BaseModel):
    items: list[UserRead]
    next_after: int | None = Field(description="Pass as ?after= for the next page; null at the end")


class OrganizationMembership(ORM):
    organization_id: int
    name: str
    slug: str
    role: str


class StripeAccountRead(ORM):
    stripe_account_id: str
    charges_enabled: bool
    payouts_enabled: bool


# -- appointments ----------------------------------------------------------------------


def _booking_example(schema: JsonDict) -> None:
    # Demo data (bookedbarber seed, any scale): user 100 with barber 1 and the 30-minute
    # service 1, both of location 1, a week from the day the document is made, after hours.
    today = dt.datetime.now(dt.UTC).date()
    start = dt.datetime.combine(today + dt.timedelta(days=7), dt.time(18), dt.UTC)
    end = start + dt.timedelta(minutes=30)
    ids = {"user_id": 100, "barber_id": 1, "service_id": 1, "location_id": 1}
    times = {"start_time": start.isoformat(), "end_time": end.isoformat()}
    schema["examples"] = [{**ids, **times, "notes": "skin fade"}]


class AppointmentCreate(Body):
    model_config = ConfigDict(json_schema_extra=_booking_example)

    user_id: Id
    barber_id: Id
    service_id: Id
    location_id: Id
    start_time: Instant
    end_time: Instant
    notes: Notes | None = None

    @model_validator(mode="after")
    def _ends_after_start(self) -> AppointmentCreate:
        if self.end_time <= self.start_time:
            raise ValueError("end_time must be after start_time")
        if self.end_time - self.start_time > dt.timedelta(hours=24):
            raise ValueError("an appointment lasts at most 24 hours")
        return self


class AppointmentUpdate(Body):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "confirmed", "version": 1}]}
    )

    status: AppointmentStatus
    version: Version


class AppointmentRead(ORM):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 10,
                    "user_id": 1,
                    "barber_id": 2,
                    "service_id": 1,
                    "location_id": 1,
                    "appointment_date": "2030-05-01",
                    "start_time": "2030-05-01T10:00:00Z",
                    "end_time": "2030-05-01T10:30:00Z",
                    "status": "pending",
                    "notes": "skin fade",
                    "version": 1,
                    "created_at": "2030-04-20T08:00:00Z",
                    "updated_at": "2030-04-20T08:00:00Z",
                }
            ]
        }
    )

    id: int
    user_id: int
    barber_id: int
    service_id: int
    location_id: int
    appointment_date: dt.date
    start_time: dt.datetime
    end_time: dt.datetime
    status: str
    notes: str | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


class ClientRead(ORM):
    id: int
    name: str
    email: str
    phone: str | None


class ServiceRead(ORM):
    id: int
    name: str
    duration_minutes: int
    price: Money


# -- payments -----------------------------------------------------------------------------


class PaymentCreate(Body):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"user_id": 100, "location_id": 1, "amount": "25.00"}]}
    )

    user_id: Id
    appointment_id: Id | None = Field(
        None, description="The appointment paid for; the amount must then be its service's price"
    )
    location_id: Id
    amount: MoneyIn


class PaymentUpdate(Body):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "completed", "version": 1}]}
    )

    status: PaymentStatus
    version: Version


class PaymentRead(ORM):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 7,
                    "user_id": 1,
                    "appointment_id": 10,
                    "location_id": 1,
                    "amount": "19.99",
                    "currency": "usd",
                    "status": "pending",
                    "version": 1,
                    "created_at": "2030-05-01T10:31:00Z",
                }
            ]
        }
    )

    id: int
    user_id: int
    appointment_id: int | None
    location_id: int
    amount: Money
    currency: str
    status: str
    version: int
    created_at: dt.datetime


class PaymentPage(BaseModel):
    items: list[PaymentRead]
    next_after: int | None


class ScheduledAppointment(AppointmentRead):
    """An appointment on a barber's dashboard: the client, the service, the payment."""

    user: ClientRead
    service: ServiceRead
    payment: PaymentRead | None


class UserDetail(UserRead):
    """A user and the relations asked for with ?include= (absent ones are omitted)."""

    appointments: list[AppointmentRead] | None = None
    payments: list[PaymentRead] | None = None
    organizations: list[OrganizationMembership] | None = None
    stripe_account: StripeAccountRead | None = None

    @model_validator(mode="before")
    @classmethod
    def _loaded_only(cls, data: object) -> object:
        # Relations are lazy="raise": read only what the query loaded.
        if not isinstance(data, User):
            return data
        unloaded = inspect(data).unloaded
        values = {name: getattr(data, name) for name in UserRead.model_fields}
        for name in ("appointments", "payments", "stripe_account"):
            if name not in unloaded:
                values[name] = getattr(data, name)
        if "user_organizations" not in unloaded:
            values["organizations"] = [
                OrganizationMembership(
                    organization_id=m.organization_id,
                    name=m.organization.name,
                    slug=m.organization.slug,
                    role=m.role,
                )
                for m in data.user_organizations
            ]
        return values


# -- analytics ---------------------------------------------------------------------------


class DailyRevenueRead(ORM):
    date: dt.date
    total_revenue: Money
    transaction_count: int
    average_transaction: Money
    refunded_total: Money
    refund_count: int


class RevenueReport(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "location_id": 1,
                    "start": "2030-05-01",
                    "end": "2030-05-31",
                    "days": [
                        {
                            "date": "2030-05-01",
                            "total_revenue": "59.97",
                            "transaction_count": 3,
                            "average_transaction": "19.99",
                            "refunded_total": "19.99",
                            "refund_count": 1,
                        }
                    ],
                }
            ]
        }
    )

    location_id: int
    start: dt.date
    end: dt.date
    days: list[DailyRevenueRead]
