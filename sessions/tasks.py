"""Celery tasks of the sessions domain (thin shims over `sessions.service`).

- `sessions.sweep` (Celery beat, every `SESSION_SWEEP_INTERVAL_S`): acts on released
  seats read from the outbox (`booking.canceled`, …), queues the clean-up of every room
  whose window closed or that has no confirmed booking left, and settles the lessons
  whose window closed (completed / no_show).
- `sessions.close_room`: removes the participants and deletes one room; idempotent
  (deleted once however often it runs), retried with exponential backoff on LiveKit
  errors; a room that keeps failing stays in `session_rooms` with its `attempts` and
  `last_error` (the dead letter) and is queued again by the next sweeps.

Each task runs its coroutine on a fresh event loop with its own pool-less engine, so it
works from a worker process and when called eagerly from a test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from celery import Task
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from core.celery_app import app
from core.settings import get_settings
from sessions import repository as repo
from sessions import service
from sessions.livekit import LiveKitGateway

T = TypeVar("T")

CLOSE_MAX_RETRIES = 8


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run `fn()` to completion on a new event loop (in a helper thread when this thread
    already runs one, e.g. an async test calling a task eagerly)."""

    async def main() -> T:
        return await fn()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


@asynccontextmanager
async def _unit_of_work() -> AsyncIterator[AsyncSession]:
    """A session on a pool-less engine of this loop: committed when the block succeeds."""
    engine = create_async_engine(get_settings().database_url, poolclass=NullPool)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            yield session
            await session.commit()
    finally:
        await engine.dispose()


def _when(now: str | None) -> datetime:
    return datetime.fromisoformat(now) if now else datetime.now(UTC)


@app.task(  # type: ignore[untyped-decorator]
    name="sessions.close_room",
    bind=True,
    acks_late=True,
    max_retries=CLOSE_MAX_RETRIES,
)
def close_room(self: Task, name: str, reason: str, now: str | None = None) -> dict[str, Any]:
    """Remove the participants of room `name` and delete it (`reason`: `ended` or
    `canceled`; `now`: RFC 3339, default the clock). Returns
    `{room, result: deleted|already|failed, removed: [identities]}`; on a LiveKit
    failure the attempt is recorded and the task retried after 2^n s (≤ 10 min)."""
    at = _when(now)

    async def go() -> service.CloseResult:
        async with _unit_of_work() as session, LiveKitGateway.connect(get_settings()) as lk:
            return await service.close_room(session, lk, name=name, reason=reason, now=at)

    result = _run(go)
    if result.result == "failed" and self.request.called_directly is False:
        raise self.retry(countdown=min(600, 2 ** (self.request.retries + 1)))
    return {"room": result.room, "result": result.result, "removed": list(result.removed)}


@app.task(name="sessions.sweep", acks_late=True)  # type: ignore[untyped-decorator]
def sweep(now: str | None = None, inline: bool = False) -> dict[str, Any]:
    """One pass of the sessions housekeeping at `now` (RFC 3339, default the clock):
    released seats from the outbox, rooms to close (queued as `sessions.close_room`, or
    closed here when `inline`), lessons to settle. Returns
    `{outbox_events, closed: [room], queued: [[room, reason]], settled: {booking: outcome}}`
    (`{skipped: ...}` when LiveKit is not configured: no room, no attendance to settle)."""
    at = _when(now)
    s = get_settings()
    if not s.livekit_api_key or not s.livekit_api_secret:
        return {"skipped": "LIVEKIT_API_KEY is not set"}

    async def go() -> dict[str, Any]:
        out: dict[str, Any] = {"outbox_events": 0, "closed": [], "queued": [], "settled": {}}
        async with _unit_of_work() as session, LiveKitGateway.connect(s) as lk:
            released = await service.release_seats(session, lk, now=at)
        if released is not None:
            out["outbox_events"] = released[0]
            out["closed"] += [r.room for r in released[1] if r.result == "deleted"]
        async with _unit_of_work() as session:
            to_close = await repo.rooms_to_close(session, now=at, limit=500)
        for name, reason in to_close:
            if not inline:
                out["queued"].append([name, reason])
                continue
            async with _unit_of_work() as session, LiveKitGateway.connect(s) as lk:
                r = await service.close_room(session, lk, name=name, reason=reason, now=at)
            if r.result == "deleted":
                out["closed"].append(name)
        async with _unit_of_work() as session:
            settled = await service.settle_due(session, now=at, settings=s)
        out["settled"] = {str(x.booking_id): x.outcome for x in settled}
        return out

    result = _run(go)
    for name, reason in result["queued"]:
        close_room.delay(name, reason, now)
    return result
