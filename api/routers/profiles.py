"""Provider profiles and availability: the provider write API and the public views.

Every write commits in one transaction with its version bump and its outbox event.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, status

from api.deps import NowDep, ProviderUser, SessionDep
from api.errors import problem_responses
from api.idempotency import IdempotentRoute, idempotent
from api.routers.bookings import unit_of_work
from booking import service as booking_service
from credits import service as credits_service
from payments import jobs as payments_jobs
from payments import service as payments_service
from payments.stripe_adapter import get_provider as payment_gateway
from profiles import service
from profiles.errors import field_errors
from profiles.schemas import (
    ProfileIn,
    ProfileOut,
    ProfilePatch,
    PublicProviderOut,
    SlotCapacityIn,
    SlotCreate,
    SlotList,
    SlotOut,
)

router = APIRouter(tags=["profiles"], route_class=IdempotentRoute)


@router.get(
    "/profiles/me",
    response_model=ProfileOut,
    summary="The provider's own profile",
    responses=problem_responses(401, 403, 404),
)
async def get_my_profile(user: ProviderUser, session: SessionDep) -> ProfileOut:
    """Tutors, coaches and mentors only (403 `forbidden` otherwise); 404 before the first PUT."""
    return await service.get_my_profile(session, user=user)


@router.put(
    "/profiles/me",
    response_model=ProfileOut,
    summary="Create or replace the provider's profile",
    responses=problem_responses(401, 403, 422),
)
async def put_my_profile(data: ProfileIn, user: ProviderUser, session: SessionDep) -> ProfileOut:
    """Tutors list catalogue `subjects`, coaches and mentors `expertises`; `languages` are
    ISO 639-1; `hourly_rate_minor` > 0 in minor units of the ISO 4217 `currency`;
    `in_person` requires `location` {lat, lng}. 422 names each faulty field."""
    profile = await service.put_profile(session, user=user, data=data)
    await session.commit()
    return profile


@router.patch(
    "/profiles/me",
    response_model=ProfileOut,
    summary="Change some fields of the provider's profile",
    responses=problem_responses(401, 403, 404, 422),
)
async def patch_my_profile(
    data: ProfilePatch, user: ProviderUser, session: SessionDep
) -> ProfileOut:
    """Only the fields sent change (`null` clears an optional one); the result must pass
    the same rules as a PUT."""
    profile = await service.patch_profile(
        session, user=user, changes=data.model_dump(exclude_unset=True)
    )
    await session.commit()
    return profile


@router.get(
    "/providers/{provider_id}",
    response_model=PublicProviderOut,
    summary="A provider's public profile",
    responses=problem_responses(404, 422),
)
async def get_provider(provider_id: uuid.UUID, session: SessionDep) -> PublicProviderOut:
    """Anyone may read it; deactivated providers are 404."""
    return await service.get_public_provider(session, provider_id=provider_id)


@router.get(
    "/providers/{provider_id}/availability",
    response_model=SlotList,
    summary="A provider's open slots in a time window",
    responses=problem_responses(404, 422),
)
async def get_availability(
    provider_id: uuid.UUID,
    session: SessionDep,
    now: NowDep,
    start: Annotated[
        datetime | None, Query(alias="from", description="RFC 3339; default now")
    ] = None,
    end: Annotated[
        datetime | None, Query(alias="to", description="RFC 3339; default from + 28 days")
    ] = None,
) -> SlotList:
    """Open slots overlapping [from, to), in start order, each with its `seats_left`
    (capacity minus confirmed seats and live holds; 0 = full); the window spans ≤ 93 days."""
    for name, value in (("from", start), ("to", end)):
        if value is not None and value.tzinfo is None:
            raise field_errors([(name, "needs a timezone offset (RFC 3339)")], location="query")
    return await booking_service.list_availability(
        session, provider_id=provider_id, start=start, end=end, now=now
    )


@router.post(
    "/availability",
    status_code=status.HTTP_201_CREATED,
    response_model=SlotList,
    summary="Add a slot, or a weekly series of slots (Idempotency-Key supported)",
    responses=problem_responses(400, 401, 403, 409, 422),
)
@idempotent()
async def create_availability(
    data: SlotCreate, user: ProviderUser, session: SessionDep, now: NowDep
) -> SlotList:
    """One slot, or `repeat_weekly` = N weekly copies (all or nothing).

    409 `slot_overlap` when a slot overlaps an open one of yours (decided by the database,
    so two racing requests cannot both succeed); 409 `profile_required` before the
    profile exists; 422 names the faulty field (end before start, start in the past, a
    mode the profile does not offer, capacity < 1).
    """
    slots = await service.create_slots(session, user=user, data=data, now=now)
    await session.commit()
    return SlotList(items=slots)


@router.delete(
    "/availability/{slot_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Cancel one of your open slots (and, when asked, its bookings)",
    responses=problem_responses(401, 403, 404, 409, 422, 429),
)
async def delete_availability(
    slot_id: uuid.UUID,
    user: ProviderUser,
    session: SessionDep,
    now: NowDep,
    background: BackgroundTasks,
    cancel_bookings: Annotated[
        bool,
        Query(
            description="Also cancel the slot's bookings (a provider cancellation: full refunds)"
        ),
    ] = False,
) -> None:
    """403 `forbidden` for another provider's slot; 404 `slot_not_found`; 409
    `slot_has_bookings` while bookings hold seats of it, unless `cancel_bookings=true`;
    429 `slot_busy` (Retry-After)."""
    gateway = payment_gateway()
    works: list[payments_service.GatewayWork] = []
    async with unit_of_work(session):
        if cancel_bookings:  # the payments' locks first: the order of the confirmation
            await payments_service.lock_for_cancellation(session, slot_id=slot_id)
        canceled = await booking_service.cancel_slot(
            session, actor=user, slot_id=slot_id, cancel_bookings=cancel_bookings, now=now
        )
        for c in canceled:  # bookings paid with credits get them back (100 %), atomically
            await credits_service.refund_booking(
                session, booking_id=c.booking.id, percent=c.refund_percent, now=now
            )
            # a card payment's full refund is recorded with the cancellation
            work = await payments_service.record_cancellation(
                session, gateway, booking_id=c.booking.id, refund_due_minor=c.refund_due_minor
            )
            if work is not None:
                works.append(work)
    if works:  # sent to the gateway after the answer (the beat sweep retries what fails)
        background.add_task(payments_jobs.after_cancellations, gateway, works)


@router.patch(
    "/availability/{slot_id}",
    response_model=SlotOut,
    summary="Change the capacity of one of your open slots",
    responses=problem_responses(401, 403, 404, 409, 422, 429),
)
async def patch_availability(
    slot_id: uuid.UUID, data: SlotCapacityIn, user: ProviderUser, session: SessionDep, now: NowDep
) -> SlotOut:
    """409 `capacity_below_booked` below the seats booked and held (the database refuses
    it too); 404 `slot_not_found`; 403 for another provider's slot; 429 `slot_busy`."""
    async with unit_of_work(session):
        slot = await booking_service.resize_slot(
            session, actor=user, slot_id=slot_id, capacity=data.capacity, now=now
        )
    return slot
