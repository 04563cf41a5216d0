"""Celery tasks of notifications (thin shims over `notifications.service`).

- `notifications.send(id)`: one delivery attempt (claim by CAS, send, record). A transient
  failure re-schedules the task itself with `countdown` = the backoff the service chose
  (recorded in `notification_attempts.retry_in_s`); the attempt count lives in the row,
  so Celery's own `max_retries` is off. Sent, dead or not-claimable rows end the task.
- `notifications.send_reminders` (beat, every NOTIFICATIONS_REMINDER_SWEEP_S): the 24 h
  and 1 h reminders, each once per booking however often the beat fires.
- `notifications.sweep` (beat, every NOTIFICATIONS_STALE_SWEEP_S): re-enqueues rows whose
  task was lost (relay died before enqueueing, a worker died mid-send).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from typing import Any

import psycopg
from celery import Task

from core.celery_app import app
from core.security import utcnow
from core.settings import get_settings
from notifications import service
from notifications.channels import get_channel


def _connect() -> psycopg.Connection[Any]:
    return psycopg.connect(
        get_settings().libpq_database_url, autocommit=True, application_name="educonnect-notify"
    )


_conn: tuple[int, psycopg.Connection[Any]] | None = None


def _db() -> psycopg.Connection[Any]:
    """This process's connection for deliveries (opened on first use, per pid: a forked
    pool child gets its own; reopened after it broke). Reusing it saves a connection
    set-up per message (~a third of a delivery's time here)."""
    global _conn
    if _conn is None or _conn[0] != os.getpid() or _conn[1].closed or _conn[1].broken:
        _conn = (os.getpid(), _connect())
    return _conn[1]


def enqueue(ids: Iterable[uuid.UUID | str]) -> int:
    """Queue one `notifications.send` per id (after the rows are committed)."""
    n = 0
    for nid in ids:
        send.apply_async(args=[str(nid)])
        n += 1
    return n


@app.task(  # type: ignore[untyped-decorator]
    name="notifications.send", bind=True, acks_late=True, ignore_result=True, max_retries=None
)
def send(self: Task, notification_id: str) -> str:
    """Deliver notification `notification_id`; returns `sent`, `dead` or `skipped`, or
    retries itself after the backoff (`retry`)."""
    try:
        out = service.deliver(_db(), notification_id, get_channel)
    except psycopg.OperationalError as exc:  # the database went away: reconnect, retry soon
        raise self.retry(exc=exc, countdown=2.0) from exc
    if out.state == "retry":
        assert out.retry_in_s is not None
        raise self.retry(countdown=out.retry_in_s)
    return out.state


@app.task(name="notifications.send_reminders", acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
def send_reminders() -> int:
    """Create and enqueue the due reminders; returns how many deliveries were queued."""
    with _connect() as conn, conn.transaction():
        ids = service.send_reminders(conn, now=utcnow())
    return enqueue(ids)


@app.task(name="notifications.sweep", acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
def sweep() -> int:
    """Re-enqueue rows whose delivery task may be lost; returns how many."""
    with _connect() as conn:
        ids = service.stale(conn)
    return enqueue(ids)
