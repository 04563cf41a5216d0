"""Token primitives: JWT access tokens (HS256) and opaque refresh tokens.

Access tokens are short-lived JWTs signed with `SECRET_KEY`, carrying `sub` (user id),
`role`, `iat`, `exp` and `jti`; they are checked without a database round trip (the API
still loads the user to honour deactivation). Refresh tokens are random strings
(`secrets.token_urlsafe`, 256 bits) that the database only ever sees as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from core.errors import Unauthorized
from core.settings import get_settings

ALGORITHM = "HS256"
_BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class InvalidToken(Unauthorized):
    """401 `invalid_token`: the token is malformed, tampered with, revoked or unknown."""

    code = "invalid_token"
    title = "Invalid token"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail, headers=dict(_BEARER_CHALLENGE), **extra)


class TokenExpired(Unauthorized):
    """401 `token_expired`: the token was valid but its lifetime is over."""

    code = "token_expired"
    title = "Token expired"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail, headers=dict(_BEARER_CHALLENGE), **extra)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified claims of an access token."""

    user_id: uuid.UUID
    role: str
    jti: str
    issued_at: datetime
    expires_at: datetime


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def create_access_token(
    *, user_id: uuid.UUID, role: str, now: datetime | None = None, ttl_s: int | None = None
) -> str:
    """A signed JWT for `user_id` with `role`, valid `ttl_s` seconds from `now`.

    Defaults: `now` = the current time, `ttl_s` = `ACCESS_TOKEN_TTL_S` (900 s). Tests pass
    a past `now` to craft an expired token.
    """
    s = get_settings()
    issued = now or utcnow()
    ttl = s.access_token_ttl_s if ttl_s is None else ttl_s
    claims = {
        "sub": str(user_id),
        "role": role,
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(seconds=ttl)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, s.secret_key, algorithm=ALGORITHM)


def decode_access_token(token: str) -> AccessClaims:
    """Verify `token` (signature, `exp`, required claims) and return its claims.

    Raises `TokenExpired` when `exp` is past and `InvalidToken` for anything else wrong.
    """
    try:
        claims = jwt.decode(
            token,
            get_settings().secret_key,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "role", "exp", "iat", "jti"]},
        )
        return AccessClaims(
            user_id=uuid.UUID(str(claims["sub"])),
            role=str(claims["role"]),
            jti=str(claims["jti"]),
            issued_at=datetime.fromtimestamp(int(claims["iat"]), UTC),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
    except jwt.ExpiredSignatureError:
        raise TokenExpired("The access token has expired; refresh it.") from None
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise InvalidToken("The access token is not valid.") from None


def new_refresh_token() -> str:
    """A fresh opaque refresh token (43 URL-safe characters, 256 random bits)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """SHA-256 hex digest of `token`: what the database stores and looks up."""
    return hashlib.sha256(token.encode()).hexdigest()
