"""SQL of the back-office (the only place with its queries). The pending-KYC list and
the audit trail read other domains' tables: they are reports, never writes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, literal, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from admin.models import Complaint, KycDocument


async def insert_document(session: AsyncSession, values: dict[str, Any]) -> KycDocument:
    """Insert a KYC document row and return it."""
    stmt = insert(KycDocument).values(**values).returning(KycDocument)
    return (await session.execute(stmt)).scalar_one()


async def documents_of(session: AsyncSession, user_id: uuid.UUID) -> list[KycDocument]:
    """The user's KYC documents, oldest first."""
    stmt = (
        select(KycDocument)
        .where(KycDocument.user_id == user_id)
        .order_by(KycDocument.created_at, KycDocument.id)
    )
    return list((await session.execute(stmt)).scalars().all())


async def pending_kyc(session: AsyncSession, *, limit: int) -> list[Any]:
    """Providers whose KYC is `pending`, those with documents first, then oldest
    update first: (user_id, display_name, kind, documents, updated_at)."""
    rows = await session.execute(
        text(
            "SELECT * FROM (SELECT p.user_id, p.display_name, p.kind,"
            " (SELECT count(*) FROM kyc_documents d WHERE d.user_id = p.user_id) AS documents,"
            " p.updated_at FROM provider_profiles p WHERE p.kyc_status = 'pending') k"
            " ORDER BY documents = 0, updated_at, user_id LIMIT :limit"
        ),
        {"limit": limit},
    )
    return list(rows.all())


async def insert_complaint(session: AsyncSession, values: dict[str, Any]) -> Complaint:
    """Insert a complaint and return it."""
    stmt = insert(Complaint).values(**values).returning(Complaint)
    return (await session.execute(stmt)).scalar_one()


async def get_complaint(
    session: AsyncSession, complaint_id: uuid.UUID, *, for_update: bool = False
) -> Complaint | None:
    """The complaint (row-locked with `for_update`), or None."""
    stmt = (
        select(Complaint)
        .where(Complaint.id == complaint_id)
        .execution_options(populate_existing=True)
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def update_complaint(
    session: AsyncSession, complaint_id: uuid.UUID, values: dict[str, Any]
) -> Complaint:
    """Set `values` on the complaint and return it."""
    stmt = (
        update(Complaint)
        .where(Complaint.id == complaint_id)
        .values(**values)
        .returning(Complaint)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one()


async def list_complaints(
    session: AsyncSession,
    *,
    status: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Complaint]:
    """Complaints in (created_at, id) order after the keyset `after`, of `status`."""
    conds = []
    if status is not None:
        conds.append(Complaint.status == status)
    if after is not None:
        conds.append(
            tuple_(Complaint.created_at, Complaint.id)
            > tuple_(literal(after[0]), literal(after[1]))
        )
    stmt = (
        select(Complaint)
        .where(and_(True, *conds))
        .order_by(Complaint.created_at, Complaint.id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars().all())


async def list_audit(
    session: AsyncSession,
    *,
    actor: uuid.UUID | None,
    entity_type: str | None,
    entity_id: str | None,
    start: datetime | None,
    end: datetime | None,
    before_id: int | None,
    limit: int,
) -> list[Any]:
    """Audit rows newest first (id descending, the insertion order), after the keyset
    `before_id`; filters: actor, entity type (and id), `at` in [start, end)."""
    conds = ["true"]
    params: dict[str, Any] = {"limit": limit}
    for name, value, cond in (
        ("actor", actor, "actor = :actor"),
        ("entity_type", entity_type, "entity_type = :entity_type"),
        ("entity_id", entity_id, "entity_id = :entity_id"),
        ("start", start, "at >= :start"),
        ("end", end, "at < :end"),
        ("before_id", before_id, "id < :before_id"),
    ):
        if value is not None:
            conds.append(cond)
            params[name] = value
    rows = await session.execute(
        text(
            "SELECT id, actor, action, entity_type, entity_id, before, after, at FROM audit_log"
            " WHERE " + " AND ".join(conds) + " ORDER BY id DESC LIMIT :limit"
        ),
        params,
    )
    return list(rows.all())
