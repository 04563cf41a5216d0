"""Notifications: contact points (phone, time zone, push devices), preferences, the in-app
inbox, dead letters and queue health (admin).

Rules live in `notifications.service`; re-queued dead letters are enqueued only after
the request's transaction committed.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from api.deps import AdminUser, CurrentUser, NowDep, SessionDep
from api.errors import problem_responses
from core.logging import get_logger
from notifications import service
from notifications.schemas import (
    PUSH_TOKEN_MAX_LENGTH,
    PUSH_TOKEN_PATTERN,
    ContactIn,
    ContactOut,
    DeadLetterPage,
    NotificationOut,
    NotificationPage,
    Preferences,
    PreferencesIn,
    PushDeviceIn,
    PushDeviceOut,
    QueueStats,
    RequeueIn,
    RequeueOut,
)

router = APIRouter(tags=["notifications"])
log = get_logger(__name__)
LimitQ = Annotated[int, Query(ge=1, le=100, description="Items per page")]
CursorQ = Annotated[
    str | None, Query(max_length=200, description="`next_cursor` of the previous page")
]


@router.get(
    "/me/contact",
    response_model=ContactOut,
    summary="My phone, time zone and push devices",
    responses=problem_responses(401),
)
async def get_contact(user: CurrentUser, session: SessionDep) -> ContactOut:
    """Where notifications reach me: `phone` (SMS; null when none), `time_zone` (times in
    messages), `push_devices` (FCM tokens, oldest first). Which kinds go to which channel
    is `/me/notification-preferences`."""
    return await service.get_contact(session, user_id=user.id)


@router.put(
    "/me/contact",
    response_model=ContactOut,
    summary="Set my phone and time zone",
    responses=problem_responses(401, 422),
)
async def put_contact(data: ContactIn, user: CurrentUser, session: SessionDep) -> ContactOut:
    """Replaces both: `phone` in E.164 (`+33612345678`; null removes it, and SMS stops)
    and `time_zone` (IANA, `Europe/Paris`). 422 `invalid_phone`, `invalid_time_zone`
    (nothing is changed), `validation_error` for a malformed body."""
    out = await service.set_contact(session, user_id=user.id, data=data)
    await session.commit()
    return out


@router.post(
    "/me/push-devices",
    response_model=PushDeviceOut,
    status_code=status.HTTP_201_CREATED,
    summary="Register a device for push notifications (FCM token)",
    responses={
        200: {"description": "Already registered (its platform updated)", "model": PushDeviceOut},
        **problem_responses(401, 422),
    },
)
async def register_push_device(
    data: PushDeviceIn, user: CurrentUser, session: SessionDep, response: Response
) -> PushDeviceOut:
    """201 with the device; 200 when the token was already mine (safe to call at every
    app start). A token registered by another account moves to mine (the device signed
    in anew). 422 `validation_error` for a malformed token or platform."""
    out, created = await service.register_push_device(session, user_id=user.id, data=data)
    await session.commit()
    if not created:
        response.status_code = status.HTTP_200_OK
    return out


@router.delete(
    "/me/push-devices/{token}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Unregister a push device",
    responses=problem_responses(401, 404, 422),
)
async def unregister_push_device(
    token: Annotated[
        str,
        Path(
            min_length=1,
            max_length=PUSH_TOKEN_MAX_LENGTH,
            pattern=PUSH_TOKEN_PATTERN,
            description="The FCM registration token",
        ),
    ],
    user: CurrentUser,
    session: SessionDep,
) -> Response:
    """Push to that device stops. 404 `push_device_not_found` when it is not mine."""
    await service.unregister_push_device(session, user_id=user.id, token=token)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/me/notification-preferences",
    response_model=Preferences,
    summary="My notification settings per event kind and channel",
    responses=problem_responses(401),
)
async def get_preferences(user: CurrentUser, session: SessionDep) -> Preferences:
    """Every (kind, channel) pair with its effective setting; `locked` pairs
    (transactional email) are always on."""
    return await service.get_preferences(session, user_id=user.id)


@router.put(
    "/me/notification-preferences",
    response_model=Preferences,
    summary="Change notification settings",
    responses=problem_responses(401, 422),
)
async def put_preferences(
    data: PreferencesIn, user: CurrentUser, session: SessionDep
) -> Preferences:
    """Set the listed pairs (others keep their setting); returns every pair. 422
    `transactional_email` when turning off the email of a transactional kind (nothing
    is changed), 422 `validation_error` for an unknown kind or channel."""
    out = await service.set_preferences(session, user_id=user.id, items=data.items)
    await session.commit()
    return out


@router.get(
    "/me/notifications",
    response_model=NotificationPage,
    summary="My in-app notifications, newest first",
    responses=problem_responses(400, 401, 422),
)
async def list_notifications(
    user: CurrentUser,
    session: SessionDep,
    unread: Annotated[bool | None, Query(description="true: unread only; false: read only")] = None,
    cursor: CursorQ = None,
    limit: LimitQ = 20,
) -> NotificationPage:
    """Keyset-paged (`next_cursor`); 400 `invalid_cursor` for a cursor we did not issue."""
    return await service.inbox(session, user_id=user.id, unread=unread, cursor=cursor, limit=limit)


@router.post(
    "/me/notifications/{notification_id}/read",
    response_model=NotificationOut,
    summary="Mark one of my notifications read",
    responses=problem_responses(401, 404, 422),
)
async def read_notification(
    notification_id: uuid.UUID, user: CurrentUser, session: SessionDep, now: NowDep
) -> NotificationOut:
    """Idempotent (`read_at` keeps the first time). 404 `notification_not_found`."""
    out = await service.mark_read(
        session, user_id=user.id, notification_id=notification_id, now=now
    )
    await session.commit()
    return out


@router.get(
    "/admin/notifications/dead",
    response_model=DeadLetterPage,
    summary="Dead letters: notifications that could not be delivered (admin)",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_dead(
    _: AdminUser, session: SessionDep, cursor: CursorQ = None, limit: LimitQ = 50
) -> DeadLetterPage:
    """Most recently dead first, with the attempts made and the last error."""
    return await service.dead_letters(session, cursor=cursor, limit=limit)


@router.post(
    "/admin/notifications/dead/requeue",
    response_model=RequeueOut,
    summary="Re-queue dead letters (admin)",
    responses=problem_responses(401, 403, 422),
)
async def requeue_dead(data: RequeueIn, _: AdminUser, session: SessionDep) -> RequeueOut:
    """The listed ids (those not dead are ignored), or all dead letters (up to 1,000) when
    `ids` is null: attempts reset, delivery enqueued after commit. Same as
    `educonnect notifications retry-dead`."""
    from notifications.tasks import enqueue

    ids = await service.requeue(session, ids=data.ids)
    await session.commit()
    await asyncio.to_thread(enqueue, ids)
    return RequeueOut(requeued=ids)


def _celery_stats() -> tuple[dict[str, int], list[str]]:
    from core.celery_app import app as celery
    from core.redis import get_sync_redis

    r = get_sync_redis()
    names = sorted({"celery", *(str(q) for q in (celery.conf.task_queues or ()) if q)})
    queues = {q: int(r.llen(q)) for q in names}  # kombu's Redis queues are lists
    replies = celery.control.ping(timeout=0.5) or []
    workers = sorted(name for reply in replies for name in reply)
    return queues, workers


@router.get(
    "/admin/queues",
    response_model=QueueStats,
    summary="Celery queue lengths, workers seen, notification states, dead letters (admin)",
    responses=problem_responses(401, 403, 503),
)
async def queues(_: AdminUser, session: SessionDep, now: NowDep) -> QueueStats:
    """Queue lengths from the broker (Redis lists), workers answering a 0.5 s ping,
    notifications per state updated in the last hour, and all dead letters. 503
    `broker_unavailable` when Redis does not answer."""
    from core.errors import AppError

    try:
        queues_, workers = await asyncio.to_thread(_celery_stats)
    except Exception as exc:
        log.warning("admin_queues_broker_unavailable", error=repr(exc))
        raise AppError("The task broker did not answer.", code="broker_unavailable", status=503,
                       title="Service unavailable") from exc  # fmt: skip
    counts = await service.state_counts(session, now=now)
    dead = counts.pop("dead_total", 0)
    return QueueStats(
        queues=queues_, workers=workers, notifications_last_hour=counts, dead_letters=dead
    )
