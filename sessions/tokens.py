"""Room names, grants and LiveKit access tokens (pure functions, no I/O).

Built on the official SDK (`livekit.api.AccessToken`, `VideoGrants`). The SDK's defaults
are not ours: a 6 h TTL and `can_publish`/`can_subscribe`/`can_publish_data` true
(ANCHORS "Video"), so every grant is set explicitly here and the TTL is the time left
until the join window closes.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import orjson
from livekit.api import AccessToken, VideoGrants

Role = Literal["provider", "student"]

BOOKING_ROOM_PREFIX = "ec-booking-"
SLOT_ROOM_PREFIX = "ec-slot-"


def room_name(*, booking_id: uuid.UUID, slot_id: uuid.UUID, group: bool) -> str:
    """The LiveKit room of a lesson: one per booking (1:1, `ec-booking-<uuid>`) or one
    per slot for a group class (`ec-slot-<uuid>`, shared by every attendee)."""
    return f"{SLOT_ROOM_PREFIX}{slot_id}" if group else f"{BOOKING_ROOM_PREFIX}{booking_id}"


def grants_for(*, room: str, role: Role, group: bool, attendees_can_publish: bool) -> VideoGrants:
    """The video grants of one participant, every flag set explicitly.

    - provider: join, publish, subscribe, publish data, room admin (mute/remove others);
    - student of a 1:1: the same without room admin;
    - group-class attendee: subscribe and publish data; publish only when the slot's
      `attendees_can_publish` is on; never room admin.
    No one may create, list or record rooms, update their own metadata, or hide.
    """
    provider = role == "provider"
    return VideoGrants(
        room_create=False,
        room_list=False,
        room_record=False,
        room_admin=provider,
        room_join=True,
        room=room,
        can_publish=provider or not group or attendees_can_publish,
        can_subscribe=True,
        can_publish_data=True,
        can_update_own_metadata=False,
        ingress_admin=False,
        hidden=False,
        recorder=False,
        agent=False,
        can_manage_agent_session=False,
        can_subscribe_metrics=False,
    )


@dataclass(frozen=True, slots=True)
class MintedToken:
    """A signed LiveKit access token (JWT, HS256) and its expiry (UTC)."""

    jwt: str
    expires_at: datetime


def mint(
    *,
    api_key: str,
    api_secret: str,
    identity: uuid.UUID,
    name: str,
    role: Role,
    grants: VideoGrants,
    metadata: dict[str, str],
    now: datetime,
    closes_at: datetime,
) -> MintedToken:
    """Sign a token for `identity` (the user id) valid until `closes_at`.

    The TTL is `closes_at - now` rounded up to whole seconds (JWT times are seconds);
    the SDK stamps `nbf`/`exp` from the wall clock, so `exp` lands on `closes_at` (within
    a second) when `now` is the wall clock; `expires_at` is `closes_at`. Metadata is a JSON object with at least `role`.
    Raises `ValueError` when the window is already closed (`closes_at <= now`).
    """
    ttl_s = math.ceil((closes_at - now).total_seconds())
    if ttl_s <= 0:
        raise ValueError("the join window is closed")
    token = (
        AccessToken(api_key, api_secret)
        .with_identity(str(identity))
        .with_name(name)
        .with_metadata(orjson.dumps({"role": role, **metadata}).decode())
        .with_grants(grants)
        .with_ttl(timedelta(seconds=ttl_s))
    )
    return MintedToken(jwt=token.to_jwt(), expires_at=closes_at)
