"""The booking state machine: every transition and every invalid one, compare-and-swap,
cancellation refunds at the policy boundaries (clock injected), provider policies, hold
expiry without and with the beat task, and slot changes that touch bookings."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from booking import service
from booking.errors import InvalidTransition
from booking.models import STATUSES
from core.db import async_session_factory
from tests.booking.helpers import (
    NOW,
    SLOT_START,
    confirm,
    create_slot,
    events,
    insert_booking,
    key,
    seats_taken,
    statuses,
)
from tests.conftest import bearer, create_provider, create_user

URL = "/api/v1/bookings"
ALLOWED = {
    ("pending", "confirmed"), ("pending", "expired"), ("pending", "canceled"),
    ("confirmed", "canceled"), ("confirmed", "completed"), ("confirmed", "no_show"),
    ("canceled", "refunded"),
}  # fmt: skip


@pytest.fixture
def clock(app: Any) -> dict[str, Any]:
    """The app's clock, frozen at NOW; tests move it with `clock["now"] = ...`."""
    from api.deps import get_now

    state = {"now": NOW}
    app.dependency_overrides[get_now] = lambda: state["now"]
    return state


async def _hold(
    api: httpx.AsyncClient, user: Any, slot_id: Any, role: str = "student", **body: Any
) -> dict[str, Any]:
    r = await api.post(
        URL, headers={**bearer(user, role), **key()}, json={"slot_id": str(slot_id), **body}
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def _status(db: psycopg.Connection, booking_id: Any) -> str:
    row = db.execute("SELECT status FROM bookings WHERE id = %s", (booking_id,)).fetchone()
    assert row is not None
    return str(row[0])


# --- the state machine ------------------------------------------------------------------


def test_transition_table_is_exactly_the_documented_one() -> None:
    pairs = {
        (a, b) for a, b in itertools.product(STATUSES, STATUSES) if service.can_transition(a, b)
    }
    assert pairs == ALLOWED


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(STATUSES, STATUSES)))
async def test_every_transition_is_a_compare_and_swap(
    db: psycopg.Connection, src: str, dst: str
) -> None:
    """Each (from, to) pair through the one transition function: allowed pairs move the
    row and emit one event, the others raise `invalid_transition` and write nothing."""
    slot = create_slot(db, create_provider(db), capacity=2)
    bid = insert_booking(db, student_id=create_user(db), slot_id=slot, status=src)
    values = (
        {"refund_due_minor": 500}
        if dst in ("canceled", "refunded") and src not in ("canceled", "refunded")
        else {}
    )
    async with async_session_factory()() as session:
        from booking import repository

        booking = await repository.get_booking(session, bid)
        assert booking is not None
        if (src, dst) in ALLOWED:
            moved = await service._move(session, booking, dst, actor=None, now=NOW, values=values)
            await session.commit()
            assert moved.status == dst
            assert [e[0] for e in events(db)] == [f"booking.{dst}"]
            holding = ("pending", "confirmed", "completed", "no_show")
            assert seats_taken(db, slot) == (1 if dst in holding else 0)
        else:
            with pytest.raises(InvalidTransition) as err:
                await service._move(session, booking, dst, actor=None, now=NOW, values=values)
            assert (err.value.code, err.value.status, err.value.current) == (
                "invalid_transition",
                409,
                src,
            )
            await session.rollback()
            assert events(db) == []
            assert _status(db, bid) == src


async def test_a_stale_booking_is_never_overwritten(db: psycopg.Connection) -> None:
    """The session read the booking pending; another transaction canceled it meanwhile:
    the confirm's compare-and-swap matches no row and says so."""
    from booking import repository

    slot = create_slot(db, create_provider(db))
    bid = insert_booking(db, student_id=create_user(db), slot_id=slot, status="pending")
    async with async_session_factory()() as session:
        stale = await repository.get_booking(session, bid)
        assert stale is not None
        db.execute("UPDATE bookings SET status = 'canceled', refund_due_minor = 0")
        with pytest.raises(InvalidTransition) as err:
            await service._move(session, stale, "confirmed", actor=None, now=NOW)
        assert err.value.current == "canceled"
    assert _status(db, bid) == "canceled"


