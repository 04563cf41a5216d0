"""Business rules of bookings: holds, the state machine, capacity, cancellation. No HTTP.

Every function takes the caller's `AsyncSession` and never commits: the request or task
owning the unit of work commits, so a transition, its audit row and its outbox event
commit or roll back together. Times are timezone-aware UTC; callers pass `now` (the
injected clock). Money is integer minor units of the booking's currency.

Capacity (DESIGN §6; docs/booking.md): a hold takes the slot's row lock (`SELECT … FOR
UPDATE`, READ COMMITTED, `lock_timeout` = `BOOKING_LOCK_TIMEOUT_MS`), sweeps the lapsed
holds in its way, then *counts* the seats of confirmed bookings and live holds (pretix's
way: count, don't trust a counter) before inserting. The database backstops the count:
`availability_slots.seats_taken`, kept by a trigger, is CHECKed against the capacity, and
an exclusion constraint keeps one student's bookings from overlapping.

State machine (one place, `TRANSITIONS`; every move is a compare-and-swap
`UPDATE … WHERE status = <expected>`, an invalid one a 409 `invalid_transition`):

    pending   -> confirmed | expired | canceled
    confirmed -> canceled | completed | no_show
    canceled  -> refunded            (the payments side, when a refund was due)

Each transition writes an audit row (actor, before, after) and an outbox event
`booking.<state>` (keys only: booking, slot and provider ids) that re-projects the
provider's search document (`indexer.relay.provider_ids`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from booking import repository as repo
from booking.errors import (
    BookingNotFound,
    BookingStarted,
    InvalidTransition,
    MinNoticeNotMet,
    NotLinkedChild,
    OverlappingBooking,
    OwnSlot,
    ProviderUnavailable,
    SessionNotEnded,
    SlotBusy,
    SlotInPast,
    SlotNotOpen,
    SoldOut,
)
from booking.models import Booking
from booking.schemas import (
    PLATFORM_POLICY,
    BookingCreate,
    BookingOut,
    BookingPage,
    CancelPolicy,
    CancelPolicyOut,
    CancelPreview,
    CancelResult,
    ConfirmResult,
)
from core import audit, outbox
from core.errors import Forbidden
from core.settings import get_settings
from profiles import service as profiles
from profiles.errors import SlotHasBookings, SlotNotFound, field_errors
from profiles.models import PROVIDER_ROLES, AvailabilitySlot, User
from profiles.schemas import SlotList, SlotOut

BOOKING_AGGREGATE = "booking"
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"confirmed", "expired", "canceled"}),
    "confirmed": frozenset({"canceled", "completed", "no_show"}),
    "canceled": frozenset({"refunded"}),
}
# outbox event (and audit action) of a booking reaching a state
EVENT_OF = {"pending": "held"}
SEATS_CONSTRAINT = "availability_slots_seats_taken"
OVERLAP_CONSTRAINT = "bookings_no_student_overlap"
_HOUR_US = 3600 * 1_000_000


def can_transition(status: str, to: str) -> bool:
    """True when the state machine allows `status` → `to`."""
    return to in TRANSITIONS.get(status, frozenset())


# --- pure rules -----------------------------------------------------------------------


def price_minor(
    *, hourly_rate_minor: int, starts_at: datetime, ends_at: datetime, seats: int
) -> int:
    """The price of `seats` seats of a slot, in minor units.

    One seat costs `hourly_rate_minor * duration / 1 h`, rounded half up to a whole minor
    unit (computed on integer microseconds, so exact: 45 min at 3,333 → 2,499.75 →
    2,500); the total is that * `seats`, so every seat of a booking costs the same.
    """
    duration_us = (ends_at - starts_at) // timedelta(microseconds=1)
    per_seat = (hourly_rate_minor * duration_us * 2 + _HOUR_US) // (2 * _HOUR_US)
    return per_seat * seats


def policy_snapshot(provider_policy: dict[str, Any] | None) -> dict[str, Any]:
    """The policy to freeze into a new booking: the provider's own (re-validated) or the
    platform's default, as `{"source", "tiers"}`."""
    if provider_policy is not None:
        policy = CancelPolicy.model_validate(provider_policy)
        return {"source": "provider", **policy.model_dump()}
    return {"source": "platform", **PLATFORM_POLICY.model_dump()}


def refund_percent(policy: dict[str, Any], *, starts_at: datetime, now: datetime) -> int:
    """The share (0-100) of the price a student's cancellation at `now` gets back under
    `policy`: the first tier whose notice `starts_at - now ≥ min_hours_before` holds
    (boundaries inclusive: exactly 24 h before is still the 24 h tier), else 0."""
    notice = starts_at - now
    for tier in policy["tiers"]:
        if notice >= timedelta(hours=int(tier["min_hours_before"])):
            return int(tier["refund_percent"])
    return 0


def refund_amount(price: int, percent: int) -> int:
    """`percent` % of `price` (minor units), rounded half up."""
    return (price * percent * 2 + 100) // 200


# --- helpers --------------------------------------------------------------------------


