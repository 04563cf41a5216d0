"""Business rules of video sessions. No HTTP here.

Every function takes the caller's `AsyncSession` and never commits: the request or task
owning the unit of work commits. Times are timezone-aware UTC; callers pass `now` so
tests control the clock. LiveKit is reached through `sessions.livekit.LiveKitGateway`
(the official `livekit-api` SDK); tokens are signed with the SDK's `AccessToken`.

The join window of a booking is `[starts_at - SESSION_JOIN_BEFORE_S,
ends_at + SESSION_JOIN_AFTER_S)`; a token lives until the window closes.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import orjson
from google.protobuf.json_format import ParseError
from livekit.api import TokenVerifier, WebhookReceiver
from sqlalchemy.ext.asyncio import AsyncSession

from booking import service as booking_service
from core import outbox
from core.logging import get_logger
from core.settings import Settings, get_settings
from profiles import service as profiles_service
from profiles.models import User
from sessions import repository as repo
from sessions.errors import (
    BookingNotFound,
    InvalidWebhookSignature,
    MalformedWebhook,
    NotAParticipant,
    NotConfirmed,
    SessionOver,
    SlotNotFound,
    TooEarly,
    VideoUnavailable,
)
from sessions.livekit import LiveKitError, LiveKitGateway, RoomSpec
from sessions.schemas import (
    AttendanceEventOut,
    AttendanceOut,
    OutcomeOut,
    ParticipantPresence,
    SessionTokenOut,
    SlotSessionSettingsOut,
    WebhookAck,
)
from sessions.tokens import Role, grants_for, mint

log = get_logger(__name__)

PARTICIPANT_EVENTS = frozenset(
    {"participant_joined", "participant_left", "participant_connection_aborted"}
)
# Outbox events after which a booking no longer has a seat in its room.
SEAT_RELEASED_EVENTS = frozenset({"booking.canceled", "booking.refunded", "booking.expired"})
SETTLED_STATUSES = frozenset({"completed", "no_show"})


def _credentials(settings: Settings) -> tuple[str, str]:
    if not settings.livekit_api_key or not settings.livekit_api_secret:
        raise VideoUnavailable("Video sessions are not configured (LIVEKIT_API_KEY is unset).")
    return settings.livekit_api_key, settings.livekit_api_secret


def join_window(view: repo.BookingView, settings: Settings) -> tuple[datetime, datetime]:
    """`(opens_at, closes_at)` of the booking's join window (UTC)."""
    return (
        view.starts_at - timedelta(seconds=settings.session_join_before_s),
        view.ends_at + timedelta(seconds=settings.session_join_after_s),
    )


def _role_of(view: repo.BookingView, user_id: uuid.UUID) -> Role | None:
    if user_id == view.provider_id:
        return "provider"
    if user_id == view.student_id:
        return "student"
    return None


# --- tokens ---------------------------------------------------------------------------------


