"""SQL of the reviews domain (the only place with its queries)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, insert, literal, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from reviews.models import Review, SessionEvaluation


async def get_review(
    session: AsyncSession, review_id: uuid.UUID, *, for_update: bool = False
) -> Review | None:
    """The review `review_id` (row-locked with `for_update`), or None."""
    stmt = select(Review).where(Review.id == review_id).execution_options(populate_existing=True)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def review_of_booking(session: AsyncSession, booking_id: uuid.UUID) -> Review | None:
    """The review of `booking_id`, or None."""
    stmt = select(Review).where(Review.booking_id == booking_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def insert_review(session: AsyncSession, values: dict[str, Any]) -> Review | None:
    """Insert a review; None when the booking already has one (the unique key decides,
    so two concurrent first reviews cannot both count)."""
    stmt = text(
        "INSERT INTO reviews (booking_id, provider_id, student_id, author_id, rating,"
        " comment, locale, created_at, updated_at) VALUES (:booking_id, :provider_id,"
        " :student_id, :author_id, :rating, :comment, :locale, :now, :now)"
        " ON CONFLICT (booking_id) DO NOTHING RETURNING id"
    )
    rid = (await session.execute(stmt, values)).scalar_one_or_none()
    return None if rid is None else await get_review(session, rid)


async def update_review(
    session: AsyncSession, review_id: uuid.UUID, values: dict[str, Any]
) -> Review:
    """Set `values` on the review and return it."""
    await session.execute(
        update(Review)
        .where(Review.id == review_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    review = await get_review(session, review_id)
    assert review is not None
    return review


async def list_visible(
    session: AsyncSession,
    provider_id: uuid.UUID,
    *,
    rating: int | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Review]:
    """Visible (not hidden) reviews of the provider, newest first ((created_at, id)
    descending), after the keyset `after`, optionally of `rating` stars only."""
    conds = [Review.provider_id == provider_id, Review.hidden_at.is_(None)]
    if rating is not None:
        conds.append(Review.rating == rating)
    if after is not None:
        conds.append(
            tuple_(Review.created_at, Review.id) < tuple_(literal(after[0]), literal(after[1]))
        )
    stmt = (
        select(Review)
        .where(and_(*conds))
        .order_by(Review.created_at.desc(), Review.id.desc())
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars().all())


async def histogram(session: AsyncSession, provider_id: uuid.UUID) -> dict[int, int]:
    """{stars: count} of the provider's visible reviews (absent stars: none)."""
    stmt = (
        select(Review.rating, func.count())
        .where(Review.provider_id == provider_id, Review.hidden_at.is_(None))
        .group_by(Review.rating)
    )
    return {int(r): int(n) for r, n in (await session.execute(stmt)).all()}


async def recount(session: AsyncSession, provider_id: uuid.UUID) -> tuple[int, int]:
    """(sum of stars, count) of the provider's visible reviews, from scratch."""
    stmt = select(func.coalesce(func.sum(Review.rating), 0), func.count()).where(
        Review.provider_id == provider_id, Review.hidden_at.is_(None)
    )
    row = (await session.execute(stmt)).one()
    return int(row[0]), int(row[1])


async def rating_state(
    session: AsyncSession, provider_id: uuid.UUID
) -> tuple[int, int, float | None] | None:
    """The stored (rating_sum, rating_count, rating_avg) of the provider, or None."""
    row = (
        await session.execute(
            text(
                "SELECT rating_sum, rating_count, rating_avg::float8 FROM provider_profiles"
                " WHERE user_id = :id"
            ),
            {"id": provider_id},
        )
    ).one_or_none()
    return None if row is None else (int(row[0]), int(row[1]), row[2])


async def platform_mean(session: AsyncSession) -> Decimal | None:
    """The platform's mean star rating over every counted review (from the providers'
    sums and counts), or None when nothing is rated."""
    value = (
        await session.execute(
            text(
                "SELECT round(sum(rating_sum)::numeric / nullif(sum(rating_count), 0), 3)"
                " FROM provider_profiles"
            )
        )
    ).scalar_one()
    return None if value is None else Decimal(value)


async def get_prior(session: AsyncSession) -> tuple[Decimal, int]:
    """The stored prior (C, m) of the damped rating (`search_rating_prior`)."""
    row = (
        await session.execute(text("SELECT mean, weight FROM search_rating_prior WHERE id"))
    ).one()
    return Decimal(row[0]), int(row[1])


async def set_prior(session: AsyncSession, *, mean: Decimal, weight: int, now: datetime) -> None:
    """Store the prior (C, m)."""
    await session.execute(
        text(
            "INSERT INTO search_rating_prior (id, mean, weight, updated_at)"
            " VALUES (true, :mean, :weight, :now) ON CONFLICT (id) DO UPDATE SET"
            " mean = EXCLUDED.mean, weight = EXCLUDED.weight, updated_at = EXCLUDED.updated_at"
        ),
        {"mean": mean, "weight": weight, "now": now},
    )


async def insert_evaluation(session: AsyncSession, values: dict[str, Any]) -> SessionEvaluation:
    """Insert a session evaluation and return it."""
    stmt = insert(SessionEvaluation).values(**values).returning(SessionEvaluation)
    return (await session.execute(stmt)).scalar_one()


async def evaluations_of_booking(
    session: AsyncSession, booking_id: uuid.UUID
) -> list[SessionEvaluation]:
    """The booking's evaluations, oldest first."""
    stmt = (
        select(SessionEvaluation)
        .where(SessionEvaluation.booking_id == booking_id)
        .order_by(SessionEvaluation.created_at, SessionEvaluation.id)
    )
    return list((await session.execute(stmt)).scalars().all())