def _constraint(exc: IntegrityError) -> str | None:
    orig = exc.orig
    if isinstance(orig, psycopg.Error) and orig.diag is not None:
        return orig.diag.constraint_name
    return None


@contextmanager
def _slot_lock_errors() -> Iterator[None]:
    """A lock wait over `lock_timeout`, or a deadlock PostgreSQL broke, becomes a 429
    `slot_busy` (nothing was written: the transaction rolls back)."""
    try:
        yield
    except DBAPIError as exc:
        if isinstance(exc.orig, psycopg.errors.LockNotAvailable | psycopg.errors.DeadlockDetected):
            raise SlotBusy() from None
        raise


@asynccontextmanager
async def _locked(session: AsyncSession) -> AsyncIterator[None]:
    """A block that takes the slot's row lock: lock errors become `SlotBusy`, and any
    error rolls back at once, releasing the lock.

    The unit of work is lost anyway; waiting for the request to close its session would
    keep the lock while the HTTP layer still needs another pooled connection (the
    idempotency record): under contention every other connection of the pool waits on
    that lock, and nobody finishes before the pool's timeout."""
    try:
        with _slot_lock_errors():
            yield
    except BaseException:
        await session.rollback()
        raise


def _out(booking: Booking) -> BookingOut:
    return BookingOut.model_validate(booking)


def _not_found() -> BookingNotFound:
    return BookingNotFound("No booking with this id.")


async def _event(session: AsyncSession, booking: Booking, kind: str) -> None:
    await outbox.emit(
        session,
        aggregate_type=BOOKING_AGGREGATE,
        aggregate_id=str(booking.id),
        event_type=f"booking.{kind}",
        payload={
            "booking_id": str(booking.id),
            "slot_id": str(booking.slot_id),
            "provider_id": str(booking.provider_id),
        },
    )


def _snapshot(b: Booking) -> dict[str, Any]:
    return {
        "status": b.status, "seats": b.seats, "price_minor": b.price_minor,
        "refund_due_minor": b.refund_due_minor, "expired_reason": b.expired_reason,
        "canceled_by_role": b.canceled_by_role,
    }  # fmt: skip


async def _moved(
    session: AsyncSession, before: dict[str, Any] | None, booking: Booking, actor: uuid.UUID | None
) -> None:
    """Audit row and outbox event of a booking that just reached `booking.status`
    (`booking.held` for a new hold, else `booking.<status>`)."""
    kind = EVENT_OF.get(booking.status, booking.status)
    await audit.record(
        session, actor=actor, action=f"booking.{kind}", entity_type="booking",
        entity_id=str(booking.id), before=before, after=_snapshot(booking),
    )  # fmt: skip
    await _event(session, booking, kind)


async def _move(
    session: AsyncSession,
    booking: Booking,
    to: str,
    *,
    actor: uuid.UUID | None,
    now: datetime,
    values: dict[str, Any] | None = None,
) -> Booking:
    """Compare-and-swap `booking.status` → `to`. Raises `InvalidTransition` when the state
    machine forbids it or another transaction moved the booking first."""
    if not can_transition(booking.status, to):
        raise InvalidTransition(
            f"A {booking.status} booking cannot become {to}.", current=booking.status, to=to
        )
    before = _snapshot(booking)
    rows = await repo.transition(
        session, [booking.id], expected=booking.status, to=to, values=values or {}, now=now
    )
    if not rows:
        current = await repo.get_booking(session, booking.id)
        status = current.status if current is not None else "deleted"
        raise InvalidTransition(
            f"The booking changed meanwhile (now {status}).", current=status, to=to
        )
    await _moved(session, before, rows[0], actor)
    return rows[0]


async def _expire(
    session: AsyncSession, ids: Sequence[uuid.UUID], *, reason: str, now: datetime
) -> list[Booking]:
    """Mark the given pending holds `expired` (CAS: a hold confirmed or canceled meanwhile
    is left alone), with their audit rows and `booking.expired` events (system actor)."""
    rows = await repo.transition(
        session, ids, expected="pending", to="expired", values={"expired_reason": reason}, now=now
    )
    for b in rows:
        await _moved(session, {"status": "pending"}, b, None)
    return rows


async def _seats_changed(
    session: AsyncSession, slot: AvailabilitySlot, *, before: int, after: int
) -> None:
    """When the slot goes from bookable to full or back, the provider's search document
    changes (its availability): bump its version so the indexer's guards accept the
    re-projection (the booking event itself names the provider)."""
    if (before >= slot.capacity) != (after >= slot.capacity):
        await profiles.touch_provider(session, provider_id=slot.provider_id)


async def _relation(session: AsyncSession, actor: User, booking: Booking) -> str | None:
    """How `actor` relates to `booking`: student, parent, provider, admin, or None."""
    if booking.student_id == actor.id:
        return "student"
    if booking.provider_id == actor.id:
        return "provider"
    if actor.role == "admin":
        return "admin"
    if actor.role == "parent" and await profiles.is_parent_of(
        session, parent_id=actor.id, child_id=booking.student_id
    ):
        return "parent"
    return None


