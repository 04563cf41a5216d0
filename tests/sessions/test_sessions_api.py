"""Video sessions over HTTP: tokens for confirmed bookings inside the join window (checked
with the SDK's TokenVerifier, every grant asserted), each refusal code, group classes
sharing one room, LiveKit webhooks (signed by the stand-in) turned into attendance once
per event id, forged webhooks refused, and the attendance view.

Real PostgreSQL, Redis and the LiveKit stand-in over HTTP; the API's clock is injected
(`get_now`), anchored on the wall clock so the SDK's expiry checks stay meaningful."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import orjson
import psycopg
import pytest
from livekit.api import TokenVerifier

from api.deps import get_now
from tests.conftest import bearer, create_user
from tests.sessions.factories import Lesson, add_attendee, create_lesson
from tests.sessions.livekit_standin import (
    API_KEY,
    API_SECRET,
    StandIn,
    free_port,
    livekit_fixture,  # noqa: F401 - the `livekit` fixture
    livekit_server_fixture,  # noqa: F401 - the `livekit_server` fixture
)

VERIFIER = TokenVerifier(API_KEY, API_SECRET)
NOW = datetime.now(UTC).replace(microsecond=0)
HOOK = "/api/v1/sessions/webhooks/livekit"


def token_url(booking: uuid.UUID) -> str:
    return f"/api/v1/bookings/{booking}/session-token"


def at(app: Any, now: datetime) -> None:
    """Set the API's clock."""
    app.dependency_overrides[get_now] = lambda: now


async def deliver(api: Any, webhooks: list[dict[str, Any]]) -> list[Any]:
    """POST the stand-in's signed webhooks to our receiver, as LiveKit would."""
    return [
        await api.post(
            HOOK,
            content=w["body"].encode(),
            headers={
                "Authorization": w["authorization"],
                "Content-Type": "application/webhook+json",
            },
        )
        for w in webhooks
    ]


