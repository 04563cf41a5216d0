"""Errors of the booking domain, each with a stable `code` (problem+json, RFC 9457).

Slot-level errors the profiles domain already defines (`slot_not_found`,
`slot_has_bookings`, `capacity_below_booked`) are raised from `profiles.errors`.
"""

from __future__ import annotations

from typing import Any

from core.errors import AppError, Conflict, Forbidden, NotFound


class BookingNotFound(NotFound):
    """404 `booking_not_found`: no booking with this id visible to the caller (someone
    else's booking is a 404 too, so ids cannot be probed)."""

    code = "booking_not_found"
    title = "Booking not found"


class SlotNotOpen(Conflict):
    """409 `slot_not_open`: the slot is closed or canceled."""

    code = "slot_not_open"
    title = "Slot not open"


class SlotInPast(Conflict):
    """409 `slot_in_past`: the slot has already started."""

    code = "slot_in_past"
    title = "Slot in the past"


class MinNoticeNotMet(Conflict):
    """409 `min_notice`: the slot starts within `BOOKING_MIN_NOTICE_S` (default 2 h);
    `min_notice_s` in the body."""

    code = "min_notice"
    title = "Too close to the start"


class OverlappingBooking(Conflict):
    """409 `overlapping_booking`: the student already holds or booked a seat at an
    overlapping time (decided by the exclusion constraint `bookings_no_student_overlap`)."""

    code = "overlapping_booking"
    title = "Overlapping booking"


class ProviderUnavailable(Conflict):
    """409 `provider_unavailable`: the provider's account is deactivated or its KYC was
    rejected."""

    code = "provider_unavailable"
    title = "Provider unavailable"


class SoldOut(Conflict):
    """409 `sold_out`: fewer seats left than asked; `seats_left` in the body.

    `by_backstop` (not sent) is true when the database CHECK refused the seats rather
    than the service's count (only possible when the count was bypassed)."""

    code = "sold_out"
    title = "Sold out"

    def __init__(self, detail: str, *, seats_left: int, by_backstop: bool = False) -> None:
        super().__init__(detail, seats_left=seats_left)
        self.seats_left = seats_left
        self.by_backstop = by_backstop


class InvalidTransition(Conflict):
    """409 `invalid_transition`: the booking's state does not allow this change
    (`booking_status` and `to` in the body); nothing was written."""

    code = "invalid_transition"
    title = "Invalid transition"

    def __init__(self, detail: str, *, current: str, to: str, **extra: Any) -> None:
        super().__init__(detail, booking_status=current, to=to, **extra)
        self.current = current
        self.to = to


class BookingStarted(Conflict):
    """409 `booking_started`: the session has started; it can no longer be canceled (it
    ends `completed` or `no_show`)."""

    code = "booking_started"
    title = "Booking started"


class SessionNotEnded(Conflict):
    """409 `session_not_ended`: completed / no-show can be recorded once the slot ended."""

    code = "session_not_ended"
    title = "Session not ended"


class OwnSlot(Forbidden):
    """403 `own_slot`: a provider never books its own slot."""

    code = "own_slot"
    title = "Own slot"


class NotLinkedChild(Forbidden):
    """403 `not_linked_child`: a parent books only for a child account linked to it, and a
    student only for itself."""

    code = "not_linked_child"
    title = "Not a linked child"


class SlotBusy(AppError):
    """429 `slot_busy`, with `Retry-After`: the slot's row lock was not granted within
    `BOOKING_LOCK_TIMEOUT_MS` (or a deadlock was broken); nothing was written. A client
    error to retry, like Stripe's `lock_timeout` (429) on an object another request holds.
    """

    status = 429
    code = "slot_busy"
    title = "Slot busy"

    def __init__(self, detail: str = "The slot is busy; retry shortly.") -> None:
        super().__init__(detail, headers={"Retry-After": "1"})
