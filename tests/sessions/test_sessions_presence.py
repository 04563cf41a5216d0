"""Presence from participant events (pure): reconnects counted once, aborted connections
closing like leaves, the lesson's bounds and the clock clipping, the decision rule."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sessions.repository import AttendanceEvent
from sessions.service import decide, presence

T0 = datetime(2030, 3, 4, 10, 0, tzinfo=UTC)
END = T0 + timedelta(hours=1)
UID = uuid.uuid4()


def ev(event: str, minute: float, sid: str = "PA_1") -> AttendanceEvent:
    return AttendanceEvent(
        f"EV_{event}_{minute}_{sid}", event, UID, str(UID), sid, T0 + timedelta(minutes=minute)
    )


def test_reconnect_under_a_new_sid_counts_once() -> None:
    events = [
        ev("participant_joined", -5, "PA_1"),  # early: only the lesson's minutes count
        ev("participant_joined", 20, "PA_2"),  # a second tab / reconnect before the leave
        ev("participant_left", 21, "PA_1"),
        ev("participant_connection_aborted", 40, "PA_2"),
        ev("participant_joined", 50, "PA_3"),
        ev("participant_left", 70, "PA_3"),  # after the end: clipped
    ]
    p = presence(events, starts_at=T0, ends_at=END, now=END + timedelta(minutes=30))
    assert p.present_s == (40 + 10) * 60
    assert p.first_joined_at == T0 - timedelta(minutes=5)
    assert p.last_left_at == T0 + timedelta(minutes=70)


def test_open_connection_counts_until_now_or_the_end() -> None:
    events = [ev("participant_joined", 10)]
    assert (
        presence(events, starts_at=T0, ends_at=END, now=T0 + timedelta(minutes=25)).present_s == 900
    )
    assert (
        presence(events, starts_at=T0, ends_at=END, now=END + timedelta(hours=2)).present_s == 3000
    )
    assert presence([], starts_at=T0, ends_at=END, now=END).present_s == 0


def test_decide() -> None:
    here = presence([ev("participant_joined", 0)], starts_at=T0, ends_at=END, now=END)
    brief = presence(
        [ev("participant_joined", 0), ev("participant_left", 0.5)],
        starts_at=T0,
        ends_at=END,
        now=END,
    )
    away = presence([], starts_at=T0, ends_at=END, now=END)
    assert decide(here, here, min_presence_s=60) == ("completed", ())
    assert decide(brief, here, min_presence_s=60) == ("no_show", ("student",))
    assert decide(here, away, min_presence_s=60) == ("no_show", ("provider",))
    assert decide(away, away, min_presence_s=0) == ("no_show", ("provider", "student"))
    assert decide(brief, here, min_presence_s=0) == ("completed", ())