async def _visible(
    session: AsyncSession, actor: User, booking_id: uuid.UUID
) -> tuple[Booking, str]:
    booking = await repo.get_booking(session, booking_id)
    if booking is None:
        raise _not_found()
    relation = await _relation(session, actor, booking)
    if relation is None:
        raise _not_found()
    return booking, relation


async def _lock_booking_slot(
    session: AsyncSession, booking_id: uuid.UUID
) -> tuple[Booking, AvailabilitySlot]:
    """Lock the booking's slot (the order every writer uses: slot, then bookings), then
    re-read the booking under that lock."""
    booking = await repo.get_booking(session, booking_id)
    if booking is None:
        raise _not_found()
    await repo.set_lock_timeout(session, get_settings().booking_lock_timeout_ms)
    with _slot_lock_errors():
        slot = await profiles.lock_slot(session, booking.slot_id)
    fresh = await repo.get_booking(session, booking_id)
    if slot is None or fresh is None:
        raise _not_found()
    return fresh, slot


# --- holds ----------------------------------------------------------------------------


def _check_bookable(status: str, starts_at: datetime, now: datetime, min_notice_s: int) -> None:
    """The slot rules that need no count: open, not started, far enough ahead."""
    if status != "open":
        raise SlotNotOpen(f"This slot is {status}.")
    if starts_at <= now:
        raise SlotInPast("This slot has already started.")
    if starts_at - now < timedelta(seconds=min_notice_s):
        raise MinNoticeNotMet(
            f"Slots are booked at least {min_notice_s // 60} minutes ahead.",
            min_notice_s=min_notice_s,
        )


async def _student_for(
    session: AsyncSession, actor: User, student_id: uuid.UUID | None
) -> uuid.UUID:
    if actor.role == "student":
        if student_id is not None and student_id != actor.id:
            raise NotLinkedChild("A student books for itself only.")
        return actor.id
    if actor.role == "parent":
        if student_id is None:
            raise field_errors([("student_id", "a parent names the child it books for")])
        if not await profiles.is_parent_of(session, parent_id=actor.id, child_id=student_id):
            raise NotLinkedChild("This account is not a child linked to yours.")
        return student_id
    raise Forbidden("Only students and parents book slots.")


