"""The delivery port: one `Channel` per medium (email, SMS, push), each an adapter over a
well-kept library (`smtplib`, the Twilio SDK, firebase-admin).

An adapter's `send` either returns the provider's message reference or raises
`TransientChannelError` (retry later: a 4xx SMTP reply, a timeout, a 5xx or 429 from the
API) or `PermanentChannelError` (retrying cannot help: a rejected address, an invalid
number, an unregistered device token) — the task dead-letters those at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Message:
    """What a channel sends: `to` is an email address, an E.164 number or an FCM token;
    `subject`/`text`/`html` (email), `short` (SMS text, push body; `subject` is the push
    title); `reference` is our notification id (a header, push data)."""

    to: str
    subject: str
    short: str
    text: str
    html: str | None
    reference: str


class ChannelError(Exception):
    """A failed send."""


class TransientChannelError(ChannelError):
    """Retry later."""


class PermanentChannelError(ChannelError):
    """Retrying cannot help: dead-letter it."""


class Channel(Protocol):
    """A delivery medium."""

    name: str

    def send(self, message: Message) -> str:
        """Send `message`; return the provider's reference. Raises `ChannelError`s."""
        ...


def get_channel(name: str) -> Channel:
    """The configured adapter of channel `name` (`email`, `sms`, `push`), from settings.
    Raises `KeyError` for another name."""
    if name == "email":
        from notifications.channels.email import EmailChannel

        return EmailChannel.from_settings()
    if name == "sms":
        from notifications.channels.sms import SmsChannel

        return SmsChannel.from_settings()
    if name == "push":
        from notifications.channels.push import PushChannel

        return PushChannel.from_settings()
    raise KeyError(name)
