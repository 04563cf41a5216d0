"""Video sessions: LiveKit tokens for confirmed bookings, LiveKit webhooks, attendance.

The token routes commit because the first token of a lesson records the room it
created; the webhook route commits the attendance row it stored.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request

from api.deps import CurrentUser, NowDep, ProviderUser, SessionDep
from api.errors import problem_responses
from sessions import service
from sessions.schemas import (
    AttendanceOut,
    SessionTokenOut,
    SlotSessionSettings,
    SlotSessionSettingsOut,
    WebhookAck,
)

router = APIRouter(tags=["sessions"])

_JOIN_DESCRIPTION = """A LiveKit access token for the caller's lesson, inside its join window.

Participants: the booking's student and its provider (a group class: every confirmed
attendee with its own booking; the provider with any booking of the slot). The window
opens `SESSION_JOIN_BEFORE_S` (900 s) before the start and closes
`SESSION_JOIN_AFTER_S` (900 s) after the end; the token expires when it closes.
The first token creates the LiveKit room (`max_participants` = capacity + 1).

Refusals (problem+json `code`): 404 `booking_not_found`; 403 `not_a_participant`;
409 `not_confirmed`, `too_early` (with `opens_at`), `session_over`; 503
`video_unavailable` (LiveKit not configured or not answering, with `Retry-After`)."""


@router.post(
    "/bookings/{booking_id}/session-token",
    response_model=SessionTokenOut,
    summary="Join a lesson: a LiveKit access token",
    description=_JOIN_DESCRIPTION,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def post_session_token(
    booking_id: uuid.UUID, user: CurrentUser, session: SessionDep, now: NowDep
) -> SessionTokenOut:
    """See the route description."""
    out = await service.issue_token(session, user=user, booking_id=booking_id, now=now)
    await session.commit()
    return out


@router.get(
    "/sessions/token",
    response_model=SessionTokenOut,
    summary="Join a lesson: a LiveKit access token (GET form)",
    description=_JOIN_DESCRIPTION,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def get_session_token(
    booking_id: Annotated[uuid.UUID, Query(description="The booking to join")],
    user: CurrentUser,
    session: SessionDep,
    now: NowDep,
) -> SessionTokenOut:
    """The same as `POST /bookings/{booking_id}/session-token`."""
    out = await service.issue_token(session, user=user, booking_id=booking_id, now=now)
    await session.commit()
    return out


@router.post(
    "/sessions/webhooks/livekit",
    response_model=WebhookAck,
    summary="LiveKit webhook receiver (participant joined/left → attendance)",
    responses=problem_responses(400, 401),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/webhook+json": {"schema": {"type": "object"}}},
        }
    },
)
async def livekit_webhook(
    request: Request,
    session: SessionDep,
    now: NowDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> WebhookAck:
    """Verified with the SDK's `WebhookReceiver` on the raw body: the `Authorization`
    header is LiveKit's JWT (our API key and secret) carrying the body's SHA-256.
    401 `invalid_webhook_signature` (nothing stored; also while LiveKit is not
    configured), 400 `malformed_webhook`; a
    participant event is stored once per event id (`result`: stored / duplicate /
    ignored), so LiveKit's retries are harmless."""
    body = await request.body()
    ack = await service.receive_webhook(session, body=body, authorization=authorization, now=now)
    await session.commit()
    return ack


@router.get(
    "/bookings/{booking_id}/attendance",
    response_model=AttendanceOut,
    summary="Who attended a lesson, and its outcome",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_attendance(
    booking_id: uuid.UUID, user: CurrentUser, session: SessionDep, now: NowDep
) -> AttendanceOut:
    """For the booking's student, the student's parent, its provider and admins (403
    `not_a_participant` otherwise): each side's presence during the lesson so far, the stored
    webhook events, and the outcome once settled (`completed` / `no_show` + `absent`)."""
    return await service.get_attendance(session, user=user, booking_id=booking_id, now=now)


@router.put(
    "/sessions/slots/{slot_id}/settings",
    response_model=SlotSessionSettingsOut,
    summary="A group class's video setting (may attendees publish?)",
    responses=problem_responses(401, 403, 404, 422),
)
async def put_slot_settings(
    slot_id: uuid.UUID, data: SlotSessionSettings, user: ProviderUser, session: SessionDep
) -> SlotSessionSettingsOut:
    """The slot's provider only (404 `slot_not_found` otherwise). Applies to tokens
    issued afterwards; default false (attendees subscribe and chat, only the provider
    publishes)."""
    out = await service.set_slot_settings(
        session, user=user, slot_id=slot_id, attendees_can_publish=data.attendees_can_publish
    )
    await session.commit()
    return out
