"""Errors of the notifications domain (rendered as problem+json by `api/errors.py`)."""

from __future__ import annotations

from core.errors import AppError


class NotificationNotFound(AppError):
    """404 `notification_not_found`: no such notification in the caller's inbox."""

    status = 404
    code = "notification_not_found"
    title = "Notification not found"


class TransactionalEmail(AppError):
    """422 `transactional_email`: the email of a transactional kind cannot be turned off
    (`items` lists the `kind/channel` pairs refused)."""

    status = 422
    code = "transactional_email"
    title = "Transactional email cannot be turned off"


class InvalidCursor(AppError):
    """400 `invalid_cursor`: a paging cursor we did not issue."""

    status = 400
    code = "invalid_cursor"
    title = "Invalid cursor"


class InvalidLastEventId(AppError):
    """400 `invalid_last_event_id`: `Last-Event-ID` is not an id this stream issued."""

    status = 400
    code = "invalid_last_event_id"
    title = "Invalid Last-Event-ID"


class StreamNotFound(AppError):
    """404 `slot_not_found` / `provider_not_found`: nothing to stream events of."""

    status = 404
    code = "not_found"
    title = "Not found"


class LiveUnavailable(AppError):
    """503 `live_unavailable`: the live-update fan-out (Redis) is unreachable."""

    status = 503
    code = "live_unavailable"
    title = "Service unavailable"


class InvalidPhone(AppError):
    """422 `invalid_phone`: not an E.164 number (`+`, country code, 7 to 15 digits in all,
    no spaces)."""

    status = 422
    code = "invalid_phone"
    title = "Invalid phone number"


class InvalidTimeZone(AppError):
    """422 `invalid_time_zone`: not a time zone of the IANA database (`Europe/Paris`)."""

    status = 422
    code = "invalid_time_zone"
    title = "Invalid time zone"


class PushDeviceNotFound(AppError):
    """404 `push_device_not_found`: the caller has no push device with that token."""

    status = 404
    code = "push_device_not_found"
    title = "Push device not found"
