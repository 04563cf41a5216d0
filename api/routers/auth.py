"""Accounts: sign-up, OAuth2 password login, refresh-token rotation, logout, `/me`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from api.deps import CurrentUser, NowDep, ParentUser, RedisDep, SessionDep
from api.errors import problem_responses
from profiles import service
from profiles.errors import RefreshTokenReused
from profiles.schemas import ChildIn, RefreshIn, RegisterIn, TokenOut, UserOut

router = APIRouter(tags=["accounts"])
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _tokens(issued: service.IssuedTokens, response: Response) -> TokenOut:
    response.headers.update(_NO_STORE)
    return TokenOut(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
        refresh_expires_in=issued.refresh_expires_in,
    )


@router.post(
    "/auth/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    summary="Create an account (student, parent, tutor, coach or mentor)",
    responses=problem_responses(409, 422),
)
async def register(data: RegisterIn, session: SessionDep) -> UserOut:
    """Sign up; then log in with `/auth/login`. 409 `email_taken` when the email is used."""
    user = await service.register(session, data=data)
    await session.commit()
    return UserOut.model_validate(user)


@router.post(
    "/auth/login",
    response_model=TokenOut,
    summary="Log in (OAuth2 password flow: form fields `username` = email, `password`)",
    responses=problem_responses(401, 403, 422, 429),
)
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    response: Response,
    session: SessionDep,
    redis: RedisDep,
    now: NowDep,
) -> TokenOut:
    """A 15-minute access token (JWT) and a 30-day rotating refresh token.

    401 `invalid_credentials`; 403 `account_disabled`; 429 `too_many_login_attempts`
    with `Retry-After` (seconds) after too many failures for the account or attempts from
    the address.
    """
    ip = request.client.host if request.client else "unknown"
    issued = await service.login(
        session, redis, email=form.username, password=form.password, ip=ip, now=now
    )
    await session.commit()
    return _tokens(issued, response)


@router.post(
    "/auth/refresh",
    response_model=TokenOut,
    summary="Exchange a refresh token for new tokens (the old one stops working)",
    responses=problem_responses(401, 422),
)
async def refresh(
    data: RefreshIn, response: Response, session: SessionDep, now: NowDep
) -> TokenOut:
    """Rotate the refresh token. Presenting an already rotated token again revokes its
    whole family (401 `refresh_token_reused`): a stolen copy and the legitimate one both
    stop working. 401 `token_expired` / `invalid_token` otherwise."""
    outcome = await service.refresh(session, refresh_token=data.refresh_token, now=now)
    await session.commit()
    if isinstance(outcome, service.ReuseDetected):
        raise RefreshTokenReused(
            "This refresh token was already used; every session of this login is revoked."
        )
    return _tokens(outcome, response)


@router.post(
    "/auth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a refresh token and its whole family",
    responses=problem_responses(422),
)
async def logout(data: RefreshIn, session: SessionDep, now: NowDep) -> None:
    """Always 204 (unknown tokens included). Access tokens expire on their own (≤ 15 min)."""
    await service.logout(session, refresh_token=data.refresh_token, now=now)
    await session.commit()


@router.get(
    "/me", response_model=UserOut, summary="The current account", responses=problem_responses(401)
)
async def me(user: CurrentUser) -> UserOut:
    """The account of the bearer token."""
    return UserOut.model_validate(user)


@router.get(
    "/me/children",
    response_model=list[UserOut],
    summary="A parent's linked children",
    responses=problem_responses(401, 403),
)
async def my_children(user: ParentUser, session: SessionDep) -> list[UserOut]:
    """The child (student) accounts linked to the parent."""
    return await service.list_children(session, parent=user)


@router.post(
    "/me/children",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    summary="Create a child (student) account linked to the parent",
    responses=problem_responses(401, 403, 409, 422),
)
async def add_child(data: ChildIn, user: ParentUser, session: SessionDep) -> UserOut:
    """A parent creates a student account for a child; 409 `email_taken`."""
    child = await service.create_child(session, parent=user, data=data)
    await session.commit()
    return UserOut.model_validate(child)
