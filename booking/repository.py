"""Every SQL statement of the booking domain (the `bookings` table).

Functions take the caller's `AsyncSession` and never commit. Times compared with the
caller's `now` (the injected clock), never the database's. Rows returned by writes are
re-read from the statement (`populate_existing`): the session may hold older copies.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Row,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from booking.models import SEAT_HOLDING, Booking

# One pass over the bookings that matter to a new hold: those of the slot and the
# student's overlapping ones (both seat-holding; the partial slot index and the student
# index serve the two arms). `taken`: seats of the slot's confirmed bookings and live
# holds (pretix's count, not the counter); `conflict`: the student already has a live
# overlapping booking; `lapsed`: pending holds past their expiry among them, which still
# count in `seats_taken` and in the exclusion constraint until swept.
_TALLY = text(
    "SELECT coalesce(sum(seats) FILTER (WHERE slot_id = :slot"
    "   AND (status <> 'pending' OR hold_expires_at > :now)), 0) AS taken,"
    " coalesce(bool_or(student_id = :student AND starts_at < :ends AND ends_at > :starts"
    "   AND (status <> 'pending' OR hold_expires_at > :now)), false) AS conflict,"
    " coalesce(array_agg(id) FILTER (WHERE status = 'pending'"
    "   AND hold_expires_at <= :now), '{}') AS lapsed,"
    " coalesce(array_agg(DISTINCT slot_id) FILTER (WHERE status = 'pending'"
    "   AND hold_expires_at <= :now AND slot_id <> :slot), '{}') AS other_slots,"
    " coalesce(sum(seats) FILTER (WHERE slot_id = :slot AND status = 'pending'"
    "   AND hold_expires_at <= :now), 0) AS lapsed_here"
    " FROM bookings WHERE status IN ('pending', 'confirmed', 'completed', 'no_show')"
    " AND (slot_id = :slot"
    "   OR (student_id = :student AND starts_at < :ends AND ends_at > :starts))"
)


@dataclass(frozen=True, slots=True)
class Tally:
    """What `tally` found: live seats taken on the slot, a live overlapping booking of the
    student, lapsed holds to sweep (ids, the other slots they are on, and their seats on
    this slot)."""

    taken: int
    conflict: bool
    lapsed: list[uuid.UUID]
    other_slots: list[uuid.UUID]
    lapsed_here: int


async def set_lock_timeout(session: AsyncSession, ms: int) -> None:
    """`lock_timeout` for the rest of the transaction (pretix uses 3 s)."""
    await session.execute(
        text("SELECT set_config('lock_timeout', :v, true)"), {"v": f"{int(ms)}ms"}
    )


async def tally(
    session: AsyncSession,
    *,
    slot_id: uuid.UUID,
    student_id: uuid.UUID,
    starts_at: datetime,
    ends_at: datetime,
    now: datetime,
) -> Tally:
    """Count the slot's live seats and look for the student's overlaps (see `_TALLY`)."""
    row = (
        await session.execute(
            _TALLY,
            {
                "slot": slot_id,
                "student": student_id,
                "starts": starts_at,
                "ends": ends_at,
                "now": now,
            },
        )
    ).one()
    return Tally(
        int(row.taken), bool(row.conflict), list(row.lapsed), list(row.other_slots),
        int(row.lapsed_here),
    )  # fmt: skip


async def live_seats(session: AsyncSession, *, slot_id: uuid.UUID, now: datetime) -> int:
    """Seats of the slot held by confirmed (or completed / no-show) bookings and live holds."""
    stmt = select(func.coalesce(func.sum(Booking.seats), 0)).where(
        Booking.slot_id == slot_id,
        Booking.status.in_(SEAT_HOLDING),
        or_(Booking.status != "pending", Booking.hold_expires_at > now),
    )
    return int((await session.execute(stmt)).scalar_one())


async def lapsed_holds(
    session: AsyncSession, *, slot_id: uuid.UUID, now: datetime
) -> list[uuid.UUID]:
    """Ids of the slot's pending holds whose `hold_expires_at` ≤ `now`."""
    stmt = select(Booking.id).where(
        Booking.slot_id == slot_id, Booking.status == "pending", Booking.hold_expires_at <= now
    )
    return list((await session.execute(stmt)).scalars().all())


async def lapsed_seats_by_slot(
    session: AsyncSession, slot_ids: Sequence[uuid.UUID], *, now: datetime
) -> dict[uuid.UUID, int]:
    """Seats of lapsed (not yet swept) holds per slot, for the slots given."""
    if not slot_ids:
        return {}
    stmt = (
        select(Booking.slot_id, func.sum(Booking.seats))
        .where(
            Booking.slot_id.in_(list(slot_ids)),
            Booking.status == "pending",
            Booking.hold_expires_at <= now,
        )
        .group_by(Booking.slot_id)
    )
    return {r[0]: int(r[1]) for r in (await session.execute(stmt)).all()}


