"""A child's booking events reach the parents linked in `parent_children`, each by their
own channels, language and preferences (real database, the outbox consumer's pipeline)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest

from core.security import utcnow
from notifications import service
from notifications.render import render
from tests.booking.helpers import link_child
from tests.conftest import create_provider, create_user
from tests.notifications.kit import (
    drain,
    emit_booking_event,
    insert_booking_event,
    rows,
    set_user,
)


def _channels(db: psycopg.Connection[Any], user: Any, kind: str) -> list[str]:
    return sorted(r["channel"] for r in rows(db, "user_id = %s AND kind = %s", (user, kind)))


def test_both_parents_hear_of_the_childs_confirmed_booking_by_their_own_preferences(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    tutor = create_provider(db)
    child = create_user(db, full_name="Léo Martin")
    mum = create_user(db, role="parent", full_name="Anne Martin")
    dad = create_user(db, role="parent", full_name="Paul Martin")
    stranger = create_user(db, role="parent")
    link_child(db, mum, child)
    link_child(db, dad, child)
    set_user(db, mum, locale="fr", time_zone="Europe/Paris", phone="+33612345678")
    set_user(db, dad, locale="en", time_zone="Europe/London")
    db.execute(
        "INSERT INTO notification_preferences (user_id, kind, channel, enabled) VALUES"
        " (%s, 'booking.confirmed', 'sms', true), (%s, 'booking.confirmed', 'in_app', false)",
        (mum, dad),
    )
    b = insert_booking_event(
        db, student=child, provider=tutor, starts_at=utcnow() + timedelta(days=3)
    )
    emit_booking_event(db, b, "booking.confirmed")
    drain(database_url)

    assert _channels(db, child, "booking.confirmed") == ["email", "in_app"]
    assert _channels(db, tutor, "booking.confirmed") == ["email", "in_app"]
    assert _channels(db, mum, "booking.confirmed") == ["email", "in_app", "sms"]
    assert _channels(db, dad, "booking.confirmed") == ["email"]  # in-app turned off
    assert rows(db, "user_id = %s", (stranger,)) == []
    (inbox,) = rows(db, "user_id = %s AND channel = 'in_app'", (mum,))
    assert inbox["locale"] == "fr"
    assert "La séance de Léo Martin" in inbox["body_text"]
    (mail,) = rows(db, "user_id = %s AND channel = 'email'", (mum,))
    assert mail["body_text"].startswith("Bonjour Anne Martin")
    (email,) = rows(db, "user_id = %s AND channel = 'email'", (dad,))
    assert "Léo Martin\u2019s session with" in email["body_text"]

    # a replayed batch notifies no parent twice
    before = len(rows(db))
    db.execute(
        "UPDATE indexer_checkpoints SET txid = '0', outbox_id = 0 WHERE consumer = 'notifications'"
    )
    drain(database_url)
    assert len(rows(db)) == before


def test_parents_hear_of_holds_cancels_expiries_and_reminders(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    tutor = create_provider(db)
    child = create_user(db)
    parent = create_user(db, role="parent")
    link_child(db, parent, child)
    b = insert_booking_event(
        db, student=child, provider=tutor, starts_at=utcnow() + timedelta(days=3)
    )
    for kind in ("booking.held", "booking.canceled", "booking.expired"):
        emit_booking_event(db, b, kind)
    drain(database_url)
    for kind in ("booking.held", "booking.canceled", "booking.expired"):
        assert "in_app" in _channels(db, parent, kind), kind
        assert _channels(db, parent, kind) == _channels(db, child, kind), kind

    insert_booking_event(
        db, student=child, provider=tutor, starts_at=utcnow() + timedelta(minutes=50)
    )
    with db.transaction():
        service.send_reminders(db, now=utcnow())
    assert {r["user_id"] for r in rows(db, "kind = 'reminder.1h'")} == {child, parent, tutor}


@pytest.mark.parametrize("locale", ["en", "fr"])
@pytest.mark.parametrize(
    "kind",
    ["booking.held", "booking.confirmed", "booking.canceled", "booking.expired",
     "reminder.1h", "reminder.24h"],
)  # fmt: skip
def test_every_booking_template_speaks_to_a_parent_about_the_child(kind: str, locale: str) -> None:
    now = utcnow()
    data = {
        "name": "Anne", "role": "parent", "student_name": "Léo", "provider_name": "Awa Diop",
        "starts_at": now, "ends_at": now, "hold_expires_at": now, "seats": 1,
        "price_minor": 3000, "currency": "EUR", "refund_minor": 0, "booking_id": "b",
    }  # fmt: skip
    msg = render(kind, locale=locale, tz="Europe/Paris", data=data)
    assert "Léo" in msg.text, (kind, locale, msg.text)
