"""Pydantic schemas of the booking domain: requests, responses, the cancellation policy.

Units: money in integer minor units of an ISO 4217 currency; times RFC 3339, UTC.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

BookingStatus = Literal[
    "pending", "confirmed", "canceled", "refunded", "expired", "completed", "no_show"
]

# Platform bounds on a provider's own policy (docs/booking.md "Cancellation policy").
MAX_TIERS = 4
MAX_NOTICE_HOURS = 168  # a tier may ask for at most one week of notice
MAX_FULL_REFUND_NOTICE_HOURS = 48  # two days ahead, a student always gets everything back

_EXAMPLE_ID = "6f1c2a7e-0b7e-4d1e-9a57-2b6a3f0d9c11"
_EXAMPLE_SLOT = "0d4b8a52-6c38-4b7f-8f5c-1c2e0f3a9b77"
_EXAMPLE_STUDENT = "8e03978e-2f41-4c55-a6d6-3f1f6c0d2b10"
_EXAMPLE_PROVIDER = "2b9f6c1d-7e4a-4f0b-9c3d-5a6e7f8091a2"


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CancelTier(_Input):
    """Cancel at least `min_hours_before` hours before the start: `refund_percent` % back."""

    min_hours_before: int = Field(ge=0, le=MAX_NOTICE_HOURS)
    refund_percent: int = Field(ge=0, le=100)


class CancelPolicy(_Input):
    """A cancellation policy: tiers from the longest notice to the shortest.

    A student's cancellation `h` hours before the start refunds the `refund_percent` of
    the first tier with `h ≥ min_hours_before`, nothing when none matches. Bounds (the
    platform's): 1-4 tiers; notices strictly decreasing, at most 168 h; refunds never
    larger for a shorter notice; the first tier refunds 100 % with at most 48 h notice.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tiers": [
                        {"min_hours_before": 48, "refund_percent": 100},
                        {"min_hours_before": 24, "refund_percent": 50},
                    ]
                }
            ]
        }
    )

    tiers: list[CancelTier] = Field(min_length=1, max_length=MAX_TIERS)

    @model_validator(mode="after")
    def _within_bounds(self) -> CancelPolicy:
        hours = [t.min_hours_before for t in self.tiers]
        percents = [t.refund_percent for t in self.tiers]
        if any(a <= b for a, b in pairwise(hours)):
            raise ValueError("tiers go from the longest notice to the shortest (strictly)")
        if any(a < b for a, b in pairwise(percents)):
            raise ValueError("a shorter notice never refunds more than a longer one")
        first = self.tiers[0]
        if first.refund_percent != 100 or first.min_hours_before > MAX_FULL_REFUND_NOTICE_HOURS:
            raise ValueError(
                f"the first tier refunds 100 % with at most {MAX_FULL_REFUND_NOTICE_HOURS} h notice"
            )
        return self


PLATFORM_POLICY = CancelPolicy(
    tiers=[
        CancelTier(min_hours_before=24, refund_percent=100),
        CancelTier(min_hours_before=2, refund_percent=50),
    ]
)


class CancelPolicyOut(BaseModel):
    """The policy in force: the provider's own, or the platform's default."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "source": "platform",
                    "tiers": [
                        {"min_hours_before": 24, "refund_percent": 100},
                        {"min_hours_before": 2, "refund_percent": 50},
                    ],
                }
            ]
        }
    )

    source: Literal["platform", "provider"]
    tiers: list[CancelTier]


class BookingCreate(_Input):
    """Hold `seats` seats of a slot. A parent names the child (`student_id`); a student
    books for itself (`student_id` omitted or its own id)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"slot_id": _EXAMPLE_SLOT, "seats": 1},
                {"slot_id": _EXAMPLE_SLOT, "seats": 2, "student_id": _EXAMPLE_STUDENT},
            ]
        }
    )

    slot_id: uuid.UUID
    seats: int = Field(default=1, ge=1, le=500, description="Seats to hold (1 for a 1:1 slot)")
    student_id: uuid.UUID | None = Field(
        default=None, description="The child account a parent books for"
    )
    payment_method: Literal["card", "credits"] = Field(
        default="card",
        description="`card`: pay the hold with a payment intent; `credits`: pay with the"
        " caller's credits, confirmed at once",
    )