async def slots_with_lapsed_holds(
    session: AsyncSession, *, now: datetime, limit: int
) -> list[uuid.UUID]:
    """Up to `limit` slots having pending holds lapsed at `now`, oldest lapse first."""
    stmt = (
        select(Booking.slot_id)
        .where(Booking.status == "pending", Booking.hold_expires_at <= now)
        .group_by(Booking.slot_id)
        .order_by(func.min(Booking.hold_expires_at))
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars().all())


async def live_bookings_of_slot(session: AsyncSession, slot_id: uuid.UUID) -> list[Booking]:
    """The slot's pending and confirmed bookings (call after sweeping lapsed holds)."""
    stmt = (
        select(Booking)
        .where(Booking.slot_id == slot_id, Booking.status.in_(("pending", "confirmed")))
        .order_by(Booking.created_at, Booking.id)
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(stmt)).scalars().all())


# A hold, its audit row (`booking.held`) and its outbox event in one statement, built
# once: the ORM's per-call statement construction and cache key cost more CPU than the
# round trip itself. `RETURNING` lists every column of `bookings` (`BookingOut`'s).
_INSERT_HOLD = text(
    "WITH held_audit AS (INSERT INTO audit_log (actor, action, entity_type, entity_id, after)"
    "   VALUES (:booked_by, 'booking.held', 'booking', :entity_id, :after)),"
    " held_event AS (INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
    "   VALUES ('booking', :entity_id, 'booking.held', :payload))"
    " INSERT INTO bookings (id, student_id, booked_by, provider_id, slot_id, seats, starts_at,"
    "   ends_at, status, hold_expires_at, price_minor, currency, cancel_policy, created_at,"
    "   updated_at)"
    " VALUES (:id, :student_id, :booked_by, :provider_id, :slot_id, :seats, :starts_at,"
    "   :ends_at, 'pending', :hold_expires_at, :price_minor, :currency, :cancel_policy,"
    "   :created_at, :updated_at)"
    " RETURNING id, student_id, booked_by, provider_id, slot_id, seats, starts_at, ends_at,"
    "   status, hold_expires_at, price_minor, currency, cancel_policy, expired_reason,"
    "   canceled_at, canceled_by, canceled_by_role, cancel_reason, refund_due_minor,"
    "   confirmed_at, created_at, updated_at"
).bindparams(
    bindparam("after", type_=JSONB),
    bindparam("payload", type_=JSONB),
    bindparam("cancel_policy", type_=JSONB),
)
_HOLD_VALUES = frozenset(
    ("id", "student_id", "booked_by", "provider_id", "slot_id", "seats", "starts_at",
     "ends_at", "hold_expires_at", "price_minor", "currency", "cancel_policy", "created_at",
     "updated_at")
)  # fmt: skip


async def insert_hold(
    session: AsyncSession,
    values: dict[str, Any],
    *,
    after: dict[str, Any],
    payload: dict[str, Any],
) -> Row[Any]:
    """Insert a pending hold (`values`: every column of `_HOLD_VALUES`, `booked_by` being
    the actor) together with its audit row (`booking.held` by `booked_by`, snapshot
    `after`, no `before`) and its `booking.held` outbox event (keys-only `payload`), in
    one statement; returns the new row (every column of `bookings`). Raises
    `IntegrityError` like `insert_booking` (then nothing of the three is written)."""
    params = {k: values[k] for k in _HOLD_VALUES}
    params.update(entity_id=str(values["id"]), after=after, payload=payload)
    return (await session.execute(_INSERT_HOLD, params)).one()


async def insert_booking(session: AsyncSession, values: dict[str, Any]) -> Booking:
    """Insert a booking. The trigger adds its seats to the slot's `seats_taken`; raises
    `IntegrityError` for the check `availability_slots_seats_taken` (over capacity) or
    the exclusion `bookings_no_student_overlap` (the student's overlapping booking)."""
    stmt = insert(Booking).values(**values).returning(Booking)
    return (await session.execute(stmt)).scalar_one()