async def issue_token(
    session: AsyncSession,
    *,
    user: User,
    booking_id: uuid.UUID,
    now: datetime,
    settings: Settings | None = None,
) -> SessionTokenOut:
    """A LiveKit token for `user` in the lesson of `booking_id`, creating the room on the
    first token.

    Participants: the booking's student (a parent's child books through the parent, but
    joins as itself) and its provider; in a group class every confirmed attendee holds
    its own booking, and the provider may use any booking of the slot while one of them
    is confirmed. Checks, in order: 404 `booking_not_found`, 403 `not_a_participant`,
    409 `session_over` (already settled), 409 `not_confirmed`, 409 `too_early` (with
    `opens_at`), 409 `session_over` (window closed); then 503 `video_unavailable` when
    LiveKit is not configured or refused to create the room.

    The room (`ec-booking-<id>` or `ec-slot-<id>`) is created with `max_participants` =
    capacity + 1 and empty/departure timeouts lasting until the window closes, so
    LiveKit keeps it until the clean-up task deletes it.
    """
    s = settings or get_settings()
    view = await repo.booking_view(session, booking_id)
    if view is None:
        raise BookingNotFound(f"No booking {booking_id}.")
    role = _role_of(view, user.id)
    if role is None:
        raise NotAParticipant("Only the booking's student and its provider may join.")
    if view.status in SETTLED_STATUSES:
        raise SessionOver(f"This lesson is over (booking {view.status}).")
    confirmed = view.slot_confirmed > 0 if role == "provider" else view.status == "confirmed"
    if not confirmed:
        raise NotConfirmed(
            f"The booking is {view.status}, not confirmed.", booking_status=view.status
        )
    opens_at, closes_at = join_window(view, s)
    if now < opens_at:
        raise TooEarly(f"The room opens at {opens_at.isoformat()}.", opens_at=opens_at.isoformat())
    if now >= closes_at:
        raise SessionOver(f"The join window closed at {closes_at.isoformat()}.")
    api_key, api_secret = _credentials(s)
    if not view.room_live:
        await _create_room(session, view, opens_at=opens_at, closes_at=closes_at, now=now, s=s)
    name = view.provider_name if role == "provider" else view.student_name
    grants = grants_for(
        room=view.room,
        role=role,
        group=view.group,
        attendees_can_publish=view.attendees_can_publish,
    )
    scope = {"slot_id": str(view.slot_id)} if view.group else {"booking_id": str(view.id)}
    minted = mint(
        api_key=api_key,
        api_secret=api_secret,
        identity=user.id,
        name=name,
        role=role,
        grants=grants,
        metadata=scope,
        now=now,
        closes_at=closes_at,
    )
    return SessionTokenOut(
        url=s.livekit_url, token=minted.jwt, room=view.room, expires_at=minted.expires_at
    )


async def _create_room(
    session: AsyncSession,
    view: repo.BookingView,
    *,
    opens_at: datetime,
    closes_at: datetime,
    now: datetime,
    s: Settings,
) -> None:
    """CreateRoom (create-or-update, so two concurrent first tokens are harmless), then
    record the room; 503 `video_unavailable` when LiveKit fails."""
    keep_s = max(1, math.ceil((closes_at - now).total_seconds()))
    scope = {"slot_id": str(view.slot_id)} if view.group else {"booking_id": str(view.id)}
    spec = RoomSpec(
        name=view.room,
        empty_timeout_s=keep_s,
        departure_timeout_s=keep_s,
        max_participants=view.capacity + 1,
        metadata=orjson.dumps(scope).decode(),
    )
    try:
        async with LiveKitGateway.connect(s) as lk:
            sid = await lk.ensure_room(spec)
    except LiveKitError as exc:
        log.warning("livekit_create_room_failed", room=view.room, error=str(exc))
        raise VideoUnavailable(
            "The video service did not create the room; retry shortly.",
            headers={"Retry-After": "5"},
        ) from exc
    await repo.upsert_room(
        session,
        name=view.room,
        booking_id=None if view.group else view.id,
        slot_id=view.slot_id,
        max_participants=spec.max_participants,
        livekit_sid=sid,
        opens_at=opens_at,
        closes_at=closes_at,
    )


async def set_slot_settings(
    session: AsyncSession, *, user: User, slot_id: uuid.UUID, attendees_can_publish: bool
) -> SlotSessionSettingsOut:
    """Set whether a group class's attendees may publish (tokens issued from now on);
    404 `slot_not_found` when the slot is not the provider's."""
    if not await repo.set_attendees_can_publish(
        session, slot_id=slot_id, provider_id=user.id, value=attendees_can_publish
    ):
        raise SlotNotFound(f"No slot {slot_id} of yours.")
    return SlotSessionSettingsOut(slot_id=slot_id, attendees_can_publish=attendees_can_publish)


# --- webhooks -------------------------------------------------------------------------------


def _event_time(created_at: int, now: datetime) -> datetime:
    """The event's `createdAt` (unix seconds) as UTC; `now` when absent or out of range."""
    try:
        return datetime.fromtimestamp(created_at, UTC) if created_at > 0 else now
    except (OverflowError, OSError, ValueError):
        return now


