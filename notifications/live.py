"""Live seat updates: outbox events → Redis (stream + pub/sub) → Server-Sent Events.

Publishing (the `live` outbox consumer, after its batch commits): each message goes to
two keys, `live:slot:{slot_id}` and `live:provider:{provider_id}`. For each key one Lua
call appends it to a capped Redis stream (`XADD … MAXLEN ~ LIVE_STREAM_MAXLEN`, expiring a
day after the last event) and PUBLISHes `"{stream id} {json}"` on the channel of the same
name — so the stream id is the SSE event id, and a client that reconnects with
`Last-Event-ID` is replayed what it missed with `XRANGE (id +`.

Serving (`LiveHub`, one per API process and event loop): one Redis connection
PSUBSCRIBEd to `live:*` fans messages out to the local subscribers' queues, so any number
of clients costs one Redis connection per API process. A subscriber first registers its
queue, then reads the backlog, then the queue, dropping ids it already sent: no gap, no
duplicate. A subscriber too slow to drain 1,000 queued events is closed (its client
reconnects and resumes).

Message (JSON): `{"type": "seat.held" | "seat.released" | "slot.full" | "slot.updated",
"slot_id", "provider_id", "seats_left" (int, 0 = full; null for a deleted slot),
"capacity", "status", "starts_at" (RFC 3339), "outbox_id", "event_at" (the outbox row's
insert time, RFC 3339)}`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import psycopg
import redis
import redis.asyncio as aioredis

from core.logging import get_logger
from indexer.repository import OutboxEvent
from notifications import repository as repo

log = get_logger(__name__)

SLOT_KEY = "live:slot:{}"
PROVIDER_KEY = "live:provider:{}"
STREAM_TTL_S = 86_400
_SEAT_EVENTS = {"booking.held": "seat.held", "booking.expired": "seat.released",
                "booking.canceled": "seat.released"}  # fmt: skip
_SLOT_EVENTS = ("availability.created", "availability.updated", "availability.deleted")

_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'data', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', KEYS[1], id .. ' ' .. ARGV[1])
return id
"""


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def messages_for(
    conn: psycopg.Connection[Any], events: Sequence[OutboxEvent]
) -> list[dict[str, Any]]:
    """The live messages of a batch, with `seats_left` read now (in commit order, so the
    last message of a slot carries its current count)."""
    wanted: list[tuple[OutboxEvent, str, str, str | None]] = []
    for e in events:
        p = e.payload or {}
        if e.event_type in _SEAT_EVENTS and p.get("slot_id"):
            wanted.append((e, _SEAT_EVENTS[e.event_type], str(p["slot_id"]), p.get("provider_id")))
        elif e.event_type in _SLOT_EVENTS:
            ids = p.get("slot_ids") or ([p["slot_id"]] if p.get("slot_id") else [])
            wanted += [(e, "slot.updated", str(s), p.get("provider_id")) for s in ids]
    if not wanted:
        return []
    seats = repo.slot_seats(conn, sorted({w[2] for w in wanted}))
    out: list[dict[str, Any]] = []
    for e, kind, slot_id, provider_id in wanted:
        s = seats.get(slot_id)
        provider = s["provider_id"] if s else provider_id
        if provider is None:
            continue
        base = {
            "slot_id": slot_id, "provider_id": str(provider),
            "seats_left": s["seats_left"] if s else None, "capacity": s["capacity"] if s else None,
            "status": s["status"] if s else "deleted", "starts_at": _iso(s["starts_at"]) if s else None,
            "outbox_id": e.id, "event_at": _iso(e.created_at),
        }  # fmt: skip
        out.append({"type": kind, **base})
        if kind == "seat.held" and s and s["seats_left"] == 0:
            out.append({"type": "slot.full", **base})
    return out


