"""Pydantic schemas of the back-office (the API's shapes)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

KycDocType = Literal[
    "id_card", "passport", "driving_licence", "proof_of_address", "diploma", "other"
]
KycStatus = Literal["pending", "verified", "rejected"]
ComplaintStatus = Literal["open", "in_review", "closed"]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class KycDocumentOut(BaseModel):
    """An uploaded identity document (its bytes stay in storage)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    doc_type: KycDocType
    content_type: Literal["application/pdf", "image/jpeg", "image/png"]
    size_bytes: int = Field(description="Bytes")
    sha256: str = Field(description="SHA-256 of the bytes, hex")
    created_at: datetime


class KycDecisionIn(_Input):
    """An admin's KYC decision: approve (→ `verified`, searchable) or reject."""

    decision: Literal["approve", "reject"]
    note: Annotated[str, Field(max_length=2000)] | None = None


class KycDecisionOut(BaseModel):
    """The provider's KYC status before and after the decision."""

    user_id: uuid.UUID
    kyc_status_before: KycStatus
    kyc_status: KycStatus


class PendingKyc(BaseModel):
    """A provider awaiting a KYC decision, with its documents count."""

    user_id: uuid.UUID
    display_name: str
    kind: str
    documents: int
    updated_at: datetime


class ComplaintIn(_Input):
    """A participant's complaint about a booking."""

    reason: Annotated[str, Field(min_length=1, max_length=4000)]


class ComplaintPatch(_Input):
    """An admin moves a complaint to `in_review` or `closed` with a note, optionally
    granting a refund (minor units of the booking's currency, at most its price)."""

    status: Literal["in_review", "closed"]
    note: Annotated[str, Field(min_length=1, max_length=4000)]
    refund_minor: Annotated[int, Field(ge=1)] | None = None


class ComplaintOut(BaseModel):
    """A complaint; `refund_status` `due` = granted, not yet paid; `refunded` = paid (the
    card refund succeeded at the gateway, or the credits came back)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    booking_id: uuid.UUID
    filed_by: uuid.UUID
    reason: str
    status: ComplaintStatus
    note: str | None
    refund_due_minor: int | None
    refund_status: Literal["due", "refunded"] | None
    created_at: datetime
    updated_at: datetime


class ComplaintPage(BaseModel):
    """Complaints oldest first; `next_cursor` continues."""

    items: list[ComplaintOut]
    next_cursor: str | None


class AuditOut(BaseModel):
    """One audit row: who (`actor`, null = the system) did `action` to `entity_type`
    `entity_id`, with the JSON snapshots before and after, at `at`."""

    id: int
    actor: uuid.UUID | None
    action: str
    entity_type: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    at: datetime


class AuditPage(BaseModel):
    """Audit rows newest first; `next_cursor` continues."""

    items: list[AuditOut]
    next_cursor: str | None
