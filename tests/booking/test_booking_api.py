"""Booking over HTTP: holds, prices, rules and their problem codes, RBAC, idempotency,
reads and listing, cancellation with refunds, slot changes, audit and outbox rows."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tests.booking.helpers import (
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
def clock(app: Any) -> dict[str, Any]:
    """The app's clock, frozen at NOW; tests move it with `clock["now"] = ...`."""
    from api.deps import get_now

    state = {"now": NOW}
    app.dependency_overrides[get_now] = lambda: state["now"]
    return state


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
    assert (b["student_id"], b["booked_by"], b["provider_id"]) == (str(student),) * 2 + (
        str(tutor),
    )
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


async def test_parent_books_only_for_a_linked_child(
    api: httpx.AsyncClient, db: psycopg.Connection, clock: dict[str, Any]
) -> None:
    tutor = create_provider(db)
    slot = create_slot(db, tutor, capacity=4)
    parent, child, stranger_child = (
        create_user(db, role="parent"), create_user(db), create_user(db),
    )  # fmt: skip
    link_child(db, parent, child)
    r = await _hold(api, parent, "parent", slot)
    assert (r.status_code, r.json()["errors"][0]["param"]) == (422, "student_id")
    r = await _hold(api, parent, "parent", slot, student_id=str(stranger_child))
    assert (r.status_code, r.json()["code"]) == (403, "not_linked_child")
    r = await _hold(api, child, "student", slot, student_id=str(stranger_child))
    assert (r.status_code, r.json()["code"]) == (403, "not_linked_child")
    r = await _hold(api, parent, "parent", slot, student_id=str(child))
    assert r.status_code == 201
    b = r.json()
    assert (b["student_id"], b["booked_by"]) == (str(child), str(parent))
    # the parent, the child and the provider see it; another parent does not
    for uid, role in ((parent, "parent"), (child, "student"), (tutor, "tutor")):
        assert (await api.get(f"{URL}/{b['id']}", headers=bearer(uid, role))).status_code == 200
    other_parent = create_user(db, role="parent")
    r = await api.get(f"{URL}/{b['id']}", headers=bearer(other_parent, "parent"))
    assert (r.status_code, r.json()["code"]) == (404, "booking_not_found")
    page = (await api.get(URL, headers=bearer(parent, "parent"))).json()
    assert [i["id"] for i in page["items"]] == [b["id"]]


async def test_providers_and_admins_cannot_book_and_strangers_get_404(
    api: httpx.AsyncClient, db: psycopg.Connection, clock: dict[str, Any]
) -> None:
    tutor = create_provider(db)
    slot = create_slot(db, tutor, capacity=3)
    for role in ("tutor", "coach", "mentor", "admin"):
        uid = tutor if role == "tutor" else create_user(db, role=role)
        r = await _hold(api, uid, role, slot)
        assert (r.status_code, r.json()["code"]) == (403, "forbidden"), role
    r = await api.post(URL, headers=key(), json={"slot_id": str(slot)})
    assert r.status_code == 401
    owner = create_user(db)
    b = (await _hold(api, owner, "student", slot)).json()
    for role in ("student", "tutor", "parent"):
        stranger = create_provider(db) if role == "tutor" else create_user(db, role=role)
        r = await api.get(f"{URL}/{b['id']}", headers=bearer(stranger, role))
        assert (r.status_code, r.json()["code"]) == (404, "booking_not_found"), role
        r = await api.post(f"{URL}/{b['id']}/cancel", headers=bearer(stranger, role))
        assert r.status_code == 404, role
    admin = create_user(db, role="admin")
    assert (await api.get(f"{URL}/{b['id']}", headers=bearer(admin, "admin"))).status_code == 200
    r = await api.get(f"{URL}/{uuid.uuid4()}", headers=bearer(owner, "student"))
    assert r.status_code == 404


