"""Back-office rules: KYC documents and decisions, account activation, complaints and
the audit trail. No HTTP; never commits. Every admin action writes an audit row with
before/after (`core.audit`) in the same transaction."""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from admin import repository as repo
from admin.errors import (
    ComplaintNotFound,
    InvalidComplaintTransition,
    NotParticipant,
    PayloadTooLarge,
    ProviderNotFound,
    RefundTooLarge,
    SelfAction,
    UnsupportedMediaType,
    UserNotFound,
)
from admin.models import Complaint
from admin.schemas import (
    AuditOut,
    AuditPage,
    ComplaintIn,
    ComplaintOut,
    ComplaintPage,
    ComplaintPatch,
    KycDecisionIn,
    KycDecisionOut,
    KycDocumentOut,
    PendingKyc,
)
from booking import service as booking
from core import audit, outbox
from core.settings import get_settings
from core.storage import Storage
from credits import service as credits
from payments import service as payments
from profiles import service as profiles
from profiles.errors import field_errors
from profiles.models import User
from profiles.schemas import AdminUserPatch, UserOut

# Magic bytes (file signatures) of the accepted uploads: the declared Content-Type is
# not trusted. PDF: ISO 32000 `%PDF-`; JPEG: SOI + a marker (FF D8 FF); PNG: the 8-byte
# signature of RFC 2083 §3.1.
_SIGNATURES: tuple[tuple[bytes, str, str], ...] = (
    (b"%PDF-", "application/pdf", "pdf"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
)


def sniff(data: bytes) -> tuple[str, str] | None:
    """(content type, extension) of `data` by its magic bytes, or None when it is not a
    PDF, JPEG or PNG."""
    for magic, content_type, ext in _SIGNATURES:
        if data.startswith(magic):
            return content_type, ext
    return None


# --- KYC ------------------------------------------------------------------------------


async def upload_kyc_document(
    session: AsyncSession,
    storage: Storage,
    *,
    actor: User,
    doc_type: str,
    data: bytes,
    now: datetime,
) -> KycDocumentOut:
    """Store a provider's identity document (bytes in `storage` under
    `kyc/{user_id}/{id}.{ext}`, the row here). Raises 413 `payload_too_large` above
    `KYC_MAX_BYTES`, 415 `unsupported_media_type` unless PDF/JPEG/PNG by magic bytes, 404
    `provider_not_found` without a provider profile. The bytes are written before the
    row commits: a rollback leaves an unreferenced object, never a row without bytes."""
    limit = get_settings().kyc_max_bytes
    if len(data) > limit:
        raise PayloadTooLarge(f"The file exceeds {limit} bytes.", max_bytes=limit)
    kind = sniff(data)
    if kind is None:
        raise UnsupportedMediaType(
            "Upload a PDF, JPEG or PNG file (its content is checked, not its name).",
            accepted=[c for _, c, _ in _SIGNATURES],
        )
    if await profiles.provider_kind(session, provider_id=actor.id) is None:
        raise ProviderNotFound("Create your provider profile first.")
    content_type, ext = kind
    doc_id = uuid.uuid4()
    key = f"kyc/{actor.id}/{doc_id}.{ext}"
    storage.put(key, data, content_type=content_type)
    row = await repo.insert_document(
        session,
        {
            "id": doc_id, "user_id": actor.id, "doc_type": doc_type,
            "content_type": content_type, "size_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "storage_key": key, "created_at": now,
        },
    )  # fmt: skip
    await audit.record(
        session, actor=actor.id, action="kyc.document_uploaded", entity_type="kyc_document",
        entity_id=str(row.id), before=None,
        after={"doc_type": doc_type, "content_type": content_type, "size_bytes": len(data)},
    )  # fmt: skip
    return KycDocumentOut.model_validate(row)


async def kyc_documents(session: AsyncSession, *, user_id: uuid.UUID) -> list[KycDocumentOut]:
    """The user's uploaded documents, oldest first."""
    return [KycDocumentOut.model_validate(d) for d in await repo.documents_of(session, user_id)]


async def decide_kyc(
    session: AsyncSession, *, actor: User, user_id: uuid.UUID, data: KycDecisionIn
) -> KycDecisionOut:
    """Approve (→ `verified`: the provider enters search after the indexer's next batch)
    or reject (→ `rejected`: it leaves search). Audited with before/after and the note.
    404 `provider_not_found`."""
    status = "verified" if data.decision == "approve" else "rejected"
    changed = await profiles.set_kyc_status(session, provider_id=user_id, status=status)
    if changed is None:
        raise ProviderNotFound("No provider profile for this user.")
    before, after = changed
    await audit.record(
        session, actor=actor.id, action=f"kyc.{'approved' if status == 'verified' else 'rejected'}",
        entity_type="user", entity_id=str(user_id), before={"kyc_status": before},
        after={"kyc_status": after, "note": data.note},
    )  # fmt: skip
    return KycDecisionOut(user_id=user_id, kyc_status_before=before, kyc_status=after)


async def pending_kyc(session: AsyncSession, *, limit: int = 100) -> list[PendingKyc]:
    """Providers awaiting a KYC decision (those with documents first)."""
    return [
        PendingKyc(user_id=r[0], display_name=r[1], kind=r[2], documents=r[3], updated_at=r[4])
        for r in await repo.pending_kyc(session, limit=limit)
    ]


# --- accounts ---------------------------------------------------------------------------


async def set_active(
    session: AsyncSession, *, actor: User, user_id: uuid.UUID, active: bool, now: datetime
) -> UserOut:
    """Deactivate (tokens revoked, a provider leaves search) or reactivate an account,
    audited with before/after (`profiles.service.admin_update_user`). 404
    `user_not_found`; 409 `self_action` on one's own account."""
    if user_id == actor.id:
        raise SelfAction("An administrator cannot change their own activation.")
    if await profiles.get_user(session, user_id=user_id) is None:
        raise UserNotFound("No account with this id.")
    user = await profiles.admin_update_user(
        session, actor=actor, user_id=user_id, patch=AdminUserPatch(active=active), now=now
    )
    return UserOut.model_validate(user)


# --- complaints ---------------------------------------------------------------------------

_MOVES = {("open", "in_review"), ("open", "closed"), ("in_review", "closed")}


def _complaint_snapshot(c: Complaint) -> dict[str, Any]:
    return {
        "status": c.status, "note": c.note, "refund_due_minor": c.refund_due_minor,
        "refund_status": c.refund_status,
    }  # fmt: skip


async def file_complaint(
    session: AsyncSession, *, actor: User, booking_id: uuid.UUID, data: ComplaintIn, now: datetime
) -> ComplaintOut:
    """A participant (the booking's student, its parent or its provider) files a
    complaint. 404 `booking_not_found`; 403 `not_participant` for an admin."""
    b, relation = await booking.participant_booking(session, booking_id=booking_id, actor=actor)
    if relation not in ("student", "parent", "provider"):
        raise NotParticipant("Only the booking's participants file complaints.")
    row = await repo.insert_complaint(
        session,
        {"booking_id": b.id, "filed_by": actor.id, "reason": data.reason, "created_at": now,
         "updated_at": now},
    )  # fmt: skip
    await audit.record(
        session, actor=actor.id, action="complaint.filed", entity_type="complaint",
        entity_id=str(row.id), before=None, after=_complaint_snapshot(row),
    )  # fmt: skip
    await outbox.emit(
        session, aggregate_type="complaint", aggregate_id=str(row.id),
        event_type="complaint.filed", payload={"complaint_id": str(row.id), "booking_id": str(b.id)},
    )  # fmt: skip
    return ComplaintOut.model_validate(row)


@dataclass(frozen=True, slots=True)
class ComplaintUpdate:
    """What `update_complaint` did: the complaint as it now stands and, when a refund of
    a card payment was granted, the pending refund row the caller executes at the gateway
    after commit (`payments.jobs.execute_refund`), then `mark_complaint_refunded`."""

    complaint: ComplaintOut
    refund_id: uuid.UUID | None = None


async def update_complaint(
    session: AsyncSession,
    *,
    actor: User,
    complaint_id: uuid.UUID,
    data: ComplaintPatch,
    now: datetime,
) -> ComplaintUpdate:
    """Move a complaint (open → in_review → closed, or open → closed) with a note,
    optionally granting a refund of `refund_minor` (minor units of the booking's currency),
    recorded as `refund_due_minor`:

    - booking paid by card: a pending refund row (reason `complaint:{id}`) is recorded
      through the payments service in this transaction (`refund_status = 'due'`); the
      caller sends it to the gateway after commit (`ComplaintUpdate.refund_id`);
    - booking paid with credits: the matching share of its credits
      (`refund_minor * 100 // price_minor` %, rounded down) comes back now as `REFUND`
      grants (`refund_status = 'refunded'` when some did);
    - otherwise (nothing was paid through us) it stays `due` for manual handling.

    A `complaint.refund_due` outbox event follows the grant. Audited with before/after.
    404 `complaint_not_found`; 409 `invalid_complaint_transition`, `refund_too_large`
    (above the booking's price, or above what remains refundable of its card payment:
    extension `refundable_minor`) — nothing is written then."""
    c = await repo.get_complaint(session, complaint_id, for_update=True)
    if c is None:
        raise ComplaintNotFound("No complaint with this id.")
    if (c.status, data.status) not in _MOVES:
        raise InvalidComplaintTransition(
            f"A {c.status} complaint cannot become {data.status}.", current=c.status
        )
    values: dict[str, Any] = {"status": data.status, "note": data.note, "updated_at": now}
    refund_id: uuid.UUID | None = None
    if data.refund_minor is not None:
        if c.refund_due_minor is not None:
            raise InvalidComplaintTransition("A refund was already granted for this complaint.")
        b = await booking.booking_by_id(session, booking_id=c.booking_id)
        assert b is not None
        if data.refund_minor > b.price_minor:
            raise RefundTooLarge(
                "The refund exceeds the booking's price.", price_minor=b.price_minor
            )
        status = "due"
        left = await payments.refundable_minor(session, booking_id=b.id, lock=True)
        if left is not None:
            if data.refund_minor > left:
                raise RefundTooLarge(
                    "The refund exceeds what remains refundable of the booking's payment.",
                    refundable_minor=left,
                )
            if data.refund_minor > 0:
                refund = await payments.record_refund(
                    session, booking_id=b.id, amount_minor=data.refund_minor,
                    reason=f"complaint:{c.id}",
                )  # fmt: skip
                refund_id = refund.id
        elif b.price_minor > 0:
            percent = data.refund_minor * 100 // b.price_minor
            if percent and await credits.refund_booking(
                session, booking_id=b.id, percent=percent, now=now
            ):
                status = "refunded"
        values |= {"refund_due_minor": data.refund_minor, "refund_status": status}
    before = _complaint_snapshot(c)
    updated = await repo.update_complaint(session, c.id, values)
    await audit.record(
        session, actor=actor.id, action=f"complaint.{data.status}", entity_type="complaint",
        entity_id=str(c.id), before=before, after=_complaint_snapshot(updated),
    )  # fmt: skip
    if data.refund_minor is not None:
        await outbox.emit(
            session, aggregate_type="complaint", aggregate_id=str(c.id),
            event_type="complaint.refund_due",
            payload={"complaint_id": str(c.id), "booking_id": str(c.booking_id)},
        )  # fmt: skip
    return ComplaintUpdate(ComplaintOut.model_validate(updated), refund_id)


async def mark_complaint_refunded(
    session: AsyncSession, *, actor: User, complaint_id: uuid.UUID, now: datetime
) -> ComplaintOut:
    """The granted refund was paid (its refund row succeeded at the gateway): the
    complaint's `refund_status` `due` → `refunded`, audited as `complaint.refunded`.
    Idempotent (a complaint not `due` is returned unchanged). 404 `complaint_not_found`."""
    c = await repo.get_complaint(session, complaint_id, for_update=True)
    if c is None:
        raise ComplaintNotFound("No complaint with this id.")
    if c.refund_status != "due":
        return ComplaintOut.model_validate(c)
    before = _complaint_snapshot(c)
    updated = await repo.update_complaint(
        session, c.id, {"refund_status": "refunded", "updated_at": now}
    )
    await audit.record(
        session, actor=actor.id, action="complaint.refunded", entity_type="complaint",
        entity_id=str(c.id), before=before, after=_complaint_snapshot(updated),
    )  # fmt: skip
    return ComplaintOut.model_validate(updated)


def _encode(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


def _decode(cursor: str) -> Any:
    try:
        return orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        raise field_errors(
            [("cursor", "not a cursor returned by this API")], location="query"
        ) from None


async def list_complaints(
    session: AsyncSession, *, status: str | None, cursor: str | None, limit: int
) -> ComplaintPage:
    """Complaints oldest first, of `status`, keyset-paginated."""
    after = None
    if cursor:
        raw = _decode(cursor)
        try:
            after = (datetime.fromisoformat(raw[0]), uuid.UUID(raw[1]))
        except (TypeError, ValueError, IndexError, KeyError):
            raise field_errors(
                [("cursor", "not a cursor returned by this API")], location="query"
            ) from None
    rows = await repo.list_complaints(session, status=status, after=after, limit=limit + 1)
    last = rows[limit - 1] if len(rows) > limit else None
    return ComplaintPage(
        items=[ComplaintOut.model_validate(c) for c in rows[:limit]],
        next_cursor=None if last is None else _encode([last.created_at.isoformat(), str(last.id)]),
    )


async def list_audit(
    session: AsyncSession,
    *,
    actor: uuid.UUID | None,
    entity: str | None,
    start: datetime | None,
    end: datetime | None,
    cursor: str | None,
    limit: int,
) -> AuditPage:
    """The audit trail newest first, keyset-paginated. `entity` is an entity type
    (`review`) or `type:id` (`user:…`); `at` in [start, end)."""
    entity_type, entity_id = None, None
    if entity:
        entity_type, _, rest = entity.partition(":")
        entity_id = rest or None
    before_id = None
    if cursor:
        raw = _decode(cursor)
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise field_errors([("cursor", "not a cursor returned by this API")], location="query")
        before_id = raw
    rows = await repo.list_audit(
        session, actor=actor, entity_type=entity_type, entity_id=entity_id, start=start,
        end=end, before_id=before_id, limit=limit + 1,
    )  # fmt: skip
    items = [
        AuditOut(
            id=r[0],
            actor=r[1],
            action=r[2],
            entity_type=r[3],
            entity_id=r[4],
            before=r[5],
            after=r[6],
            at=r[7],
        )
        for r in rows[:limit]
    ]
    return AuditPage(items=items, next_cursor=_encode(items[-1].id) if len(rows) > limit else None)


async def open_complaints(session: AsyncSession, *, limit: int = 100) -> list[ComplaintOut]:
    """Open and in-review complaints, oldest first (the back-office page)."""
    out: list[ComplaintOut] = []
    for status in ("open", "in_review"):
        page = await list_complaints(session, status=status, cursor=None, limit=limit)
        out.extend(page.items)
    return sorted(out, key=lambda c: (c.created_at, str(c.id)))[:limit]
