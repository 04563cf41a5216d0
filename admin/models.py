"""SQLAlchemy models of the back-office tables (migration 0018)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, FetchedValue, Integer, Text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the admin domain."""


class KycDocument(Base):
    """An identity document a provider uploaded: its type, detected content type, size
    in bytes, SHA-256 (hex) and the storage key of its bytes (`core.storage`)."""

    __tablename__ = "kyc_documents"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=FetchedValue()
    )
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    doc_type: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(Text)
    storage_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Complaint(Base):
    """A participant's complaint about a booking; `status` open → in_review → closed;
    `refund_due_minor` (minor units of the booking's currency) recorded when an admin
    grants a refund, `refund_status` `due` until it is paid (the card refund row, reason
    `complaint:{id}`, succeeded, or the credits came back), then `refunded`."""

    __tablename__ = "complaints"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=FetchedValue()
    )
    booking_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    filed_by: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=FetchedValue())
    note: Mapped[str | None] = mapped_column(Text)
    refund_due_minor: Mapped[int | None] = mapped_column(BigInteger)
    refund_status: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
