"""Factories and helpers of the booking tests (real database, injected clock)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

# The tests' clock: every request and service call runs at NOW (overridden `get_now`).
NOW = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)
SLOT_START = NOW + timedelta(days=3)


def create_slot(
    db: psycopg.Connection[Any],
    provider_id: Any,
    *,
    start: datetime = SLOT_START,
    minutes: int = 90,
    capacity: int = 1,
    status: str = "open",
) -> uuid.UUID:
    """Insert a slot of the provider; returns its id."""
    row = db.execute(
        "INSERT INTO availability_slots (provider_id, starts_at, ends_at, mode, capacity, status)"
        " VALUES (%s, %s, %s, 'online', %s, %s) RETURNING id",
        (provider_id, start, start + timedelta(minutes=minutes), capacity, status),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def link_child(db: psycopg.Connection[Any], parent_id: Any, child_id: Any) -> None:
    """Link a child account to a parent."""
    db.execute(
        "INSERT INTO parent_children (parent_id, child_id) VALUES (%s, %s)", (parent_id, child_id)
    )


def seats_taken(db: psycopg.Connection[Any], slot_id: Any) -> int:
    """The slot's `seats_taken` counter."""
    row = db.execute("SELECT seats_taken FROM availability_slots WHERE id = %s", (slot_id,))
    value = row.fetchone()
    assert value is not None
    return int(value[0])


def events(
    db: psycopg.Connection[Any], prefix: str = "booking."
) -> list[tuple[str, str, dict[str, Any]]]:
    """(event_type, aggregate_id, payload) of the outbox events starting with `prefix`."""
    rows = db.execute(
        "SELECT event_type, aggregate_id, payload FROM outbox WHERE event_type LIKE %s ORDER BY id",
        (prefix + "%",),
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def statuses(db: psycopg.Connection[Any]) -> list[str]:
    """Every booking's status, in creation order."""
    return [r[0] for r in db.execute("SELECT status FROM bookings ORDER BY created_at, id")]


def key() -> dict[str, str]:
    """A fresh `Idempotency-Key` header."""
    return {"Idempotency-Key": f'"{uuid.uuid4()}"'}


def insert_booking(
    db: psycopg.Connection[Any],
    *,
    student_id: Any,
    slot_id: Any,
    seats: int = 1,
    status: str = "confirmed",
    hold_expires_at: datetime | None = None,
) -> uuid.UUID:
    """Insert a booking row directly (no service): the slot's times and provider, a fixed
    price, the platform policy. The trigger still counts its seats."""
    row = db.execute(
        "INSERT INTO bookings (student_id, booked_by, provider_id, slot_id, seats, starts_at,"
        " ends_at, status, hold_expires_at, price_minor, currency, cancel_policy,"
        " refund_due_minor)"
        " SELECT %(student)s, %(student)s, provider_id, id, %(seats)s, starts_at, ends_at,"
        " %(status)s, %(exp)s, 1000 * %(seats)s, 'EUR',"
        " '{\"source\": \"platform\", \"tiers\": [{\"min_hours_before\": 24,"
        " \"refund_percent\": 100}]}'::jsonb,"
        " CASE WHEN %(status)s IN ('canceled', 'refunded') THEN 500 END"
        " FROM availability_slots WHERE id = %(slot)s RETURNING id",
        {"student": student_id, "seats": seats, "status": status, "slot": slot_id,
         "exp": hold_expires_at or NOW + timedelta(minutes=5)},
    ).fetchone()  # fmt: skip
    assert row is not None
    return uuid.UUID(str(row[0]))


def student(user_id: Any) -> Any:
    """A transient `User` standing for a student account (what the services read of it)."""
    from profiles.models import User

    return User(id=user_id, role="student", active=True)


async def confirm(booking_id: Any, now: datetime = NOW) -> Any:
    """Confirm a booking through the service, as the payments side will (committed)."""
    from booking import service
    from core.db import async_session_factory

    async with async_session_factory()() as session:
        result = await service.confirm(session, booking_id=uuid.UUID(str(booking_id)), now=now)
        await session.commit()
        return result
