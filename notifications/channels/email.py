"""Email over SMTP with the standard library's `smtplib` (a real SMTP server: in `make run`
and the tests, the local sink `standins.smtp`; in production the relay of SMTP_HOST).

A multipart/alternative message (text, then HTML) with `Message-ID` derived from the
notification id, so a duplicate delivery can be recognised by the receiving side. SMTP
4xx replies and connection failures are transient; 5xx replies permanent.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid

from core.settings import get_settings
from notifications.channels import Message, PermanentChannelError, TransientChannelError


class EmailChannel:
    """SMTP adapter: one connection per message (tasks run one at a time per process)."""

    name = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout_s: float = 10.0,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.username, self.password = username, password
        self.starttls, self.timeout_s = starttls, timeout_s

    @classmethod
    def from_settings(cls) -> EmailChannel:
        """From SMTP_HOST, SMTP_PORT, EMAIL_FROM, SMTP_USERNAME/PASSWORD, SMTP_STARTTLS."""
        s = get_settings()
        return cls(
            host=s.smtp_host, port=s.smtp_port, sender=s.email_from,
            username=s.smtp_username, password=s.smtp_password,
            starttls=s.smtp_starttls, timeout_s=s.smtp_timeout_s,
        )  # fmt: skip

    def build(self, message: Message) -> EmailMessage:
        """The MIME message: text part, then the HTML alternative."""
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Message-ID"] = make_msgid(idstring=message.reference, domain="educonnect.dev")
        mail["X-EduConnect-Notification"] = message.reference
        mail.set_content(message.text)
        if message.html:
            mail.add_alternative(message.html, subtype="html")
        return mail

    def send(self, message: Message) -> str:
        """Send over SMTP; returns the Message-ID. Raises `TransientChannelError` (4xx,
        network) or `PermanentChannelError` (5xx, every recipient refused)."""
        mail = self.build(message)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username and self.password:
                    smtp.login(self.username, self.password)
                smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            err = f"recipients refused: {exc.recipients}"
            if all(c >= 500 for c in codes):
                raise PermanentChannelError(err) from exc
            raise TransientChannelError(err) from exc
        except smtplib.SMTPResponseException as exc:
            err = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
            if exc.smtp_code >= 500:
                raise PermanentChannelError(err) from exc
            raise TransientChannelError(err) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise TransientChannelError(f"SMTP unavailable: {exc!r}") from exc
        return str(mail["Message-ID"])
