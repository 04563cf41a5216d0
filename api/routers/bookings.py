"""Bookings: holds, reads, cancellation, after-session outcomes, cancellation policies.

Every write commits in one transaction with its audit rows and outbox events; the rules
live in `booking.service` (docs/booking.md).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import CurrentUser, NowDep, ProviderUser, SessionDep, require_role
from api.errors import problem_responses
from api.idempotency import IdempotentRoute, idempotent
from booking import service
from booking.schemas import (
    BookingCreate,
    BookingOut,
    BookingPage,
    BookingStatus,
    CancelIn,
    CancelPolicy,
    CancelPolicyOut,
    CancelPreview,
    CancelResult,
)
from credits import service as credits_service
from payments import jobs as payments_jobs
from payments import service as payments_service
from payments.stripe_adapter import get_provider
from profiles.errors import field_errors
from profiles.models import User

router = APIRouter(tags=["bookings"], route_class=IdempotentRoute)


@asynccontextmanager
async def unit_of_work(session: AsyncSession) -> AsyncIterator[None]:
    """Commit when the block succeeds; roll back at once when it raises, so row locks
    (a slot's) are released before the error response is built and stored, not when the
    request's session closes after it."""
    try:
        yield
        await session.commit()
    except BaseException:
        await session.rollback()
        raise


BookerUser = Annotated[User, Depends(require_role("student", "parent"))]


@router.post(
    "/bookings",
    status_code=status.HTTP_201_CREATED,
    response_model=BookingOut,
    summary="Hold a slot or seats of a group class (Idempotency-Key required)",
    responses={
        201: {
            "description": "The hold, `pending` until paid or `hold_expires_at`",
            "headers": {
                "Location": {"description": "The booking's URL", "schema": {"type": "string"}}
            },
        },
        **problem_responses(400, 401, 403, 404, 409, 422, 429),
    },
)
@idempotent(required=True)
async def create_booking(
    data: BookingCreate, user: BookerUser, session: SessionDep, now: NowDep
) -> Response:
    """A student books for itself; a parent for a linked child (`student_id`); tutors,
    coaches, mentors and admins get 403. The hold lasts `HOLD_TTL_S` (300 s) unless the
    payment confirms it; `price_minor` = hourly rate x duration x seats (half up per seat).

    409 codes: `sold_out` (with `seats_left`), `slot_not_open`, `slot_in_past`,
    `min_notice` (starts within 2 h), `overlapping_booking`, `provider_unavailable`,
    `idempotency_key_in_use`. 403 `not_linked_child`, `own_slot`. 404 `slot_not_found`.
    400 `idempotency_key_missing` / `idempotency_key_invalid`; 422 validation or
    `idempotency_key_mismatch`. 429 `slot_busy` (Retry-After) when the slot's lock is not
    granted in time. A retry with the same key replays the first answer.

    `payment_method: "credits"` pays with the caller's credits (a parent's wallet pays
    for its child) and answers the booking `confirmed` at once: the cost is the credit
    cost table's for the slot's type and length, times the seats, taken from the credits
    expiring first. 409 `insufficient_credits` (`needed`, `available`), 422
    `no_credit_cost`; nothing is held then.
    """
    async with unit_of_work(session):
        booking = await service.hold(session, actor=user, data=data, now=now)
        if data.payment_method == "credits":
            # spent and confirmed in the hold's transaction: all of it commits, or none
            booking = await credits_service.pay_booking(
                session, booking=booking, payer_id=user.id, now=now
            )
    # `BookingOut` serialized once, here: FastAPI would validate the model again against
    # the declared `response_model` (kept for the OpenAPI document) before serializing it
    return Response(
        booking.model_dump_json(),
        status_code=status.HTTP_201_CREATED,
        media_type="application/json",
        headers={"Location": f"/api/v1/bookings/{booking.id}"},
    )


@router.get(
    "/bookings",
    response_model=BookingPage,
    summary="My bookings (as student or parent, or as provider)",
    responses=problem_responses(401, 403, 422),
)
async def list_bookings(
    user: CurrentUser,
    session: SessionDep,
    status_: Annotated[BookingStatus | None, Query(alias="status")] = None,
    start: Annotated[
        datetime | None, Query(alias="from", description="RFC 3339: starts at or after")
    ] = None,
    end: Annotated[
        datetime | None, Query(alias="to", description="RFC 3339: starts before")
    ] = None,
    as_: Annotated[
        Literal["student", "provider"] | None,
        Query(alias="as", description="`provider`: the bookings of my slots (providers only)"),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> BookingPage:
    """Students see theirs, parents their children's; providers pass `as=provider` (the
    default for them). Ordered by start time; follow `next_cursor` (opaque, bound to the
    filters)."""
    for name, value in (("from", start), ("to", end)):
        if value is not None and value.tzinfo is None:
            raise field_errors([(name, "needs a timezone offset (RFC 3339)")], location="query")
        try:
            _ = value and value.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
            raise field_errors([(name, "out of range")], location="query") from None
    as_provider = as_ == "provider" or (as_ is None and user.role in ("tutor", "coach", "mentor"))
    return await service.list_bookings(
        session, actor=user, as_provider=as_provider, status=status_, start=start, end=end,
        cursor=cursor, limit=limit,
    )  # fmt: skip


@router.get(
    "/bookings/{booking_id}",
    response_model=BookingOut,
    summary="One booking (its student, parent, provider, or an admin)",
    responses=problem_responses(401, 404, 422),
)
async def get_booking(booking_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> BookingOut:
    """404 `booking_not_found` for anyone else (ids cannot be probed)."""
    return await service.get_booking(session, booking_id=booking_id, actor=user)


@router.get(
    "/bookings/{booking_id}/cancel-preview",
    response_model=CancelPreview,
    summary="The refund a cancellation now would give (nothing is canceled)",
    responses=problem_responses(401, 404, 409, 422),
)
async def cancel_preview(
    booking_id: uuid.UUID, user: CurrentUser, session: SessionDep, now: NowDep
) -> CancelPreview:
    """The amount and percentage `POST …/cancel` would refund at this instant, by the same
    rules (the booking's policy snapshot; 0 for an unpaid hold; 100 % when the provider
    or an admin cancels), so the page shows it before the student confirms. 409
    `invalid_transition` (not pending/confirmed) or `booking_started`; 404
    `booking_not_found`."""
    return await service.cancel_preview(session, booking_id=booking_id, actor=user, now=now)


@router.post(
    "/bookings/{booking_id}/cancel",
    response_model=CancelResult,
    summary="Cancel a booking; says the refund due (Idempotency-Key supported)",
    responses=problem_responses(400, 401, 404, 409, 422, 429),
)
@idempotent()
async def cancel_booking(
    booking_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    now: NowDep,
    background: BackgroundTasks,
    data: CancelIn | None = None,
) -> CancelResult:
    """By the student or its parent (refund per the policy snapshot: platform default
    100 % ≥ 24 h before the start, 50 % ≥ 2 h, else 0), the provider (100 %) or an admin
    (100 %); a pending (unpaid) booking refunds 0. 409 `invalid_transition` (not pending
    or confirmed), `booking_started`; 404 for someone else's booking.

    The refund of `refund_due_minor` is recorded (pending) in the cancellation's own
    transaction; the gateway call that sends it — or cancels an unpaid intent — runs after
    the answer (`payments.jobs.after_cancellations`; the beat sweep retries what fails)."""
    provider = get_provider()
    async with unit_of_work(session):
        # the payment's lock first: the order of the webhook's confirmation
        await payments_service.lock_for_cancellation(session, booking_ids=[booking_id])
        result = await service.cancel(
            session, booking_id=booking_id, actor=user, reason=data.reason if data else None,
            now=now,
        )  # fmt: skip
        # credits spent on it come back per the policy (REFUND, original expiry), atomically
        await credits_service.refund_booking(
            session, booking_id=booking_id, percent=result.refund_percent, now=now
        )
        work = await payments_service.record_cancellation(
            session, provider, booking_id=booking_id, refund_due_minor=result.refund_due_minor
        )
    if work is not None:
        background.add_task(payments_jobs.after_cancellations, provider, [work])
    return result


@router.post(
    "/bookings/{booking_id}/complete",
    response_model=BookingOut,
    summary="Record that the session took place (provider or admin)",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def complete_booking(
    booking_id: uuid.UUID, user: CurrentUser, session: SessionDep, now: NowDep
) -> BookingOut:
    """`confirmed` → `completed`, once the slot has ended. 409 `session_not_ended`,
    `invalid_transition`; 403 for the student."""
    async with unit_of_work(session):
        booking = await service.complete(session, booking_id=booking_id, actor=user, now=now)
    return booking


@router.post(
    "/bookings/{booking_id}/no-show",
    response_model=BookingOut,
    summary="Record that the student did not come (provider or admin)",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def no_show_booking(
    booking_id: uuid.UUID, user: CurrentUser, session: SessionDep, now: NowDep
) -> BookingOut:
    """`confirmed` → `no_show`, once the slot has ended (no refund). 409
    `session_not_ended`, `invalid_transition`; 403 for the student."""
    async with unit_of_work(session):
        booking = await service.mark_no_show(session, booking_id=booking_id, actor=user, now=now)
    return booking


@router.get(
    "/profiles/me/cancel-policy",
    response_model=CancelPolicyOut,
    summary="The cancellation policy my new bookings get",
    responses=problem_responses(401, 403, 409),
)
async def get_cancel_policy(user: ProviderUser, session: SessionDep) -> CancelPolicyOut:
    """`source: platform` until the provider sets its own. 409 `profile_required`."""
    return await service.get_cancel_policy(session, actor=user)


@router.put(
    "/profiles/me/cancel-policy",
    response_model=CancelPolicyOut,
    summary="Set my own cancellation policy (within the platform's bounds)",
    responses=problem_responses(401, 403, 409, 422),
)
async def put_cancel_policy(
    data: CancelPolicy, user: ProviderUser, session: SessionDep
) -> CancelPolicyOut:
    """1-4 tiers from the longest notice to the shortest (≤ 168 h); refunds never grow as
    the notice shrinks; the first tier refunds 100 % with at most 48 h notice. Existing
    bookings keep the policy they were made under."""
    policy = await service.set_cancel_policy(session, actor=user, policy=data)
    await session.commit()
    return policy


@router.delete(
    "/profiles/me/cancel-policy",
    response_model=CancelPolicyOut,
    summary="Go back to the platform's cancellation policy",
    responses=problem_responses(401, 403, 409),
)
async def delete_cancel_policy(user: ProviderUser, session: SessionDep) -> CancelPolicyOut:
    """Returns the platform's policy, now in force for new bookings."""
    policy = await service.set_cancel_policy(session, actor=user, policy=None)
    await session.commit()
    return policy
