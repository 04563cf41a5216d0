"""Capacity under real concurrency (pretix's method): concurrent holds on real database
connections, a pause injected after the capacity check, and a control run with the slot
lock off proving the race is real — then the database backstop alone.

Each contender runs `booking.service.hold` in its own session (its own connection). The
pause is the service's `after_capacity_check` hook; what it waits for is observed in
PostgreSQL (backends waiting on the slot's lock) or among the contenders (all of them
past the check), so the outcome never depends on timing.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import psycopg
import pytest

from booking import service
from booking.errors import SoldOut
from booking.schemas import BookingCreate
from core.db import async_session_factory
from tests.booking.helpers import (
    NOW,
    create_slot,
    insert_booking,
    key,
    seats_taken,
    statuses,
    student,
)
from tests.conftest import bearer, create_provider, create_user

CAPACITY, TAKEN, CONTENDERS = 10, 7, 8  # 3 seats left, 8 students want one each


async def _contend(
    slot_id: uuid.UUID,
    students: list[Any],
    *,
    lock_slot: bool,
    hook: Callable[[], Awaitable[None]],
) -> list[Any]:
    """Each student holds one seat in its own session, concurrently; returns for each
    either the booking or the exception it raised."""

    async def one(uid: Any) -> Any:
        async with async_session_factory()() as session:
            try:
                b = await service.hold(
                    session, actor=student(uid), data=BookingCreate(slot_id=slot_id, seats=1),
                    now=NOW, lock_slot=lock_slot, after_capacity_check=hook,
                )  # fmt: skip
                await session.commit()
                return b
            except SoldOut as exc:
                return exc

    return list(await asyncio.gather(*(one(u) for u in students)))


def _group_class(db: psycopg.Connection) -> tuple[uuid.UUID, list[Any]]:
    tutor = create_provider(db)
    slot = create_slot(db, tutor, capacity=CAPACITY)
    for _ in range(TAKEN):
        insert_booking(db, student_id=create_user(db), slot_id=slot)
    assert seats_taken(db, slot) == TAKEN
    return slot, [create_user(db) for _ in range(CONTENDERS)]


async def _lock_waiters(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE '%%FROM availability_slots%%FOR UPDATE%%'"
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_last_seats_race_sells_exactly_the_capacity(
    db: psycopg.Connection, database_url: str
) -> None:
    slot, students = _group_class(db)
    passed = 0
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as watcher:

        async def hook() -> None:
            # The first contender past the check waits, holding the slot's lock, until
            # every other one is blocked on that lock inside PostgreSQL: all of them
            # arrived at the same time, and the lock alone decides.
            nonlocal passed
            passed += 1
            if passed == 1:
                for _ in range(2000):
                    if await _lock_waiters(watcher) == CONTENDERS - 1:
                        return
                    await asyncio.sleep(0.005)
                pytest.fail("the other contenders never queued on the slot's lock")

        results = await _contend(slot, students, lock_slot=True, hook=hook)

    won = [r for r in results if not isinstance(r, SoldOut)]
    lost = [r for r in results if isinstance(r, SoldOut)]
    assert (len(won), len(lost)) == (CAPACITY - TAKEN, CONTENDERS - (CAPACITY - TAKEN))
    assert passed == CAPACITY - TAKEN  # the others were refused by the count, not later
    assert all(not e.by_backstop and e.seats_left == 0 for e in lost)
    assert seats_taken(db, slot) == CAPACITY
    assert statuses(db).count("pending") == CAPACITY - TAKEN


async def test_control_without_the_lock_the_race_happens_and_the_backstop_refuses(
    db: psycopg.Connection,
) -> None:
    """The same contest with the slot lock off: every contender passes the count (the
    race is real), and the database CHECK refuses the seats beyond the capacity."""
    slot, students = _group_class(db)
    arrived, all_past_check = 0, asyncio.Event()

    async def hook() -> None:
        nonlocal arrived
        arrived += 1
        if arrived == CONTENDERS:
            all_past_check.set()
        await asyncio.wait_for(all_past_check.wait(), 20)

    results = await _contend(slot, students, lock_slot=False, hook=hook)

    assert arrived == CONTENDERS > CAPACITY - TAKEN  # the service's check let them all by
    won = [r for r in results if not isinstance(r, SoldOut)]
    refused = [r for r in results if isinstance(r, SoldOut)]
    assert len(won) == CAPACITY - TAKEN
    assert len(refused) == CONTENDERS - (CAPACITY - TAKEN)
    assert all(e.by_backstop and e.seats_left == 0 for e in refused)
    assert seats_taken(db, slot) == CAPACITY  # never oversold


def test_database_backstop_alone_refuses_an_oversell(
    db: psycopg.Connection, database_url: str
) -> None:
    """No service at all: concurrent INSERTs from separate connections, released
    together, into a 2-seat class. The trigger's update of the slot row serialises them
    and the CHECK refuses every seat past the capacity."""
    tutor = create_provider(db)
    slot = create_slot(db, tutor, capacity=2)
    students = [create_user(db) for _ in range(6)]
    barrier = threading.Barrier(len(students))
    outcome: dict[Any, str] = {}

    def insert(uid: Any) -> None:
        with psycopg.connect(database_url) as conn:
            conn.execute("SELECT 1")  # connected and in a transaction before the barrier
            barrier.wait(timeout=20)
            try:
                insert_booking(conn, student_id=uid, slot_id=slot, status="pending")
                conn.commit()
                outcome[uid] = "ok"
            except psycopg.errors.CheckViolation as exc:
                outcome[uid] = f"refused by {exc.diag.constraint_name}"

    threads = [threading.Thread(target=insert, args=(u,)) for u in students]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert (
        sorted(outcome.values()) == ["ok"] * 2 + ["refused by availability_slots_seats_taken"] * 4
    )
    assert seats_taken(db, slot) == 2
    row = db.execute("SELECT count(*), sum(seats) FROM bookings").fetchone()
    assert row == (2, 2)


def test_database_backstop_refuses_overlapping_bookings_of_one_student(
    db: psycopg.Connection,
) -> None:
    tutor, other = create_provider(db), create_provider(db)
    a = create_slot(db, tutor, capacity=5)
    b = create_slot(db, other, capacity=5)  # same time, another tutor
    uid = create_user(db)
    insert_booking(db, student_id=uid, slot_id=a)
    with pytest.raises(psycopg.errors.ExclusionViolation) as err:
        insert_booking(db, student_id=uid, slot_id=b)
    assert err.value.diag.constraint_name == "bookings_no_student_overlap"
    # a released booking no longer blocks the time
    db.execute("UPDATE bookings SET status = 'canceled', refund_due_minor = 0")
    insert_booking(db, student_id=uid, slot_id=b)
    assert (seats_taken(db, a), seats_taken(db, b)) == (0, 1)


async def test_one_to_one_slot_twenty_students_exactly_one_hold(
    api: httpx.AsyncClient, db: psycopg.Connection, app: Any
) -> None:
    from api.deps import get_now

    app.dependency_overrides[get_now] = lambda: NOW
    tutor = create_provider(db)
    slot = create_slot(db, tutor, capacity=1)
    students = [create_user(db) for _ in range(20)]
    results = await asyncio.gather(
        *(
            api.post(
                "/api/v1/bookings",
                headers={**bearer(s, "student"), **key()},
                json={"slot_id": str(slot)},
            )
            for s in students
        )
    )
    codes = sorted(r.status_code for r in results)
    assert codes == [201] + [409] * 19, [r.text for r in results if r.status_code >= 500]
    assert {r.json()["code"] for r in results if r.status_code == 409} == {"sold_out"}
    assert all(r.json()["seats_left"] == 0 for r in results if r.status_code == 409)
    assert statuses(db) == ["pending"]
    assert seats_taken(db, slot) == 1


async def test_a_slot_locked_past_the_lock_timeout_is_slot_busy(
    db: psycopg.Connection, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `lock_timeout` the unlocked read sets governs the slot lock that follows:
    while another transaction keeps the slot locked, the hold gives up with 429
    `slot_busy`, writes nothing, and the slot is free to book once that lock is gone."""
    from booking.errors import SlotBusy
    from core.settings import get_settings

    monkeypatch.setattr(get_settings(), "booking_lock_timeout_ms", 100)
    slot = create_slot(db, create_provider(db), capacity=2)
    uid = create_user(db)
    data = BookingCreate(slot_id=slot, seats=1)
    with psycopg.connect(database_url) as other:
        other.execute("SELECT 1 FROM availability_slots WHERE id = %s FOR UPDATE", (slot,))
        async with async_session_factory()() as session:
            with pytest.raises(SlotBusy):
                await service.hold(session, actor=student(uid), data=data, now=NOW)
        other.rollback()
    assert statuses(db) == []
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
    async with async_session_factory()() as session:
        await service.hold(session, actor=student(uid), data=data, now=NOW)
        await session.commit()
    assert (statuses(db), seats_taken(db, slot)) == (["pending"], 1)
