"""SQLAlchemy model of bookings (table of migration 0014).

No relationships: the repository loads what it needs explicitly, so no lazy load can
hide in a request. Foreign keys exist in the database (users, provider profiles, slots).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, FetchedValue, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STATUSES: tuple[str, ...] = (
    "pending", "confirmed", "canceled", "refunded", "expired", "completed", "no_show",
)  # fmt: skip
# Bookings in these states hold their seats (the trigger `bookings_seats_taken` counts
# them in `availability_slots.seats_taken`, the exclusion constraint keeps a student's
# from overlapping); a pending one only until `hold_expires_at` in the service's count.
SEAT_HOLDING: tuple[str, ...] = ("pending", "confirmed", "completed", "no_show")


class Base(DeclarativeBase):
    """Declarative base of the booking domain."""


class Booking(Base):
    """A hold (`pending`) or booking of `seats` seats of a slot.

    Money in integer minor units of `currency`; times timezone-aware UTC; `cancel_policy`
    the snapshot of the policy in force when the hold was taken
    (`{"source": "platform"|"provider", "tiers": [{"min_hours_before", "refund_percent"}]}`).
    """

    __tablename__ = "bookings"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=FetchedValue()
    )
    student_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    booked_by: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    provider_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    slot_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    seats: Mapped[int] = mapped_column(Integer)
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(Text, server_default=FetchedValue())
    hold_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    price_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    cancel_policy: Mapped[dict[str, Any]] = mapped_column(JSONB)
    expired_reason: Mapped[str | None] = mapped_column(Text)
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    canceled_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    canceled_by_role: Mapped[str | None] = mapped_column(Text)
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    refund_due_minor: Mapped[int | None] = mapped_column(BigInteger)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=FetchedValue()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=FetchedValue()
    )
