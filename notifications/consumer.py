"""The two outbox consumers of this domain, run by `educonnect notifications relay
--consumer notifications|live` on the indexer's relay machinery (`indexer.relay.Relay`:
commit order by xid8, its own checkpoint per consumer, LISTEN wake-ups, supervised
reconnects). Each sink works inside the relay's transaction and keeps what must leave the
database for `after_commit` (the relay's `on_commit` hook): Celery messages and Redis
publications only go out once the batch (and its checkpoint) is committed. If the process
dies in between, the `notifications.sweep` beat task re-enqueues the rows (notifications)
and a client's `Last-Event-ID` resume cannot see what was never published (live): the
next event of the slot carries the current count.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from core.logging import get_logger
from core.settings import get_settings
from indexer.repository import OutboxEvent
from notifications import live, service

log = get_logger(__name__)
CONSUMERS = ("notifications", "live")


class NotificationSink:
    """Outbox events → notification rows (in the batch's transaction), then their
    delivery tasks after commit. An event that fails to render is logged and skipped
    (its savepoint rolled back) rather than blocking every later notification."""

    name = "notifications"

    def __init__(self) -> None:
        self.pending: list[uuid.UUID] = []

    def apply(self, conn: psycopg.Connection[Any], events: Sequence[OutboxEvent]) -> None:
        self.pending = []
        for e in events:
            try:
                with conn.transaction():
                    self.pending += service.notify_event(
                        conn, event_id=e.id, kind=e.event_type, payload=e.payload or {}
                    )
            except psycopg.OperationalError:
                raise
            except Exception:
                log.exception("notification_event_skipped", outbox_id=e.id, event_type=e.event_type)

    def after_commit(self) -> None:
        from notifications.tasks import enqueue

        ids, self.pending = self.pending, []
        enqueue(ids)


class LiveSink:
    """Outbox events → live seat messages (counts read in the batch's transaction), then
    published to Redis after commit."""

    name = "live"

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = []

    def apply(self, conn: psycopg.Connection[Any], events: Sequence[OutboxEvent]) -> None:
        self.pending = live.messages_for(conn, events)

    def after_commit(self) -> None:
        from core.redis import get_sync_redis

        messages, self.pending = self.pending, []
        try:
            live.publish(get_sync_redis(), messages, maxlen=get_settings().live_stream_maxlen)
        except Exception as exc:  # Redis down: live views miss these, the next event heals
            log.warning("live_publish_failed", error=repr(exc), messages=len(messages))


def make_sink(consumer: str) -> NotificationSink | LiveSink:
    """The sink of `consumer` (`notifications` or `live`); `ValueError` otherwise."""
    if consumer == "notifications":
        return NotificationSink()
    if consumer == "live":
        return LiveSink()
    raise ValueError(f"unknown consumer {consumer!r} (known: {', '.join(CONSUMERS)})")
