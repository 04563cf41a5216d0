"""SQLAlchemy models of the sessions tables (migration 0016).

No relationships (as in profiles): repositories load what they need explicitly.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ARRAY, BigInteger, DateTime, Integer, Text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the sessions domain."""


class SessionRoom(Base):
    """A LiveKit room we created: per booking (1:1, `booking_id` set) or per slot (group).

    `opens_at`/`closes_at` bound the join window; `deleted_at` is set once DeleteRoom
    succeeded (`close_reason` `ended` or `canceled`); `attempts`/`last_error` record
    failed clean-ups (the dead-letter trail)."""

    __tablename__ = "session_rooms"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    booking_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    slot_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    max_participants: Mapped[int] = mapped_column(Integer)
    livekit_sid: Mapped[str] = mapped_column(Text)
    opens_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closes_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    close_reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)


class Attendance(Base):
    """One participant_joined / participant_left (/ connection_aborted) webhook event."""

    __tablename__ = "attendance"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[str] = mapped_column(Text, unique=True)
    event: Mapped[str] = mapped_column(Text)
    room: Mapped[str] = mapped_column(Text)
    identity: Mapped[str] = mapped_column(Text)
    user_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    participant_sid: Mapped[str] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SessionOutcome(Base):
    """The settled outcome of a booking's lesson: `completed`, or `no_show` with the
    absent side(s) in `absent` (`student`, `provider`); presence in seconds."""

    __tablename__ = "session_outcomes"

    booking_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    outcome: Mapped[str] = mapped_column(Text)
    absent: Mapped[list[str]] = mapped_column(ARRAY(Text))
    student_present_s: Mapped[int] = mapped_column(Integer)
    provider_present_s: Mapped[int] = mapped_column(Integer)
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
