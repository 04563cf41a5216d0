"""Test data for the sessions tests: lessons (a provider, a slot, a student and a booking)
written with SQL, as small keyword-argument factories (the booking domain owns the real
write path; these rows satisfy its constraints)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg

from booking.service import policy_snapshot
from tests.conftest import create_profile, create_user

# the platform's cancellation policy, frozen into each booking as the booking domain does
_POLICY = orjson.dumps(policy_snapshot(None)).decode()


@dataclass(frozen=True)
class Lesson:
    """A slot of a provider with one booking (more attendees via `add_attendee`)."""

    provider: uuid.UUID
    student: uuid.UUID
    slot: uuid.UUID
    booking: uuid.UUID
    starts_at: datetime
    ends_at: datetime


def create_slot(
    db: psycopg.Connection[Any],
    provider: uuid.UUID,
    *,
    starts_at: datetime,
    ends_at: datetime,
    capacity: int = 1,
    mode: str = "online",
    attendees_can_publish: bool = False,
) -> uuid.UUID:
    """Insert an open slot; returns its id."""
    row = db.execute(
        "INSERT INTO availability_slots (provider_id, starts_at, ends_at, mode, capacity,"
        " attendees_can_publish) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (provider, starts_at, ends_at, mode, capacity, attendees_can_publish),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def create_booking(
    db: psycopg.Connection[Any],
    *,
    student: uuid.UUID,
    provider: uuid.UUID,
    slot: uuid.UUID,
    starts_at: datetime,
    ends_at: datetime,
    status: str = "confirmed",
    booked_by: uuid.UUID | None = None,
) -> uuid.UUID:
    """Insert a one-seat booking in `status`; returns its id."""
    refund = 0 if status in ("canceled", "refunded") else None
    row = db.execute(
        "INSERT INTO bookings (student_id, booked_by, provider_id, slot_id, seats, starts_at,"
        " ends_at, status, hold_expires_at, price_minor, currency, cancel_policy,"
        " refund_due_minor) VALUES (%s, %s, %s, %s, 1, %s, %s, %s, %s, 3000, 'EUR',"
        " %s::jsonb, %s) RETURNING id",
        (
            student,
            booked_by or student,
            provider,
            slot,
            starts_at,
            ends_at,
            status,
            starts_at - timedelta(days=1),
            _POLICY,
            refund,
        ),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def create_lesson(
    db: psycopg.Connection[Any],
    *,
    starts_at: datetime,
    minutes: int = 60,
    capacity: int = 1,
    mode: str = "online",
    status: str = "confirmed",
    attendees_can_publish: bool = False,
) -> Lesson:
    """A tutor ("Provider"), a student ("Student <n>") and a booking of a new slot."""
    provider = create_user(db, role="tutor", full_name="Tutor Account")
    create_profile(db, provider)
    ends_at = starts_at + timedelta(minutes=minutes)
    slot = create_slot(
        db,
        provider,
        starts_at=starts_at,
        ends_at=ends_at,
        capacity=capacity,
        mode=mode,
        attendees_can_publish=attendees_can_publish,
    )
    student = create_user(db, role="student", full_name="Student One")
    booking = create_booking(
        db,
        student=student,
        provider=provider,
        slot=slot,
        starts_at=starts_at,
        ends_at=ends_at,
        status=status,
    )
    return Lesson(provider, student, slot, booking, starts_at, ends_at)


def add_attendee(
    db: psycopg.Connection[Any], lesson: Lesson, *, status: str = "confirmed", name: str = "Other"
) -> tuple[uuid.UUID, uuid.UUID]:
    """Another student booking a seat of the lesson's slot; returns (student, booking)."""
    student = create_user(db, role="student", full_name=name)
    booking = create_booking(
        db,
        student=student,
        provider=lesson.provider,
        slot=lesson.slot,
        starts_at=lesson.starts_at,
        ends_at=lesson.ends_at,
        status=status,
    )
    return student, booking


def cancel_booking(db: psycopg.Connection[Any], booking: uuid.UUID) -> None:
    """Cancel as the booking domain does: the status and a `booking.canceled` outbox event
    in one transaction."""
    with db.transaction():
        db.execute(
            "UPDATE bookings SET status = 'canceled', refund_due_minor = 0, canceled_at = now()"
            " WHERE id = %s",
            (booking,),
        )
        db.execute(
            "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
            " VALUES ('booking', %s, 'booking.canceled', %s::jsonb)",
            (str(booking), orjson.dumps({"booking_id": str(booking)}).decode()),
        )
