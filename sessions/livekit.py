"""The LiveKit server API as the sessions domain uses it (`livekit.api.LiveKitAPI`, the
Twirp RoomService): create-or-update a room, list and remove participants, delete a room.

One short-lived HTTP client per call site (`async with LiveKitGateway.connect(...)`):
these calls happen on a room's first token and in clean-up tasks, never per token.
Errors surface as `LiveKitError` (any Twirp error or transport failure), except the
`not_found` answers the clean-up treats as "already gone".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from livekit.api import LiveKitAPI, TwirpError
from livekit.protocol.room import (
    CreateRoomRequest,
    DeleteRoomRequest,
    ListParticipantsRequest,
    RoomParticipantIdentity,
)

from core.settings import Settings


class LiveKitError(Exception):
    """The LiveKit server refused or did not answer a call."""


@dataclass(frozen=True, slots=True)
class RoomSpec:
    """What a lesson's room is created with: `empty_timeout_s` and `departure_timeout_s`
    (seconds LiveKit keeps it without participants), `max_participants` (capacity + 1),
    `metadata` (JSON)."""

    name: str
    empty_timeout_s: int
    departure_timeout_s: int
    max_participants: int
    metadata: str


def _is_not_found(exc: TwirpError) -> bool:
    return exc.code == "not_found" or exc.status == 404


class LiveKitGateway:
    """A LiveKit server API client bound to one aiohttp session."""

    def __init__(self, api: LiveKitAPI) -> None:
        self._api = api

    @classmethod
    @asynccontextmanager
    async def connect(cls, settings: Settings) -> AsyncIterator[LiveKitGateway]:
        """A gateway on `LIVEKIT_URL` with the API key/secret; closed on exit.

        Region failover is off: a self-hosted server or the stand-in has one origin, and
        retries belong to the calling task (with backoff), not to one request.
        """
        if not settings.livekit_api_key or not settings.livekit_api_secret:
            raise LiveKitError("LIVEKIT_API_KEY / LIVEKIT_API_SECRET are not set")
        api = LiveKitAPI(
            settings.livekit_url,
            settings.livekit_api_key,
            settings.livekit_api_secret,
            timeout=aiohttp.ClientTimeout(total=settings.livekit_timeout_s),
            failover=False,
        )
        try:
            yield cls(api)
        finally:
            await api.aclose()

    async def ensure_room(self, spec: RoomSpec) -> str:
        """Create the room, or update it when it exists (`CreateRoom` is create-or-update
        by name); returns its server id (`sid`)."""
        try:
            room = await self._api.room.create_room(
                CreateRoomRequest(
                    name=spec.name,
                    empty_timeout=spec.empty_timeout_s,
                    departure_timeout=spec.departure_timeout_s,
                    max_participants=spec.max_participants,
                    metadata=spec.metadata,
                )
            )
        except (TwirpError, aiohttp.ClientError, TimeoutError) as exc:
            raise LiveKitError(f"CreateRoom {spec.name}: {exc}") from exc
        return str(room.sid)

    async def participants(self, room: str) -> list[str]:
        """Identities of the room's participants ([] when the room does not exist)."""
        try:
            res = await self._api.room.list_participants(ListParticipantsRequest(room=room))
        except TwirpError as exc:
            if _is_not_found(exc):
                return []
            raise LiveKitError(f"ListParticipants {room}: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LiveKitError(f"ListParticipants {room}: {exc}") from exc
        return [p.identity for p in res.participants]

    async def remove_participant(self, room: str, identity: str) -> bool:
        """Disconnect `identity` from `room`; False when it was not there."""
        try:
            await self._api.room.remove_participant(
                RoomParticipantIdentity(room=room, identity=identity)
            )
        except TwirpError as exc:
            if _is_not_found(exc):
                return False
            raise LiveKitError(f"RemoveParticipant {room}/{identity}: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LiveKitError(f"RemoveParticipant {room}/{identity}: {exc}") from exc
        return True

    async def delete_room(self, room: str) -> bool:
        """Delete the room (disconnecting everyone); False when it did not exist."""
        try:
            await self._api.room.delete_room(DeleteRoomRequest(room=room))
        except TwirpError as exc:
            if _is_not_found(exc):
                return False
            raise LiveKitError(f"DeleteRoom {room}: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LiveKitError(f"DeleteRoom {room}: {exc}") from exc
        return True