async def receive_webhook(
    session: AsyncSession,
    *,
    body: bytes,
    authorization: str | None,
    now: datetime,
    settings: Settings | None = None,
) -> WebhookAck:
    """Verify and store one LiveKit webhook.

    Verification is the SDK's `WebhookReceiver`: the `Authorization` header is a JWT
    signed with our API secret (issuer = API key, not expired) whose `sha256` claim is
    the base64 SHA-256 of the raw body. Anything that fails is 401
    `invalid_webhook_signature` and nothing is stored; a verified body that is not a
    WebhookEvent is 400 `malformed_webhook`. Without LiveKit credentials nothing can be
    verified: 401 as well (logged). `participant_joined`/`_left`/
    `_connection_aborted` of our rooms are stored once per event id (`occurred_at` =
    the event's `createdAt`, in seconds); other events and rooms are acknowledged.
    """
    s = settings or get_settings()
    if not s.livekit_api_key or not s.livekit_api_secret:
        log.warning("livekit_webhook_unverifiable", reason="LIVEKIT_API_KEY is not set")
        raise InvalidWebhookSignature("LiveKit is not configured: no webhook can be verified.")
    api_key, api_secret = s.livekit_api_key, s.livekit_api_secret
    if not authorization:
        raise InvalidWebhookSignature("Missing Authorization header.")
    token = authorization.removeprefix("Bearer ").strip()
    try:
        text_body = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidWebhookSignature("The body is not UTF-8.") from exc
    receiver = WebhookReceiver(TokenVerifier(api_key, api_secret))
    try:
        event = receiver.receive(text_body, token)
    except ParseError as exc:
        raise MalformedWebhook(f"Not a LiveKit WebhookEvent: {exc}") from exc
    except Exception as exc:  # the SDK raises jwt errors and bare Exceptions
        log.warning("livekit_webhook_refused", error=str(exc))
        raise InvalidWebhookSignature("The webhook signature did not verify.") from exc
    event_id = event.id or "sha256:" + hashlib.sha256(body).hexdigest()
    if event.event not in PARTICIPANT_EVENTS or not event.room.name:
        return WebhookAck(event_id=event_id, event=event.event, result="ignored")
    identity = event.participant.identity
    try:
        user_id: uuid.UUID | None = uuid.UUID(identity)
    except ValueError:
        user_id = None
    result = await repo.insert_attendance(
        session,
        event_id=event_id,
        event=event.event,
        room=event.room.name,
        identity=identity,
        user_id=user_id,
        participant_sid=event.participant.sid,
        occurred_at=_event_time(int(event.created_at), now),
    )
    return WebhookAck(
        event_id=event_id,
        event=event.event,
        result="ignored" if result == "unknown_room" else result,
    )


# --- attendance -------------------------------------------------------------------------------


@dataclass(slots=True)
class Presence:
    """A participant's connected time clipped to the lesson `[starts_at, ends_at)`."""

    first_joined_at: datetime | None = None
    last_left_at: datetime | None = None
    present_s: float = 0.0
    intervals: list[tuple[datetime, datetime]] = field(default_factory=list)


def presence(
    events: Sequence[repo.AttendanceEvent],
    *,
    starts_at: datetime,
    ends_at: datetime,
    now: datetime,
) -> Presence:
    """Fold one participant's events (time order) into its presence.

    A participant is connected while at least one of its connections (participant sids)
    is open: a reconnect under a new sid before the old one's `participant_left` counts
    once. A connection still open counts until `now` (at most `ends_at`: LiveKit may
    never report the leave of a room deleted at the window's end). Seconds outside the
    lesson (the early join window, the grace after it) do not count.
    """
    p = Presence()
    open_sids: set[str] = set()
    since: datetime | None = None
    for e in events:
        if e.event == "participant_joined":
            p.first_joined_at = p.first_joined_at or e.occurred_at
            if not open_sids:
                since = e.occurred_at
            open_sids.add(e.participant_sid)
        else:
            p.last_left_at = e.occurred_at
            open_sids.discard(e.participant_sid)
            if not open_sids and since is not None:
                p.intervals.append((since, e.occurred_at))
                since = None
    if since is not None:
        p.intervals.append((since, max(since, min(ends_at, now))))
    for a, b in p.intervals:
        lo, hi = max(a, starts_at), min(b, ends_at, now)
        if hi > lo:
            p.present_s += (hi - lo).total_seconds()
    return p