async def test_confirm_outcomes(
    db: psycopg.Connection, api: httpx.AsyncClient, clock: dict[str, Any]
) -> None:
    tutor = create_provider(db)
    slot = create_slot(db, tutor, capacity=3)
    a, b, c = (create_user(db) for _ in range(3))
    live = await _hold(api, a, slot)
    first = await confirm(live["id"])
    assert (first.outcome, first.booking.status, first.confirmed) == (
        "confirmed",
        "confirmed",
        True,
    )
    assert first.booking.confirmed_at == NOW
    again = await confirm(live["id"])  # a webhook delivered twice
    assert (again.outcome, again.booking.status) == ("already_confirmed", "confirmed")
    assert [e[0] for e in events(db)] == ["booking.held", "booking.confirmed"]
    # a lapsed hold whose seats nobody took is still confirmed
    lapsed = await _hold(api, b, slot)
    late = await confirm(lapsed["id"], NOW + timedelta(minutes=10))
    assert late.outcome == "confirmed"
    # a lapsed hold whose slot closed meanwhile: the seats are gone
    gone = await _hold(api, c, slot)
    db.execute("UPDATE availability_slots SET status = 'closed'")
    result = await confirm(gone["id"], NOW + timedelta(minutes=10))
    assert (result.outcome, result.booking.status, result.booking.expired_reason) == (
        "seats_gone", "expired", "seats_gone",
    )  # fmt: skip
    assert (await confirm(gone["id"])).outcome == "not_pending"
    assert seats_taken(db, slot) == 2


# --- cancellation and refunds -----------------------------------------------------------


@pytest.mark.parametrize(
    ("before_start", "percent", "refund"),
    [
        (timedelta(hours=24), 100, 4500),
        (timedelta(hours=24, seconds=-1), 50, 2250),
        (timedelta(hours=2), 50, 2250),
        (timedelta(hours=2, seconds=-1), 0, 0),
    ],
)
async def test_student_cancellation_refund_at_the_policy_boundaries(
    db: psycopg.Connection,
    api: httpx.AsyncClient,
    clock: dict[str, Any],
    before_start: timedelta,
    percent: int,
    refund: int,
) -> None:
    tutor = create_provider(db)
    slot = create_slot(db, tutor, minutes=90)  # 4,500 minor units
    uid = create_user(db)
    b = await _hold(api, uid, slot)
    await confirm(b["id"])
    clock["now"] = SLOT_START - before_start
    r = await api.post(f"{URL}/{b['id']}/cancel", headers=bearer(uid, "student"),
                       json={"reason": "exams"})  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["refund_percent"], body["refund_due_minor"]) == (percent, refund)
    assert (body["booking"]["status"], body["booking"]["refund_due_minor"]) == ("canceled", refund)
    assert (body["booking"]["canceled_by_role"], body["booking"]["cancel_reason"]) == (
        "student",
        "exams",
    )
    assert seats_taken(db, slot) == 0
    assert [e[0] for e in events(db)][-1] == "booking.canceled"
    audit = db.execute(
        "SELECT actor, before->>'status', after->>'status', after->>'refund_due_minor'"
        " FROM audit_log WHERE action = 'booking.canceled'"
    ).fetchall()
    assert audit == [(uid, "confirmed", "canceled", str(refund))]


async def test_provider_and_admin_cancellations_refund_in_full_a_pending_one_nothing(
    db: psycopg.Connection, api: httpx.AsyncClient, clock: dict[str, Any]
) -> None:
    tutor = create_provider(db)
    slot = create_slot(db, tutor, capacity=3)
    a, b, c = (create_user(db) for _ in range(3))
    ba, bb, bc = [await _hold(api, u, slot) for u in (a, b, c)]
    for x in (ba, bb):
        await confirm(x["id"])
    clock["now"] = SLOT_START - timedelta(hours=1)  # a student would get nothing now
    r = await api.post(f"{URL}/{ba['id']}/cancel", headers=bearer(tutor, "tutor"))
    assert (r.json()["refund_percent"], r.json()["refund_due_minor"]) == (100, 4500)
    assert r.json()["booking"]["canceled_by_role"] == "provider"
    admin = create_user(db, role="admin")
    r = await api.post(f"{URL}/{bb['id']}/cancel", headers=bearer(admin, "admin"))
    assert (r.json()["refund_percent"], r.json()["booking"]["canceled_by_role"]) == (100, "admin")
    r = await api.post(f"{URL}/{bc['id']}/cancel", headers=bearer(c, "student"))
    assert (r.json()["refund_percent"], r.json()["refund_due_minor"]) == (0, 0)  # never paid
    r = await api.post(f"{URL}/{bc['id']}/cancel", headers=bearer(c, "student"))
    assert (r.status_code, r.json()["code"], r.json()["booking_status"]) == (
        409,
        "invalid_transition",
        "canceled",
    )
    assert seats_taken(db, slot) == 0


