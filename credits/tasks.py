"""Celery tasks of credits (thin shims over `credits.jobs`), on the payments tasks' event
loop per process. Beat runs `credits.expire` nightly (`CREDITS_EXPIRY_HOUR_UTC`) and
`credits.allocate_monthly` daily (`CREDITS_ALLOCATION_HOUR_UTC`)."""

from __future__ import annotations

from typing import Any

from core.celery_app import app
from payments.tasks import run


@app.task(name="credits.expire", acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
def expire() -> dict[str, Any]:
    """Expire lapsed credits and emit the week-ahead notices (idempotent)."""
    from credits.jobs import expire_and_notify

    expired, notified = run(expire_and_notify())
    return {"expired": expired, "notified": notified}


@app.task(name="credits.allocate_monthly", acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
def allocate_monthly() -> dict[str, Any]:
    """Catch up paid invoices of subscriptions whose period ended (grants once)."""
    from credits.jobs import allocate_monthly as job

    return {"granted": run(job())}
