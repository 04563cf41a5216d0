"""Celery tasks of payments (thin shims over `payments.jobs`).

Webhook events are processed by `drain_webhook_events`: the webhook endpoint stores each
event and queues a drain only when none is already queued or running (`DRAIN_FLAG`), so the
ingest path pays one Redis `SET NX` per group commit instead of a broker publish; the drain
processes every due event, several at a time, with per-event backoff and dead letters
(`payments.jobs.drain`), and lingers `DRAIN_LINGER_S` for more before it exits.

The jobs are async (they share the API's async engine and the SDK's async client); a
worker process runs them on one event loop of its own, kept for the process's life, so
pooled database and HTTP connections stay bound to the loop that made them.
Retries: exponential backoff from `PAYMENTS_TASK_RETRY_S` (capped at 300 s), at most
`PAYMENTS_TASK_MAX_RETRIES`; an event still failing stays in `webhook_events` with its
`last_error` (the dead letter), and `educonnect payments reconcile --fix` catches up.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

from celery import Task, signals

from core.celery_app import app
from core.settings import get_settings

T = TypeVar("T")
_loop: tuple[int, asyncio.AbstractEventLoop] | None = None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on this process's event loop (created on first use, per pid: a forked
    pool child gets its own)."""
    global _loop
    if _loop is None or _loop[0] != os.getpid():
        _loop = (os.getpid(), asyncio.new_event_loop())
    return _loop[1].run_until_complete(coro)


def _import_drain(**_: Any) -> None:
    """Import what a drain runs (the jobs, the SDK adapter, the booking service: imported
    lazily by the tasks) in the worker's main process before it forks its pool, so each
    child inherits them instead of paying the imports on its first event."""
    import booking.service  # noqa: F401
    import payments.jobs
    import payments.stripe_adapter  # noqa: F401


signals.worker_init.connect(_import_drain, weak=False)


def _close_clients(**_: Any) -> None:
    """At a worker process's exit: close the Stripe SDK's aiohttp sessions of its event
    loop (if it made one), before the loop and the process go."""
    if _loop is not None and _loop[0] == os.getpid() and not _loop[1].is_closed():
        from payments.stripe_adapter import close_clients

        run(close_clients())


signals.worker_process_shutdown.connect(_close_clients, weak=False)
signals.worker_shutdown.connect(_close_clients, weak=False)


def _countdown(retries: int) -> float:
    return float(min(300.0, get_settings().payments_task_retry_s * 2**retries))


# "A drain is queued or running": set (NX, with a TTL) by the webhook endpoint when it
# queues a drain, re-armed by the running drain before each claim, deleted by the drain
# when it stops lingering (before its last claim), so an event stored after that queues
# the next one. The TTL re-arms the kick should a queued drain be lost or die.
DRAIN_FLAG = "payments:webhooks:drain"
DRAIN_FLAG_TTL_S = 5
# How long a drain that found nothing keeps looking for new events before it exits: at a
# steady rate one task serves the stream (no broker publish per event in the webhook).
DRAIN_LINGER_S = 0.25


@app.task(  # type: ignore[untyped-decorator]
    name="payments.drain_webhook_events", acks_late=True, ignore_result=True
)
def drain_webhook_events() -> dict[str, Any]:
    """Process every due webhook event (`payments.jobs.drain`); when failed events wait
    for a retry, schedule another drain for when the first is due."""
    from core.redis import get_sync_redis
    from payments.jobs import drain
    from payments.stripe_adapter import get_provider

    redis = get_sync_redis()
    armed = [0.0]  # when the flag was last re-armed (monotonic s)

    def keepalive() -> None:  # re-arm at half the TTL, not at every claim
        if time.monotonic() - armed[0] > DRAIN_FLAG_TTL_S / 2:
            redis.set(DRAIN_FLAG, b"1", ex=DRAIN_FLAG_TTL_S)
            armed[0] = time.monotonic()

    result = run(
        drain(
            get_provider(),
            linger_s=DRAIN_LINGER_S,
            keepalive=keepalive,
            release=lambda: redis.delete(DRAIN_FLAG),
        )
    )
    if result.retry_in is not None:
        drain_webhook_events.apply_async(countdown=max(0.05, result.retry_in))
    return {"processed": result.processed, "failed": result.failed}


@app.task(  # type: ignore[untyped-decorator]
    name="payments.execute_refund", bind=True, acks_late=True, ignore_result=True
)
def execute_refund(self: Task, refund_id: str) -> str | None:
    """Send the pending refund `refund_id` to the gateway (idempotent key)."""
    from payments import jobs
    from payments.stripe_adapter import get_provider

    try:
        return run(jobs.execute_refund(get_provider(), refund_id=uuid.UUID(refund_id)))
    except Exception as exc:
        if self.request.retries >= get_settings().payments_task_max_retries:
            raise
        raise self.retry(exc=exc, countdown=_countdown(self.request.retries)) from exc


@app.task(name="payments.sweep", ignore_result=True)  # type: ignore[untyped-decorator]
def sweep(older_than_s: float | None = None) -> dict[str, int]:
    """Beat: finish what a dead process or a lost task left (`payments.jobs.sweep`), work
    due for longer than `older_than_s` seconds (default `PAYMENTS_SWEEP_S`)."""
    from payments import jobs
    from payments.stripe_adapter import get_provider

    age = get_settings().payments_sweep_s if older_than_s is None else older_than_s
    return run(jobs.sweep(get_provider(), older_than_s=age))