async def test_no_cancel_once_started_then_completed_or_no_show(
    db: psycopg.Connection, api: httpx.AsyncClient, clock: dict[str, Any]
) -> None:
    tutor = create_provider(db)
    slot = create_slot(db, tutor, capacity=2, minutes=60)
    a, b = create_user(db), create_user(db)
    ba, bb = await _hold(api, a, slot), await _hold(api, b, slot)
    for x in (ba, bb):
        await confirm(x["id"])
    r = await api.post(f"{URL}/{ba['id']}/complete", headers=bearer(tutor, "tutor"))
    assert (r.status_code, r.json()["code"]) == (409, "session_not_ended")
    clock["now"] = SLOT_START + timedelta(minutes=5)
    r = await api.post(f"{URL}/{ba['id']}/cancel", headers=bearer(a, "student"))
    assert (r.status_code, r.json()["code"]) == (409, "booking_started")
    clock["now"] = SLOT_START + timedelta(minutes=60)
    r = await api.post(f"{URL}/{ba['id']}/complete", headers=bearer(a, "student"))
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    r = await api.post(f"{URL}/{ba['id']}/complete", headers=bearer(tutor, "tutor"))
    assert (r.status_code, r.json()["status"]) == (200, "completed")
    r = await api.post(f"{URL}/{bb['id']}/no-show", headers=bearer(tutor, "tutor"))
    assert (r.status_code, r.json()["status"]) == (200, "no_show")
    r = await api.post(f"{URL}/{ba['id']}/no-show", headers=bearer(tutor, "tutor"))
    assert (r.status_code, r.json()["code"]) == (409, "invalid_transition")
    assert [e[0] for e in events(db)][-2:] == ["booking.completed", "booking.no_show"]
    assert seats_taken(db, slot) == 2  # the seats were used


async def test_mark_refunded_after_a_refund_was_due(
    db: psycopg.Connection, api: httpx.AsyncClient, clock: dict[str, Any]
) -> None:
    tutor = create_provider(db)
    slot = create_slot(db, tutor, capacity=2)
    a, b = create_user(db), create_user(db)
    paid, unpaid = await _hold(api, a, slot), await _hold(api, b, slot)
    await confirm(paid["id"])
    for x, u in ((paid, a), (unpaid, b)):
        await api.post(f"{URL}/{x['id']}/cancel", headers=bearer(u, "student"))
    async with async_session_factory()() as session:
        done = await service.mark_refunded(session, booking_id=uuid.UUID(paid["id"]), now=NOW)
        assert done.status == "refunded"
        with pytest.raises(InvalidTransition):
            await service.mark_refunded(session, booking_id=uuid.UUID(unpaid["id"]), now=NOW)
        await session.commit()
    async with async_session_factory()() as session:
        with pytest.raises(InvalidTransition):
            await service.mark_refunded(session, booking_id=uuid.UUID(paid["id"]), now=NOW)
    assert (_status(db, paid["id"]), _status(db, unpaid["id"])) == ("refunded", "canceled")


# --- provider policies ------------------------------------------------------------------


async def test_provider_policy_within_bounds_is_snapshotted(
    db: psycopg.Connection, api: httpx.AsyncClient, clock: dict[str, Any]
) -> None:
    tutor = create_provider(db)
    h = bearer(tutor, "tutor")
    url = "/api/v1/profiles/me/cancel-policy"
    assert (await api.get(url, headers=h)).json()["source"] == "platform"
    strict = {"tiers": [{"min_hours_before": 48, "refund_percent": 100},
                        {"min_hours_before": 24, "refund_percent": 25}]}  # fmt: skip
    r = await api.put(url, headers=h, json=strict)
    assert (r.status_code, r.json()) == (200, {"source": "provider", **strict})
    for bad in (
        {"tiers": [{"min_hours_before": 24, "refund_percent": 50}]},  # first tier not full
        {"tiers": [{"min_hours_before": 72, "refund_percent": 100}]},  # full refund too late
        {"tiers": [{"min_hours_before": 24, "refund_percent": 100},
                   {"min_hours_before": 24, "refund_percent": 50}]},  # not decreasing
        {"tiers": [{"min_hours_before": 24, "refund_percent": 100},
                   {"min_hours_before": 2, "refund_percent": 100},
                   {"min_hours_before": 1, "refund_percent": 101}]},
        {"tiers": [{"min_hours_before": 200, "refund_percent": 100}]},
        {"tiers": []},
    ):  # fmt: skip
        assert (await api.put(url, headers=h, json=bad)).status_code == 422, bad
    slot = create_slot(db, tutor)
    uid = create_user(db)
    b = await _hold(api, uid, slot)
    assert b["cancel_policy"] == {"source": "provider", **strict}
    assert (await api.delete(url, headers=h)).json()["source"] == "platform"
    await confirm(b["id"])
    clock["now"] = SLOT_START - timedelta(hours=30)  # platform: 100 %; the snapshot: 25 %
    r = await api.post(f"{URL}/{b['id']}/cancel", headers=bearer(uid, "student"))
    assert r.json()["refund_percent"] == 25
    r = await api.get(url, headers=bearer(uid, "student"))
    assert r.status_code == 403