def publish(client: redis.Redis, messages: Sequence[dict[str, Any]], *, maxlen: int) -> None:
    """Append each message to its slot's and provider's streams and publish it (one
    pipeline round trip)."""
    if not messages:
        return
    script = client.register_script(_PUBLISH)
    pipe = client.pipeline(transaction=False)
    for m in messages:
        data = orjson.dumps(m).decode()
        for key in (SLOT_KEY.format(m["slot_id"]), PROVIDER_KEY.format(m["provider_id"])):
            script(keys=[key], args=[data, maxlen, STREAM_TTL_S], client=pipe)
    pipe.execute()


def parse_id(value: str) -> tuple[int, int]:
    """A Redis stream id `ms-seq` as a comparable pair; raises `ValueError` otherwise."""
    ms, _, seq = value.partition("-")
    if not ms.isdigit() or not seq.isdigit():
        raise ValueError(value)
    return int(ms), int(seq)


_CLOSED: tuple[str, bytes] = ("", b"")


class LiveHub:
    """One PSUBSCRIBE connection per process and loop, fanning out to local queues."""

    def __init__(self, url: str, *, queue_size: int = 1000) -> None:
        self.url = url
        self.queue_size = queue_size
        self._subs: dict[str, set[asyncio.Queue[tuple[str, bytes]]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._lock = asyncio.Lock()
        self._client: aioredis.Redis | None = None

    @property
    def client(self) -> aioredis.Redis:
        """This hub's Redis client for reads (backlogs), bound to the hub's event loop (the
        process-wide client may belong to another loop)."""
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self.url, socket_timeout=2.0, socket_connect_timeout=2.0
            )
        return self._client

    async def _ensure(self) -> None:
        async with self._lock:
            if self._task is not None and not self._task.done():
                assert self._ready is not None
                await self._ready.wait()
                return
            self._ready = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._ready))
        await asyncio.wait_for(self._ready.wait(), timeout=5)

    async def _run(self, ready: asyncio.Event) -> None:
        client = aioredis.Redis.from_url(self.url, health_check_interval=30)
        pubsub = client.pubsub()
        try:
            await pubsub.psubscribe("live:*")
            async for msg in pubsub.listen():
                kind = msg.get("type")
                if kind == "psubscribe":
                    ready.set()
                elif kind == "pmessage":
                    self._dispatch(msg["channel"].decode(), msg["data"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("live_hub_lost", error=repr(exc))
        finally:
            # every subscriber's client reconnects (and resumes with Last-Event-ID)
            for queues in self._subs.values():
                for q in queues:
                    with contextlib.suppress(asyncio.QueueFull):
                        q.put_nowait(_CLOSED)
            with contextlib.suppress(Exception):
                await pubsub.aclose()
                await client.aclose()

    def _dispatch(self, channel: str, data: bytes) -> None:
        sid, _, body = data.partition(b" ")
        for q in list(self._subs.get(channel, ())):
            try:
                q.put_nowait((sid.decode(), body))
            except asyncio.QueueFull:
                self._subs[channel].discard(q)
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
                q.put_nowait(_CLOSED)

    async def subscribe(self, key: str) -> asyncio.Queue[tuple[str, bytes]]:
        """A queue of `(stream id, json)` for `key`, live from now on; `("", b"")` means
        closed (the client should reconnect)."""
        await self._ensure()
        q: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=self.queue_size)
        self._subs.setdefault(key, set()).add(q)
        return q

    def unsubscribe(self, key: str, q: asyncio.Queue[tuple[str, bytes]]) -> None:
        """Forget a subscriber."""
        subs = self._subs.get(key)
        if subs is not None:
            subs.discard(q)
            if not subs:
                self._subs.pop(key, None)

    @property
    def subscribers(self) -> int:
        """Local subscribers (all keys)."""
        return sum(len(s) for s in self._subs.values())

    async def close(self) -> None:
        """Stop the reader and close the read client (application shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None


async def backlog(client: aioredis.Redis, key: str, after: str) -> list[tuple[str, bytes]]:
    """Events of stream `key` after id `after` (exclusive), oldest first."""
    rows: Any = await client.xrange(key, min="(" + after, max="+")
    return [(bytes(rid).decode(), bytes(fields[b"data"])) for rid, fields in rows or ()]
