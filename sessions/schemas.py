"""Request and response bodies of the sessions API (times RFC 3339 UTC)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SessionTokenOut(BaseModel):
    """A LiveKit access token for one participant of one lesson.

    `url`: the LiveKit server to connect to (`LIVEKIT_URL`); `token`: the JWT (HS256,
    identity = the user id, name = display name, metadata `{"role": ...}`, grants per
    role); `room`: the room name; `expires_at`: when the join window closes (the token's
    `exp`; a connected participant is removed by the clean-up task, not by expiry).
    """

    url: str
    token: str
    room: str
    expires_at: datetime


class SlotSessionSettings(BaseModel):
    """A group class's video setting: may attendees publish audio/video?"""

    model_config = ConfigDict(extra="forbid")

    attendees_can_publish: bool


class SlotSessionSettingsOut(SlotSessionSettings):
    """The slot's video setting after the change."""

    slot_id: uuid.UUID


class WebhookAck(BaseModel):
    """What a LiveKit webhook did: `stored` (a new attendance row), `duplicate` (this
    event id was stored before), `ignored` (another event type, or not our room)."""

    event_id: str
    event: str
    result: Literal["stored", "duplicate", "ignored"]


class AttendanceEventOut(BaseModel):
    """One stored participant event (`occurred_at`: LiveKit's event time)."""

    event_id: str
    event: Literal["participant_joined", "participant_left", "participant_connection_aborted"]
    user_id: uuid.UUID | None
    role: Literal["provider", "student"]
    occurred_at: datetime


class ParticipantPresence(BaseModel):
    """A participant's presence during the lesson: first join, last leave, and the
    seconds connected between `starts_at` and `ends_at` (overlapping connections once)."""

    user_id: uuid.UUID
    role: Literal["provider", "student"]
    first_joined_at: datetime | None
    last_left_at: datetime | None
    present_s: int = Field(ge=0)


class OutcomeOut(BaseModel):
    """The settled lesson: `completed` (both sides attended) or `no_show` with the absent
    side(s) in `absent`."""

    outcome: Literal["completed", "no_show"]
    absent: list[Literal["student", "provider"]]
    decided_at: datetime


class AttendanceOut(BaseModel):
    """A booking's attendance: its room, each side's presence, the raw events, and the
    outcome once settled (null before)."""

    booking_id: uuid.UUID
    room: str
    starts_at: datetime
    ends_at: datetime
    participants: list[ParticipantPresence]
    events: list[AttendanceEventOut]
    outcome: OutcomeOut | None
