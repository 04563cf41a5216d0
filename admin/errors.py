"""Errors of the admin domain, each with a stable `code` (problem+json, RFC 9457)."""

from __future__ import annotations

from core.errors import AppError, Conflict, Forbidden, NotFound


class UnsupportedMediaType(AppError):
    """415 `unsupported_media_type`: the upload is not a PDF, JPEG or PNG by its magic
    bytes (whatever its declared Content-Type)."""

    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class PayloadTooLarge(AppError):
    """413 `payload_too_large`: the upload exceeds `KYC_MAX_BYTES`."""

    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class ProviderNotFound(NotFound):
    """404 `provider_not_found`: no provider profile for this user."""

    code = "provider_not_found"
    title = "Provider not found"


class UserNotFound(NotFound):
    """404 `user_not_found`: no account with this id."""

    code = "user_not_found"
    title = "User not found"


class ComplaintNotFound(NotFound):
    """404 `complaint_not_found`: no complaint with this id."""

    code = "complaint_not_found"
    title = "Complaint not found"


class NotParticipant(Forbidden):
    """403 `not_participant`: only the booking's student, parent or provider files a
    complaint about it."""

    code = "not_participant"
    title = "Not a participant"


class InvalidComplaintTransition(Conflict):
    """409 `invalid_complaint_transition`: e.g. a closed complaint cannot move."""

    code = "invalid_complaint_transition"
    title = "Invalid complaint transition"


class RefundTooLarge(Conflict):
    """409 `refund_too_large`: a refund above the booking's price."""

    code = "refund_too_large"
    title = "Refund too large"


class SelfAction(Conflict):
    """409 `self_action`: an administrator cannot deactivate their own account."""

    code = "self_action"
    title = "Action on oneself"
