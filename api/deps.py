"""Request dependencies: the database session, the clock, the current user and roles.

`SessionDep` is one `AsyncSession` per request; handlers of writes call
`await session.commit()` themselves (the request owns the unit of work), and anything
not committed is rolled back when the session closes — also when a handler raised.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import async_session_factory
from core.errors import Forbidden
from core.redis import get_async_redis
from core.security import AccessClaims, InvalidToken, decode_access_token, utcnow
from core.settings import get_settings
from profiles import repository as users_repo
from profiles.models import PROVIDER_ROLES, User

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/login", auto_error=False)


async def get_session() -> AsyncIterator[AsyncSession]:
    """One session per request, closed (uncommitted work rolled back) when it ends."""
    async with async_session_factory()() as session:
        yield session


TEST_NOW_HEADER = "X-Test-Now"


async def get_now(request: Request) -> datetime:
    """The request's clock (UTC); tests override this dependency to move time.

    A coroutine, though it awaits nothing: FastAPI runs a plain function dependency in
    its thread pool, a thread hand-off on every request.

    With `ENV=test` only, an `X-Test-Now` header (RFC 3339 with an offset) sets it: the
    browser tests move the pages' clock (hold countdowns, the join window) this way. In any
    other environment the header is ignored.
    """
    if get_settings().env == "test":
        raw = request.headers.get(TEST_NOW_HEADER)
        if raw:
            try:
                moved = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                moved = None
            if moved is not None and moved.tzinfo is not None:
                return moved.astimezone(UTC)
    return utcnow()


async def get_redis() -> aioredis.Redis:
    """The process's async Redis client (a coroutine, like `get_now`)."""
    return get_async_redis()


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
NowDep = Annotated[datetime, Depends(get_now)]
RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]


def remember_claims(request: Request, token: str, claims: AccessClaims) -> None:
    """Keep the verified claims of `token` on the request, so that a layer that already
    verified it (the Idempotency-Key glue) spares `get_current_user` a second check."""
    request.state.access_claims = (token, claims)


async def get_current_user(
    request: Request, session: SessionDep, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> User:
    """The active account of the bearer access token.

    The token is verified once per request (claims kept by `remember_claims` are reused);
    the account is read from the database on every request, so a deactivated account is
    refused at once, not only when its token expires.

    Raises 401 `invalid_token` (missing, malformed or unknown) or `token_expired`.
    """
    if not token:
        raise InvalidToken("Authentication required: send 'Authorization: Bearer <token>'.")
    known = getattr(request.state, "access_claims", None)
    claims = known[1] if known is not None and known[0] == token else decode_access_token(token)
    user = await users_repo.get_user(session, claims.user_id)
    if user is None or not user.active:
        raise InvalidToken("The account of this token does not exist or is deactivated.")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_role(*roles: str) -> Callable[[User], Awaitable[User]]:
    """A dependency returning the current user when its role is one of `roles`, else
    raising 403 `forbidden`."""
    allowed = frozenset(roles)

    async def _check(user: CurrentUser) -> User:
        if user.role not in allowed:
            raise Forbidden(f"This operation is reserved to: {', '.join(sorted(allowed))}.")
        return user

    return _check


ProviderUser = Annotated[User, Depends(require_role(*PROVIDER_ROLES))]
ParentUser = Annotated[User, Depends(require_role("parent"))]
AdminUser = Annotated[User, Depends(require_role("admin"))]
