"""Pydantic shapes of the notifications API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from notifications.catalog import KINDS

Kind = Literal[KINDS]  # type: ignore[valid-type]
ChannelName = Literal["email", "sms", "push", "in_app"]


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
