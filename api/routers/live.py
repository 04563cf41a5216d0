"""Live seat updates as Server-Sent Events (`text/event-stream`).

`GET /slots/{id}/events` and `GET /providers/{id}/availability/events` stream the
`seat.held`, `seat.released`, `slot.full` and `slot.updated` messages of
`notifications.live` (each `id:` is the Redis stream id, `event:` the type, `data:` the
JSON). A client reconnecting with `Last-Event-ID` (EventSource does it by itself; or the
`last_event_id` query parameter) first gets what it missed, from the short per-slot
stream kept in Redis (`LIVE_STREAM_MAXLEN` events). A comment line every
`LIVE_KEEPALIVE_S` keeps proxies from closing an idle stream. Anyone may listen: counts
of seats are public, like the availability they belong to.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query
from starlette.responses import StreamingResponse

from api.deps import SessionDep
from api.errors import problem_responses
from core.logging import get_logger
from core.settings import get_settings
from notifications import live
from notifications import repository as repo
from notifications.errors import InvalidLastEventId, LiveUnavailable, StreamNotFound

router = APIRouter(tags=["live"])
log = get_logger(__name__)
_hubs: dict[int, live.LiveHub] = {}

SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "An endless event stream: `id: <stream id>`, `event: seat.held |"
        " seat.released | slot.full | slot.updated`, `data: {slot_id, provider_id,"
        " seats_left, capacity, status, starts_at, outbox_id, event_at}`",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **problem_responses(400, 404, 422, 503),
}


class EventStreamResponse(StreamingResponse):
    """`text/event-stream`, not cached, not buffered by proxies."""

    media_type = "text/event-stream"


def hub() -> live.LiveHub:
    """This event loop's hub (one PSUBSCRIBE connection per process and loop)."""
    loop = asyncio.get_running_loop()
    h = _hubs.get(id(loop))
    if h is None:
        h = _hubs[id(loop)] = live.LiveHub(get_settings().redis_url)
    return h


async def close_hubs() -> None:
    """Stop this loop's hub (application shutdown)."""
    h = _hubs.pop(id(asyncio.get_running_loop()), None)
    if h is not None:
        await h.close()


def _frame(sid: str, data: bytes) -> bytes:
    try:
        kind = str(orjson.loads(data).get("type", "message"))
    except orjson.JSONDecodeError:
        kind = "message"
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (sid.encode(), kind.encode(), data)


async def _stream(
    h: live.LiveHub, key: str, q: asyncio.Queue[tuple[str, bytes]], last_id: str | None
) -> AsyncIterator[bytes]:
    keepalive = get_settings().live_keepalive_s
    try:
        yield b"retry: 2000\n\n"
        sent = live.parse_id(last_id) if last_id else None
        if last_id:
            for sid, data in await live.backlog(h.client, key, last_id):
                yield _frame(sid, data)
                sent = live.parse_id(sid)
        while True:
            try:
                sid, data = await asyncio.wait_for(q.get(), keepalive)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if not sid:  # the hub lost Redis or we were too slow: the client reconnects
                return
            pos = live.parse_id(sid)
            if sent is not None and pos <= sent:
                continue
            yield _frame(sid, data)
            sent = pos
    finally:
        h.unsubscribe(key, q)


def _last_id(header: str | None, query: str | None) -> str | None:
    value = header or query
    if not value:
        return None
    try:
        live.parse_id(value)
    except ValueError:
        raise InvalidLastEventId(
            "Last-Event-ID must be an id this stream sent (`<ms>-<seq>`)."
        ) from None
    return value


async def _response(key: str, last_id: str | None) -> EventStreamResponse:
    """Subscribe first (before the backlog is read: nothing published meanwhile is lost),
    so a Redis outage is a 503 `live_unavailable` rather than a stream that dies."""
    h = hub()
    try:
        q = await h.subscribe(key)
    except Exception as exc:
        log.warning("live_subscribe_failed", error=repr(exc))
        raise LiveUnavailable(
            "Live updates are unavailable right now; retry shortly.", headers={"Retry-After": "5"}
        ) from exc
    return EventStreamResponse(
        _stream(h, key, q, last_id),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


LastEventIdH = Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)]


@router.get(
    "/slots/{slot_id}/events",
    response_class=EventStreamResponse,
    summary="Live seat count of a slot (Server-Sent Events)",
    responses=SSE_DOC,
)
async def slot_events(
    slot_id: uuid.UUID,
    session: SessionDep,
    last_event_id: LastEventIdH = None,
    resume: Annotated[str | None, Query(alias="last_event_id", max_length=64)] = None,
) -> EventStreamResponse:
    """Events of one slot. 404 `slot_not_found`; 400 `invalid_last_event_id`; 503
    `live_unavailable` (Redis down)."""
    last = _last_id(last_event_id, resume)
    if await repo.slot_provider(session, slot_id) is None:
        raise StreamNotFound("No slot with this id.", code="slot_not_found")
    await session.close()  # hold no database connection for the stream's life
    return await _response(live.SLOT_KEY.format(slot_id), last)


@router.get(
    "/providers/{provider_id}/availability/events",
    response_class=EventStreamResponse,
    summary="Live seat counts of a provider's slots (Server-Sent Events)",
    responses=SSE_DOC,
)
async def provider_events(
    provider_id: uuid.UUID,
    session: SessionDep,
    last_event_id: LastEventIdH = None,
    resume: Annotated[str | None, Query(alias="last_event_id", max_length=64)] = None,
) -> EventStreamResponse:
    """Events of every slot of a provider. 404 `provider_not_found`; 400
    `invalid_last_event_id`; 503 `live_unavailable` (Redis down)."""
    last = _last_id(last_event_id, resume)
    if not await repo.provider_exists(session, provider_id):
        raise StreamNotFound("No provider with this id.", code="provider_not_found")
    await session.close()
    return await _response(live.PROVIDER_KEY.format(provider_id), last)