class CancelIn(_Input):
    """Why the booking is canceled (optional, kept for the other party and the audit)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "Sick, sorry"}]})

    reason: str | None = Field(default=None, max_length=500)


_BOOKING_EXAMPLE: dict[str, Any] = {
    "id": _EXAMPLE_ID,
    "student_id": _EXAMPLE_STUDENT,
    "booked_by": _EXAMPLE_STUDENT,
    "provider_id": _EXAMPLE_PROVIDER,
    "slot_id": _EXAMPLE_SLOT,
    "seats": 1,
    "starts_at": "2030-03-05T09:00:00Z",
    "ends_at": "2030-03-05T10:30:00Z",
    "status": "pending",
    "hold_expires_at": "2030-03-01T12:05:00Z",
    "price_minor": 4500,
    "currency": "EUR",
    "cancel_policy": {
        "source": "platform",
        "tiers": [
            {"min_hours_before": 24, "refund_percent": 100},
            {"min_hours_before": 2, "refund_percent": 50},
        ],
    },
    "expired_reason": None,
    "canceled_at": None,
    "canceled_by_role": None,
    "cancel_reason": None,
    "refund_due_minor": None,
    "confirmed_at": None,
    "created_at": "2030-03-01T12:00:00Z",
    "updated_at": "2030-03-01T12:00:00Z",
}


class BookingOut(BaseModel):
    """A booking as its student, parent, provider or an admin sees it."""

    model_config = ConfigDict(
        from_attributes=True, json_schema_extra={"examples": [_BOOKING_EXAMPLE]}
    )

    id: uuid.UUID
    student_id: uuid.UUID
    booked_by: uuid.UUID = Field(description="Who took the hold: the student or its parent")
    provider_id: uuid.UUID
    slot_id: uuid.UUID
    seats: int
    starts_at: datetime
    ends_at: datetime
    status: BookingStatus
    hold_expires_at: datetime = Field(
        description="A pending hold stops counting at this instant unless confirmed"
    )
    price_minor: int = Field(description="Total price, minor units of `currency`")
    currency: str
    cancel_policy: CancelPolicyOut = Field(description="The policy in force when booked")
    expired_reason: Literal["hold_lapsed", "seats_gone"] | None
    canceled_at: datetime | None
    canceled_by_role: Literal["student", "provider", "admin", "system"] | None
    cancel_reason: str | None
    refund_due_minor: int | None = Field(
        description="Set once canceled: what the payments side owes back (minor units)"
    )
    confirmed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class BookingPage(BaseModel):
    """Bookings in (starts_at, id) order; pass `next_cursor` as `cursor` for the next page."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [_BOOKING_EXAMPLE], "next_cursor": None}]}
    )

    items: list[BookingOut]
    next_cursor: str | None


class CancelResult(BaseModel):
    """A cancellation: the booking, and the refund due (the payments side executes it).

    `refund_percent` is the share of `price_minor` refunded: 0 for a pending (unpaid)
    booking, 100 when the provider, an admin or the system cancels, else the snapshot
    policy's tier for the notice given."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "booking": {
                        **_BOOKING_EXAMPLE,
                        "status": "canceled",
                        "canceled_at": "2030-03-04T12:00:00Z",
                        "canceled_by_role": "student",
                        "refund_due_minor": 2250,
                    },
                    "refund_due_minor": 2250,
                    "refund_percent": 50,
                }
            ]
        }
    )

    booking: BookingOut
    refund_due_minor: int
    refund_percent: int


ConfirmOutcome = Literal["confirmed", "already_confirmed", "seats_gone", "not_pending"]


class ConfirmResult(BaseModel):
    """What `booking.service.confirm` did: `confirmed` (pending → confirmed, now or by an
    earlier call: `already_confirmed`), `seats_gone` (the hold had lapsed and its seats
    were taken: the booking is now `expired` with `expired_reason = seats_gone`), or
    `not_pending` (expired or canceled before the payment arrived). For the last two the
    payment must be voided or refunded."""

    booking: BookingOut
    outcome: ConfirmOutcome

    @property
    def confirmed(self) -> bool:
        """True when the booking is confirmed (now or before)."""
        return self.outcome in ("confirmed", "already_confirmed")


class CancelPreview(BaseModel):
    """What a cancellation now would refund (nothing is canceled)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"refund_due_minor": 4500, "refund_percent": 50, "currency": "EUR",
                 "as_of": "2026-12-05T10:00:00Z"}
            ]
        }
    )  # fmt: skip

    refund_due_minor: int = Field(description="Minor units of `currency`")
    refund_percent: int
    currency: str
    as_of: datetime = Field(description="The instant the policy was applied at")