# --- expiry -----------------------------------------------------------------------------


async def test_an_expired_hold_frees_its_seats_without_any_task(
    db: psycopg.Connection, api: httpx.AsyncClient, clock: dict[str, Any]
) -> None:
    tutor = create_provider(db)
    slot = create_slot(db, tutor, capacity=1)
    first, second = create_user(db), create_user(db)
    held = await _hold(api, first, slot)
    clock["now"] = NOW + timedelta(seconds=299)
    r = await api.post(
        URL, headers={**bearer(second, "student"), **key()}, json={"slot_id": str(slot)}
    )
    assert (r.status_code, r.json()["code"]) == (409, "sold_out")
    avail = (
        await api.get(f"/api/v1/providers/{tutor}/availability", params={"from": NOW.isoformat()})
    ).json()
    assert [s["seats_left"] for s in avail["items"]] == [0]
    clock["now"] = NOW + timedelta(seconds=300)  # the hold lapses at exactly its expiry
    avail = (
        await api.get(f"/api/v1/providers/{tutor}/availability", params={"from": NOW.isoformat()})
    ).json()
    assert [s["seats_left"] for s in avail["items"]] == [1]
    taken = await _hold(api, second, slot)
    assert taken["status"] == "pending"
    row = db.execute(
        "SELECT status, expired_reason FROM bookings WHERE id = %s", (held["id"],)
    ).fetchone()
    assert row == ("expired", "hold_lapsed")
    # one transaction, in the order things happened: the sweep, then the new hold
    assert [(e[0], e[1]) for e in events(db)] == [
        ("booking.held", held["id"]), ("booking.expired", held["id"]),
        ("booking.held", taken["id"]),
    ]  # fmt: skip
    assert seats_taken(db, slot) == 1


async def test_a_students_own_lapsed_overlapping_hold_does_not_block_it(
    db: psycopg.Connection, api: httpx.AsyncClient, clock: dict[str, Any]
) -> None:
    a = create_slot(db, create_provider(db))
    b = create_slot(db, create_provider(db), start=SLOT_START + timedelta(minutes=30))
    uid = create_user(db)
    first = await _hold(api, uid, a)
    clock["now"] = NOW + timedelta(minutes=6)
    await _hold(api, uid, b)
    assert _status(db, first["id"]) == "expired"
    assert (seats_taken(db, a), seats_taken(db, b)) == (0, 1)


async def test_beat_task_expires_each_lapsed_hold_once(
    db: psycopg.Connection, api: httpx.AsyncClient, clock: dict[str, Any]
) -> None:
    from booking.tasks import run_expiry

    tutor = create_provider(db)
    slots = [
        create_slot(db, tutor, start=SLOT_START + timedelta(days=d), capacity=3) for d in range(2)
    ]
    holds = [await _hold(api, create_user(db), s, seats=2) for s in slots]
    kept = await _hold(api, create_user(db), slots[0])
    await confirm(kept["id"])
    sessions = async_session_factory()
    assert await run_expiry(sessions, now=NOW + timedelta(seconds=299)) == 0
    assert await run_expiry(sessions, now=NOW + timedelta(seconds=301)) == 2
    assert await run_expiry(sessions, now=NOW + timedelta(seconds=302)) == 0
    expected = {h["id"]: {"booking_id": h["id"], "slot_id": h["slot_id"], "provider_id": str(tutor)}
                for h in holds}  # fmt: skip
    expired = [e for e in events(db) if e[0] == "booking.expired"]
    assert len(expired) == 2
    assert {e[1]: e[2] for e in expired} == expected
    assert [seats_taken(db, s) for s in slots] == [1, 0]
    rows = db.execute(
        "SELECT actor, before->>'status' FROM audit_log WHERE action = 'booking.expired'"
    ).fetchall()
    assert rows == [(None, "pending")] * 2


