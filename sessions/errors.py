"""Errors of the sessions domain, each with a stable problem+json `code`.

Token refusals: 403 `not_a_participant`; 409 `not_confirmed`, `too_early`,
`session_over`. Webhooks: 401 `invalid_webhook_signature`, 400 `malformed_webhook`.
LiveKit not configured or unreachable: 503 `video_unavailable`.
"""

from __future__ import annotations

from core.errors import AppError, Conflict, Forbidden, NotFound, ServiceUnavailable, Unauthorized


class BookingNotFound(NotFound):
    """404: no booking with this id."""

    code = "booking_not_found"
    title = "Booking not found"


class SlotNotFound(NotFound):
    """404: no slot with this id (or not the caller's)."""

    code = "slot_not_found"
    title = "Slot not found"


class NotAParticipant(Forbidden):
    """403: the caller is neither the booking's student nor its provider."""

    code = "not_a_participant"
    title = "Not a participant of this booking"


class NotConfirmed(Conflict):
    """409: the booking is not confirmed (pending, canceled, refunded, expired)."""

    code = "not_confirmed"
    title = "Booking not confirmed"


class TooEarly(Conflict):
    """409: the join window has not opened yet (`opens_at` says when it does)."""

    code = "too_early"
    title = "Too early to join"


class SessionOver(Conflict):
    """409: the join window has closed (or the lesson has been settled)."""

    code = "session_over"
    title = "Session over"


class InvalidWebhookSignature(Unauthorized):
    """401: the webhook's Authorization token or its body hash did not verify."""

    code = "invalid_webhook_signature"
    title = "Invalid webhook signature"


class MalformedWebhook(AppError):
    """400: a correctly signed webhook whose body is not a LiveKit WebhookEvent."""

    status = 400
    code = "malformed_webhook"
    title = "Malformed webhook"


class VideoUnavailable(ServiceUnavailable):
    """503: LiveKit is not configured (no API key) or did not answer."""

    code = "video_unavailable"
    title = "Video service unavailable"
