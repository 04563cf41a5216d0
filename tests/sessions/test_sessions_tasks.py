"""Room clean-up and settlement: the Celery tasks (run eagerly in-process, and one pass
through a real worker process), the outbox consumer, idempotence (a room deleted once
however often the task runs), and completed vs no_show decided with the clock injected.
Real PostgreSQL, Redis and the LiveKit stand-in over HTTP."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from api.deps import get_now
from sessions import tasks
from tests.conftest import bearer
from tests.indexer.test_reindex import Worker
from tests.sessions.factories import Lesson, add_attendee, cancel_booking, create_lesson
from tests.sessions.livekit_standin import (
    StandIn,
    livekit_fixture,  # noqa: F401 - the `livekit` fixture
    livekit_server_fixture,  # noqa: F401 - the `livekit_server` fixture
)

NOW = datetime.now(UTC).replace(microsecond=0)


async def token(app: Any, api: Any, booking: uuid.UUID, who: uuid.UUID, role: str) -> str:
    app.dependency_overrides[get_now] = lambda: NOW
    r = await api.post(f"/api/v1/bookings/{booking}/session-token", headers=bearer(who, role))
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def sweep(now: datetime) -> dict[str, Any]:
    return dict(tasks.sweep.apply(kwargs={"now": now.isoformat(), "inline": True}).get())


async def deliver(api: Any, webhooks: list[dict[str, Any]]) -> None:
    for w in webhooks:
        r = await api.post(
            "/api/v1/sessions/webhooks/livekit",
            content=w["body"].encode(),
            headers={"Authorization": w["authorization"]},
        )
        assert r.status_code == 200, r.text


def room_row(db: psycopg.Connection[Any], name: str) -> tuple[Any, ...] | None:
    return db.execute(
        "SELECT deleted_at IS NOT NULL, close_reason, attempts FROM session_rooms WHERE name = %s",
        (name,),
    ).fetchone()


async def test_canceled_booking_room_is_deleted_once(
    app: Any, api: Any, db: psycopg.Connection[Any], livekit: StandIn
) -> None:
    lesson = create_lesson(db, starts_at=NOW + timedelta(minutes=5))
    room = f"ec-booking-{lesson.booking}"
    student = await token(app, api, lesson.booking, lesson.student, "student")
    assert livekit.join(student).status_code == 200
    # the provider cancels through the booking API (booking.canceled in the outbox)
    r = await api.post(
        f"/api/v1/bookings/{lesson.booking}/cancel", headers=bearer(lesson.provider, "tutor")
    )
    assert r.status_code == 200, r.text

    first = sweep(NOW)
    assert first["closed"] == [room]
    assert first["outbox_events"] == 1
    second = sweep(NOW)  # the same sweep again (a redelivered message, a second beat)
    assert second["closed"] == []
    assert second["outbox_events"] == 0
    again = tasks.close_room.apply(args=[room, "canceled", NOW.isoformat()]).get()
    assert again == {"room": room, "result": "already", "removed": []}

    calls = livekit.state()["calls"]
    assert calls[f"DeleteRoom:{room}"] == 1
    assert calls[f"RemoveParticipant:{room}"] == 1
    assert livekit.state()["rooms"] == {}
    assert room_row(db, room) == (True, "canceled", 0)
    # the consumer's checkpoint moved past the event
    row = db.execute(
        "SELECT events FROM indexer_checkpoints WHERE consumer = 'sessions'"
    ).fetchone()
    assert row == (1,)


def test_concurrent_clean_ups_delete_once(db: psycopg.Connection[Any], livekit: StandIn) -> None:
    lesson = create_lesson(db, starts_at=NOW + timedelta(minutes=5))
    room = f"ec-booking-{lesson.booking}"
    # the room as the first token leaves it (created in LiveKit and recorded)
    livekit.http.post(
        "/twirp/livekit.RoomService/CreateRoom",
        json={"name": room},
        headers={"Authorization": f"Bearer {_admin_token()}"},
    ).raise_for_status()
    db.execute(
        "INSERT INTO session_rooms (name, booking_id, slot_id, max_participants, opens_at,"
        " closes_at) VALUES (%s, %s, %s, 2, %s, %s)",
        (room, lesson.booking, lesson.slot, lesson.starts_at, lesson.ends_at),
    )
    results: list[Any] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        results.append(tasks.close_room.apply(args=[room, "canceled"]).get())

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(r["result"] for r in results) == ["already", "already", "already", "deleted"]
    assert livekit.state()["calls"][f"DeleteRoom:{room}"] == 1


def _admin_token() -> str:
    from livekit.api import AccessToken, VideoGrants

    from tests.sessions.livekit_standin import API_KEY, API_SECRET

    return AccessToken(API_KEY, API_SECRET).with_grants(VideoGrants(room_create=True)).to_jwt()


async def test_group_cancellations_remove_the_attendee_then_close_the_room(
    app: Any, api: Any, db: psycopg.Connection[Any], livekit: StandIn
) -> None:
    lesson = create_lesson(db, starts_at=NOW + timedelta(minutes=5), capacity=4)
    other, other_booking = add_attendee(db, lesson)
    room = f"ec-slot-{lesson.slot}"
    for who, booking in ((lesson.student, lesson.booking), (other, other_booking)):
        assert livekit.join(await token(app, api, booking, who, "student")).status_code == 200

    cancel_booking(db, lesson.booking)
    assert sweep(NOW)["closed"] == []
    assert livekit.state()["rooms"][room]["participants"] == [str(other)]

    cancel_booking(db, other_booking)
    assert sweep(NOW)["closed"] == [room]
    assert room_row(db, room) == (True, "canceled", 0)
    assert livekit.state()["calls"][f"DeleteRoom:{room}"] == 1


async def test_ended_sessions_are_closed_and_settled(
    app: Any, api: Any, db: psycopg.Connection[Any], livekit: StandIn
) -> None:
    start = NOW + timedelta(minutes=5)
    both = create_lesson(db, starts_at=start)
    brief = create_lesson(db, starts_at=start)
    student_only = create_lesson(db, starts_at=start)
    nobody = create_lesson(db, starts_at=start)
    in_person = create_lesson(db, starts_at=start, mode="in_person")
    t0 = start.timestamp()

    async def attend(
        lesson: Lesson, *, student: tuple[int, int] | None, provider: tuple[int, int] | None
    ) -> None:
        for who, role, span in (
            (lesson.student, "student", student),
            (lesson.provider, "tutor", provider),
        ):
            if span is None:
                continue
            jwt = await token(app, api, lesson.booking, who, role)
            hooks = livekit.join(jwt, at=t0 + span[0]).json()["webhooks"]
            if span[1] < 3600:
                room = f"ec-booking-{lesson.booking}"
                hooks += livekit.leave(room, str(who), at=t0 + span[1]).json()["webhooks"]
            await deliver(api, hooks)

    await attend(both, student=(-120, 3000), provider=(-300, 3600))
    await attend(brief, student=(600, 630), provider=(0, 3600))  # 30 s < SESSION_MIN_PRESENCE_S
    await attend(student_only, student=(0, 3600), provider=None)
    await token(app, api, nobody.booking, nobody.student, "student")  # a token, never joined

    end = start + timedelta(minutes=60)
    early = sweep(end + timedelta(seconds=899))  # the join window is still open
    assert early["settled"] == {}
    assert early["closed"] == []

    done = sweep(end + timedelta(seconds=900))
    assert done["settled"] == {
        str(both.booking): "completed",
        str(brief.booking): "no_show",
        str(student_only.booking): "no_show",
        str(nobody.booking): "no_show",
    }
    outcomes = dict(
        (r[0], (r[1], list(r[2])))
        for r in db.execute("SELECT booking_id, outcome, absent FROM session_outcomes")
    )
    assert outcomes == {
        both.booking: ("completed", []),
        brief.booking: ("no_show", ["student"]),
        student_only.booking: ("no_show", ["provider"]),
        nobody.booking: ("no_show", ["provider", "student"]),
    }
    statuses = dict(db.execute("SELECT id, status FROM bookings").fetchall())
    assert statuses == {
        both.booking: "completed",
        brief.booking: "no_show",
        student_only.booking: "no_show",
        nobody.booking: "no_show",
        in_person.booking: "confirmed",  # no video room: nothing to decide
    }
    events = db.execute(
        "SELECT aggregate_id, event_type, payload->'absent' FROM outbox"
        " WHERE event_type LIKE 'session.%%' ORDER BY aggregate_id"
    ).fetchall()
    assert sorted(events) == sorted(
        [
            (str(both.booking), "session.completed", []),
            (str(brief.booking), "session.no_show", ["student"]),
            (str(student_only.booking), "session.no_show", ["provider"]),
            (str(nobody.booking), "session.no_show", ["provider", "student"]),
        ]
    )
    # the booking domain moved them (its state machine, audit and events; system actor)
    moved = db.execute(
        "SELECT entity_id, action, actor FROM audit_log WHERE action IN"
        " ('booking.completed', 'booking.no_show')"
    ).fetchall()
    assert sorted(moved) == sorted(
        [
            (str(both.booking), "booking.completed", None),
            (str(brief.booking), "booking.no_show", None),
            (str(student_only.booking), "booking.no_show", None),
            (str(nobody.booking), "booking.no_show", None),
        ]
    )
    # every room of the four lessons is gone, the connected participants removed first
    assert livekit.state()["rooms"] == {}
    assert sorted(done["closed"]) == sorted(
        f"ec-booking-{x.booking}" for x in (both, brief, student_only, nobody)
    )
    r = await api.get(
        f"/api/v1/bookings/{brief.booking}/attendance", headers=bearer(brief.provider, "tutor")
    )
    assert r.json()["outcome"]["outcome"] == "no_show"
    assert r.json()["outcome"]["absent"] == ["student"]
    # settled once
    assert sweep(end + timedelta(hours=1))["settled"] == {}


@pytest.fixture(name="worker")
def worker_fixture(database_url: str, redis_url: str) -> Iterator[Worker]:
    """A real `celery worker` process (solo pool) on the test database and Redis."""
    w = Worker(database_url, {"WORKER_METRICS_PORT": "0"})
    yield w
    w.stop()


@pytest.mark.slow
async def test_sweep_through_a_real_worker(
    app: Any, api: Any, db: psycopg.Connection[Any], livekit: StandIn, worker: Worker
) -> None:
    lesson = create_lesson(db, starts_at=NOW + timedelta(minutes=5))
    room = f"ec-booking-{lesson.booking}"
    await token(app, api, lesson.booking, lesson.student, "student")
    cancel_booking(db, lesson.booking)
    result = tasks.sweep.apply_async(kwargs={"now": NOW.isoformat()}).get(timeout=60)
    assert result["outbox_events"] == 1
    assert result["closed"] == [room]
    assert livekit.state()["calls"][f"DeleteRoom:{room}"] == 1


def test_clean_up_failures_are_recorded_and_retried(
    db: psycopg.Connection[Any], livekit: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.settings import get_settings
    from tests.sessions.livekit_standin import free_port

    lesson = create_lesson(db, starts_at=NOW + timedelta(minutes=5))
    room = f"ec-booking-{lesson.booking}"
    db.execute(
        "INSERT INTO session_rooms (name, booking_id, slot_id, max_participants, opens_at,"
        " closes_at) VALUES (%s, %s, %s, 2, %s, %s)",
        (room, lesson.booking, lesson.slot, lesson.starts_at, lesson.ends_at),
    )
    try:
        monkeypatch.setenv("LIVEKIT_URL", f"http://127.0.0.1:{free_port()}")  # nobody there
        get_settings.cache_clear()
        result = tasks.close_room.apply(args=[room, "ended", NOW.isoformat()])
        assert result.failed()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    attempts, error, deleted = db.execute(
        "SELECT attempts, last_error, deleted_at FROM session_rooms WHERE name = %s", (room,)
    ).fetchone()  # type: ignore[misc]
    assert attempts == tasks.CLOSE_MAX_RETRIES + 1  # the first run and every retry
    assert "ListParticipants" in error
    assert deleted is None
    # LiveKit is back: the next sweep closes it (a room that does not exist any more is
    # simply recorded deleted)
    assert sweep(lesson.ends_at + timedelta(hours=1))["closed"] == [room]
    assert room_row(db, room) == (True, "ended", tasks.CLOSE_MAX_RETRIES + 1)


async def test_a_sweep_holding_the_checkpoint_makes_others_skip_the_outbox(
    app: Any, api: Any, db: psycopg.Connection[Any], livekit: StandIn, database_url: str
) -> None:
    lesson = create_lesson(db, starts_at=NOW + timedelta(minutes=5))
    room = f"ec-booking-{lesson.booking}"
    await token(app, api, lesson.booking, lesson.student, "student")
    sweep(NOW)  # creates the checkpoint row
    cancel_booking(db, lesson.booking)
    with psycopg.connect(database_url) as other, other.transaction():
        other.execute("SELECT 1 FROM indexer_checkpoints WHERE consumer = 'sessions' FOR UPDATE")
        busy = sweep(NOW)  # another sweep holds the outbox: this one skips it, no error
        assert busy["outbox_events"] == 0
        # the backstop scan still closes the room of the canceled booking
        assert busy["closed"] == [room]
    after = sweep(NOW)
    assert after["outbox_events"] == 1  # read once the other sweep let go
    assert after["closed"] == []
    assert livekit.state()["calls"][f"DeleteRoom:{room}"] == 1


async def test_group_class_attendees_are_settled_one_by_one(
    app: Any, api: Any, db: psycopg.Connection[Any], livekit: StandIn
) -> None:
    start = NOW + timedelta(minutes=5)
    lesson = create_lesson(db, starts_at=start, capacity=5)
    absent, absent_booking = add_attendee(db, lesson, name="Absent")
    room = f"ec-slot-{lesson.slot}"
    t0 = start.timestamp()
    hooks = []
    for who, booking, role in (
        (lesson.provider, lesson.booking, "tutor"),
        (lesson.student, lesson.booking, "student"),
    ):
        jwt = await token(app, api, booking, who, role)
        hooks += livekit.join(jwt, at=t0).json()["webhooks"]
    await token(app, api, absent_booking, absent, "student")  # a token, never used
    await deliver(api, hooks)

    done = sweep(start + timedelta(minutes=60, seconds=900))
    assert done["settled"] == {str(lesson.booking): "completed", str(absent_booking): "no_show"}
    assert done["closed"] == [room]
    rows = dict(
        (r[0], list(r[1]))
        for r in db.execute("SELECT booking_id, absent FROM session_outcomes").fetchall()
    )
    assert rows == {lesson.booking: [], absent_booking: ["student"]}
    assert livekit.state()["calls"][f"RemoveParticipant:{room}"] == 2
