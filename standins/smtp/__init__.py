"""A real local SMTP server (aiosmtpd) that keeps what it receives: the email sink of
`make run` and of the tests, so sent messages can be read back.

`SmtpSink(host, port).start()` runs aiosmtpd's `Controller` in a thread; `messages` are
the parsed `email.message.EmailMessage`s received, oldest first (also written as `.eml`
files under `--maildir` when run as `python -m standins.smtp`). `fail_next(code, times)`
makes the next `times` DATA commands answer `code` (e.g. 451 transient, 550 permanent).
"""

from __future__ import annotations

import email
import email.policy
import threading
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class SinkHandler:
    """aiosmtpd handler: answer planned failures, else keep the message."""

    def __init__(self, maildir: Path | None = None) -> None:
        self.lock = threading.Lock()
        self.messages: list[EmailMessage] = []
        self.failures: list[int] = []
        self.maildir = maildir

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            return f"{failure} {'4.3.0 try again later' if failure < 500 else '5.1.1 mailbox unavailable'}"
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.messages.append(msg)
            n = len(self.messages)
        if self.maildir is not None:
            (self.maildir / f"{n:06d}.eml").write_bytes(envelope.content)
        return "250 OK"


class SmtpSink:
    """An aiosmtpd server on (host, port) (port 0 is not supported by aiosmtpd's
    Controller: pick a free port first, `tests` do)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 8025, maildir: Path | None = None
    ) -> None:
        self.handler = SinkHandler(maildir)
        self.controller = Controller(self.handler, hostname=host, port=port)
        self.host, self.port = host, port

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[EmailMessage]:
        with self.handler.lock:
            return list(self.handler.messages)

    def fail_next(self, code: int, times: int = 1) -> None:
        """Answer the next `times` messages with SMTP `code` instead of accepting them."""
        with self.handler.lock:
            self.handler.failures.extend([code] * times)

    def clear(self) -> None:
        with self.handler.lock:
            self.handler.messages.clear()
            self.handler.failures.clear()