def problem(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = dict(r.json())
    assert body["code"] == code
    return body


@pytest.fixture
def lesson(db: psycopg.Connection[Any]) -> Lesson:
    """A confirmed 1:1 lesson starting in 10 minutes (the join window is open)."""
    return create_lesson(db, starts_at=NOW + timedelta(minutes=10))


async def test_participants_get_verified_tokens(
    app: Any, api: Any, lesson: Lesson, livekit: StandIn, db: psycopg.Connection[Any]
) -> None:
    at(app, NOW)
    r = await api.post(token_url(lesson.booking), headers=bearer(lesson.student, "student"))
    assert r.status_code == 200, r.text
    body = r.json()
    room = f"ec-booking-{lesson.booking}"
    closes = lesson.ends_at + timedelta(seconds=900)
    assert body["url"] == livekit.url
    assert body["room"] == room
    assert datetime.fromisoformat(body["expires_at"]) == closes
    claims = VERIFIER.verify(body["token"])
    assert claims.identity == str(lesson.student)
    assert claims.name == "Student One"
    assert orjson.loads(claims.metadata) == {"role": "student", "booking_id": str(lesson.booking)}
    assert claims.video is not None
    student_grants = asdict(claims.video)
    assert set(student_grants) == set(GRANT_KEYS)  # nothing left to the SDK's defaults
    assert {k: student_grants[k] for k in GRANT_KEYS} == {
        **STUDENT_1TO1,
        "room": room,
    }
    raw = jwt.decode(body["token"], API_SECRET, algorithms=["HS256"], issuer=API_KEY)
    # the TTL runs to the window's end (not the SDK's 6 h); the SDK stamps nbf from the
    # wall clock, so exp = closes exactly when the injected clock is the wall clock
    assert raw["exp"] - raw["nbf"] == (closes - NOW).total_seconds()

    # the provider, through the GET form: room admin on top
    r = await api.get(
        "/api/v1/sessions/token",
        params={"booking_id": str(lesson.booking)},
        headers=bearer(lesson.provider, "tutor"),
    )
    assert r.status_code == 200, r.text
    claims = VERIFIER.verify(r.json()["token"])
    assert claims.identity == str(lesson.provider)
    assert claims.name == "Provider"
    assert orjson.loads(claims.metadata)["role"] == "provider"
    assert claims.video is not None
    grants = asdict(claims.video)
    assert {k: grants[k] for k in GRANT_KEYS} == {**STUDENT_1TO1, "room_admin": True, "room": room}

    # the room was created once, with capacity + 1 seats, kept until the window closes
    state = livekit.state()
    assert state["calls"] == {"CreateRoom": 1, f"CreateRoom:{room}": 1}
    created = state["rooms"][room]["room"]
    assert created["maxParticipants"] == 2
    assert created["emptyTimeout"] == int((closes - NOW).total_seconds())
    assert orjson.loads(created["metadata"]) == {"booking_id": str(lesson.booking)}
    row = db.execute(
        "SELECT booking_id, slot_id, max_participants, closes_at, deleted_at FROM session_rooms"
    ).fetchall()
    assert row == [(lesson.booking, lesson.slot, 2, closes, None)]
    # and it accepts the student's token (identity, room grant, capacity)
    assert livekit.join(body["token"]).status_code == 200


# Every field of the SDK's VideoGrants, as a 1:1 student's token must carry it.
STUDENT_1TO1 = {
    "room_create": False,
    "room_list": False,
    "room_record": False,
    "room_admin": False,
    "room_join": True,
    "destination_room": None,
    "can_publish": True,
    "can_subscribe": True,
    "can_publish_data": True,
    "can_publish_sources": None,
    "can_update_own_metadata": False,
    "ingress_admin": False,
    "hidden": False,
    "recorder": False,
    "agent": False,
    "can_manage_agent_session": False,
    "can_subscribe_metrics": False,
}
GRANT_KEYS = (*STUDENT_1TO1, "room")


async def test_refusals_have_stable_codes(
    app: Any, api: Any, db: psycopg.Connection[Any], livekit: StandIn
) -> None:
    at(app, NOW)
    ok = create_lesson(db, starts_at=NOW + timedelta(minutes=10))
    pending = create_lesson(db, starts_at=NOW + timedelta(hours=3), status="pending")
    later = create_lesson(db, starts_at=NOW + timedelta(minutes=16))
    done = create_lesson(db, starts_at=NOW - timedelta(minutes=76), minutes=60)
    stranger = create_user(db, role="student")
    parent = create_user(db, role="parent")
    db.execute(
        "INSERT INTO parent_children (parent_id, child_id) VALUES (%s, %s)", (parent, ok.student)
    )

    r = await api.post(token_url(ok.booking), headers=bearer(stranger, "student"))
    problem(r, 403, "not_a_participant")
    r = await api.post(token_url(ok.booking), headers=bearer(parent, "parent"))
    problem(r, 403, "not_a_participant")
    r = await api.post(token_url(pending.booking), headers=bearer(pending.student, "student"))
    problem(r, 409, "not_confirmed")
    r = await api.post(token_url(pending.booking), headers=bearer(pending.provider, "tutor"))
    problem(r, 409, "not_confirmed")
    r = await api.post(token_url(later.booking), headers=bearer(later.student, "student"))
    assert problem(r, 409, "too_early")["opens_at"] == (NOW + timedelta(minutes=1)).isoformat()
    # the window closes 900 s after the end: 76 min ago + 60 min = 16 min ago, + 15 min
    r = await api.post(token_url(done.booking), headers=bearer(done.student, "student"))
    problem(r, 409, "session_over")
    at(app, NOW - timedelta(minutes=2))  # one minute earlier it was still open
    r = await api.post(token_url(done.booking), headers=bearer(done.student, "student"))
    assert r.status_code == 200
    at(app, NOW)
    r = await api.post(token_url(uuid.uuid4()), headers=bearer(stranger, "student"))
    problem(r, 404, "booking_not_found")
    r = await api.post(token_url(ok.booking))
    problem(r, 401, "invalid_token")
    r = await api.get("/api/v1/sessions/token", headers=bearer(stranger, "student"))
    problem(r, 422, "validation_error")
    # a settled lesson is over whatever the clock says
    db.execute("UPDATE bookings SET status = 'completed' WHERE id = %s", (ok.booking,))
    r = await api.post(token_url(ok.booking), headers=bearer(ok.student, "student"))
    problem(r, 409, "session_over")
    # refusals create no room
    assert set(livekit.state()["rooms"]) == {f"ec-booking-{done.booking}"}


async def test_group_class_shares_one_room_with_subscriber_grants(
    app: Any, api: Any, db: psycopg.Connection[Any], livekit: StandIn
) -> None:
    at(app, NOW)
    lesson = create_lesson(db, starts_at=NOW + timedelta(minutes=5), capacity=3)
    second, second_booking = add_attendee(db, lesson, name="Second Student")
    gone, gone_booking = add_attendee(db, lesson, status="canceled", name="Gone")
    room = f"ec-slot-{lesson.slot}"

    tokens = {}
    for who, booking, role in (
        (lesson.student, lesson.booking, "student"),
        (second, second_booking, "student"),
        (lesson.provider, gone_booking, "tutor"),  # any booking of the slot, one is confirmed
    ):
        r = await api.post(token_url(booking), headers=bearer(who, role))
        assert r.status_code == 200, r.text
        assert r.json()["room"] == room
        tokens[who] = r.json()["token"]
    for who in (lesson.student, second):
        claims = VERIFIER.verify(tokens[who])
        assert claims.identity == str(who)
        assert orjson.loads(claims.metadata) == {"role": "student", "slot_id": str(lesson.slot)}
        assert claims.video is not None
        g = asdict(claims.video)
        assert {k: g[k] for k in GRANT_KEYS} == {
            **STUDENT_1TO1,
            "can_publish": False,
            "room": room,
        }
    claims = VERIFIER.verify(tokens[lesson.provider])
    assert claims.video is not None
    assert (claims.video.room_admin, claims.video.can_publish) == (True, True)
    r = await api.post(token_url(gone_booking), headers=bearer(gone, "student"))
    problem(r, 409, "not_confirmed")

    # one room for everyone, sized capacity + 1
    state = livekit.state()
    assert state["calls"]["CreateRoom"] == 1
    assert state["rooms"][room]["room"]["maxParticipants"] == 4
    for t in tokens.values():
        assert livekit.join(t).status_code == 200
    assert len(livekit.state()["rooms"][room]["participants"]) == 3

    # the provider lets attendees publish: tokens issued afterwards can
    r = await api.put(
        f"/api/v1/sessions/slots/{lesson.slot}/settings",
        json={"attendees_can_publish": True},
        headers=bearer(lesson.provider, "tutor"),
    )
    assert r.json() == {"attendees_can_publish": True, "slot_id": str(lesson.slot)}
    r = await api.post(token_url(second_booking), headers=bearer(second, "student"))
    claims = VERIFIER.verify(r.json()["token"])
    assert claims.video is not None
    assert claims.video.can_publish is True
    assert claims.video.room_admin is False
    # only the slot's provider may change it
    r = await api.put(
        f"/api/v1/sessions/slots/{lesson.slot}/settings",
        json={"attendees_can_publish": False},
        headers=bearer(create_user(db, role="tutor"), "tutor"),
    )
    problem(r, 404, "slot_not_found")
    r = await api.put(
        f"/api/v1/sessions/slots/{lesson.slot}/settings",
        json={"attendees_can_publish": False},
        headers=bearer(second, "student"),
    )
    problem(r, 403, "forbidden")


async def test_webhooks_become_attendance_once(
    app: Any, api: Any, lesson: Lesson, livekit: StandIn, db: psycopg.Connection[Any]
) -> None:
    at(app, NOW)
    student = (
        await api.post(token_url(lesson.booking), headers=bearer(lesson.student, "student"))
    ).json()
    provider = (
        await api.post(token_url(lesson.booking), headers=bearer(lesson.provider, "tutor"))
    ).json()
    t0 = lesson.starts_at.timestamp()
    hooks = livekit.join(provider["token"], at=t0 - 60).json()["webhooks"]
    hooks += livekit.join(student["token"], at=t0 + 30).json()["webhooks"]
    hooks += livekit.leave(student["room"], str(lesson.student), at=t0 + 1830).json()["webhooks"]
    results = await deliver(api, hooks)
    assert [r.status_code for r in results] == [200, 200, 200]
    assert [r.json()["result"] for r in results] == ["stored"] * 3
    # LiveKit delivers at least once: a replay stores nothing
    again = await deliver(api, hooks[:1])
    assert again[0].json() == {**results[0].json(), "result": "duplicate"}
    assert db.execute("SELECT count(*) FROM attendance").fetchone() == (3,)

    # ten minutes into the lesson: the provider has been there all along (still connected)
    at(app, lesson.starts_at + timedelta(minutes=10))
    r = await api.get(
        f"/api/v1/bookings/{lesson.booking}/attendance", headers=bearer(lesson.provider, "tutor")
    )
    assert {p["role"]: p["present_s"] for p in r.json()["participants"]} == {
        "provider": 600,
        "student": 570,
    }
    at(app, lesson.ends_at + timedelta(minutes=1))
    r = await api.get(
        f"/api/v1/bookings/{lesson.booking}/attendance", headers=bearer(lesson.student, "student")
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(e["event"], e["role"]) for e in body["events"]] == [
        ("participant_joined", "provider"),
        ("participant_joined", "student"),
        ("participant_left", "student"),
    ]
    presence = {p["role"]: p for p in body["participants"]}
    assert presence["student"]["present_s"] == 1800
    assert presence["provider"]["present_s"] == 3600  # never left: until the end
    assert datetime.fromisoformat(presence["provider"]["first_joined_at"]).timestamp() == t0 - 60
    assert body["outcome"] is None
    # who may see it
    admin = create_user(db, role="admin")
    parent = create_user(db, role="parent")
    db.execute(
        "INSERT INTO parent_children (parent_id, child_id) VALUES (%s, %s)",
        (parent, lesson.student),
    )
    for who, role in ((admin, "admin"), (parent, "parent"), (lesson.provider, "tutor")):
        r = await api.get(
            f"/api/v1/bookings/{lesson.booking}/attendance", headers=bearer(who, role)
        )
        assert r.status_code == 200
    r = await api.get(
        f"/api/v1/bookings/{lesson.booking}/attendance", headers=bearer(create_user(db), "student")
    )
    problem(r, 403, "not_a_participant")


async def test_forged_webhooks_are_refused_and_store_nothing(
    app: Any, api: Any, lesson: Lesson, livekit: StandIn, db: psycopg.Connection[Any]
) -> None:
    at(app, NOW)
    r = await api.post(token_url(lesson.booking), headers=bearer(lesson.student, "student"))
    room = r.json()["room"]
    good = livekit.webhook(
        event="participant_joined", room=room, identity=str(lesson.student), id="EV_a"
    )
    tampered = good["body"].replace(str(lesson.student), str(lesson.provider))
    other_secret = jwt.encode(
        {**jwt.decode(good["authorization"], options={"verify_signature": False})},
        "not-our-secret-0123456789abcdef0123456789",
        algorithm="HS256",
    )
    for body, auth in (
        (tampered, good["authorization"]),  # body changed after signing
        (good["body"], other_secret),  # signed with another secret
        (good["body"], None),  # unsigned
        (good["body"], "garbage"),
    ):
        headers = {"Content-Type": "application/webhook+json"}
        if auth is not None:
            headers["Authorization"] = auth
        r = await api.post(HOOK, content=body.encode(), headers=headers)
        problem(r, 401, "invalid_webhook_signature")
    assert db.execute("SELECT count(*) FROM attendance").fetchone() == (0,)
    # signed but not a WebhookEvent
    r = await api.post(
        HOOK, content=b"[1, 2]", headers={"Authorization": livekit.sign_body("[1, 2]")}
    )
    problem(r, 400, "malformed_webhook")
    # a signed event of a room that is not ours, and another event type: acknowledged, ignored
    for w in (
        livekit.webhook(event="participant_joined", room="someone-elses", identity="x", id="EV_b"),
        livekit.webhook(
            event="track_published", room=room, identity=str(lesson.student), id="EV_c"
        ),
    ):
        r = (await deliver(api, [w]))[0]
        assert r.status_code == 200
        assert r.json()["result"] == "ignored"
    r = (await deliver(api, [good]))[0]
    assert r.json() == {"event_id": "EV_a", "event": "participant_joined", "result": "stored"}
    assert db.execute("SELECT count(*) FROM attendance").fetchone() == (1,)


async def test_video_unavailable(
    app: Any, api: Any, lesson: Lesson, livekit: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.settings import get_settings

    at(app, NOW)
    try:
        # LiveKit not answering: the first token cannot create the room
        monkeypatch.setenv("LIVEKIT_URL", f"http://127.0.0.1:{free_port()}")
        get_settings.cache_clear()
        r = await api.post(token_url(lesson.booking), headers=bearer(lesson.student, "student"))
        assert problem(r, 503, "video_unavailable")
        assert r.headers["retry-after"] == "5"
        # not configured at all
        monkeypatch.delenv("LIVEKIT_API_KEY")
        get_settings.cache_clear()
        r = await api.post(token_url(lesson.booking), headers=bearer(lesson.student, "student"))
        problem(r, 503, "video_unavailable")
        # nothing can verify a webhook: refused like a forged one
        r = await api.post(HOOK, content=b"{}", headers={"Authorization": "x"})
        problem(r, 401, "invalid_webhook_signature")
        # refusals that need no LiveKit still come first
        r = await api.post(token_url(uuid.uuid4()), headers=bearer(lesson.student, "student"))
        problem(r, 404, "booking_not_found")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    r = await api.post(token_url(lesson.booking), headers=bearer(lesson.student, "student"))
    assert r.status_code == 200