async def get_attendance(
    session: AsyncSession, *, user: User, booking_id: uuid.UUID, now: datetime
) -> AttendanceOut:
    """The booking's attendance at `now` for its student, the student's parent, its
    provider or an admin (403 `not_a_participant` for anyone else, 404
    `booking_not_found`)."""
    view = await repo.booking_view(session, booking_id)
    if view is None:
        raise BookingNotFound(f"No booking {booking_id}.")
    allowed = (
        user.role == "admin"
        or _role_of(view, user.id) is not None
        or (
            user.role == "parent"
            and await profiles_service.is_parent_of(
                session, parent_id=user.id, child_id=view.student_id
            )
        )
    )
    if not allowed:
        raise NotAParticipant("Only the booking's participants and admins see its attendance.")
    events = await repo.attendance_events(
        session, room=view.room, user_ids=[view.student_id, view.provider_id]
    )
    participants = []
    for uid, role in ((view.provider_id, "provider"), (view.student_id, "student")):
        p = presence(
            [e for e in events if e.user_id == uid],
            starts_at=view.starts_at,
            ends_at=view.ends_at,
            now=now,
        )
        participants.append(
            ParticipantPresence(
                user_id=uid,
                role=role,
                first_joined_at=p.first_joined_at,
                last_left_at=p.last_left_at,
                present_s=int(p.present_s),
            )
        )
    outcome = await repo.get_outcome(session, view.id)
    return AttendanceOut(
        booking_id=view.id,
        room=view.room,
        starts_at=view.starts_at,
        ends_at=view.ends_at,
        participants=participants,
        events=[
            AttendanceEventOut(
                event_id=e.event_id,
                event=e.event,
                user_id=e.user_id,
                role="provider" if e.user_id == view.provider_id else "student",
                occurred_at=e.occurred_at,
            )
            for e in events
        ],
        outcome=None
        if outcome is None
        else OutcomeOut(
            outcome=outcome.outcome,
            absent=outcome.absent,
            decided_at=outcome.decided_at,
        ),
    )


# --- settlement -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settled:
    """One settled booking: `completed`, or `no_show` with `absent` ⊆ {student, provider}."""

    booking_id: uuid.UUID
    outcome: Literal["completed", "no_show"]
    absent: tuple[str, ...]


def decide(
    student: Presence, provider: Presence, *, min_presence_s: float
) -> tuple[Literal["completed", "no_show"], tuple[str, ...]]:
    """`completed` when both sides were present at least `min_presence_s` seconds during
    the lesson, else `no_show` naming the absent side(s) (provider first)."""
    absent = tuple(
        side
        for side, p in (("provider", provider), ("student", student))
        if p.present_s < min_presence_s or p.present_s <= 0
    )
    return ("no_show" if absent else "completed"), absent


async def settle_due(
    session: AsyncSession,
    *,
    now: datetime,
    settings: Settings | None = None,
    limit: int = 200,
) -> list[Settled]:
    """Settle the confirmed online bookings whose join window closed before `now`:
    store each outcome once (`session_outcomes`), move the booking to `completed` or
    `no_show` through the booking domain, and emit `session.completed` /
    `session.no_show` (payload: booking id, absent sides) for reviews and payouts.
    Bookings locked by a concurrent sweep are skipped, never settled twice."""
    s = settings or get_settings()
    done: list[Settled] = []
    for booking_id in await repo.bookings_to_settle(
        session, now=now, join_after_s=s.session_join_after_s, limit=limit
    ):
        view = await repo.booking_view(session, booking_id)
        if view is None:  # pragma: no cover - locked above
            continue
        events = await repo.attendance_events(
            session, room=view.room, user_ids=[view.student_id, view.provider_id]
        )
        student = presence(
            [e for e in events if e.user_id == view.student_id],
            starts_at=view.starts_at,
            ends_at=view.ends_at,
            now=now,
        )
        provider = presence(
            [e for e in events if e.user_id == view.provider_id],
            starts_at=view.starts_at,
            ends_at=view.ends_at,
            now=now,
        )
        outcome, absent = decide(student, provider, min_presence_s=s.session_min_presence_s)
        if not await repo.insert_outcome(
            session,
            booking_id=booking_id,
            outcome=outcome,
            absent=absent,
            student_present_s=int(student.present_s),
            provider_present_s=int(provider.present_s),
            decided_at=now,
        ):
            continue
        await _transition_booking(session, booking_id=booking_id, outcome=outcome, now=now)
        await outbox.emit(
            session,
            aggregate_type="booking",
            aggregate_id=str(booking_id),
            event_type=f"session.{outcome}",
            payload={"booking_id": str(booking_id), "absent": list(absent)},
        )
        done.append(Settled(booking_id, outcome, absent))
    return done