async def hold(
    session: AsyncSession,
    *,
    actor: User,
    data: BookingCreate,
    now: datetime,
    lock_slot: bool = True,
    after_capacity_check: Callable[[], Awaitable[None]] | None = None,
) -> BookingOut:
    """Take a hold: a `pending` booking of `data.seats` seats of `data.slot_id`, which
    expires `HOLD_TTL_S` (300 s) after `now` unless confirmed. Emits `booking.held`.

    Who: a student for itself, a parent for a linked child (`data.student_id`). The price
    is `price_minor(...)` at the provider's hourly rate; the cancellation policy in force
    is frozen into the booking.

    Capacity, in one transaction: lock the slot row (`FOR UPDATE`; `lock_slot=False`
    skips it — only the race-control test uses that), sweep lapsed holds of the slot and
    the student's overlapping lapsed holds to `expired`, count the seats of confirmed
    bookings and live holds, refuse when fewer than asked are left, then insert (the
    trigger adds the seats to `seats_taken`, CHECKed against the capacity: the backstop).
    `after_capacity_check` is awaited between the count and the insert (a test hook to
    widen the race window; pretix's concurrency tests inject a sleep there).

    Everything that needs no lock is done before it (slot and provider terms in one read,
    which also sets `lock_timeout`); the audit row and the outbox event of the new id
    ride in the insert's statement, so the locked section is lock, count, insert, commit
    (plus a version bump when the slot fills up). A request for more seats than an
    unlocked read shows left is refused without queueing on the lock (a refusal may only be early,
    never an oversell). If the backstop refuses the insert, the caller's transaction is
    rolled back (it is aborted anyway) to recount the seats left for the answer.

    Raises `Forbidden` (403: not a student or parent), `NotLinkedChild` (403),
    `ValidationFailed` (422: a parent without `student_id`), `SlotNotFound` (404),
    `OwnSlot` (403), `SlotNotOpen`, `SlotInPast`, `MinNoticeNotMet` (`BOOKING_MIN_NOTICE_S`),
    `ProviderUnavailable`, `OverlappingBooking`, `SoldOut` (409, `seats_left`), and
    `SlotBusy` (429) when the slot's lock is not granted in `BOOKING_LOCK_TIMEOUT_MS`.
    """
    s = get_settings()
    student_id = await _student_for(session, actor, data.student_id)
    # the unlocked read also sets `lock_timeout` for the slot lock below
    st = await profiles.slot_for_booking(
        session, data.slot_id, lock_timeout_ms=s.booking_lock_timeout_ms if lock_slot else None
    )
    if st is None:
        raise SlotNotFound("No slot with this id.")
    if st.provider_id == student_id:
        raise OwnSlot("A provider cannot book its own slot.")
    _check_bookable(st.status, st.starts_at, now, s.booking_min_notice_s)
    if not st.terms.bookable:
        raise ProviderUnavailable("This provider cannot be booked at the moment.")
    if st.seats_taken + data.seats > st.capacity:
        # The counter says no; it may still hold lapsed holds: count before refusing.
        taken = await repo.live_seats(session, slot_id=st.slot_id, now=now)
        if data.seats > st.capacity - taken:
            left = max(st.capacity - taken, 0)
            raise SoldOut(f"Only {left} seat(s) left.", seats_left=left)
    # Everything about the new booking is known now: its audit row and outbox event go
    # in the insert's statement, so the locked section stays lock, count, insert, commit.
    values = {
        "id": uuid.uuid4(),
        "student_id": student_id,
        "booked_by": actor.id,
        "provider_id": st.provider_id,
        "slot_id": st.slot_id,
        "seats": data.seats,
        "starts_at": st.starts_at,
        "ends_at": st.ends_at,
        "status": "pending",
        "hold_expires_at": now + timedelta(seconds=s.hold_ttl_s),
        "price_minor": price_minor(
            hourly_rate_minor=st.terms.hourly_rate_minor,
            starts_at=st.starts_at,
            ends_at=st.ends_at,
            seats=data.seats,
        ),
        "currency": st.terms.currency,
        "cancel_policy": policy_snapshot(st.terms.cancel_policy),
        "created_at": now,
        "updated_at": now,
    }
    snapshot = {
        "status": "pending", "seats": data.seats, "price_minor": values["price_minor"],
        "refund_due_minor": None, "expired_reason": None, "canceled_by_role": None,
    }  # fmt: skip
    payload = {
        "booking_id": str(values["id"]), "slot_id": str(st.slot_id),
        "provider_id": str(st.provider_id),
    }  # fmt: skip
    async with _locked(session):
        slot = await profiles.lock_slot(session, data.slot_id, lock=lock_slot)
        if slot is None:
            raise SlotNotFound("No slot with this id.")
        _check_bookable(slot.status, slot.starts_at, now, s.booking_min_notice_s)
        t = await repo.tally(
            session, slot_id=slot.id, student_id=student_id, starts_at=slot.starts_at,
            ends_at=slot.ends_at, now=now,
        )  # fmt: skip
        taken_before = slot.seats_taken
        if t.lapsed:
            if t.other_slots and lock_slot:
                await profiles.lock_slots(session, t.other_slots)
            swept = await _expire(session, t.lapsed, reason="hold_lapsed", now=now)
            for provider_id in {b.provider_id for b in swept if b.slot_id != slot.id}:
                await profiles.touch_provider(session, provider_id=provider_id)
        if t.conflict:
            raise OverlappingBooking("You already hold or booked a seat at an overlapping time.")
        seats_left = slot.capacity - t.taken
        if data.seats > seats_left:
            left = max(seats_left, 0)
            raise SoldOut(f"Only {left} seat(s) left.", seats_left=left)
        if after_capacity_check is not None:
            await after_capacity_check()
        try:
            booking = await repo.insert_hold(session, values, after=snapshot, payload=payload)
        except IntegrityError as exc:
            name = _constraint(exc)
            if name == SEATS_CONSTRAINT:
                slot_id, capacity = slot.id, slot.capacity
                await session.rollback()  # expires `slot`: its values were read above
                taken = await repo.live_seats(session, slot_id=slot_id, now=now)
                left = max(capacity - taken, 0)
                raise SoldOut(
                    f"Only {left} seat(s) left.", seats_left=left, by_backstop=True
                ) from None
            if name == OVERLAP_CONSTRAINT:
                raise OverlappingBooking(
                    "You already hold or booked a seat at an overlapping time."
                ) from None
            raise
    after = taken_before - t.lapsed_here + data.seats
    await _seats_changed(session, slot, before=taken_before, after=after)
    return BookingOut.model_validate(booking)


# --- transitions ----------------------------------------------------------------------


