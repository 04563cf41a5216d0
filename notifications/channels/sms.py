"""SMS through the Twilio SDK (`twilio.rest.Client().messages.create`).

Without TWILIO_ACCOUNT_SID the client talks to the local stand-in (`standins.twilio`) at
TWILIO_STANDIN_URL: the SDK's `Api` domain takes its `base_url` from the client
(`client.api.base_url`, `twilio/base/domain.py`), so only the host changes — the SDK still
builds the `/2010-04-01/Accounts/{sid}/Messages.json` request, signs it with HTTP basic
auth and parses the reply. Twilio 400s (invalid number 21211, unsubscribed 21610, …) are
permanent; 429, 5xx and network failures transient.
"""

from __future__ import annotations

from typing import Any

from core.settings import get_settings
from notifications.channels import Message, PermanentChannelError, TransientChannelError

STANDIN_SID = "AC" + "0" * 32
STANDIN_TOKEN = "standin-auth-token"  # noqa: S105 - the stand-in's, not a secret


class SmsChannel:
    """Twilio adapter."""

    name = "sms"

    def __init__(self, client: Any, *, from_number: str) -> None:
        self.client = client
        self.from_number = from_number

    @classmethod
    def from_settings(cls) -> SmsChannel:
        """A Twilio client from TWILIO_ACCOUNT_SID/AUTH_TOKEN, or on the stand-in."""
        from twilio.rest import Client

        s = get_settings()
        if s.twilio_account_sid:
            client = Client(s.twilio_account_sid, s.twilio_auth_token)
        else:
            client = Client(STANDIN_SID, STANDIN_TOKEN)
            client.api.base_url = s.twilio_standin_url.rstrip("/")
        return cls(client, from_number=s.twilio_from_number)

    def send(self, message: Message) -> str:
        """Create the message; returns its `SM…` sid."""
        import requests
        from twilio.base.exceptions import TwilioException, TwilioRestException

        try:
            created = self.client.messages.create(
                to=message.to, from_=self.from_number, body=message.short
            )
        except TwilioRestException as exc:
            err = f"Twilio {exc.status} code {exc.code}: {exc.msg}"
            if exc.status == 429 or exc.status >= 500:
                raise TransientChannelError(err) from exc
            raise PermanentChannelError(err) from exc
        except (TwilioException, requests.RequestException, OSError) as exc:
            raise TransientChannelError(f"Twilio unavailable: {exc!r}") from exc
        return str(created.sid)
