"""A local stand-in of LiveKit's server API, for tests and `make run` (livekit-server is
not installable here).

It speaks the Twirp protocol the official SDK (`livekit.api.RoomService`) uses:
`POST /twirp/livekit.RoomService/<Method>` with a protobuf (`application/protobuf`) or
JSON (`application/json`) body, the request and response messages taken from the
`livekit-protocol` package's own `RoomService` descriptor (never hand-written), and
Twirp errors as JSON `{code, msg}` with the matching HTTP status. The caller's
`Authorization: Bearer <jwt>` is checked with the SDK's `TokenVerifier` and must carry
the grant the SDK asks for (`roomCreate` for CreateRoom/DeleteRoom, `roomList` for
ListRooms, `roomAdmin` on the same `room` for participant calls).

It keeps rooms and participants in memory. Clients do not speak WebRTC to it: a test
"connects" a participant with `POST /_standin/join {token}` — the access token our API
issued, verified like LiveKit does (signature, expiry, `roomJoin`, room name,
`max_participants`) — and disconnects it with `/_standin/leave`. Joins, leaves,
RemoveParticipant and DeleteRoom produce LiveKit webhooks, signed the way LiveKit signs
them (a JWT from the API key/secret, valid 5 min, whose `sha256` claim is the base64
SHA-256 of the body; sent as `Authorization`, `Content-Type: application/webhook+json`):
POSTed to `--webhook-url` when set, and returned to the caller either way.

Stand-in-only routes (`/_standin/…`): `join`, `leave`, `webhook` (sign any event),
`sign` (LiveKit's token for any body), `state` (rooms, participants and the count of
every API call), `reset`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from livekit.api import AccessToken, TokenVerifier, VideoGrants
from livekit.protocol import room as room_pb
from livekit.protocol.models import ParticipantInfo, ParticipantPermission, Room
from livekit.protocol.webhook import WebhookEvent

SERVICE = room_pb.DESCRIPTOR.services_by_name["RoomService"]
WEBHOOK_CONTENT_TYPE = "application/webhook+json"

# Twirp error codes → HTTP statuses (twitchtv/twirp errors.go).
_TWIRP_STATUS = {
    "invalid_argument": 400,
    "malformed": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
}


class TwirpFailure(Exception):
    """A Twirp error answer."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _id(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")


@dataclass
class _Room:
    info: Room
    participants: dict[str, ParticipantInfo] = field(default_factory=dict)


@dataclass
class Signed:
    """A signed webhook: the exact body bytes, its Authorization token, and the delivery
    status (`None` when no webhook URL is configured)."""

    event: str
    body: str
    authorization: str
    delivered: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "body": self.body,
            "authorization": self.authorization,
            "delivered": self.delivered,
        }


