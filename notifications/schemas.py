"""Pydantic shapes of the notifications API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from notifications.catalog import KINDS

Kind = Literal[KINDS]  # type: ignore[valid-type]
ChannelName = Literal["email", "sms", "push", "in_app"]
Platform = Literal["web", "android", "ios"]
# FCM registration tokens: URL-safe base64 with `:` separators (what the SDKs issue)
PUSH_TOKEN_PATTERN = r"^[A-Za-z0-9_:\-]+$"  # noqa: S105 - a pattern, not a secret
PUSH_TOKEN_MAX_LENGTH = 4096


class NotificationOut(BaseModel):
    """An in-app notification: `title` and `body` in the recipient's language; `data`
    holds the ids it is about (`booking_id`, …); `read_at` null while unread."""

    id: uuid.UUID
    kind: str
    title: str
    body: str
    data: dict[str, Any]
    created_at: datetime
    read_at: datetime | None

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> NotificationOut:
        data = {k: v for k, v in (r["data"] or {}).items() if k != "short"}
        return cls(id=r["id"], kind=r["kind"], title=r["subject"], body=r["body_text"],
                   data=data, created_at=r["created_at"], read_at=r["read_at"])  # fmt: skip


class NotificationPage(BaseModel):
    """A page of the inbox, newest first; `next_cursor` null on the last page."""

    items: list[NotificationOut]
    next_cursor: str | None


class PreferenceItem(BaseModel):
    """Whether `kind` is sent on `channel`; `locked` (read-only) for transactional email."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    channel: ChannelName
    enabled: bool
    locked: bool = Field(default=False, description="Read-only: cannot be turned off")


class Preferences(BaseModel):
    """Every (kind, channel) pair with its effective setting."""

    items: list[PreferenceItem]


class PreferencesIn(BaseModel):
    """The choices to change (pairs not listed keep their setting)."""

    model_config = ConfigDict(extra="forbid")

    items: list[PreferenceItem] = Field(max_length=len(KINDS) * 4)


class DeadLetterOut(BaseModel):
    """A notification that exhausted its attempts or failed permanently."""

    id: uuid.UUID
    user_id: uuid.UUID
    kind: str
    channel: str
    address: str | None
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class DeadLetterPage(BaseModel):
    """Dead letters, most recently dead first."""

    items: list[DeadLetterOut]
    next_cursor: str | None


class RequeueIn(BaseModel):
    """Which dead letters to re-queue: `ids`, or all of them (up to 1,000) when null."""

    model_config = ConfigDict(extra="forbid")

    ids: list[uuid.UUID] | None = Field(default=None, max_length=1000)


class RequeueOut(BaseModel):
    """The ids moved back to `queued` (their delivery is enqueued)."""

    requeued: list[uuid.UUID]


class QueueStats(BaseModel):
    """Celery and notification health: `queues` = messages waiting per Celery queue,
    `workers` = worker names that answered a ping (0.5 s), `notifications_last_hour` =
    notifications per state updated in the last hour, `dead_letters` = all dead rows."""

    queues: dict[str, int]
    workers: list[str]
    notifications_last_hour: dict[str, int]
    dead_letters: int


class PushDeviceIn(BaseModel):
    """A device's FCM registration token to send push notifications to."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"token": "fGw0qy4TGgk:APA91bH-example-registration-token", "platform": "android"}
            ]
        },
    )

    token: str = Field(
        min_length=1,
        max_length=PUSH_TOKEN_MAX_LENGTH,
        pattern=PUSH_TOKEN_PATTERN,
        description="The FCM registration token the app got from Firebase Messaging",
    )
    platform: Platform = "web"


class PushDeviceOut(BaseModel):
    """A registered push device of the caller."""

    token: str
    platform: Platform
    created_at: datetime


class ContactIn(BaseModel):
    """Where and when to reach the caller: `phone` (E.164, for SMS; null removes it) and
    `time_zone` (IANA name; times in notifications are shown in it). Both are replaced."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"phone": "+33612345678", "time_zone": "Europe/Paris"}]},
    )

    phone: str | None = Field(
        default=None,
        max_length=32,
        description="E.164: `+`, the country code and the number, 8 to 16 characters",
        examples=["+33612345678"],
    )
    time_zone: str = Field(
        min_length=1, max_length=64, description="IANA time zone", examples=["Europe/Paris"]
    )


class ContactOut(BaseModel):
    """The caller's contact points: phone (null when none), time zone, push devices
    (oldest first). Which kinds go to which channel: `/me/notification-preferences`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "phone": "+33612345678",
                    "time_zone": "Europe/Paris",
                    "push_devices": [
                        {
                            "token": "fGw0qy4TGgk:APA91bH-example-registration-token",
                            "platform": "android",
                            "created_at": "2026-12-05T09:30:00Z",
                        }
                    ],
                }
            ]
        }
    )

    phone: str | None
    time_zone: str
    push_devices: list[PushDeviceOut]
