"""SQLAlchemy models of accounts, provider profiles and availability (tables of 0001/0003).

Relationships are deliberately absent: repositories load what they need explicitly, so
no lazy load can hide in a request.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from geoalchemy2 import Geography
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    DateTime,
    FetchedValue,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import CITEXT, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

PROVIDER_ROLES: tuple[str, ...] = ("tutor", "coach", "mentor")
ROLES: tuple[str, ...] = ("student", "parent", *PROVIDER_ROLES, "admin")


class Base(DeclarativeBase):
    """Declarative base of the profiles domain."""


class User(Base):
    """An account: `role` is one of `ROLES`; `active=False` blocks login and tokens."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=FetchedValue()
    )
    email: Mapped[str] = mapped_column(CITEXT, unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    full_name: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text)
    locale: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ParentChild(Base):
    """A parent account linked to a child (student) account."""

    __tablename__ = "parent_children"

    parent_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id"), primary_key=True
    )
    child_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ProviderProfile(Base):
    """A tutor's, coach's or mentor's public profile; `version` grows with every write."""

    __tablename__ = "provider_profiles"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(Text)
    display_name: Mapped[str] = mapped_column(Text)
    headline: Mapped[str] = mapped_column(Text)
    bio: Mapped[str] = mapped_column(Text)
    subjects: Mapped[list[str]] = mapped_column(ARRAY(Text))
    expertises: Mapped[list[str]] = mapped_column(ARRAY(Text))
    languages: Mapped[list[str]] = mapped_column(ARRAY(Text))
    hourly_rate_minor: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    rating_avg: Mapped[float | None] = mapped_column(Numeric(3, 2, asdecimal=False))
    rating_count: Mapped[int] = mapped_column(Integer)
    # The integer stars of the counted reviews (migration 0018): rating_avg is derived.
    rating_sum: Mapped[int] = mapped_column(BigInteger)
    online: Mapped[bool] = mapped_column(Boolean)
    in_person: Mapped[bool] = mapped_column(Boolean)
    location: Mapped[object | None] = mapped_column(
        Geography(geometry_type="POINT", srid=4326, spatial_index=False)
    )
    city: Mapped[str | None] = mapped_column(Text)
    country_code: Mapped[str | None] = mapped_column(String(2))
    service_radius_km: Mapped[int | None] = mapped_column(Integer)
    kyc_status: Mapped[str] = mapped_column(Text)
    # the provider's cancellation policy (`booking.schemas.CancelPolicy`); None = platform's
    cancel_policy: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AvailabilitySlot(Base):
    """A bookable slot; `capacity > 1` is a group class; `canceled` slots do not overlap.

    `seats_taken` is maintained by the database (trigger `bookings_seats_taken`, migration
    0014) and bounded by `CHECK (seats_taken BETWEEN 0 AND capacity)`; never written here.
    """

    __tablename__ = "availability_slots"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=FetchedValue()
    )
    provider_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("provider_profiles.user_id")
    )
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    mode: Mapped[str] = mapped_column(Text)
    capacity: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(Text)
    seats_taken: Mapped[int] = mapped_column(Integer, server_default=FetchedValue())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    @property
    def seats_left(self) -> int:
        """Seats not held by a seat-holding booking (lapsed holds still count until swept)."""
        return max(self.capacity - self.seats_taken, 0)


class RefreshToken(Base):
    """One refresh token (hashed) of a rotation family; see migration 0003."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=FetchedValue()
    )
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"))
    family_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    token_hash: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