async def test_booking_rules_each_have_a_code(
    api: httpx.AsyncClient, db: psycopg.Connection, clock: dict[str, Any]
) -> None:
    tutor = create_provider(db)
    uid = create_user(db)

    async def code(slot: Any, **body: Any) -> tuple[int, str]:
        r = await _hold(api, uid, "student", slot, **body)
        return r.status_code, r.json()["code"]

    assert await code(uuid.uuid4()) == (404, "slot_not_found")
    closed = create_slot(db, tutor, start=SLOT_START + timedelta(days=1), status="closed")
    assert await code(closed) == (409, "slot_not_open")
    past = create_slot(db, tutor, start=NOW - timedelta(hours=1))
    assert await code(past) == (409, "slot_in_past")
    soon = create_slot(db, create_provider(db), start=NOW + timedelta(hours=2, seconds=-1))
    r = await _hold(api, uid, "student", soon)
    assert (r.status_code, r.json()["code"], r.json()["min_notice_s"]) == (409, "min_notice", 7200)
    group = create_slot(db, tutor, start=SLOT_START + timedelta(days=2), capacity=3)
    r = await _hold(api, uid, "student", group, seats=4)
    assert (r.status_code, r.json()["code"], r.json()["seats_left"]) == (409, "sold_out", 3)
    assert (await _hold(api, uid, "student", group, seats=0)).status_code == 422
    assert (await _hold(api, uid, "student", group, extra=1)).status_code == 422
    assert (await _hold(api, uid, "student", group, seats=2)).status_code == 201
    r = await _hold(api, create_user(db), "student", group, seats=2)
    assert (r.json()["code"], r.json()["seats_left"]) == ("sold_out", 1)
    # exactly the minimum notice is fine; the student cannot hold an overlapping seat
    on_time = create_slot(db, tutor, start=NOW + timedelta(hours=2))
    assert (await _hold(api, uid, "student", on_time)).status_code == 201
    other_tutor = create_provider(db)
    overlapping = create_slot(db, other_tutor, start=SLOT_START + timedelta(days=2, minutes=30))
    assert await code(overlapping) == (409, "overlapping_booking")
    # a KYC-rejected or deactivated provider cannot be booked
    free = create_slot(db, other_tutor, start=SLOT_START + timedelta(days=5))
    db.execute(
        "UPDATE provider_profiles SET kyc_status = 'rejected' WHERE user_id = %s", (other_tutor,)
    )
    assert await code(free) == (409, "provider_unavailable")
    db.execute(
        "UPDATE provider_profiles SET kyc_status = 'verified' WHERE user_id = %s", (other_tutor,)
    )
    db.execute("UPDATE users SET active = false WHERE id = %s", (other_tutor,))
    assert await code(free) == (409, "provider_unavailable")
    assert statuses(db) == ["pending", "pending"]


def test_price_is_rate_times_duration_times_seats_half_up() -> None:
    from booking.service import price_minor

    start = NOW
    assert (
        price_minor(
            hourly_rate_minor=3000, starts_at=start, ends_at=start + timedelta(minutes=90), seats=1
        )
        == 4500
    )
    # 45 min at 3,333/h = 2,499.75 -> 2,500 per seat
    assert (
        price_minor(
            hourly_rate_minor=3333, starts_at=start, ends_at=start + timedelta(minutes=45), seats=3
        )
        == 7500
    )
    # 20 min at 1,001/h = 333.666… -> 334; 30 min at 1,001/h = 500.5 -> 501 (half up)
    assert (
        price_minor(
            hourly_rate_minor=1001, starts_at=start, ends_at=start + timedelta(minutes=20), seats=1
        )
        == 334
    )
    assert (
        price_minor(
            hourly_rate_minor=1001, starts_at=start, ends_at=start + timedelta(minutes=30), seats=1
        )
        == 501
    )


