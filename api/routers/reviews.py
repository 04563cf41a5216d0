"""Reviews of completed bookings, the providers' public review lists, session
evaluations and complaints (the participants' side; moderation is in admin_backoffice).

Every write commits in one transaction with the rating change and its outbox events
(`reviews.service`, `admin.service`)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, status

from admin import service as admin_service
from admin.schemas import ComplaintIn, ComplaintOut
from api.deps import CurrentUser, NowDep, ProviderUser, SessionDep, require_role
from api.errors import problem_responses
from profiles.models import User
from reviews import service
from reviews.schemas import (
    EvaluationIn,
    EvaluationOut,
    ReplyIn,
    ReviewIn,
    ReviewOut,
    ReviewPage,
    ReviewPatch,
)

router = APIRouter(tags=["reviews"])

ReviewerUser = Annotated[User, Depends(require_role("student", "parent"))]


@router.post(
    "/bookings/{booking_id}/review",
    status_code=status.HTTP_201_CREATED,
    response_model=ReviewOut,
    summary="Review a completed booking (its student or the student's parent)",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def post_review(
    booking_id: uuid.UUID, data: ReviewIn, user: ReviewerUser, session: SessionDep, now: NowDep
) -> ReviewOut:
    """`rating` 1-5 stars, optional `comment`, its `locale`. The provider's rating
    (plain average and count) changes in the same transaction; search follows after the
    indexer's next batch. 403 `forbidden` (other roles) / `not_reviewer`; 404
    `booking_not_found`; 409 `booking_not_completed`, `review_window_closed` (more than
    `REVIEW_WINDOW_S`, 14 days, after the session), `review_exists`."""
    review = await service.post_review(
        session, actor=user, booking_id=booking_id, data=data, now=now
    )
    await session.commit()
    return review


@router.patch(
    "/reviews/{review_id}",
    response_model=ReviewOut,
    summary="Edit one's review within 48 hours of posting",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def edit_review(
    review_id: uuid.UUID, data: ReviewPatch, user: CurrentUser, session: SessionDep, now: NowDep
) -> ReviewOut:
    """Absent fields stay; a new `rating` moves the provider's rating by the difference.
    403 `not_reviewer`; 404 `review_not_found`; 409 `review_locked` (after
    `REVIEW_EDIT_WINDOW_S`, or hidden)."""
    review = await service.edit_review(session, actor=user, review_id=review_id, data=data, now=now)
    await session.commit()
    return review


@router.post(
    "/reviews/{review_id}/reply",
    response_model=ReviewOut,
    summary="The reviewed provider's one answer",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def reply(
    review_id: uuid.UUID, data: ReplyIn, user: ProviderUser, session: SessionDep, now: NowDep
) -> ReviewOut:
    """403 `forbidden` (not a provider) / `not_provider` (another provider's review); 404
    `review_not_found`; 409 `reply_exists`."""
    review = await service.reply(session, actor=user, review_id=review_id, data=data, now=now)
    await session.commit()
    return review


@router.get(
    "/providers/{provider_id}/reviews",
    response_model=ReviewPage,
    summary="A provider's reviews, newest first, with its rating histogram (public)",
    responses=problem_responses(400, 404, 422),
)
async def list_reviews(
    provider_id: uuid.UUID,
    session: SessionDep,
    rating: Annotated[
        int | None, Query(ge=1, le=5, description="Only reviews of these stars")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ReviewPage:
    """Hidden reviews are left out and do not count. `rating` in the body is the plain
    average (2 decimals) and count; `histogram` counts visible reviews per star. 404
    `provider_not_found`; 422 for a bad `cursor`."""
    return await service.list_reviews(
        session, provider_id=provider_id, rating=rating, cursor=cursor, limit=limit
    )


@router.post(
    "/bookings/{booking_id}/evaluation",
    status_code=status.HTTP_201_CREATED,
    response_model=EvaluationOut,
    summary="Record a session evaluation (coach/mentor programs)",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def record_evaluation(
    booking_id: uuid.UUID,
    data: Annotated[EvaluationIn, Body()],
    user: ProviderUser,
    session: SessionDep,
    now: NowDep,
) -> EvaluationOut:
    """`{type: quiz|feedback|milestone, payload}`, the payload's shape chosen by `type`
    (quiz: score, max_score, topics; feedback: summary, strengths, improvements;
    milestone: title, achieved, next_steps). Visible to the student and its parents.
    403 `not_provider`; 404 `booking_not_found`; 409 `booking_not_completed`,
    `not_coaching_program`."""
    out = await service.record_evaluation(
        session, actor=user, booking_id=booking_id, data=data, now=now
    )
    await session.commit()
    return out


@router.get(
    "/bookings/{booking_id}/evaluations",
    response_model=list[EvaluationOut],
    summary="A booking's session evaluations (student, parents, provider, admins)",
    responses=problem_responses(400, 401, 404, 422),
)
async def list_evaluations(
    booking_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> list[EvaluationOut]:
    """Oldest first. 404 `booking_not_found` for anyone without a part in the booking."""
    return await service.list_evaluations(session, actor=user, booking_id=booking_id)


@router.post(
    "/bookings/{booking_id}/complaints",
    status_code=status.HTTP_201_CREATED,
    response_model=ComplaintOut,
    summary="File a complaint about a booking (a participant)",
    responses=problem_responses(400, 401, 403, 404, 422),
)
async def file_complaint(
    booking_id: uuid.UUID, data: ComplaintIn, user: CurrentUser, session: SessionDep, now: NowDep
) -> ComplaintOut:
    """The booking's student, its parent or its provider. 403 `not_participant` (an
    admin); 404 `booking_not_found`."""
    out = await admin_service.file_complaint(
        session, actor=user, booking_id=booking_id, data=data, now=now
    )
    await session.commit()
    return out