class LiveKitStandIn:
    """The stand-in's state and HTTP handlers (`app()` builds the aiohttp application)."""

    def __init__(self, api_key: str, api_secret: str, webhook_url: str | None = None) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.webhook_url = webhook_url
        self.verifier = TokenVerifier(api_key, api_secret)
        self.rooms: dict[str, _Room] = {}
        self.calls: Counter[str] = Counter()
        self._http: aiohttp.ClientSession | None = None

    # --- app -------------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application: Twirp RoomService plus the `/_standin` controls."""
        app = web.Application()
        app.router.add_get("/", self._root)
        app.router.add_post("/twirp/livekit.RoomService/{method}", self._twirp)
        app.router.add_post("/_standin/join", self._join)
        app.router.add_post("/_standin/leave", self._leave)
        app.router.add_post("/_standin/webhook", self._custom_webhook)
        app.router.add_post("/_standin/sign", self._sign)
        app.router.add_get("/_standin/state", self._state)
        app.router.add_post("/_standin/reset", self._reset)
        app.on_cleanup.append(self._close_http)
        return app

    async def _close_http(self, _: web.Application) -> None:
        if self._http is not None:
            await self._http.close()

    async def _root(self, _: web.Request) -> web.Response:
        return web.Response(text="OK")

    # --- Twirp -----------------------------------------------------------------------

    async def _twirp(self, request: web.Request) -> web.Response:
        method_name = request.match_info["method"]
        json_body = request.content_type == "application/json"
        try:
            method = SERVICE.methods_by_name.get(method_name)
            if method is None:
                raise TwirpFailure("bad_route", f"no method RoomService/{method_name}")
            if request.content_type not in ("application/json", "application/protobuf"):
                raise TwirpFailure("bad_route", f"unexpected Content-Type {request.content_type}")
            req = GetMessageClass(method.input_type)()
            raw = await request.read()
            try:
                if json_body:
                    json_format.Parse(raw.decode() or "{}", req)
                else:
                    req.ParseFromString(raw)
            except (DecodeError, json_format.ParseError, UnicodeDecodeError) as exc:
                raise TwirpFailure("malformed", f"cannot decode request: {exc}") from exc
            grants = self._authorize(request, method_name, req)
            handler = getattr(self, f"_rpc_{method_name}", None)
            if handler is None:
                raise TwirpFailure("unimplemented", f"{method_name} is not in the stand-in")
            self.calls[f"{method_name}:{getattr(req, 'room', '') or getattr(req, 'name', '')}"] += 1
            self.calls[method_name] += 1
            res: Message = await handler(req, grants)
        except TwirpFailure as exc:
            return web.json_response(
                {"code": exc.code, "msg": exc.msg}, status=_TWIRP_STATUS.get(exc.code, 500)
            )
        if json_body:
            return web.Response(
                text=json_format.MessageToJson(res), content_type="application/json"
            )
        return web.Response(body=res.SerializeToString(), content_type="application/protobuf")

    def _authorize(self, request: web.Request, method: str, req: Message) -> VideoGrants:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise TwirpFailure("unauthenticated", "missing bearer token")
        try:
            claims = self.verifier.verify(header.removeprefix("Bearer "))
        except Exception as exc:
            raise TwirpFailure("unauthenticated", f"invalid token: {exc}") from exc
        video = claims.video or VideoGrants()
        if method in ("CreateRoom", "DeleteRoom"):
            ok = bool(video.room_create)
        elif method == "ListRooms":
            ok = bool(video.room_list)
        else:
            ok = bool(video.room_admin) and video.room == getattr(req, "room", None)
        if not ok:
            raise TwirpFailure("permission_denied", f"{method}: the token lacks the grant")
        return video

    def _room(self, name: str) -> _Room:
        room = self.rooms.get(name)
        if room is None:
            raise TwirpFailure("not_found", f"room {name} not found")
        return room

    async def _rpc_CreateRoom(self, req: Any, _: VideoGrants) -> Room:
        if not req.name:
            raise TwirpFailure("invalid_argument", "room name is required")
        room = self.rooms.get(req.name)
        now = time.time()
        if room is None:
            room = _Room(
                Room(
                    sid=_id("RM_"),
                    name=req.name,
                    creation_time=int(now),
                    creation_time_ms=int(now * 1000),
                )
            )
            self.rooms[req.name] = room
        # create-or-update: the configuration of an existing room follows the request
        room.info.empty_timeout = req.empty_timeout
        room.info.departure_timeout = req.departure_timeout
        room.info.max_participants = req.max_participants
        room.info.metadata = req.metadata
        return room.info

    async def _rpc_ListRooms(self, req: Any, _: VideoGrants) -> Any:
        names = set(req.names)
        rooms = [r.info for n, r in sorted(self.rooms.items()) if not names or n in names]
        return room_pb.ListRoomsResponse(rooms=rooms)

    async def _rpc_DeleteRoom(self, req: Any, _: VideoGrants) -> Any:
        room = self._room(req.room)
        for identity in list(room.participants):
            await self._disconnect(room, identity, at=None)
        del self.rooms[req.room]
        await self._emit("room_finished", room.info, None, at=None)
        return room_pb.DeleteRoomResponse()

    async def _rpc_ListParticipants(self, req: Any, _: VideoGrants) -> Any:
        room = self._room(req.room)
        return room_pb.ListParticipantsResponse(participants=list(room.participants.values()))

    async def _rpc_GetParticipant(self, req: Any, _: VideoGrants) -> ParticipantInfo:
        p = self._room(req.room).participants.get(req.identity)
        if p is None:
            raise TwirpFailure("not_found", f"participant {req.identity} not found")
        return p

    async def _rpc_RemoveParticipant(self, req: Any, _: VideoGrants) -> Any:
        room = self._room(req.room)
        if req.identity not in room.participants:
            raise TwirpFailure("not_found", f"participant {req.identity} not found")
        await self._disconnect(room, req.identity, at=None)
        return room_pb.RemoveParticipantResponse()

    async def _rpc_UpdateRoomMetadata(self, req: Any, _: VideoGrants) -> Room:
        room = self._room(req.room)
        room.info.metadata = req.metadata
        return room.info

    # --- participants (stand-in controls) --------------------------------------------

    async def _join(self, request: web.Request) -> web.Response:
        """`{token, at?, sid?}` → connect the token's holder; 401 bad token, 403 no join
        grant for an existing room, 409 room full."""
        data = await request.json()
        try:
            claims = self.verifier.verify(str(data.get("token", "")))
        except Exception as exc:
            return web.json_response({"error": f"invalid token: {exc}"}, status=401)
        video = claims.video
        if video is None or not video.room_join or not video.room or not claims.identity:
            return web.json_response({"error": "the token has no roomJoin grant"}, status=403)
        room = self.rooms.get(video.room)
        if room is None:  # LiveKit auto-creates a room on join (default configuration)
            now = time.time()
            room = _Room(Room(sid=_id("RM_"), name=video.room, creation_time=int(now)))
            self.rooms[video.room] = room
        limit = room.info.max_participants
        if limit and claims.identity not in room.participants and len(room.participants) >= limit:
            return web.json_response({"error": "room is full"}, status=409)
        at = float(data["at"]) if data.get("at") is not None else time.time()
        replaced = []
        if claims.identity in room.participants:  # same identity again: the old one leaves
            replaced.append(await self._disconnect(room, claims.identity, at=at))
        p = ParticipantInfo(
            sid=str(data.get("sid") or _id("PA_")),
            identity=claims.identity,
            name=claims.name,
            metadata=claims.metadata,
            state=ParticipantInfo.ACTIVE,
            joined_at=int(at),
            joined_at_ms=int(at * 1000),
            permission=ParticipantPermission(
                can_subscribe=video.can_subscribe,
                can_publish=video.can_publish,
                can_publish_data=video.can_publish_data,
                hidden=bool(video.hidden),
                can_update_metadata=bool(video.can_update_own_metadata),
            ),
            kind=ParticipantInfo.STANDARD,
        )
        room.participants[claims.identity] = p
        room.info.num_participants = len(room.participants)
        signed = await self._emit("participant_joined", room.info, p, at=at)
        return web.json_response(
            {
                "participant": json_format.MessageToDict(p),
                "webhooks": [s.as_json() for s in (*replaced, signed)],
            }
        )

    async def _leave(self, request: web.Request) -> web.Response:
        """`{room, identity, at?}` → disconnect; 404 when not connected."""
        data = await request.json()
        room = self.rooms.get(str(data.get("room")))
        identity = str(data.get("identity"))
        if room is None or identity not in room.participants:
            return web.json_response({"error": "not connected"}, status=404)
        at = float(data["at"]) if data.get("at") is not None else time.time()
        signed = await self._disconnect(room, identity, at=at)
        return web.json_response({"webhooks": [signed.as_json()]})

    async def _disconnect(self, room: _Room, identity: str, *, at: float | None) -> Signed:
        p = room.participants.pop(identity)
        p.state = ParticipantInfo.DISCONNECTED
        room.info.num_participants = len(room.participants)
        return await self._emit("participant_left", room.info, p, at=at)

    async def _custom_webhook(self, request: web.Request) -> web.Response:
        """`{event, room, identity?, sid?, at?, id?}` → a signed webhook of any event."""
        data = await request.json()
        room = Room(name=str(data.get("room", "")))
        p = ParticipantInfo(identity=str(data.get("identity", "")), sid=str(data.get("sid", "")))
        at = float(data["at"]) if data.get("at") is not None else None
        signed = await self._emit(
            str(data["event"]), room, p, at=at, event_id=data.get("id") and str(data["id"])
        )
        return web.json_response({"webhooks": [signed.as_json()]})

    async def _sign(self, request: web.Request) -> web.Response:
        """The raw request body → `{authorization}`: LiveKit's signature of those bytes."""
        return web.json_response({"authorization": self.sign((await request.read()).decode())})

    # --- webhooks --------------------------------------------------------------------

    def sign(self, body: str) -> str:
        """The Authorization token LiveKit sends with `body`: a JWT from the API key and
        secret, valid 5 minutes, whose `sha256` claim is the base64 SHA-256 of the body."""
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        return (
            AccessToken(self.api_key, self.api_secret)
            .with_ttl(timedelta(minutes=5))
            .with_sha256(digest)
            .to_jwt()
        )

    async def _emit(
        self,
        event: str,
        room: Room,
        participant: ParticipantInfo | None,
        *,
        at: float | None,
        event_id: str | None = None,
    ) -> Signed:
        created = int(at if at is not None else time.time())
        msg = WebhookEvent(event=event, room=room, id=event_id or _id("EV_"), created_at=created)
        if participant is not None:
            msg.participant.CopyFrom(participant)
        body = json_format.MessageToJson(msg, indent=None)
        signed = Signed(event, body, self.sign(body))
        if self.webhook_url:
            signed.delivered = await self._deliver(body, signed.authorization)
        return signed

    async def _deliver(self, body: str, token: str) -> int:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        assert self.webhook_url is not None
        status = 0
        for _ in range(3):  # LiveKit retries failed deliveries
            try:
                async with self._http.post(
                    self.webhook_url,
                    data=body.encode(),
                    headers={"Authorization": token, "Content-Type": WEBHOOK_CONTENT_TYPE},
                ) as resp:
                    status = resp.status
                    if status < 500:
                        return status
            except aiohttp.ClientError:
                status = 0
        return status

    # --- inspection ------------------------------------------------------------------

    async def _state(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "rooms": {
                    name: {
                        "room": json_format.MessageToDict(r.info),
                        "participants": sorted(r.participants),
                    }
                    for name, r in sorted(self.rooms.items())
                },
                "calls": dict(self.calls),
            }
        )

    async def _reset(self, _: web.Request) -> web.Response:
        self.rooms.clear()
        self.calls.clear()
        return web.json_response({"ok": True})
