"""The LiveKit stand-in over HTTP, driven by the official SDK: Twirp RoomService calls
(protobuf and JSON), token checks with the SDK's TokenVerifier, participants joining
with access tokens, and webhooks the SDK's WebhookReceiver accepts (and forgeries it
refuses)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import aiohttp
import httpx
import pytest
from livekit.api import (
    AccessToken,
    LiveKitAPI,
    TokenVerifier,
    TwirpError,
    VideoGrants,
    WebhookReceiver,
)
from livekit.protocol.room import (
    CreateRoomRequest,
    DeleteRoomRequest,
    ListParticipantsRequest,
    ListRoomsRequest,
    RoomParticipantIdentity,
)

from sessions.tokens import grants_for, mint
from tests.sessions.livekit_standin import (
    API_KEY,
    API_SECRET,
    StandIn,
    livekit_fixture,  # noqa: F401 - the `livekit` fixture
    livekit_server_fixture,  # noqa: F401 - the `livekit_server` fixture
    start_standin,
    stop_standin,
)

RECEIVER = WebhookReceiver(TokenVerifier(API_KEY, API_SECRET))


def api(standin: StandIn, secret: str = API_SECRET) -> LiveKitAPI:
    return LiveKitAPI(standin.url, API_KEY, secret, failover=False)


def join_token(room: str, identity: uuid.UUID | None = None, *, minutes: int = 10) -> str:
    now = datetime.now(UTC)
    return mint(
        api_key=API_KEY,
        api_secret=API_SECRET,
        identity=identity or uuid.uuid4(),
        name="Ada",
        role="student",
        grants=grants_for(room=room, role="student", group=False, attendees_can_publish=False),
        metadata={},
        now=now,
        closes_at=now + timedelta(minutes=minutes),
    ).jwt


async def test_create_room_is_create_or_update(livekit: StandIn) -> None:
    async with api(livekit) as lk:
        first = await lk.room.create_room(
            CreateRoomRequest(name="r1", empty_timeout=600, max_participants=2, metadata="{}")
        )
        again = await lk.room.create_room(CreateRoomRequest(name="r1", max_participants=5))
        rooms = await lk.room.list_rooms(ListRoomsRequest(names=["r1"]))
    assert first.sid.startswith("RM_")
    assert again.sid == first.sid
    assert (first.max_participants, first.empty_timeout) == (2, 600)
    assert [(r.name, r.max_participants) for r in rooms.rooms] == [("r1", 5)]
    assert livekit.state()["calls"]["CreateRoom:r1"] == 2


async def test_participants_remove_and_delete(livekit: StandIn) -> None:
    async with api(livekit) as lk:
        await lk.room.create_room(CreateRoomRequest(name="r2", max_participants=2))
        who = uuid.uuid4()
        joined = livekit.join(join_token("r2", who))
        assert joined.status_code == 200
        listed = await lk.room.list_participants(ListParticipantsRequest(room="r2"))
        assert [p.identity for p in listed.participants] == [str(who)]
        assert listed.participants[0].permission.can_publish is True
        await lk.room.remove_participant(RoomParticipantIdentity(room="r2", identity=str(who)))
        with pytest.raises(TwirpError) as missing:
            await lk.room.remove_participant(RoomParticipantIdentity(room="r2", identity=str(who)))
        assert (missing.value.code, missing.value.status) == ("not_found", 404)
        await lk.room.delete_room(DeleteRoomRequest(room="r2"))
        with pytest.raises(TwirpError) as gone:
            await lk.room.delete_room(DeleteRoomRequest(room="r2"))
        assert gone.value.code == "not_found"
    assert livekit.state()["rooms"] == {}


def test_twirp_json_content_type(livekit: StandIn) -> None:
    token = AccessToken(API_KEY, API_SECRET).with_grants(VideoGrants(room_create=True)).to_jwt()
    r = httpx.post(
        f"{livekit.http_url}/twirp/livekit.RoomService/CreateRoom",
        json={"name": "json-room", "maxParticipants": 3},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["name"] == "json-room"
    assert r.json()["maxParticipants"] == 3


async def test_refuses_bad_tokens_and_missing_grants(livekit: StandIn) -> None:
    ahttp = httpx.AsyncClient()
    async with api(livekit, secret="another-secret-0123456789abcdef0123456789") as forged:
        with pytest.raises(TwirpError) as bad:
            await forged.room.create_room(CreateRoomRequest(name="x"))
    assert (bad.value.code, bad.value.status) == ("unauthenticated", 401)
    # a participant's join token may not administer rooms
    token = join_token("x")
    r = await ahttp.post(
        f"{livekit.http_url}/twirp/livekit.RoomService/CreateRoom",
        content=CreateRoomRequest(name="x").SerializeToString(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/protobuf"},
    )
    assert r.status_code == 403
    assert r.json()["code"] == "permission_denied"
    # roomAdmin on another room does not cover this one
    admin_other = (
        AccessToken(API_KEY, API_SECRET)
        .with_grants(VideoGrants(room_admin=True, room="other"))
        .to_jwt()
    )
    r = await ahttp.post(
        f"{livekit.http_url}/twirp/livekit.RoomService/ListParticipants",
        json={"room": "x"},
        headers={"Authorization": f"Bearer {admin_other}"},
    )
    assert r.status_code == 403
    await ahttp.aclose()
    assert livekit.state()["calls"] == {}


async def test_join_checks_token_and_capacity(livekit: StandIn) -> None:
    async with api(livekit) as lk:
        await lk.room.create_room(CreateRoomRequest(name="small", max_participants=1))
    assert livekit.join(join_token("small")).status_code == 200
    assert livekit.join(join_token("small")).status_code == 409  # full
    forged = (
        AccessToken(API_KEY, "x" * 40)
        .with_identity("u")
        .with_grants(VideoGrants(room_join=True, room="small"))
    )
    assert livekit.join(forged.to_jwt()).status_code == 401


def test_webhooks_verify_with_the_sdk_receiver(livekit: StandIn) -> None:
    at = datetime(2030, 3, 4, 10, 0, tzinfo=UTC).timestamp()
    signed = livekit.webhook(
        event="participant_joined", room="r", identity="alice", sid="PA_1", at=at, id="EV_1"
    )
    event = RECEIVER.receive(signed["body"], signed["authorization"])
    assert (event.event, event.id, event.room.name) == ("participant_joined", "EV_1", "r")
    assert (event.participant.identity, event.participant.sid) == ("alice", "PA_1")
    assert event.created_at == int(at)
    # the body hash is in the token: any change to the body is refused
    tampered = signed["body"].replace("alice", "mallory")
    with pytest.raises(Exception, match="hash mismatch"):
        RECEIVER.receive(tampered, signed["authorization"])
    # a token signed with another secret is refused
    other = WebhookReceiver(TokenVerifier(API_KEY, "y" * 40))
    with pytest.raises(Exception, match="Signature"):
        other.receive(signed["body"], signed["authorization"])


class _Capture(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.received.append((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def capture() -> Iterator[tuple[str, list[tuple[dict[str, str], str]]]]:
    server = HTTPServer(("127.0.0.1", 0), _Capture)
    _Capture.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Capture.received
    server.shutdown()
    thread.join(timeout=5)


async def test_delivers_signed_webhooks_to_the_configured_url(
    capture: tuple[str, list[tuple[dict[str, str], str]]],
) -> None:
    url, received = capture
    standin = start_standin(["--webhook-url", url])
    try:
        async with aiohttp.ClientSession() as http:
            lk = LiveKitAPI(standin.url, API_KEY, API_SECRET, session=http, failover=False)
            await lk.room.create_room(CreateRoomRequest(name="hooked", max_participants=2))
            who = uuid.uuid4()
            res = standin.join(join_token("hooked", who)).json()
            await lk.room.delete_room(DeleteRoomRequest(room="hooked"))
    finally:
        stop_standin(standin)
    assert res["webhooks"][0]["delivered"] == 200
    events = []
    for headers, body in received:
        assert headers["Content-Type"] == "application/webhook+json"
        events.append(RECEIVER.receive(body, headers["Authorization"]))
    assert [(e.event, e.participant.identity) for e in events] == [
        ("participant_joined", str(who)),
        ("participant_left", str(who)),
        ("room_finished", ""),
    ]
    assert len({e.id for e in events}) == 3
    assert json.loads(received[0][1])["room"]["name"] == "hooked"
