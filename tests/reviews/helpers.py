"""Factories of the reviews and back-office tests (real database, injected clock)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import psycopg

from tests.booking.helpers import SLOT_START, create_slot, insert_booking
from tests.conftest import create_provider, create_user

# Every review request runs one day after the session (well within the 14-day window).
SESSION_END = SLOT_START + timedelta(minutes=90)
AFTER = SESSION_END + timedelta(days=1)


def completed_booking(
    db: psycopg.Connection[Any],
    provider_id: Any,
    *,
    student_id: Any | None = None,
    start: datetime = SLOT_START,
    status: str = "completed",
) -> tuple[uuid.UUID, Any]:
    """A slot of the provider and a booking of it in `status`; (booking id, student id)."""
    student = student_id or create_user(db)
    slot = create_slot(db, provider_id, start=start)
    return insert_booking(db, student_id=student, slot_id=slot, status=status), student


def set_rating(db: psycopg.Connection[Any], provider_id: Any, *, stars: list[int]) -> None:
    """Give the provider seeded reviews of `stars` and the rating they make."""
    for s in stars:
        db.execute(
            "INSERT INTO reviews (provider_id, source, rating, locale) VALUES (%s, 'seed', %s, 'en')",
            (provider_id, s),
        )
    n, total = len(stars), sum(stars)
    db.execute(
        "UPDATE provider_profiles SET rating_sum = %s, rating_count = %s,"
        " rating_avg = CASE WHEN %s > 0 THEN round(%s::numeric / %s, 2) END WHERE user_id = %s",
        (total, n, n, total, max(n, 1), provider_id),
    )


def set_prior(db: psycopg.Connection[Any], *, mean: float, weight: int) -> None:
    """The damped rating's prior (C, m)."""
    db.execute(
        "INSERT INTO search_rating_prior (id, mean, weight) VALUES (true, %s, %s)"
        " ON CONFLICT (id) DO UPDATE SET mean = EXCLUDED.mean, weight = EXCLUDED.weight",
        (mean, weight),
    )


def rating(db: psycopg.Connection[Any], provider_id: Any) -> tuple[int, int, float | None]:
    """(rating_sum, rating_count, rating_avg) stored on the profile."""
    row = db.execute(
        "SELECT rating_sum, rating_count, rating_avg::float8 FROM provider_profiles"
        " WHERE user_id = %s",
        (provider_id,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), row[2]


def recount(db: psycopg.Connection[Any], provider_id: Any) -> tuple[int, int]:
    """(sum, count) of the provider's visible reviews, from scratch."""
    row = db.execute(
        "SELECT coalesce(sum(rating), 0), count(*) FROM reviews"
        " WHERE provider_id = %s AND hidden_at IS NULL",
        (provider_id,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def tutor(db: psycopg.Connection[Any], **kw: Any) -> Any:
    """A verified tutor in Paris (searchable)."""
    return create_provider(db, in_person=True, lat=48.8566, lng=2.3522, **kw)


def audit_rows(db: psycopg.Connection[Any], action: str) -> list[tuple[Any, Any, Any]]:
    """(actor, before, after) of the audit rows of `action`."""
    return [
        (r[0], r[1], r[2])
        for r in db.execute(
            "SELECT actor, before, after FROM audit_log WHERE action = %s ORDER BY id", (action,)
        )
    ]