async def test_list_my_bookings_with_filters_and_cursor(
    api: httpx.AsyncClient, db: psycopg.Connection, clock: dict[str, Any]
) -> None:
    tutor = create_provider(db)
    uid = create_user(db)
    ids = []
    for day in range(5):
        slot = create_slot(db, tutor, start=SLOT_START + timedelta(days=day), capacity=2)
        ids.append((await _hold(api, uid, "student", slot)).json()["id"])
    h = bearer(uid, "student")
    page = (await api.get(URL, headers=h, params={"limit": 2})).json()
    seen = [i["id"] for i in page["items"]]
    while page["next_cursor"]:
        page = (
            await api.get(URL, headers=h, params={"limit": 2, "cursor": page["next_cursor"]})
        ).json()
        seen += [i["id"] for i in page["items"]]
    assert seen == ids
    window = {
        "from": (SLOT_START + timedelta(days=1)).isoformat(),
        "to": (SLOT_START + timedelta(days=3)).isoformat(),
    }
    r = await api.get(URL, headers=h, params=window)
    assert [i["id"] for i in r.json()["items"]] == ids[1:3]
    first = (await api.get(URL, headers=h, params={"limit": 1})).json()["next_cursor"]
    r = await api.get(URL, headers=h, params={"limit": 1, "cursor": first, "status": "confirmed"})
    assert (r.status_code, r.json()["errors"][0]["param"]) == (422, "cursor")
    r = await api.get(URL, headers=h, params={"cursor": "garbage"})
    assert (r.status_code, r.json()["errors"][0]["param"]) == (422, "cursor")
    r = await api.get(URL, headers=h, params={"status": "confirmed"})
    assert r.json()["items"] == []
    r = await api.get(URL, headers=h, params={"from": "2030-01-01T00:00:00"})
    assert (r.status_code, r.json()["errors"][0]["param"]) == (422, "from")
    r = await api.get(URL, headers=h, params={"as": "provider"})
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    # the provider sees the bookings of its slots (its default view)
    r = await api.get(URL, headers=bearer(tutor, "tutor"))
    assert [i["id"] for i in r.json()["items"]] == ids
    r = await api.get(URL, headers=bearer(create_user(db), "student"))
    assert r.json() == {"items": [], "next_cursor": None}


def test_openapi_documents_every_booking_status_and_example() -> None:
    from api.app import create_app

    spec = create_app().openapi()
    paths = spec["paths"]
    expected = {
        ("/api/v1/bookings", "post"): {"201", "400", "401", "403", "404", "409", "422", "429"},
        ("/api/v1/bookings", "get"): {"200", "401", "403", "422"},
        ("/api/v1/bookings/{booking_id}", "get"): {"200", "401", "404", "422"},
        ("/api/v1/bookings/{booking_id}/cancel", "post"): {"200", "400", "401", "404", "409", "422", "429"},
        ("/api/v1/bookings/{booking_id}/complete", "post"): {"200", "401", "403", "404", "409", "422"},
        ("/api/v1/bookings/{booking_id}/no-show", "post"): {"200", "401", "403", "404", "409", "422"},
        ("/api/v1/profiles/me/cancel-policy", "put"): {"200", "401", "403", "409", "422"},
        ("/api/v1/availability/{slot_id}", "patch"): {"200", "401", "403", "404", "409", "422", "429"},
        ("/api/v1/availability/{slot_id}", "delete"): {"204", "401", "403", "404", "409", "422", "429"},
    }  # fmt: skip
    for (path, method), codes in expected.items():
        op = paths[path][method]
        assert set(op["responses"]) == codes, (path, method)
        for status, resp in op["responses"].items():
            if status.startswith(("4", "5")):
                assert "application/problem+json" in resp["content"], (path, method, status)
    key_param = [
        p for p in paths["/api/v1/bookings"]["post"]["parameters"] if p["name"] == "Idempotency-Key"
    ]
    assert key_param[0]["required"] is True
    schemas = spec["components"]["schemas"]
    for name in ("BookingCreate", "BookingOut", "BookingPage", "CancelIn", "CancelResult",
                 "CancelPolicy", "CancelPolicyOut", "SlotCapacityIn"):  # fmt: skip
        assert schemas[name].get("examples"), name


async def test_out_of_range_dates_are_422(
    api: httpx.AsyncClient, db: psycopg.Connection, clock: dict[str, Any]
) -> None:
    uid = create_user(db)
    r = await api.get(
        URL, headers=bearer(uid, "student"), params={"from": "0001-01-01T00:00:00+01:00"}
    )
    assert (r.status_code, r.json()["errors"][0]["param"]) == (422, "from")
