"""Fixtures and helpers of the notifications tests: the SMTP sink (aiosmtpd on a free
port), the Twilio and FCM stand-ins, relays of the two outbox consumers (drained on
demand, or looping in a thread), a uvicorn server in a thread, and small factories."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from standins import fcm, twilio
from standins.recorder import StandinServer
from standins.smtp import SmtpSink
from tests.conftest import free_port, wait_for


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) on a free port; settings point at it."""
    from core.settings import get_settings

    sink = SmtpSink("127.0.0.1", free_port()).start()
    mp = pytest.MonkeyPatch()
    mp.setenv("SMTP_HOST", "127.0.0.1")
    mp.setenv("SMTP_PORT", str(sink.port))
    get_settings.cache_clear()
    yield sink
    sink.stop()
    mp.undo()
    get_settings.cache_clear()


@pytest.fixture
def standins() -> Iterator[dict[str, StandinServer]]:
    """The Twilio and FCM stand-ins on free ports; settings point the SDKs at them."""
    from core.settings import get_settings

    servers = {"twilio": twilio.server().start(), "fcm": fcm.server().start()}
    mp = pytest.MonkeyPatch()
    mp.delenv("TWILIO_ACCOUNT_SID", raising=False)
    mp.delenv("FCM_CREDENTIALS_FILE", raising=False)
    mp.setenv("TWILIO_STANDIN_URL", servers["twilio"].url)
    mp.setenv("FCM_STANDIN_URL", servers["fcm"].url)
    get_settings.cache_clear()
    yield servers
    for s in servers.values():
        s.shutdown()
        s.server_close()
    mp.undo()
    get_settings.cache_clear()


def relay(url: str, consumer: str) -> Any:
    """A relay of `consumer` (`notifications` | `live`) on its own connection."""
    from indexer.relay import Relay, RelayConfig
    from notifications.consumer import make_sink

    sink = make_sink(consumer)
    conn = psycopg.connect(url, autocommit=True)
    return Relay(
        conn,
        sink,
        RelayConfig(consumer=consumer, held_back_poll_s=0.005),
        on_commit=sink.after_commit,
    )


def drain(url: str, consumer: str = "notifications") -> int:
    """Apply every pending outbox event to `consumer`; returns how many."""
    r = relay(url, consumer)
    try:
        return int(r.drain())
    finally:
        r.conn.close()


class RelayThread:
    """`consumer`'s relay looping in a thread (LISTEN wake-ups), like the CLI process."""

    def __init__(self, url: str, consumer: str) -> None:
        from indexer.relay import run_forever

        self.stopped = False
        self.relay = relay(url, consumer)
        self.listen = psycopg.connect(url, autocommit=True)
        self.thread = threading.Thread(
            target=run_forever, args=(self.relay, self.listen), kwargs={"stop": lambda: self.stopped},
            daemon=True,
        )  # fmt: skip
        self.thread.start()

    def stop(self) -> None:
        self.stopped = True
        self.thread.join(timeout=10)
        self.relay.conn.close()
        self.listen.close()


class Server:
    """The real app under uvicorn in a thread; `base` is its URL."""

    def __init__(self) -> None:
        import httpx
        import uvicorn

        from api.app import create_app

        port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, "the test server")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def set_user(db: psycopg.Connection[Any], user_id: Any, **values: Any) -> None:
    """Update columns of a user (locale, time_zone, phone, full_name)."""
    cols = ", ".join(f"{k} = %s" for k in values)
    db.execute(f"UPDATE users SET {cols} WHERE id = %s", (*values.values(), user_id))


def insert_booking_event(
    db: psycopg.Connection[Any],
    *,
    student: Any,
    provider: Any,
    starts_at: datetime,
    status: str = "confirmed",
    seats: int = 1,
    capacity: int = 1,
) -> uuid.UUID:
    """A slot and a booking inserted directly (no outbox event); returns the booking id."""
    from tests.booking.helpers import create_slot, insert_booking

    slot = create_slot(db, provider, start=starts_at, capacity=capacity)
    return insert_booking(
        db, student_id=student, slot_id=slot, seats=seats, status=status,
        hold_expires_at=starts_at - timedelta(hours=3) if status == "pending" else None,
    )  # fmt: skip


def emit_booking_event(db: psycopg.Connection[Any], booking_id: Any, kind: str) -> None:
    """An outbox row `kind` (`booking.confirmed`, …) about `booking_id`, as the booking
    domain writes it (keys only)."""
    db.execute(
        "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) VALUES"
        " ('booking', %s, %s, %s::jsonb)",
        (str(booking_id), kind, f'{{"booking_id": "{booking_id}"}}'),
    )


def rows(
    db: psycopg.Connection[Any], where: str = "true", args: tuple[Any, ...] = ()
) -> list[dict[str, Any]]:
    """Notification rows matching `where`, oldest first."""
    from psycopg.rows import dict_row

    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT * FROM notifications WHERE {where} ORDER BY created_at, kind, channel",
            args,
        ).fetchall()
