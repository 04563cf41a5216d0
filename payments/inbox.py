"""The webhook inbox writer: verified events stored once, in group commits.

Concurrent webhook requests of one process hand their event to `InboxWriter.store`, which
waits until the events gathered so far are written by one multi-row
`INSERT … ON CONFLICT (source, event_id) DO NOTHING RETURNING` and one COMMIT, then answers
each request with its row. Nothing is acknowledged before its commit (a 2xx means stored),
and under load one commit carries many events instead of one each (PostgreSQL's commit —
the WAL flush — is most of an event's cost). This module owns its unit of work, like
`payments.jobs`.

After a commit that left an event unprocessed, the writer queues the Celery drain
(`payments.tasks.drain_webhook_events`) — once per group commit, not once per event, and
only when none is queued already (`DRAIN_FLAG`, a Redis `SET NX` with a TTL): the stored
rows are the queue, the task drains them. The requests are answered before this kick, so
the broker is off their path; should it fail, the rows stay stored and the next kick, the
flag's expiry or `educonnect payments reconcile --fix` processes them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson
from sqlalchemy import text

from core.db import async_session_factory
from core.logging import get_logger
from core.redis import get_async_redis
from payments.provider import WebhookEvent
from payments.repository import StoredEvent

MAX_BATCH = 500
log = get_logger(__name__)

_INSERT = text(
    "INSERT INTO webhook_events (source, event_id, type, object_kind, object_ref, payload)"
    " SELECT :source, e.event_id, e.type, e.object_kind, e.object_ref, e.payload"
    " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS e(event_id text, type text,"
    " object_kind text, object_ref text, payload jsonb)"
    " ON CONFLICT (source, event_id) DO NOTHING RETURNING id, event_id"
)
_FIND = text(
    "SELECT id, event_id, processed_at IS NOT NULL AS processed FROM webhook_events"
    " WHERE source = :source AND event_id = ANY(:ids)"
)


@dataclass
class _Pending:
    event: WebhookEvent
    done: asyncio.Future[StoredEvent]


class InboxWriter:
    """Group-committing writer of one gateway's events (one per process and event loop)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._queue: list[_Pending] = []
        self._flushing: asyncio.Task[None] | None = None

    async def store(self, event: WebhookEvent) -> StoredEvent:
        """Store `event` once by `(source, event_id)`; returns its row once committed
        (`inserted` False for a redelivery). Raises what the database raised."""
        loop = asyncio.get_running_loop()
        pending = _Pending(event, loop.create_future())
        self._queue.append(pending)
        if self._flushing is None or self._flushing.done():
            self._flushing = loop.create_task(self._flush())
        return await pending.done

    async def _flush(self) -> None:
        while self._queue:
            await asyncio.sleep(0)  # let the requests already running join this commit
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                results = await self._write([p.event for p in batch])
            except Exception as exc:
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(exc)
                continue
            for p in batch:
                if not p.done.done():
                    p.done.set_result(results[p.event.event_id])
            if any(not r.processed for r in results.values()):
                await kick_drain()

    async def _write(self, events: list[WebhookEvent]) -> dict[str, StoredEvent]:
        unique = {e.event_id: e for e in events}  # one delivery twice in a batch: one row
        rows = [
            {"event_id": e.event_id, "type": e.type, "object_kind": e.object_kind,
             "object_ref": e.object_ref, "payload": e.payload}
            for e in unique.values()
        ]  # fmt: skip
        async with async_session_factory()() as session, session.begin():
            inserted = {
                str(r.event_id): int(r.id)
                for r in await session.execute(
                    _INSERT, {"source": self.source, "rows": orjson.dumps(rows).decode()}
                )
            }
            others = [i for i in unique if i not in inserted]
            found = {}
            if others:
                found = {
                    str(r.event_id): StoredEvent(int(r.id), False, bool(r.processed))
                    for r in await session.execute(_FIND, {"source": self.source, "ids": others})
                }
        out = {i: StoredEvent(row_id, True, False) for i, row_id in inserted.items()}
        out.update(found)
        return out


async def kick_drain() -> None:
    """Queue a drain of the stored events unless one is queued already (never raises: a
    lost kick is caught up by the next one, the flag's expiry or the reconcile command)."""
    from payments.tasks import DRAIN_FLAG, DRAIN_FLAG_TTL_S, drain_webhook_events

    try:
        if await get_async_redis().set(DRAIN_FLAG, b"1", nx=True, ex=DRAIN_FLAG_TTL_S):
            drain_webhook_events.delay()
    except Exception as exc:
        log.error("webhook_enqueue_failed", exc_info=exc)


_writers: dict[tuple[int, str], InboxWriter] = {}


def writer(source: str) -> InboxWriter:
    """The inbox writer of `source` for the running event loop."""
    key = (id(asyncio.get_running_loop()), source)
    if key not in _writers:
        _writers[key] = InboxWriter(source)
    return _writers[key]
