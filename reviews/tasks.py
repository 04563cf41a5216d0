"""Celery tasks of the reviews domain (thin shims over `reviews.service`).

`reviews.refresh_rating_prior` runs on the beat schedule (`core.celery_app`, every
`RATING_PRIOR_REFRESH_S`): it stores C, the platform mean of the damped rating, and m
(`RATING_PRIOR_WEIGHT`). Documents re-projected afterwards use them; a full reindex
(`POST /api/v1/admin/reindex`) re-ranks every document at once.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from core.celery_app import app
from core.security import utcnow
from core.settings import get_settings
from reviews import service


async def run_refresh(sessions: async_sessionmaker[AsyncSession]) -> tuple[Decimal, int, bool]:
    """Refresh the prior in one committed transaction; (C, m, changed)."""
    async with sessions() as session, session.begin():
        return await service.refresh_rating_prior(session, now=utcnow())


async def _refresh_now() -> tuple[Decimal, int, bool]:
    engine = create_async_engine(get_settings().database_url, poolclass=NullPool)
    try:
        return await run_refresh(async_sessionmaker(engine, expire_on_commit=False))
    finally:
        await engine.dispose()


@app.task(name="reviews.refresh_rating_prior", acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
def refresh_rating_prior() -> bool:
    """Store the damped rating's prior (idempotent). Returns whether it changed."""
    return asyncio.run(_refresh_now())[2]