async def confirm(
    session: AsyncSession,
    *,
    booking_id: uuid.UUID,
    now: datetime,
    actor_id: uuid.UUID | None = None,
) -> ConfirmResult:
    """Confirm a hold once its payment succeeded (the payments side calls this).

    Under the slot's row lock: a `pending` booking whose hold is live — or has lapsed but
    whose seats are still free (nobody took them: the count without it leaves room) — is
    compare-and-swapped to `confirmed` (`booking.confirmed`). A lapsed hold whose seats are
    gone becomes `expired` with `expired_reason = "seats_gone"` (`booking.expired`), outcome
    `seats_gone`. An already confirmed (or completed / no-show) booking returns
    `already_confirmed` and writes nothing (webhooks are delivered at least once); an
    expired, canceled or refunded one returns `not_pending`. For `seats_gone` and
    `not_pending` the payment must be voided or refunded (Sharetribe's rule: re-check
    availability under the lock, void when it fails).

    Raises `BookingNotFound` (404) and `SlotBusy` (429).
    """
    with _slot_lock_errors():
        live = await repo.confirm_live_hold(
            session, booking_id, now=now, actor=actor_id,
            lock_timeout_ms=get_settings().booking_lock_timeout_ms,
        )  # fmt: skip
    if live is not None:  # the common case: a live hold, confirmed in one statement
        return ConfirmResult(booking=BookingOut.model_validate(live), outcome="confirmed")
    booking, slot = await _lock_booking_slot(session, booking_id)
    if booking.status in ("confirmed", "completed", "no_show"):
        return ConfirmResult(booking=_out(booking), outcome="already_confirmed")
    if booking.status != "pending":
        return ConfirmResult(booking=_out(booking), outcome="not_pending")
    if booking.hold_expires_at <= now:
        others = await repo.live_seats(session, slot_id=slot.id, now=now)
        if booking.seats > slot.capacity - others or slot.status != "open":
            (expired,) = await _expire(session, [booking.id], reason="seats_gone", now=now)
            await _seats_changed(
                session, slot, before=slot.seats_taken, after=slot.seats_taken - booking.seats
            )
            return ConfirmResult(booking=_out(expired), outcome="seats_gone")
    confirmed = await _move(
        session, booking, "confirmed", actor=actor_id, now=now, values={"confirmed_at": now}
    )
    return ConfirmResult(booking=_out(confirmed), outcome="confirmed")


async def _cancel_locked(
    session: AsyncSession,
    booking: Booking,
    slot: AvailabilitySlot,
    *,
    taken: int,
    actor_id: uuid.UUID | None,
    by: str,
    reason: str | None,
    now: datetime,
) -> CancelResult:
    """Cancel `booking` (its slot already locked, `taken` seats held on it) as `by`
    (student, provider, admin, system) and compute the refund due."""
    if booking.status not in ("pending", "confirmed"):
        raise InvalidTransition(
            f"A {booking.status} booking cannot be canceled.", current=booking.status, to="canceled"
        )
    if booking.status == "pending":
        percent = 0  # nothing was paid
    elif by == "student":
        percent = refund_percent(booking.cancel_policy, starts_at=booking.starts_at, now=now)
    else:
        percent = 100  # the provider, an admin or the platform cancels: full refund
    due = refund_amount(booking.price_minor, percent)
    # pending (even lapsed) and confirmed bookings are both in `seats_taken`: the trigger
    # gives all their seats back
    seats = booking.seats
    canceled = await _move(
        session, booking, "canceled", actor=actor_id, now=now,
        values={"canceled_at": now, "canceled_by": actor_id, "canceled_by_role": by,
                "cancel_reason": reason, "refund_due_minor": due},
    )  # fmt: skip
    await _seats_changed(session, slot, before=taken, after=taken - seats)
    return CancelResult(booking=_out(canceled), refund_due_minor=due, refund_percent=percent)


async def cancel(
    session: AsyncSession,
    *,
    booking_id: uuid.UUID,
    actor: User,
    reason: str | None,
    now: datetime,
) -> CancelResult:
    """Cancel a pending or confirmed booking; emits `booking.canceled`.

    By its student or the student's parent (the refund follows the booking's policy
    snapshot: platform default 100 % ≥ 24 h before the start, 50 % ≥ 2 h, else 0), its
    provider (always 100 %) or an admin (100 %). A pending (unpaid) booking refunds 0.
    `refund_due_minor` is what the payments side must pay back (it then calls
    `mark_refunded`). Before the start only, except for admins.

    Raises `BookingNotFound` (404, also for someone else's booking), `InvalidTransition`
    (409: not pending/confirmed), `BookingStarted` (409) and `SlotBusy` (429).
    """
    booking, relation = await _visible(session, actor, booking_id)
    booking, slot = await _lock_booking_slot(session, booking.id)
    by = {"student": "student", "parent": "student", "provider": "provider"}.get(relation, "admin")
    if by != "admin" and booking.status in ("pending", "confirmed") and now >= booking.starts_at:
        raise BookingStarted("The session has started; it can no longer be canceled.")
    return await _cancel_locked(
        session, booking, slot, taken=slot.seats_taken, actor_id=actor.id, by=by, reason=reason,
        now=now,
    )  # fmt: skip


async def mark_refunded(
    session: AsyncSession,
    *,
    booking_id: uuid.UUID,
    now: datetime,
    actor_id: uuid.UUID | None = None,
) -> BookingOut:
    """`canceled` → `refunded` once the payments side has paid `refund_due_minor` back
    (compare-and-swap; emits `booking.refunded`). Raises `BookingNotFound` (404) and
    `InvalidTransition` (409: not canceled, or nothing was due)."""
    booking = await repo.get_booking(session, booking_id)
    if booking is None:
        raise _not_found()
    if booking.status == "canceled" and not booking.refund_due_minor:
        raise InvalidTransition(
            "No refund was due for this cancellation.", current=booking.status, to="refunded"
        )
    return _out(await _move(session, booking, "refunded", actor=actor_id, now=now))


