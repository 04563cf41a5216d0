"""What can be notified, on which channels, and what is on by default.

`KINDS` are the notification kinds (mostly outbox event types, plus the two reminders the
beat makes). `TRANSACTIONAL` kinds are about money or a booking's state: their email
cannot be turned off (`PUT /me/notification-preferences` answers 422). Channel defaults
apply when the user made no choice: email and in-app on, push on (it only reaches users
with a registered device), SMS off (it costs money per message) except for reminders.
"""

from __future__ import annotations

from typing import Final, Literal

Channel = Literal["email", "sms", "push", "in_app"]
CHANNELS: Final[tuple[Channel, ...]] = ("email", "sms", "push", "in_app")
# Channels sent by a Celery task; in-app rows are stored `sent` (the inbox is the channel).
DELIVERED: Final[tuple[Channel, ...]] = ("email", "sms", "push")

KINDS: Final[tuple[str, ...]] = (
    "booking.held",
    "booking.confirmed",
    "booking.canceled",
    "booking.expired",
    "payment.succeeded",
    "payment.failed",
    "refund.succeeded",
    "review.posted",
    "payout.approved",
    "payout.paid",
    "reminder.24h",
    "reminder.1h",
)
TRANSACTIONAL: Final[frozenset[str]] = frozenset(
    {
        "booking.held",
        "booking.confirmed",
        "booking.canceled",
        "booking.expired",
        "payment.succeeded",
        "payment.failed",
        "refund.succeeded",
        "payout.approved",
        "payout.paid",
    }
)
REMINDERS: Final[dict[str, int]] = {"reminder.24h": 24 * 3600, "reminder.1h": 3600}


def default_enabled(kind: str, channel: str) -> bool:
    """Whether `channel` is on for `kind` when the user made no choice."""
    if channel == "sms":
        return kind in REMINDERS
    return True


def may_disable(kind: str, channel: str) -> bool:
    """False for the email of a transactional kind (always sent)."""
    return not (channel == "email" and kind in TRANSACTIONAL)
