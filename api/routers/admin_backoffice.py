"""The back-office (admin role only): moderation, KYC decisions, account activation,
bookings, complaints and the audit trail. Every list is keyset-paginated and
filterable; every action writes an audit row with before/after (`admin.service`,
`reviews.service`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from admin import service
from admin.schemas import (
    AuditPage,
    ComplaintOut,
    ComplaintPage,
    ComplaintPatch,
    KycDecisionIn,
    KycDecisionOut,
    KycDocumentOut,
    PendingKyc,
)
from api.deps import AdminUser, NowDep, SessionDep
from api.errors import problem_responses
from booking import service as booking_service
from booking.schemas import BookingPage, BookingStatus
from core.logging import get_logger
from payments import jobs as payments_jobs
from payments.provider import ProviderError
from payments.stripe_adapter import get_provider
from profiles.schemas import UserOut
from reviews import service as reviews_service
from reviews.schemas import HideIn, ReviewOut

router = APIRouter(prefix="/admin", tags=["admin"])
log = get_logger(__name__)

Cursor = Annotated[str | None, Query(max_length=200)]
Limit = Annotated[int, Query(ge=1, le=200)]


@router.post(
    "/users/{user_id}/{action}",
    response_model=UserOut,
    summary="Deactivate or reactivate an account (admin, audited)",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def set_active(
    user_id: uuid.UUID,
    action: Literal["deactivate", "reactivate"],
    user: AdminUser,
    session: SessionDep,
    now: NowDep,
) -> UserOut:
    """Deactivation revokes the account's refresh tokens and takes a provider out of
    search; reactivation restores it. 404 `user_not_found`; 409 `self_action`."""
    out = await service.set_active(
        session, actor=user, user_id=user_id, active=action == "reactivate", now=now
    )
    await session.commit()
    return out


@router.post(
    "/reviews/{review_id}/hide",
    response_model=ReviewOut,
    summary="Hide a review with a reason (admin, audited)",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def hide_review(
    review_id: uuid.UUID, data: HideIn, user: AdminUser, session: SessionDep, now: NowDep
) -> ReviewOut:
    """The review stops counting in the provider's rating and leaves the public list.
    404 `review_not_found`; 409 `review_already_hidden`."""
    out = await reviews_service.hide(session, actor=user, review_id=review_id, data=data, now=now)
    await session.commit()
    return out


@router.get(
    "/kyc/pending",
    response_model=list[PendingKyc],
    summary="Providers awaiting a KYC decision (admin)",
    responses=problem_responses(400, 401, 403, 422),
)
async def pending_kyc(user: AdminUser, session: SessionDep, limit: Limit = 100) -> list[PendingKyc]:
    """Those with uploaded documents first, then the oldest."""
    return await service.pending_kyc(session, limit=limit)


@router.get(
    "/kyc/{user_id}/documents",
    response_model=list[KycDocumentOut],
    summary="A provider's uploaded identity documents (admin)",
    responses=problem_responses(400, 401, 403, 422),
)
async def kyc_documents(
    user_id: uuid.UUID, user: AdminUser, session: SessionDep
) -> list[KycDocumentOut]:
    """Metadata, oldest first."""
    return await service.kyc_documents(session, user_id=user_id)


@router.post(
    "/kyc/{user_id}/verify",
    response_model=KycDecisionOut,
    summary="Approve or reject a provider's KYC (admin, audited)",
    responses=problem_responses(400, 401, 403, 404, 422),
)
async def verify_kyc(
    user_id: uuid.UUID, data: KycDecisionIn, user: AdminUser, session: SessionDep
) -> KycDecisionOut:
    """`approve` → `verified`: the provider appears in search after the indexer's next
    batch; `reject` → `rejected`: it leaves search. 404 `provider_not_found`."""
    out = await service.decide_kyc(session, actor=user, user_id=user_id, data=data)
    await session.commit()
    return out


@router.get(
    "/bookings",
    response_model=BookingPage,
    summary="Every booking, filtered (admin)",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_bookings(
    user: AdminUser,
    session: SessionDep,
    status: BookingStatus | None = None,
    provider_id: uuid.UUID | None = None,
    student_id: uuid.UUID | None = None,
    start: Annotated[
        datetime | None, Query(alias="from", description="starts_at ≥ (RFC 3339)")
    ] = None,
    end: Annotated[datetime | None, Query(alias="to", description="starts_at < (RFC 3339)")] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> BookingPage:
    """In (starts_at, id) order; `next_cursor` is bound to the filters (422 `cursor`
    when reused with others)."""
    return await booking_service.admin_list_bookings(
        session, status=status, provider_id=provider_id, student_id=student_id, start=start,
        end=end, cursor=cursor, limit=limit,
    )  # fmt: skip


@router.get(
    "/complaints",
    response_model=ComplaintPage,
    summary="Complaints, oldest first (admin)",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_complaints(
    user: AdminUser,
    session: SessionDep,
    status: Literal["open", "in_review", "closed"] | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> ComplaintPage:
    """Filter by `status`; follow `next_cursor`."""
    return await service.list_complaints(session, status=status, cursor=cursor, limit=limit)


@router.patch(
    "/complaints/{complaint_id}",
    response_model=ComplaintOut,
    summary="Review or close a complaint, optionally granting a refund (admin, audited)",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def update_complaint(
    complaint_id: uuid.UUID, data: ComplaintPatch, user: AdminUser, session: SessionDep, now: NowDep
) -> ComplaintOut:
    """open → in_review → closed (or open → closed) with a note. `refund_minor` (minor
    units) grants a refund: for a card payment it is sent to Stripe after the commit
    (key `re:{booking_id}:{n}`) and the complaint's `refund_status` becomes `refunded`
    once it succeeded (it stays `due` while the gateway has not answered: `educonnect
    payments reconcile --fix` retries); credits come back at once; otherwise it stays
    `due`. Event `complaint.refund_due`. 404 `complaint_not_found`; 409
    `invalid_complaint_transition`, `refund_too_large` (above the price or what remains
    refundable; nothing written)."""
    done = await service.update_complaint(
        session, actor=user, complaint_id=complaint_id, data=data, now=now
    )
    await session.commit()
    if done.refund_id is None:
        return done.complaint
    # After the commit (as cancellations do): the gateway call holds no row lock.
    try:
        status = await payments_jobs.execute_refund(get_provider(), refund_id=done.refund_id)
    except ProviderError as exc:  # the refund row stays pending; reconcile retries it
        log.warning("complaint_refund_deferred", refund_id=str(done.refund_id), error=str(exc))
        return done.complaint
    if status != "succeeded":
        return done.complaint
    out = await service.mark_complaint_refunded(
        session, actor=user, complaint_id=complaint_id, now=now
    )
    await session.commit()
    return out


@router.get(
    "/audit",
    response_model=AuditPage,
    summary="The audit trail, newest first (admin)",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_audit(
    user: AdminUser,
    session: SessionDep,
    actor: uuid.UUID | None = None,
    entity: Annotated[
        str | None, Query(max_length=200, description="An entity type, or `type:id`")
    ] = None,
    start: Annotated[datetime | None, Query(alias="from", description="at ≥ (RFC 3339)")] = None,
    end: Annotated[datetime | None, Query(alias="to", description="at < (RFC 3339)")] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> AuditPage:
    """Each row: actor, action, entity, before/after snapshots, time."""
    return await service.list_audit(
        session, actor=actor, entity=entity, start=start, end=end, cursor=cursor, limit=limit
    )