async def _after_session(
    session: AsyncSession, *, booking_id: uuid.UUID, actor: User, to: str, now: datetime
) -> BookingOut:
    booking, relation = await _visible(session, actor, booking_id)
    if relation not in ("provider", "admin"):
        raise Forbidden("Only the provider or an admin records how a session went.")
    if booking.status == "confirmed" and now < booking.ends_at:
        raise SessionNotEnded("The session has not ended yet.")
    return _out(await _move(session, booking, to, actor=actor.id, now=now))


async def complete(
    session: AsyncSession, *, booking_id: uuid.UUID, actor: User, now: datetime
) -> BookingOut:
    """`confirmed` → `completed` after the slot ended, by its provider or an admin
    (`booking.completed`). Raises `BookingNotFound` (404), `Forbidden` (403: the student),
    `SessionNotEnded` and `InvalidTransition` (409)."""
    return await _after_session(
        session, booking_id=booking_id, actor=actor, to="completed", now=now
    )


async def mark_no_show(
    session: AsyncSession, *, booking_id: uuid.UUID, actor: User, now: datetime
) -> BookingOut:
    """`confirmed` → `no_show` after the slot ended, by its provider or an admin
    (`booking.no_show`); the seats stay taken and nothing is refunded. Errors as
    `complete`."""
    return await _after_session(session, booking_id=booking_id, actor=actor, to="no_show", now=now)


# --- expiry ---------------------------------------------------------------------------


async def slots_with_lapsed_holds(
    session: AsyncSession, *, now: datetime, limit: int = 500
) -> list[uuid.UUID]:
    """Slots having pending holds lapsed at `now` (oldest first), for the beat task."""
    return await repo.slots_with_lapsed_holds(session, now=now, limit=limit)


async def expire_lapsed_holds(session: AsyncSession, *, slot_id: uuid.UUID, now: datetime) -> int:
    """Mark the slot's lapsed holds `expired` (`booking.expired` each), under the slot's
    row lock. Idempotent: a hold already swept (by a booking of the slot, or a previous
    run) is not matched again, so it yields one event in all. Returns how many expired.

    Correctness never waits for this: a lapsed hold stops counting at
    `hold_expires_at` (`hold` ignores it and sweeps it itself); this only settles the
    state, frees `seats_taken` and tells the indexer. Raises `SlotBusy` (429)."""
    await repo.set_lock_timeout(session, get_settings().booking_lock_timeout_ms)
    with _slot_lock_errors():
        slot = await profiles.lock_slot(session, slot_id)
    if slot is None:
        return 0
    ids = await repo.lapsed_holds(session, slot_id=slot_id, now=now)
    rows = await _expire(session, ids, reason="hold_lapsed", now=now)
    freed = sum(b.seats for b in rows)
    await _seats_changed(session, slot, before=slot.seats_taken, after=slot.seats_taken - freed)
    return len(rows)


# --- slots (the provider's side) ------------------------------------------------------


async def _provider_slot(
    session: AsyncSession, *, actor: User, slot_id: uuid.UUID, now: datetime
) -> tuple[AvailabilitySlot, int]:
    """Lock one of `actor`'s open slots and sweep its lapsed holds; returns the slot and
    its `seats_taken` after the sweep (the ORM copy is never written: the trigger owns
    that column)."""
    await repo.set_lock_timeout(session, get_settings().booking_lock_timeout_ms)
    with _slot_lock_errors():
        slot = await profiles.lock_slot(session, slot_id)
    if slot is None or slot.status == "canceled":
        raise SlotNotFound("No open slot with this id.")
    if slot.provider_id != actor.id:
        raise Forbidden("This slot belongs to another provider.")
    taken = slot.seats_taken
    lapsed = await repo.lapsed_holds(session, slot_id=slot_id, now=now)
    if lapsed:
        rows = await _expire(session, lapsed, reason="hold_lapsed", now=now)
        taken -= sum(b.seats for b in rows)
        await _seats_changed(session, slot, before=slot.seats_taken, after=taken)
    return slot, taken


async def cancel_slot(
    session: AsyncSession,
    *,
    actor: User,
    slot_id: uuid.UUID,
    cancel_bookings: bool,
    now: datetime,
) -> list[CancelResult]:
    """Cancel one of the provider's slots (`availability.deleted`).

    A slot whose seats are held by confirmed bookings or live holds is refused with
    `SlotHasBookings` (409) unless `cancel_bookings`: then each of them is canceled first
    as a provider cancellation (100 % refund of what was paid; 0 for a hold), and the
    results are returned. Raises `SlotNotFound` (404), `Forbidden` (403) and `SlotBusy`.
    """
    slot, taken = await _provider_slot(session, actor=actor, slot_id=slot_id, now=now)
    live = await repo.live_bookings_of_slot(session, slot_id)
    if live and not cancel_bookings:
        raise SlotHasBookings(
            f"{len(live)} booking(s) hold seats of this slot; cancel it with its bookings"
            " (?cancel_bookings=true).",
            bookings=len(live),
        )
    results = []
    for b in live:
        seats = b.seats
        results.append(
            await _cancel_locked(
                session,
                b,
                slot,
                taken=taken,
                actor_id=actor.id,
                by="provider",
                reason="slot canceled",
                now=now,
            )
        )
        taken -= seats
    await profiles.cancel_slot(session, user=actor, slot_id=slot_id)
    return results


