"""Booking over HTTP: holds, prices, rules and their problem codes, RBAC, idempotency,
reads and listing, cancellation with refunds, slot changes, audit and outbox rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tests.booking_helpers import (
    NOW,
    SLOT_START,
    create_slot,
    events,
    key,
    link_child,
    seats_taken,
    statuses,
)
from tests.conftest import bearer, create_provider, create_user

URL = "/api/v1/bookings"


@pytest.fixture
def clock(app: Any) -> Iterator[dict[str, Any]]:
    """The app's clock, frozen at NOW; tests move it with `clock["now"] = ...`."""
    from api.deps import get_now

    state = {"now": NOW}
    app.dependency_overrides[get_now] = lambda: state["now"]
    yield state


async def _hold(
    api: httpx.AsyncClient, user: Any, role: str, slot_id: Any, **body: Any
) -> httpx.Response:
    return await api.post(
        URL, headers={**bearer(user, role), **key()}, json={"slot_id": str(slot_id), **body}
    )


async def test_student_holds_a_slot(
    api: httpx.AsyncClient, db: psycopg.Connection, clock: dict[str, Any]
) -> None:
    tutor = create_provider(db)  # 3000 EUR minor units an hour
    slot = create_slot(db, tutor, minutes=90)
    student = create_user(db)
    r = await _hold(api, student, "student", slot)
    assert r.status_code == 201, r.text
    b = r.json()
    assert r.headers["location"] == f"/api/v1/bookings/{b['id']}"
    assert (b["status"], b["seats"], b["price_minor"], b["currency"]) == ("pending", 1, 4500, "EUR")
    assert (b["student_id"], b["booked_by"], b["provider_id"]) == (str(student),) * 2 + (str(tutor),)
    assert b["hold_expires_at"] == (NOW + timedelta(seconds=300)).isoformat().replace("+00:00", "Z")
    assert b["cancel_policy"] == {
        "source": "platform",
        "tiers": [
            {"min_hours_before": 24, "refund_percent": 100},
            {"min_hours_before": 2, "refund_percent": 50},
        ],
    }
    assert seats_taken(db, slot) == 1
    assert events(db) == [
        ("booking.held", b["id"],
         {"booking_id": b["id"], "slot_id": str(slot), "provider_id": str(tutor)}),
    ]  # fmt: skip
    audit = db.execute("SELECT actor, action, before, after FROM audit_log").fetchall()
    assert [(a[0], a[1], a[2], a[3]["status"]) for a in audit] == [
        (student, "booking.held", None, "pending")
    ]
    # the 1:1 slot is now full: the provider's version moved (the search document changes)
    assert db.execute("SELECT version FROM provider_profiles").fetchone() == (2,)
    r = await api.get(f"{URL}/{b['id']}", headers=bearer(student, "student"))
    assert (r.status_code, r.json()) == (200, b)


async def test_missing_idempotency_key_is_400_and_a_replay_returns_the_same_booking(
    api: httpx.AsyncClient, db: psycopg.Connection, clock: dict[str, Any]
) -> None:
    tutor = create_provider(db)
    slot = create_slot(db, tutor, capacity=5)
    student = create_user(db)
    body = {"slot_id": str(slot)}
    r = await api.post(URL, headers=bearer(student, "student"), json=body)
    assert (r.status_code, r.json()["code"]) == (400, "idempotency_key_missing")
    assert r.headers["content-type"] == "application/problem+json"
    h = {**bearer(student, "student"), **key()}
    first = await api.post(URL, headers=h, json=body)
    again = await api.post(URL, headers=h, json=body)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    other = await api.post(URL, headers=h, json={**body, "seats": 2})
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_mismatch")
    assert statuses(db) == ["pending"]
