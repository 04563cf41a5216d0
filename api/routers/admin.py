"""Administration: list accounts, change roles and activation (audited)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api.deps import AdminUser, NowDep, SessionDep
from api.errors import problem_responses
from profiles import service
from profiles.schemas import AdminUserPatch, Role, UserOut, UserPage

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get(
    "/users",
    response_model=UserPage,
    summary="List accounts (admin)",
    responses=problem_responses(401, 403, 422),
)
async def list_users(
    user: AdminUser,
    session: SessionDep,
    role: Role | None = None,
    kyc_status: Literal["pending", "verified", "rejected"] | None = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Substring of the email or name")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> UserPage:
    """Accounts in a stable order; follow `next_cursor` for the next page. `kyc_status`
    keeps providers whose profile has that KYC status."""
    return await service.list_users(
        session, role=role, q=q, cursor=cursor, limit=limit, kyc_status=kyc_status
    )


@router.patch(
    "/users/{user_id}",
    response_model=UserOut,
    summary="Change an account's role or deactivate/reactivate it (admin, audited)",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def update_user(
    user_id: uuid.UUID, data: AdminUserPatch, user: AdminUser, session: SessionDep, now: NowDep
) -> UserOut:
    """Writes an `audit_log` row per change. Deactivating revokes the account's refresh
    tokens and removes a provider from search (`provider.deactivated` outbox event)."""
    updated = await service.admin_update_user(
        session, actor=user, user_id=user_id, patch=data, now=now
    )
    await session.commit()
    return UserOut.model_validate(updated)