async def resize_slot(
    session: AsyncSession, *, actor: User, slot_id: uuid.UUID, capacity: int, now: datetime
) -> SlotOut:
    """Change a slot's capacity; never below the seats its bookings and live holds take
    (`CapacityBelowBooked`, 409, also enforced by the database CHECK). Lapsed holds are
    swept first. Raises `SlotNotFound` (404), `Forbidden` (403), `SlotBusy` (429)."""
    await _provider_slot(session, actor=actor, slot_id=slot_id, now=now)
    return await profiles.set_slot_capacity(session, user=actor, slot_id=slot_id, capacity=capacity)


async def list_availability(
    session: AsyncSession,
    *,
    provider_id: uuid.UUID,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
) -> SlotList:
    """The provider's open slots (`profiles.service.list_availability`) with `seats_left`
    exact at `now`: seats of holds that have lapsed but are not swept yet are free."""
    slots = await profiles.list_availability(
        session, provider_id=provider_id, start=start, end=end, now=now
    )
    lapsed = await repo.lapsed_seats_by_slot(session, [s.id for s in slots], now=now)
    items = [
        s.model_copy(update={"seats_left": min(s.capacity, s.seats_left + lapsed[s.id])})
        if s.id in lapsed
        else s
        for s in slots
    ]
    return SlotList(items=items)


# --- cancellation policy --------------------------------------------------------------


def _policy_out(stored: dict[str, Any] | None) -> CancelPolicyOut:
    snap = policy_snapshot(stored)
    return CancelPolicyOut.model_validate(snap)


async def get_cancel_policy(session: AsyncSession, *, actor: User) -> CancelPolicyOut:
    """The provider's policy in force (its own, or the platform's). Raises
    `ProfileRequired` (409) before the profile exists."""
    return _policy_out(await profiles.get_cancel_policy(session, user=actor))


async def set_cancel_policy(
    session: AsyncSession, *, actor: User, policy: CancelPolicy | None
) -> CancelPolicyOut:
    """Set the provider's own policy (validated within the platform's bounds by
    `CancelPolicy`), or go back to the platform's with None. Bookings keep the snapshot
    taken when they were made. Raises `ProfileRequired` (409)."""
    stored = None if policy is None else policy.model_dump()
    await profiles.set_cancel_policy(session, user=actor, policy=stored)
    return _policy_out(stored)


# --- reads ----------------------------------------------------------------------------


async def cancel_preview(
    session: AsyncSession, *, booking_id: uuid.UUID, actor: User, now: datetime
) -> CancelPreview:
    """What `cancel` would refund if `actor` canceled now (nothing written, no lock): the
    same rules, so a page can show the amount before the student confirms. Raises
    `BookingNotFound` (404), `InvalidTransition` and `BookingStarted` (409) as `cancel`
    would."""
    booking, relation = await _visible(session, actor, booking_id)
    by = {"student": "student", "parent": "student", "provider": "provider"}.get(relation, "admin")
    if booking.status not in ("pending", "confirmed"):
        raise InvalidTransition(
            f"A {booking.status} booking cannot be canceled.", current=booking.status, to="canceled"
        )
    if by != "admin" and now >= booking.starts_at:
        raise BookingStarted("The session has started; it can no longer be canceled.")
    if booking.status == "pending":
        percent = 0
    elif by == "student":
        percent = refund_percent(booking.cancel_policy, starts_at=booking.starts_at, now=now)
    else:
        percent = 100
    return CancelPreview(
        refund_due_minor=refund_amount(booking.price_minor, percent),
        refund_percent=percent,
        currency=booking.currency,
        as_of=now,
    )


async def get_booking_for_system(
    session: AsyncSession, *, booking_id: uuid.UUID
) -> BookingOut | None:
    """The booking by id with no visibility rule (other domains' background and follow-up
    work, e.g. credits refunding a cancellation), or None."""
    booking = await repo.get_booking(session, booking_id)
    return None if booking is None else _out(booking)


async def get_booking(session: AsyncSession, *, booking_id: uuid.UUID, actor: User) -> BookingOut:
    """The booking, for its student, a parent of the student, its provider or an admin.
    Raises `BookingNotFound` (404) for anyone else."""
    booking, _ = await _visible(session, actor, booking_id)
    return _out(booking)