async def _transition_booking(
    session: AsyncSession, *, booking_id: uuid.UUID, outcome: str, now: datetime
) -> None:
    """Move the booking from `confirmed` to `outcome` through the booking domain (its
    state machine, audit row and `booking.<outcome>` event)."""
    await booking_service.record_session_outcome(
        session, booking_id=booking_id, outcome=outcome, now=now
    )


# --- room clean-up ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CloseResult:
    """What one clean-up of a room did: `deleted` (DeleteRoom succeeded now), `already`
    (deleted before, or unknown: nothing called), `failed` (LiveKit error recorded; the
    task retries), with the identities removed first."""

    room: str
    result: Literal["deleted", "already", "failed"]
    removed: tuple[str, ...] = ()
    error: str | None = None


async def close_room(
    session: AsyncSession, lk: LiveKitGateway, *, name: str, reason: str, now: datetime
) -> CloseResult:
    """Remove every participant from the room, delete it, and record it deleted.

    Idempotent: the room row is locked FOR UPDATE first, and a room already marked
    deleted is left alone, so two runs (a redelivered task, two sweeps) call DeleteRoom
    once. A LiveKit failure is recorded (`attempts`, `last_error`) and returned as
    `failed`; the caller commits that record and retries later.
    """
    state = await repo.lock_room(session, name)
    if state is None or state.deleted_at is not None:
        return CloseResult(name, "already")
    removed: list[str] = []
    try:
        for identity in await lk.participants(name):
            if await lk.remove_participant(name, identity):
                removed.append(identity)
        await lk.delete_room(name)
    except LiveKitError as exc:
        await repo.record_room_failure(session, name=name, error=str(exc))
        return CloseResult(name, "failed", tuple(removed), str(exc))
    await repo.mark_room_deleted(session, name=name, at=now, reason=reason)
    log.info("session_room_deleted", room=name, reason=reason, removed=len(removed))
    return CloseResult(name, "deleted", tuple(removed))


async def release_seats(
    session: AsyncSession, lk: LiveKitGateway, *, now: datetime, limit: int = 500
) -> tuple[int, list[CloseResult]] | None:
    """Read the outbox after this domain's checkpoint and act on released seats.

    For each `booking.canceled` / `.refunded` / `.expired` whose room is live: a 1:1
    room is closed (`close_room`, reason `canceled`); a group-class attendee is
    disconnected (the room stays for the others, and is closed by `rooms_to_close` once
    no attendee is left). The checkpoint advances in the same transaction, after the
    LiveKit calls, so a crash replays the batch (every action is idempotent).
    Returns (events read, close results), or None when another sweep holds the
    checkpoint.
    """
    position = await repo.lock_checkpoint(session)
    if position is None:
        return None
    events = await repo.outbox_after(session, position, limit)
    if not events:
        return 0, []
    ids: list[uuid.UUID] = []
    for e in events:
        if e.event_type in SEAT_RELEASED_EVENTS:
            raw = e.payload.get("booking_id") or e.aggregate_id
            try:
                ids.append(uuid.UUID(str(raw)))
            except ValueError:
                log.warning("sessions_outbox_bad_booking_id", event_id=e.id, value=raw)
    results: list[CloseResult] = []
    for seat in await repo.canceled_seats(session, ids):
        if seat.group:
            await lk.remove_participant(seat.room, str(seat.student_id))
        else:
            results.append(
                await close_room(session, lk, name=seat.room, reason="canceled", now=now)
            )
    last = events[-1]
    await repo.advance_checkpoint(session, (last.txid, last.id), len(events))
    return len(events), results