def test_beat_schedule_runs_the_expiry_task() -> None:
    from core.celery_app import TASK_MODULES, celery_config
    from core.settings import Settings

    assert "booking.tasks" in TASK_MODULES
    entry = celery_config(Settings())["beat_schedule"]["booking-expire-holds"]
    assert (entry["task"], entry["schedule"]) == ("booking.expire_holds", 30.0)


def test_expire_holds_task_runs_on_a_real_database(db: psycopg.Connection) -> None:
    """The Celery task itself, eagerly (its own engine and event loop, the real clock)."""
    from booking.tasks import expire_holds

    slot = create_slot(db, create_provider(db), capacity=2)
    lapsed = datetime.now(UTC) - timedelta(minutes=1)
    insert_booking(db, student_id=create_user(db), slot_id=slot, status="pending",
                   hold_expires_at=lapsed)  # fmt: skip
    assert expire_holds.apply().get() == 1
    assert statuses(db) == ["expired"]
    assert expire_holds.apply().get() == 0


# --- slot changes -----------------------------------------------------------------------


async def test_a_slot_with_bookings_is_canceled_only_with_them(
    db: psycopg.Connection, api: httpx.AsyncClient, clock: dict[str, Any]
) -> None:
    tutor = create_provider(db)
    h = bearer(tutor, "tutor")
    slot = create_slot(db, tutor, capacity=3)
    paid, held = await _hold(api, create_user(db), slot), await _hold(api, create_user(db), slot)
    await confirm(paid["id"])
    r = await api.delete(f"/api/v1/availability/{slot}", headers=h)
    assert (r.status_code, r.json()["code"], r.json()["bookings"]) == (409, "slot_has_bookings", 2)
    r = await api.delete(
        f"/api/v1/availability/{slot}", headers=bearer(create_provider(db), "tutor")
    )
    assert r.status_code == 403
    r = await api.delete(
        f"/api/v1/availability/{slot}", headers=h, params={"cancel_bookings": "true"}
    )
    assert r.status_code == 204
    rows = db.execute("SELECT id, status, canceled_by_role, refund_due_minor FROM bookings")
    assert {str(r[0]): r[1:] for r in rows} == {
        paid["id"]: ("canceled", "provider", 4500), held["id"]: ("canceled", "provider", 0),
    }  # fmt: skip
    assert db.execute("SELECT status, seats_taken FROM availability_slots").fetchone() == (
        "canceled",
        0,
    )
    assert [e[0] for e in events(db, "")][-3:] == [
        "booking.canceled",
        "booking.canceled",
        "availability.deleted",
    ]


async def test_a_slot_with_only_a_lapsed_hold_is_deleted(
    db: psycopg.Connection, api: httpx.AsyncClient, clock: dict[str, Any]
) -> None:
    tutor = create_provider(db)
    slot = create_slot(db, tutor)
    held = await _hold(api, create_user(db), slot)
    clock["now"] = NOW + timedelta(minutes=6)
    r = await api.delete(f"/api/v1/availability/{slot}", headers=bearer(tutor, "tutor"))
    assert r.status_code == 204
    assert _status(db, held["id"]) == "expired"


async def test_capacity_never_shrinks_below_booked_seats(
    db: psycopg.Connection, api: httpx.AsyncClient, clock: dict[str, Any]
) -> None:
    tutor = create_provider(db)
    h = bearer(tutor, "tutor")
    slot = create_slot(db, tutor, capacity=5)
    await _hold(api, create_user(db), slot, seats=3)
    url = f"/api/v1/availability/{slot}"
    r = await api.patch(url, headers=h, json={"capacity": 2})
    assert (r.status_code, r.json()["code"], r.json()["seats_taken"]) == (
        409,
        "capacity_below_booked",
        3,
    )
    r = await api.patch(url, headers=h, json={"capacity": 3})
    assert (r.status_code, r.json()["capacity"], r.json()["seats_left"]) == (200, 3, 0)
    r = await api.patch(url, headers=bearer(create_provider(db), "tutor"), json={"capacity": 9})
    assert r.status_code == 403
    assert (await api.patch(url, headers=h, json={"capacity": 0})).status_code == 422
    assert events(db, "availability.")[-1][0] == "availability.updated"
    with pytest.raises(psycopg.errors.CheckViolation):  # the database refuses it too
        db.execute("UPDATE availability_slots SET capacity = 1 WHERE id = %s", (slot,))
