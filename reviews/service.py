"""Review rules, the incremental rating, moderation, the damped rating prior, and
session evaluations. No HTTP; never commits (the request or task owns the unit of work).

The rating (`provider_profiles.rating_sum`, `rating_count`, `rating_avg`) changes in the
same transaction as the review, by an O(1) increment (`profiles.service.add_rating`):
+stars/+1 on a post, +(new - old)/0 on an edit, -stars/-1 when hidden. Integer sums keep
it exact; `recount` recomputes it from the reviews for the check. Every change emits an
outbox event (`review.posted|edited|replied|hidden`, keys only) and the provider's
`provider.rating_changed`, so the indexer re-projects the provider within one batch.

`sort=rating` in search ranks by the damped rating of the IMDb "weighted rating"
(Top 250 formula): WR = (v·R + m·C) / (v + m), v = rating_count, R = rating_avg,
m = `RATING_PRIOR_WEIGHT`, C = the platform mean. It is computed in the projection
(`search_document_source.rating_sort`, migration 0018) from `search_rating_prior`, so
both engines sort on the same stored number. C is refreshed by `refresh_rating_prior`
(a periodic task): documents re-projected after a refresh use the new C; a full reindex
re-ranks all of them (documents between the two keep the C of their last projection).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from booking import service as booking
from core import audit, outbox
from core.settings import get_settings
from profiles import service as profiles
from profiles.errors import field_errors
from profiles.models import User
from reviews import repository as repo
from reviews.errors import (
    BookingNotCompleted,
    NotCoachingProgram,
    NotProvider,
    NotReviewer,
    ProviderNotFound,
    ReplyExists,
    ReviewAlreadyHidden,
    ReviewExists,
    ReviewLocked,
    ReviewNotFound,
    ReviewWindowClosed,
)
from reviews.models import Review
from reviews.schemas import (
    EvaluationIn,
    EvaluationOut,
    HideIn,
    RatingSummary,
    ReplyIn,
    ReviewIn,
    ReviewOut,
    ReviewPage,
    ReviewPatch,
)

REVIEW_AGGREGATE = "review"


def damped_rating(
    count: int, avg: Decimal | float | None, *, mean: Decimal, weight: int
) -> Decimal:
    """The IMDb weighted rating (v·R + m·C) / (v + m) rounded half up to hundredths:
    v = `count` reviews averaging R = `avg` stars, m = `weight`, C = `mean`. 0 when
    unrated (unrated providers sort last). The Python twin of the projection's
    `rating_sort` (migration 0018), for tests and tools."""
    if count <= 0 or avg is None:
        return Decimal("0.00")
    r = Decimal(str(avg))
    value = (count * r + weight * mean) / (count + weight)
    return value.quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")


def _out(review: Review) -> ReviewOut:
    out = ReviewOut.model_validate(review)
    out.hidden = review.hidden_at is not None
    return out


def _snapshot(review: Review) -> dict[str, Any]:
    return {
        "rating": review.rating,
        "comment": review.comment,
        "hidden": review.hidden_at is not None,
        "hidden_reason": review.hidden_reason,
        "reply": review.reply,
    }


async def _event(session: AsyncSession, review: Review, kind: str) -> None:
    await outbox.emit(
        session,
        aggregate_type=REVIEW_AGGREGATE,
        aggregate_id=str(review.id),
        event_type=f"review.{kind}",
        payload={
            "review_id": str(review.id),
            "provider_id": str(review.provider_id),
            "booking_id": None if review.booking_id is None else str(review.booking_id),
        },
    )


async def _rate(session: AsyncSession, provider_id: uuid.UUID, *, stars: int, count: int) -> None:
    if stars or count:
        await profiles.add_rating(session, provider_id=provider_id, stars=stars, count=count)


# --- reviews --------------------------------------------------------------------------


async def post_review(
    session: AsyncSession, *, actor: User, booking_id: uuid.UUID, data: ReviewIn, now: datetime
) -> ReviewOut:
    """Post the review of a completed booking and count it in the provider's rating.

    Only the booking's student or that student's parent (403 `not_reviewer` for its
    provider or an admin; 404 `booking_not_found` for strangers); only a `completed`
    booking (409 `booking_not_completed`); within `REVIEW_WINDOW_S` (default 14 days)
    after the session ended (409 `review_window_closed`); one per booking (409
    `review_exists`, also when two arrive at once)."""
    b, relation = await booking.participant_booking(session, booking_id=booking_id, actor=actor)
    if relation not in ("student", "parent"):
        raise NotReviewer("Only the booking's student or its parent reviews it.")
    if b.status != "completed":
        raise BookingNotCompleted(f"A {b.status} booking cannot be reviewed.", status_now=b.status)
    window = timedelta(seconds=get_settings().review_window_s)
    if now > b.ends_at + window:
        raise ReviewWindowClosed(
            f"Reviews are accepted for {window.days} days after the session.",
            closed_at=(b.ends_at + window).isoformat(),
        )
    review = await repo.insert_review(
        session,
        {
            "booking_id": b.id, "provider_id": b.provider_id, "student_id": b.student_id,
            "author_id": actor.id, "rating": data.rating, "comment": data.comment,
            "locale": data.locale, "now": now,
        },
    )  # fmt: skip
    if review is None:
        raise ReviewExists("This booking already has a review; edit it with PATCH.")
    await _rate(session, b.provider_id, stars=review.rating, count=1)
    await _event(session, review, "posted")
    return _out(review)


async def edit_review(
    session: AsyncSession, *, actor: User, review_id: uuid.UUID, data: ReviewPatch, now: datetime
) -> ReviewOut:
    """Edit one's review within `REVIEW_EDIT_WINDOW_S` (48 h) of posting; a new rating
    moves the provider's sum by the difference. 404 `review_not_found`, 403
    `not_reviewer` (not its author), 409 `review_locked` (window over, or hidden)."""
    review = await repo.get_review(session, review_id, for_update=True)
    if review is None:
        raise ReviewNotFound("No review with this id.")
    if review.author_id != actor.id:
        raise NotReviewer("Only the review's author edits it.")
    if review.hidden_at is not None:
        raise ReviewLocked("A hidden review cannot be edited.")
    if now > review.created_at + timedelta(seconds=get_settings().review_edit_window_s):
        raise ReviewLocked("The edit window of this review is over.")
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if not changes:
        return _out(review)
    old = review.rating
    updated = await repo.update_review(session, review.id, {**changes, "updated_at": now})
    await _rate(session, review.provider_id, stars=updated.rating - old, count=0)
    await _event(session, updated, "edited")
    return _out(updated)


async def reply(
    session: AsyncSession, *, actor: User, review_id: uuid.UUID, data: ReplyIn, now: datetime
) -> ReviewOut:
    """The reviewed provider's one answer. 404 `review_not_found` (also hidden reviews),
    403 `not_provider`, 409 `reply_exists`."""
    review = await repo.get_review(session, review_id, for_update=True)
    if review is None or review.hidden_at is not None:
        raise ReviewNotFound("No review with this id.")
    if review.provider_id != actor.id:
        raise NotProvider("Only the reviewed provider answers a review.")
    if review.reply is not None:
        raise ReplyExists("This review already has its answer.")
    updated = await repo.update_review(session, review.id, {"reply": data.text, "replied_at": now})
    await _event(session, updated, "replied")
    return _out(updated)


async def hide(
    session: AsyncSession, *, actor: User, review_id: uuid.UUID, data: HideIn, now: datetime
) -> ReviewOut:
    """Moderation (admin): hide a review with a reason. It stops counting in the
    provider's rating (-stars, -1), leaves the public list, and an audit row keeps
    before/after. 404 `review_not_found`, 409 `review_already_hidden`."""
    review = await repo.get_review(session, review_id, for_update=True)
    if review is None:
        raise ReviewNotFound("No review with this id.")
    if review.hidden_at is not None:
        raise ReviewAlreadyHidden("This review is hidden already.")
    before = _snapshot(review)
    updated = await repo.update_review(
        session,
        review.id,
        {"hidden_at": now, "hidden_by": actor.id, "hidden_reason": data.reason, "updated_at": now},
    )
    await _rate(session, review.provider_id, stars=-review.rating, count=-1)
    await audit.record(
        session, actor=actor.id, action="review.hidden", entity_type="review",
        entity_id=str(review.id), before=before, after=_snapshot(updated),
    )  # fmt: skip
    await _event(session, updated, "hidden")
    return _out(updated)


def _encode_cursor(created_at: datetime, rid: uuid.UUID) -> str:
    raw = orjson.dumps([created_at.isoformat(), str(rid)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        t, i = orjson.loads(raw)
        return datetime.fromisoformat(t), uuid.UUID(i)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise field_errors(
            [("cursor", "not a cursor returned by this API")], location="query"
        ) from None


async def list_reviews(
    session: AsyncSession,
    *,
    provider_id: uuid.UUID,
    rating: int | None,
    cursor: str | None,
    limit: int,
) -> ReviewPage:
    """The provider's visible reviews, newest first, keyset-paginated (`cursor`), with its
    displayed rating (plain average and count) and the histogram of visible reviews.
    `rating` keeps one star value. 404 `provider_not_found`."""
    state = await repo.rating_state(session, provider_id)
    if state is None:
        raise ProviderNotFound("No provider with this id.")
    after = _decode_cursor(cursor) if cursor else None
    rows = await repo.list_visible(
        session, provider_id, rating=rating, after=after, limit=limit + 1
    )
    hist = await repo.histogram(session, provider_id)
    last = rows[limit - 1] if len(rows) > limit else None
    return ReviewPage(
        items=[_out(r) for r in rows[:limit]],
        next_cursor=None if last is None else _encode_cursor(last.created_at, last.id),
        rating=RatingSummary(
            rating_avg=state[2],
            rating_count=state[1],
            histogram={str(k): hist.get(k, 0) for k in range(1, 6)},
        ),
    )


async def recount(session: AsyncSession, *, provider_id: uuid.UUID) -> tuple[int, int]:
    """(sum of stars, count) of the provider's visible reviews recomputed from the
    reviews table: what the incremental `rating_sum`/`rating_count` must equal."""
    return await repo.recount(session, provider_id)


async def refresh_rating_prior(
    session: AsyncSession, *, now: datetime, weight: int | None = None
) -> tuple[Decimal, int, bool]:
    """Store the damped rating's prior: C = the platform mean (3 decimals, kept when
    nothing is rated), m = `weight` (default `RATING_PRIOR_WEIGHT`). Returns (C, m,
    changed). Documents projected from now on use it; a full reindex re-ranks all."""
    m = get_settings().rating_prior_weight if weight is None else weight
    old_mean, old_weight = await repo.get_prior(session)
    mean = await repo.platform_mean(session)
    mean = old_mean if mean is None else mean
    changed = (mean, m) != (old_mean, old_weight)
    if changed:
        await repo.set_prior(session, mean=mean, weight=m, now=now)
    return mean, m, changed


# --- session evaluations -----------------------------------------------------------------


async def record_evaluation(
    session: AsyncSession,
    *,
    actor: User,
    booking_id: uuid.UUID,
    data: EvaluationIn,
    now: datetime,
) -> EvaluationOut:
    """The provider's structured note (quiz, feedback or milestone) after a completed
    session of a coach or mentor program. 404 `booking_not_found`, 403 `not_provider`,
    409 `booking_not_completed` / `not_coaching_program`."""
    b, relation = await booking.participant_booking(session, booking_id=booking_id, actor=actor)
    if relation != "provider":
        raise NotProvider("Only the booking's provider records an evaluation.")
    if b.status != "completed":
        raise BookingNotCompleted(f"A {b.status} booking cannot be evaluated.", status_now=b.status)
    if await profiles.provider_kind(session, provider_id=b.provider_id) not in ("coach", "mentor"):
        raise NotCoachingProgram("Session evaluations belong to coach and mentor programs.")
    row = await repo.insert_evaluation(
        session,
        {
            "booking_id": b.id, "provider_id": b.provider_id, "student_id": b.student_id,
            "type": data.type, "payload": data.payload.model_dump(mode="json"),
            "created_at": now,
        },
    )  # fmt: skip
    await outbox.emit(
        session, aggregate_type="evaluation", aggregate_id=str(row.id),
        event_type="evaluation.recorded",
        payload={"evaluation_id": str(row.id), "booking_id": str(b.id)},
    )  # fmt: skip
    return EvaluationOut.model_validate(row)


async def list_evaluations(
    session: AsyncSession, *, actor: User, booking_id: uuid.UUID
) -> list[EvaluationOut]:
    """The booking's evaluations, oldest first, for its student, the student's parents,
    its provider and admins (404 `booking_not_found` for anyone else)."""
    b, _ = await booking.participant_booking(session, booking_id=booking_id, actor=actor)
    return [
        EvaluationOut.model_validate(e) for e in await repo.evaluations_of_booking(session, b.id)
    ]
