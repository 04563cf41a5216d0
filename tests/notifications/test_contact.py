"""Contact points over the API (real database): phone and time zone (`/me/contact`), push
devices (`/me/push-devices`), and the pipeline sending to what was set there."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import psycopg

from core.security import utcnow
from tests.conftest import bearer, create_provider, create_user
from tests.notifications.kit import drain, emit_booking_event, insert_booking_event, rows

TOKEN = "fGw0qy4TGgk:APA91bH-test_token-1"


async def test_contact_defaults_then_set_and_cleared(
    api: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    student = create_user(db)
    h = bearer(student, "student")
    r = await api.get("/api/v1/me/contact", headers=h)
    assert r.status_code == 200
    assert r.json() == {"phone": None, "time_zone": "UTC", "push_devices": []}

    r = await api.put(
        "/api/v1/me/contact", headers=h, json={"phone": "+33612345678", "time_zone": "Europe/Paris"}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"phone": "+33612345678", "time_zone": "Europe/Paris", "push_devices": []}
    row = db.execute("SELECT phone, time_zone FROM users WHERE id = %s", (student,)).fetchone()
    assert row == ("+33612345678", "Europe/Paris")

    r = await api.put("/api/v1/me/contact", headers=h, json={"time_zone": "America/Montreal"})
    assert r.status_code == 200
    assert (r.json()["phone"], r.json()["time_zone"]) == (None, "America/Montreal")


async def test_contact_refuses_what_is_not_e164_or_iana_and_changes_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    student = create_user(db)
    h = bearer(student, "student")
    await api.put("/api/v1/me/contact", headers=h, json={"phone": "+221771234567", "time_zone": "Africa/Dakar"})  # fmt: skip
    for phone in ("0612345678", "+33 6 12 34 56 78", "+0612345678", "+1234", "+1234567890123456"):
        r = await api.put(
            "/api/v1/me/contact", headers=h, json={"phone": phone, "time_zone": "Europe/Paris"}
        )
        assert r.status_code == 422, phone
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "invalid_phone", phone
    for tz in ("Europe/Atlantis", "CET+1", "../etc/passwd", "europe/paris"):
        r = await api.put("/api/v1/me/contact", headers=h, json={"phone": None, "time_zone": tz})
        assert (r.status_code, r.json()["code"]) == (422, "invalid_time_zone"), tz
    r = await api.put("/api/v1/me/contact", headers=h, json={"phone": None})
    assert (r.status_code, r.json()["code"]) == (422, "validation_error")
    r = await api.put("/api/v1/me/contact", headers=h, json={"time_zone": "UTC", "email": "x"})
    assert (r.status_code, r.json()["code"]) == (422, "validation_error")
    row = db.execute("SELECT phone, time_zone FROM users WHERE id = %s", (student,)).fetchone()
    assert row == ("+221771234567", "Africa/Dakar")
    r = await api.get("/api/v1/me/contact")
    assert r.status_code == 401


async def test_push_devices_register_once_move_between_accounts_and_unregister(
    api: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    alice, bob = create_user(db), create_user(db)
    ha, hb = bearer(alice, "student"), bearer(bob, "student")
    r = await api.post("/api/v1/me/push-devices", headers=ha, json={"token": TOKEN})
    assert r.status_code == 201, r.text
    assert (r.json()["token"], r.json()["platform"]) == (TOKEN, "web")
    r = await api.post(
        "/api/v1/me/push-devices", headers=ha, json={"token": TOKEN, "platform": "android"}
    )
    assert r.status_code == 200
    assert r.json()["platform"] == "android"
    devices = (await api.get("/api/v1/me/contact", headers=ha)).json()["push_devices"]
    assert [(d["token"], d["platform"]) for d in devices] == [(TOKEN, "android")]

    # the device signs in to another account: the token is Bob's now, not Alice's too
    r = await api.post("/api/v1/me/push-devices", headers=hb, json={"token": TOKEN, "platform": "ios"})  # fmt: skip
    assert r.status_code == 201
    owners = db.execute("SELECT user_id, platform FROM push_devices").fetchall()
    assert owners == [(bob, "ios")]

    for body in ({"token": ""}, {"token": "has space"}, {"token": TOKEN, "platform": "fax"}):
        r = await api.post("/api/v1/me/push-devices", headers=ha, json=body)
        assert (r.status_code, r.json()["code"]) == (422, "validation_error"), body

    r = await api.delete(f"/api/v1/me/push-devices/{TOKEN}", headers=ha)
    assert (r.status_code, r.json()["code"]) == (404, "push_device_not_found")
    r = await api.delete(f"/api/v1/me/push-devices/{TOKEN}", headers=hb)
    assert r.status_code == 204
    assert db.execute("SELECT count(*) FROM push_devices").fetchone() == (0,)
    r = await api.delete(f"/api/v1/me/push-devices/{TOKEN}", headers=hb)
    assert r.status_code == 404


async def test_the_pipeline_sends_to_the_contact_points_set_over_the_api(
    api: httpx.AsyncClient, db: psycopg.Connection[Any], database_url: str
) -> None:
    tutor = create_provider(db)
    student = create_user(db)
    h = bearer(student, "student")
    await api.put(
        "/api/v1/me/contact", headers=h, json={"phone": "+33612345678", "time_zone": "Europe/Paris"}
    )
    await api.post("/api/v1/me/push-devices", headers=h, json={"token": TOKEN})
    r = await api.put("/api/v1/me/notification-preferences", headers=h, json={"items": [
        {"kind": "booking.confirmed", "channel": "sms", "enabled": True},
        {"kind": "booking.confirmed", "channel": "push", "enabled": True},
    ]})  # fmt: skip
    assert r.status_code == 200
    b = insert_booking_event(
        db, student=student, provider=tutor, starts_at=utcnow() + timedelta(days=3)
    )
    emit_booking_event(db, b, "booking.confirmed")
    drain(database_url)
    mine = {r["channel"]: r["address"] for r in rows(db, "user_id = %s", (student,))}
    assert mine["sms"] == "+33612345678"
    assert mine["push"] == TOKEN
