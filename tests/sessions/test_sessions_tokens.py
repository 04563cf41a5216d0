"""Room names, grants and token minting, checked with the SDK's own TokenVerifier: every
grant asserted, the TTL ending with the join window (never the SDK's 6 h default)."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import jwt
import orjson
import pytest
from livekit.api import AccessToken, TokenVerifier

from sessions.tokens import grants_for, mint, room_name

KEY, SECRET = "k-test", "s-test-0123456789abcdef0123456789abcdef"
VERIFIER = TokenVerifier(KEY, SECRET)

# Every VideoGrants field we set, with its expected value per participant kind.
NOTHING_ELSE = {
    "room_create": False,
    "room_list": False,
    "room_record": False,
    "room_join": True,
    "can_subscribe": True,
    "can_publish_data": True,
    "can_update_own_metadata": False,
    "ingress_admin": False,
    "hidden": False,
    "recorder": False,
    "agent": False,
    "can_manage_agent_session": False,
    "can_subscribe_metrics": False,
    "destination_room": None,
    "can_publish_sources": None,
}


def verified(role: str, *, group: bool, publish: bool, closes_in_s: int = 3600) -> tuple:
    now = datetime.now(UTC).replace(microsecond=0)
    uid = uuid.uuid4()
    room = room_name(booking_id=uuid.uuid4(), slot_id=uuid.uuid4(), group=group)
    token = mint(
        api_key=KEY,
        api_secret=SECRET,
        identity=uid,
        name="Grace Hopper",
        role=role,  # type: ignore[arg-type]
        grants=grants_for(room=room, role=role, group=group, attendees_can_publish=publish),  # type: ignore[arg-type]
        metadata={"booking_id": "b1"},
        now=now,
        closes_at=now + timedelta(seconds=closes_in_s),
    )
    return uid, room, token, VERIFIER.verify(token.jwt), now


@pytest.mark.parametrize(
    ("role", "group", "publish", "expected"),
    [
        ("provider", False, False, {"room_admin": True, "can_publish": True}),
        ("student", False, False, {"room_admin": False, "can_publish": True}),
        ("provider", True, False, {"room_admin": True, "can_publish": True}),
        ("student", True, False, {"room_admin": False, "can_publish": False}),
        ("student", True, True, {"room_admin": False, "can_publish": True}),
    ],
)
def test_grants_are_explicit_and_verified(
    role: str, group: bool, publish: bool, expected: dict[str, bool]
) -> None:
    uid, room, token, claims, _now = verified(role, group=group, publish=publish)
    assert claims.identity == str(uid)
    assert claims.name == "Grace Hopper"
    assert orjson.loads(claims.metadata) == {"role": role, "booking_id": "b1"}
    assert claims.video is not None
    assert asdict(claims.video) == {**NOTHING_ELSE, **expected, "room": room}
    # the raw claims: issuer is our key, and the grants are really in the JWT (not SDK defaults)
    raw = jwt.decode(token.jwt, SECRET, algorithms=["HS256"], issuer=KEY)
    assert raw["video"]["canPublish"] is expected["can_publish"]
    assert raw["video"]["canSubscribe"] is True
    assert raw["video"]["roomJoin"] is True


def test_ttl_ends_with_the_window() -> None:
    _, _, token, _, now = verified("student", group=False, publish=False, closes_in_s=1800)
    raw = jwt.decode(token.jwt, SECRET, algorithms=["HS256"], issuer=KEY)
    assert raw["exp"] - raw["nbf"] == 1800  # not the SDK's 6 h
    assert token.expires_at == now + timedelta(seconds=1800)
    assert abs(raw["exp"] - token.expires_at.timestamp()) <= 1


def test_expired_or_foreign_tokens_do_not_verify() -> None:
    _, _, token, _, _ = verified("student", group=False, publish=False, closes_in_s=1)
    with pytest.raises(jwt.InvalidIssuerError):
        TokenVerifier("another-key", SECRET).verify(token.jwt)
    with pytest.raises(jwt.InvalidSignatureError):
        TokenVerifier(KEY, "another-secret-0123456789abcdef0123456").verify(token.jwt)
    # an expired token (past the SDK's 1 min leeway) is refused
    expired = AccessToken(KEY, SECRET).with_identity("u").with_ttl(timedelta(seconds=-120))
    with pytest.raises(jwt.ExpiredSignatureError):
        VERIFIER.verify(expired.to_jwt())


def test_closed_window_mints_nothing() -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="closed"):
        mint(
            api_key=KEY,
            api_secret=SECRET,
            identity=uuid.uuid4(),
            name="x",
            role="student",
            grants=grants_for(room="r", role="student", group=False, attendees_can_publish=False),
            metadata={},
            now=now,
            closes_at=now,
        )


def test_room_names() -> None:
    b, s = uuid.uuid4(), uuid.uuid4()
    assert room_name(booking_id=b, slot_id=s, group=False) == f"ec-booking-{b}"
    assert room_name(booking_id=b, slot_id=s, group=True) == f"ec-slot-{s}"