async def get_booking(session: AsyncSession, booking_id: uuid.UUID) -> Booking | None:
    """The booking, freshly read, or None."""
    stmt = select(Booking).where(Booking.id == booking_id).execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def transition(
    session: AsyncSession,
    booking_ids: Sequence[uuid.UUID],
    *,
    expected: str,
    to: str,
    values: dict[str, Any],
    now: datetime,
) -> list[Booking]:
    """Compare-and-swap `expected` → `to` (with `values`) on the bookings given: only rows
    still in `expected` change. Returns the rows changed (fewer when another transaction
    moved some first)."""
    if not booking_ids:
        return []
    stmt = (
        update(Booking)
        .where(Booking.id.in_(list(booking_ids)), Booking.status == expected)
        .values(status=to, updated_at=now, **values)
        .returning(Booking)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return list((await session.execute(stmt)).scalars().all())


async def list_bookings(
    session: AsyncSession,
    *,
    student_ids: Sequence[uuid.UUID] | None = None,
    provider_id: uuid.UUID | None = None,
    status: str | None,
    start: datetime | None,
    end: datetime | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    any_party: bool = False,
) -> list[Booking]:
    """Bookings of `student_ids` (or of the provider; `any_party`: of everyone, narrowed
    by whichever of the two is given), starting in [start, end), in (starts_at, id) order
    after the keyset position `after`."""
    conds = []
    if any_party:
        if provider_id is not None:
            conds.append(Booking.provider_id == provider_id)
        if student_ids is not None:
            conds.append(Booking.student_id.in_(list(student_ids)))
    elif provider_id is not None:
        conds.append(Booking.provider_id == provider_id)
    else:
        conds.append(Booking.student_id.in_(list(student_ids or [])))
    if status is not None:
        conds.append(Booking.status == status)
    if start is not None:
        conds.append(Booking.starts_at >= start)
    if end is not None:
        conds.append(Booking.starts_at < end)
    if after is not None:
        conds.append(
            tuple_(Booking.starts_at, Booking.id) > tuple_(literal(after[0]), literal(after[1]))
        )
    stmt = (
        select(Booking)
        .where(*conds)
        .order_by(Booking.starts_at, Booking.id)
        .limit(limit)
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(stmt)).scalars().all())


# A live hold confirmed in one statement: `lock_timeout` for the rest of the transaction
# (set before any lock is tried: the join reads it first), the slot's row lock (the
# writers' order: slot, then its bookings), the compare-and-swap pending → confirmed of a hold not yet lapsed at
# `:now`, its audit row and its `booking.confirmed` outbox event (the same rows as
# `service._moved` writes). No row when the booking is not a live pending hold: the caller
# takes the general path.
_CONFIRM_LIVE = text(
    "WITH lt AS (SELECT set_config('lock_timeout', :lock_timeout, true) AS v), s AS ("
    " SELECT sl.id FROM lt, availability_slots sl JOIN bookings b ON b.slot_id = sl.id"
    " WHERE b.id = :id AND lt.v IS NOT NULL FOR UPDATE OF sl"
    "), u AS ("
    " UPDATE bookings SET status = 'confirmed', confirmed_at = :now, updated_at = :now"
    " FROM s WHERE bookings.id = :id AND bookings.slot_id = s.id"
    " AND bookings.status = 'pending' AND bookings.hold_expires_at > :now"
    " RETURNING bookings.*"
    "), a AS ("
    " INSERT INTO audit_log (actor, action, entity_type, entity_id, before, after)"
    " SELECT CAST(:actor AS uuid), 'booking.confirmed', 'booking', u.id::text,"
    " jsonb_build_object('status', 'pending', 'seats', u.seats, 'price_minor', u.price_minor,"
    "  'refund_due_minor', u.refund_due_minor, 'expired_reason', u.expired_reason,"
    "  'canceled_by_role', u.canceled_by_role),"
    " jsonb_build_object('status', u.status, 'seats', u.seats, 'price_minor', u.price_minor,"
    "  'refund_due_minor', u.refund_due_minor, 'expired_reason', u.expired_reason,"
    "  'canceled_by_role', u.canceled_by_role)"
    " FROM u"
    "), o AS ("
    " INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
    " SELECT 'booking', u.id::text, 'booking.confirmed', jsonb_build_object("
    "  'booking_id', u.id::text, 'slot_id', u.slot_id::text, 'provider_id', u.provider_id::text)"
    " FROM u"
    ") SELECT * FROM u"
)


async def confirm_live_hold(
    session: AsyncSession,
    booking_id: uuid.UUID,
    *,
    now: datetime,
    actor: uuid.UUID | None,
    lock_timeout_ms: int,
) -> Any | None:
    """Confirm the booking in one statement if it is a pending hold live at `now` (see
    `_CONFIRM_LIVE`; `lock_timeout_ms` is set for the rest of the transaction, as
    `set_lock_timeout`): returns the confirmed row (the `bookings` columns), or None when
    it is not (missing, lapsed, or in another state), having changed nothing. Raises
    `DBAPIError` on a lock wait over `lock_timeout`."""
    params = {
        "id": booking_id, "now": now, "actor": actor, "lock_timeout": f"{int(lock_timeout_ms)}ms"
    }  # fmt: skip
    result = await session.execute(_CONFIRM_LIVE, params)
    return result.one_or_none()
