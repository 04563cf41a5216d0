"""Celery tasks of the booking domain (thin shims over `booking.service`).

`booking.expire_holds` runs on the beat schedule (`core.celery_app`, every
`BOOKING_EXPIRY_SWEEP_S`): it marks lapsed holds `expired` and emits their events. No
correctness depends on it — a hold stops counting at `hold_expires_at` by itself.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from booking import service
from core.celery_app import app
from core.security import utcnow
from core.settings import get_settings


async def run_expiry(
    sessions: async_sessionmaker[AsyncSession], *, now: datetime, limit: int = 500
) -> int:
    """Expire the lapsed holds of up to `limit` slots, one committed transaction per slot
    (so the sweep holds one slot's row lock at a time, in the order every booking writer
    takes them: slot, then its bookings). Returns the number of holds expired."""
    async with sessions() as session:
        slot_ids = await service.slots_with_lapsed_holds(session, now=now, limit=limit)
    expired = 0
    for slot_id in slot_ids:
        async with sessions() as session, session.begin():
            expired += await service.expire_lapsed_holds(session, slot_id=slot_id, now=now)
    return expired


async def _expire_now() -> int:
    # A task runs its coroutine on a fresh event loop: its own engine, without a pool
    # that would outlive the loop.
    engine = create_async_engine(get_settings().database_url, poolclass=NullPool)
    try:
        return await run_expiry(async_sessionmaker(engine, expire_on_commit=False), now=utcnow())
    finally:
        await engine.dispose()


@app.task(name="booking.expire_holds", acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
def expire_holds() -> int:
    """Mark lapsed holds `expired` (idempotent: a hold expires once, one event). Returns
    how many expired in this run."""
    return asyncio.run(_expire_now())
