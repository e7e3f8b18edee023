from __future__ import annotations

import datetime as dt
import unicodedata
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[dt.datetime]):
    """timestamptz on PostgreSQL; on SQLite, UTC stored naive and read back aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: times must carry a time zone")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


# SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Money = Numeric(10, 2, asdecimal=True)

APPOINTMENT_STATUSES = ("pending", "confirmed", "in_progress", "completed", "cancelled", "no_show")
ACTIVE_APPOINTMENT_STATUSES = ("pending", "confirmed", "in_progress")
# An appointment can be paid unless it was called off (cancelled) or missed (no_show).
PAYABLE_APPOINTMENT_STATUSES = ("pending", "confirmed", "in_progress", "completed")
PAYMENT_STATUSES = ("pending", "completed", "failed", "refunded")
PAYOUT_STATUSES = ("pending", "paid", "failed")
USER_ROLES = ("client", "barber", "shop_owner", "admin")
ORGANIZATION_ROLES = ("owner", "manager", "member")


# Indexes only migrations create (models cannot state them portably): the GIN
# full-text indexes (PostgreSQL).
def migration_only(index_name: str) -> bool:
    return index_name.endswith("_search")


def email_key(email: str) -> str:
    """An email folded for comparison: one account per key, on every backend (0007).

    NFC, Unicode case folding, NFC again: `ZOË@X.COM`, `zoë@x.com` and a decomposed
    `zoe\u0308@x.com` are one key, and so are `STRASSE@x.com` and `straße@x.com`. Python
    computes it for both databases (users.email_key): neither PostgreSQL's lower(),
    which follows the database's locale, nor SQLite's, which folds ASCII only, agrees
    with the other.
    """
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", email).casefold())


def _email_key_of_row(context: DefaultExecutionContext) -> str:
    email: str = context.get_current_parameters()["email"]  # type: ignore[no-untyped-call]
    return email_key(email)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {dt.datetime: UTCDateTime(), Decimal: Money}


def _id() -> Mapped[int]:
    return mapped_column(BigId, primary_key=True)


def _fk(
    target: str, *, nullable: bool = False, index: bool = True, ondelete: str | None = None
) -> Mapped[int]:
    key = ForeignKey(target, ondelete=ondelete)
    return mapped_column(BigId, key, nullable=nullable, index=index)


def _created() -> Mapped[dt.datetime]:
    return mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = _id()
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[dt.datetime] = _created()

    locations: Mapped[list[BarbershopLocation]] = relationship(
        back_populates="organization", lazy="raise", order_by="BarbershopLocation.id"
    )


class BarbershopLocation(Base):
    __tablename__ = "barbershop_locations"

    id: Mapped[int] = _id()
    organization_id: Mapped[int | None] = _fk("organizations.id", nullable=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(300))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    is_active: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    created_at: Mapped[dt.datetime] = _created()

    organization: Mapped[Organization | None] = relationship(
        back_populates="locations", lazy="raise"
    )


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(_in("unified_role", USER_ROLES), name="unified_role"),
        Index(
            "idx_users_email_active",
            "email",
            postgresql_where=text("is_active = true"),
            sqlite_where=text("is_active = 1"),
        ),
        Index("idx_users_role_unified", "unified_role"),
        Index("idx_users_location_role", "location_id", "unified_role"),
        Index("idx_users_trial_status", "trial_active", "trial_expires_at"),
        Index("uq_users_email_key", "email_key", unique=True),
    )

    id: Mapped[int] = _id()
    email: Mapped[str] = mapped_column(String(320), unique=True)
    # email_key(email), set on every insert (a Core insert too); unique: one account per
    # email whatever its case. Folding can lengthen a string (ß is ss): no length limit.
    email_key: Mapped[str] = mapped_column(Text, default=_email_key_of_row)
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(40))
    unified_role: Mapped[str] = mapped_column(String(20), default="client")
    # Leading column of idx_users_location_role.
    location_id: Mapped[int | None] = _fk(
        "barbershop_locations.id", nullable=True, index=False, ondelete="SET NULL"
    )
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    trial_active: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    trial_expires_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )

    location: Mapped[BarbershopLocation | None] = relationship(lazy="raise")
    appointments: Mapped[list[Appointment]] = relationship(
        back_populates="user",
        foreign_keys="Appointment.user_id",
        lazy="raise",
        order_by="(Appointment.start_time, Appointment.id)",
    )
    payments: Mapped[list[Payment]] = relationship(
        back_populates="user", lazy="raise", order_by="Payment.id"
    )
    stripe_account: Mapped[StripeAccount | None] = relationship(back_populates="user", lazy="raise")
    user_organizations: Mapped[list[UserOrganization]] = relationship(
        back_populates="user", lazy="raise", order_by="UserOrganization.id"
    )


class UserOrganization(Base):
    __tablename__ = "user_organizations"
    __table_args__ = (
        UniqueConstraint("user_id", "organization_id"),
        CheckConstraint(_in("role", ORGANIZATION_ROLES), name="role"),
    )

    id: Mapped[int] = _id()
    # Leading column of the unique constraint's index.
    user_id: Mapped[int] = _fk("users.id", index=False, ondelete="CASCADE")
    organization_id: Mapped[int] = _fk("organizations.id", ondelete="CASCADE")
    role: Mapped[str] = mapped_column(String(20), default="member")
    created_at: Mapped[dt.datetime] = _created()

    user: Mapped[User] = relationship(back_populates="user_organizations", lazy="raise")
    organization: Mapped[Organization] = relationship(lazy="raise")


class StripeAccount(Base):
    __tablename__ = "stripe_accounts"

    id: Mapped[int] = _id()
    user_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    stripe_account_id: Mapped[str] = mapped_column(String(64), unique=True)
    charges_enabled: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    payouts_enabled: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    created_at: Mapped[dt.datetime] = _created()

    user: Mapped[User] = relationship(back_populates="stripe_account", lazy="raise")


class Service(Base):
    __tablename__ = "services"
    __table_args__ = (
        CheckConstraint("duration_minutes > 0", name="duration_positive"),
        CheckConstraint("price >= 0", name="price_not_negative"),
    )

    id: Mapped[int] = _id()
    location_id: Mapped[int] = _fk("barbershop_locations.id")
    name: Mapped[str] = mapped_column(String(200))
    duration_minutes: Mapped[int]
    price: Mapped[Decimal]
    is_active: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    created_at: Mapped[dt.datetime] = _created()


class Appointment(Base):
    __tablename__ = "appointments"
    __table_args__ = (
        CheckConstraint(_in("status", APPOINTMENT_STATUSES), name="status"),
        CheckConstraint("end_time > start_time", name="ends_after_start"),
        Index("idx_appointments_user_status", "user_id", "status"),
        Index("idx_appointments_barber_date", "barber_id", "appointment_date"),
        Index("idx_appointments_location_date", "location_id", "appointment_date"),
        Index("idx_appointments_datetime_range", "appointment_date", "start_time", "end_time"),
        Index("idx_appointments_status_created", "status", "created_at"),
        Index("idx_appointments_location_user", "location_id", "user_id"),
    )

    id: Mapped[int] = _id()
    # user_id, barber_id and location_id lead the seed's composite indexes.
    user_id: Mapped[int] = _fk("users.id", index=False)
    barber_id: Mapped[int] = _fk("users.id", index=False)
    service_id: Mapped[int] = _fk("services.id")
    location_id: Mapped[int] = _fk("barbershop_locations.id", index=False)
    appointment_date: Mapped[dt.date] = mapped_column(Date)
    start_time: Mapped[dt.datetime]
    end_time: Mapped[dt.datetime]
    status: Mapped[str] = mapped_column(String(20), default="pending")
    notes: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )

    user: Mapped[User] = relationship(
        back_populates="appointments", foreign_keys=[user_id], lazy="raise"
    )
    barber: Mapped[User] = relationship(foreign_keys=[barber_id], lazy="raise")
    service: Mapped[Service] = relationship(lazy="raise")
    location: Mapped[BarbershopLocation] = relationship(lazy="raise")
    payment: Mapped[Payment | None] = relationship(back_populates="appointment", lazy="raise")


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint(_in("status", PAYMENT_STATUSES), name="status"),
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("idx_payments_user_status", "user_id", "status"),
        Index("idx_payments_stripe_session", "stripe_session_id"),
        Index("idx_payments_created_amount", "created_at", "amount"),
        Index("idx_payments_location", "location_id"),
        # Not in the seed: the revenue query is bound by the database without it. Status
        # and amount make it covering: an index-only scan, no heap page per payment.
        Index("idx_payments_location_revenue", "location_id", "created_at", "status", "amount"),
    )

    id: Mapped[int] = _id()
    user_id: Mapped[int] = _fk("users.id", index=False)
    # One payment per appointment; the unique index also serves the joins.
    appointment_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("appointments.id"), unique=True
    )
    location_id: Mapped[int] = _fk("barbershop_locations.id", index=False)
    amount: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3), default="usd", server_default="usd")
    status: Mapped[str] = mapped_column(String(20), default="pending")
    # Compare-and-set on status changes, as Appointment.version.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    stripe_session_id: Mapped[str | None] = mapped_column(String(255))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[dt.datetime] = _created()

    user: Mapped[User] = relationship(back_populates="payments", lazy="raise")
    appointment: Mapped[Appointment | None] = relationship(back_populates="payment", lazy="raise")


class Payout(Base):
    __tablename__ = "payouts"
    __table_args__ = (
        CheckConstraint(_in("status", PAYOUT_STATUSES), name="status"),
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        CheckConstraint("period_end >= period_start", name="period_order"),
    )

    id: Mapped[int] = _id()
    barber_id: Mapped[int] = _fk("users.id")
    stripe_account_id: Mapped[int | None] = _fk("stripe_accounts.id", nullable=True)
    amount: Mapped[Decimal]
    status: Mapped[str] = mapped_column(String(20), default="pending")
    period_start: Mapped[dt.date] = mapped_column(Date)
    period_end: Mapped[dt.date] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = _created()


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (CheckConstraint("rating BETWEEN 1 AND 5", name="rating_range"),)

    id: Mapped[int] = _id()
    appointment_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("appointments.id", ondelete="CASCADE"), unique=True
    )
    user_id: Mapped[int] = _fk("users.id")
    barber_id: Mapped[int] = _fk("users.id")
    rating: Mapped[int]
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()


# SQLite hands out max(id) + 1 without AUTOINCREMENT: a deleted newest key came back, and
# a live migration could not start a table's keys at a block of its own (migration 0006).
for _table in Base.metadata.tables.values():
    _table.dialect_options["sqlite"]["autoincrement"] = True
