"""SQLAlchemy models of the credits domain (tables of migration 0019).

Credits are whole lesson units; money is integer minor units of ISO 4217 `currency`;
times are timezone-aware UTC. No relationships: the repository loads what it needs.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, FetchedValue, Integer, String, Text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the credits domain."""


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, server_default=FetchedValue())


def _ts(*, server: bool = False) -> Mapped[datetime]:
    if server:
        return mapped_column(DateTime(timezone=True), server_default=FetchedValue())
    return mapped_column(DateTime(timezone=True))


class CreditPlan(Base):
    """A catalogue entry: `kind` plan (monthly, `billing_interval = month`) or pack (once);
    `credits` granted per period or purchase, valid `validity_months`."""

    __tablename__ = "credit_plans"

    id: Mapped[uuid.UUID] = _uuid_pk()
    code: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    credits: Mapped[int] = mapped_column(Integer)
    billing_interval: Mapped[str | None] = mapped_column(Text)
    validity_months: Mapped[int] = mapped_column(Integer, server_default=FetchedValue())
    active: Mapped[bool] = mapped_column(Boolean, server_default=FetchedValue())
    stripe_product_ref: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _ts(server=True)
    updated_at: Mapped[datetime] = _ts(server=True)


class CreditPlanPrice(Base):
    """A plan's price in one currency (minor units) and its Stripe Price once created."""

    __tablename__ = "credit_plan_prices"

    plan_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    stripe_price_ref: Mapped[str | None] = mapped_column(Text)


class CreditCost(Base):
    """One seat of a `service_type` slot lasting at most `max_minutes` costs `credits`."""

    __tablename__ = "credit_costs"

    service_type: Mapped[str] = mapped_column(Text, primary_key=True)
    max_minutes: Mapped[int] = mapped_column(Integer, primary_key=True)
    credits: Mapped[int] = mapped_column(Integer)


class CreditPurchase(Base):
    """A pack bought through a PaymentIntent (`gateway_ref`); `status` pending | succeeded
    | failed | canceled."""

    __tablename__ = "credit_purchases"

    id: Mapped[uuid.UUID] = _uuid_pk()
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    plan_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    credits: Mapped[int] = mapped_column(Integer)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    gateway: Mapped[str] = mapped_column(Text)
    gateway_ref: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=FetchedValue())
    created_at: Mapped[datetime] = _ts(server=True)
    updated_at: Mapped[datetime] = _ts(server=True)
    succeeded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CreditSubscription(Base):
    """A plan held by `owner_id` (the payer) for `student_id`, mirrored from the gateway's
    subscription (`gateway_ref`): `status` incomplete | active | past_due | unpaid |
    canceled | incomplete_expired (Stripe's names)."""

    __tablename__ = "credit_subscriptions"

    id: Mapped[uuid.UUID] = _uuid_pk()
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    student_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    plan_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    gateway: Mapped[str] = mapped_column(Text)
    gateway_ref: Mapped[str | None] = mapped_column(Text)
    customer_ref: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=FetchedValue())
    current_period_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    current_period_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, server_default=FetchedValue())
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _ts(server=True)
    updated_at: Mapped[datetime] = _ts(server=True)


class CreditGrant(Base):
    """Credits given to the wallet `owner_id`: `type` MONTHLY_ALLOCATION | PURCHASE |
    REFUND, `remaining` of `credits` (never negative: a CHECK), worth `value_minor` of
    `currency` in all, expiring at `expires_at`; `source_key` unique (once per event)."""

    __tablename__ = "credit_grants"

    id: Mapped[uuid.UUID] = _uuid_pk()
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    type: Mapped[str] = mapped_column(Text)
    credits: Mapped[int] = mapped_column(Integer)
    remaining: Mapped[int] = mapped_column(Integer)
    value_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    granted_at: Mapped[datetime] = _ts()
    expires_at: Mapped[datetime] = _ts()
    source_key: Mapped[str] = mapped_column(Text)
    subscription_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    purchase_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    booking_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    expiry_notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CreditSpend(Base):
    """Credits taken from one grant: `type` USAGE (by `booking_id`) or EXPIRATION;
    `value_minor` their share of the grant's value; `refunded` credits of a usage given
    back by a cancellation."""

    __tablename__ = "credit_spends"

    id: Mapped[uuid.UUID] = _uuid_pk()
    grant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    type: Mapped[str] = mapped_column(Text)
    credits: Mapped[int] = mapped_column(Integer)
    value_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    booking_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    refunded: Mapped[int] = mapped_column(Integer, server_default=FetchedValue())
    created_at: Mapped[datetime] = _ts()