def _sign(payload: bytes) -> str:
    mac = hmac.new(get_settings().secret_key.encode(), payload, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def _encode_cursor(fp: str, starts_at: datetime, booking_id: uuid.UUID) -> str:
    payload = orjson.dumps({"q": fp, "t": starts_at.isoformat(), "i": str(booking_id)})
    return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + _sign(payload)


def _decode_cursor(cursor: str, fp: str) -> tuple[datetime, uuid.UUID]:
    bad = field_errors([("cursor", "not a cursor returned by this query")], location="query")
    try:
        body, sig = cursor.split(".", 1)
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if not hmac.compare_digest(sig, _sign(payload)):
            raise bad
        data = orjson.loads(payload)
        if data["q"] != fp:
            raise bad
        return datetime.fromisoformat(data["t"]), uuid.UUID(data["i"])
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        raise bad from None


async def list_bookings(
    session: AsyncSession,
    *,
    actor: User,
    as_provider: bool,
    status: str | None,
    start: datetime | None,
    end: datetime | None,
    cursor: str | None,
    limit: int,
) -> BookingPage:
    """The caller's bookings in (starts_at, id) order, keyset-paginated with an opaque
    signed cursor (bound to the filters: reusing it with others is a 422 `cursor`).

    As a student: its own; as a parent: its linked children's; `as_provider`: the
    provider's (403 `forbidden` for other roles). Filters: `status`, `starts_at` in
    [start, end)."""
    if as_provider and actor.role not in PROVIDER_ROLES:
        raise Forbidden("Only tutors, coaches and mentors list bookings as provider.")
    fp = hashlib.sha256(
        orjson.dumps(
            [
                str(actor.id),
                as_provider,
                status,
                start and start.isoformat(),
                end and end.isoformat(),
            ]
        )
    ).hexdigest()[:16]
    after = _decode_cursor(cursor, fp) if cursor else None
    if as_provider:
        rows = await repo.list_bookings(
            session, provider_id=actor.id, status=status, start=start, end=end, after=after,
            limit=limit + 1,
        )  # fmt: skip
    else:
        students = [actor.id]
        if actor.role == "parent":
            students = await profiles.child_ids(session, parent_id=actor.id)
        rows = await repo.list_bookings(
            session, student_ids=students, status=status, start=start, end=end, after=after,
            limit=limit + 1,
        )  # fmt: skip
    items = [_out(b) for b in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    return BookingPage(
        items=items,
        next_cursor=_encode_cursor(fp, last.starts_at, last.id) if last is not None else None,
    )


async def admin_list_bookings(
    session: AsyncSession,
    *,
    status: str | None,
    provider_id: uuid.UUID | None,
    student_id: uuid.UUID | None,
    start: datetime | None,
    end: datetime | None,
    cursor: str | None,
    limit: int,
) -> BookingPage:
    """Every booking (the back-office), filtered by status, provider, student and
    `starts_at` in [start, end), in (starts_at, id) order with the same signed keyset
    cursor as `list_bookings` (bound to the filters: 422 `cursor` otherwise)."""
    fp = hashlib.sha256(
        orjson.dumps(
            [
                "admin",
                status,
                provider_id and str(provider_id),
                student_id and str(student_id),
                start and start.isoformat(),
                end and end.isoformat(),
            ]
        )
    ).hexdigest()[:16]
    after = _decode_cursor(cursor, fp) if cursor else None
    rows = await repo.list_bookings(
        session, provider_id=provider_id, student_ids=None if student_id is None else [student_id],
        status=status, start=start, end=end, after=after, limit=limit + 1, any_party=True,
    )  # fmt: skip
    items = [_out(b) for b in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    return BookingPage(
        items=items,
        next_cursor=_encode_cursor(fp, last.starts_at, last.id) if last is not None else None,
    )


async def participant_booking(
    session: AsyncSession, *, booking_id: uuid.UUID, actor: User
) -> tuple[Booking, str]:
    """The booking and how `actor` relates to it (`student|parent|provider|admin`), for
    the domains that act on a booking after it (reviews, evaluations, complaints).
    Raises `BookingNotFound` (404) when it does not exist or the actor has no part in
    it."""
    return await _visible(session, actor, booking_id)


async def booking_by_id(session: AsyncSession, *, booking_id: uuid.UUID) -> Booking | None:
    """The booking `booking_id` (no visibility check: system and admin use), or None."""
    return await repo.get_booking(session, booking_id)


# --- video sessions --------------------------------------------------------------------


async def record_session_outcome(
    session: AsyncSession, *, booking_id: uuid.UUID, outcome: str, now: datetime
) -> BookingOut | None:
    """`confirmed` → `completed` / `no_show` as decided from the video session's attendance
    (the sessions domain's settlement, after the join window closed; system actor, so the
    audit row has no actor). Emits `booking.<outcome>` like `complete` / `mark_no_show`.
    Returns None when the booking is no longer confirmed (a provider or an admin recorded
    the outcome first, or it was canceled). Raises `ValueError` for another `outcome`."""
    if outcome not in ("completed", "no_show"):
        raise ValueError(f"not a session outcome: {outcome}")
    booking = await repo.get_booking(session, booking_id)
    if booking is None or booking.status != "confirmed":
        return None
    try:
        return _out(await _move(session, booking, outcome, actor=None, now=now))
    except InvalidTransition:
        return None
