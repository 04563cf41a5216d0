"""Celery tasks of payments (thin shims over `payments.jobs`).

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
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

from celery import Task

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


def _countdown(retries: int) -> float:
    return float(min(300.0, get_settings().payments_task_retry_s * 2**retries))


@app.task(  # type: ignore[untyped-decorator]
    name="payments.process_webhook_event", bind=True, acks_late=True, ignore_result=True
)
def process_webhook_event(self: Task, row_id: int) -> str:
    """Process the stored webhook event `row_id` (idempotent: a processed one is skipped).
    Returns `processed`, `ignored` or `skipped`; retried with backoff on failure."""
    from payments.jobs import process_event
    from payments.stripe_adapter import get_provider

    try:
        return run(process_event(get_provider(), row_id=row_id))
    except Exception as exc:
        if self.request.retries >= get_settings().payments_task_max_retries:
            raise
        raise self.retry(exc=exc, countdown=_countdown(self.request.retries)) from exc


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
