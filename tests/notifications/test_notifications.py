"""Notifications end to end: outbox → consumer → rows → a real Celery worker → a real SMTP
sink (aiosmtpd); retries with backoff, dead letters and their re-queue (admin API and
CLI); preferences; reminders claimed once; SMS and push through the Twilio and
firebase-admin SDKs against their stand-ins; rendering per locale, currency and zone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from core.security import utcnow
from standins.smtp import SmtpSink
from tests.booking.helpers import NOW, confirm, create_slot, key
from tests.conftest import bearer, create_provider, create_user
from tests.indexer.test_reindex import Worker, start_worker
from tests.notifications.kit import (
    drain,
    insert_booking_event,
    rows,
    set_user,
    smtp_sink,
    standins,
    wait_for,
)

__all__ = ["smtp_sink", "standins", "start_worker"]


@pytest.fixture
def clock(app: Any) -> dict[str, Any]:
    """The app's clock frozen at NOW."""
    from api.deps import get_now

    state = {"now": NOW}
    app.dependency_overrides[get_now] = lambda: state["now"]
    return state


def _worker(start: Any, **env: str) -> Worker:
    w: Worker = start({"NOTIFICATIONS_RETRY_BASE_S": "0.2", **env})
    return w


def _sp(text: str) -> str:
    """No-break spaces (CLDR's separators) as plain spaces."""
    return text.replace("\u202f", " ").replace("\xa0", " ")


def _text(msg: Any) -> str:
    return _sp(str(msg.get_body(preferencelist=("plain",)).get_content()))


def _html(msg: Any) -> str:
    return str(msg.get_body(preferencelist=("html",)).get_content())


async def _hold(api: httpx.AsyncClient, student: Any, slot: Any, seats: int = 1) -> dict[str, Any]:
    r = await api.post(
        "/api/v1/bookings",
        headers={**bearer(student, "student"), **key()},
        json={"slot_id": str(slot), "seats": seats},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


# --- rendering (pure) -----------------------------------------------------------------


def test_templates_render_money_and_time_per_locale_and_zone() -> None:
    from notifications.render import money, pick_locale, render

    starts = datetime(2030, 3, 4, 12, 0, tzinfo=UTC)
    data = {"name": "Zoé", "provider_name": "Ana", "student_name": "Zoé", "starts_at": starts,
            "refund_minor": 2500, "currency": "EUR", "role": "student"}  # fmt: skip
    fr = render("booking.canceled", locale="fr-FR", tz="Europe/Paris", data=data)
    fr = fr.__class__(*(_sp(x) for x in (fr.subject, fr.short, fr.text, fr.html)))
    assert "25,00 €" in fr.text
    assert "13:00" in fr.text
    assert fr.text.startswith("Bonjour Zoé")
    assert fr.subject.startswith("Réservation annulée")
    assert "<p>Bonjour Zoé,</p>" in fr.html
    en = render("booking.canceled", locale="en", tz="America/New_York", data=data)
    assert "€25.00" in en.text
    assert "07:00" in en.text
    assert en.subject.startswith("Booking canceled")
    assert money(2500, "JPY", "en") == "¥2,500"
    assert _sp(money(12345, "KWD", "fr")) == "12,345 KWD"
    assert (pick_locale("de"), pick_locale("fr_CA"), pick_locale(None)) == ("en", "fr", "en")
    # HTML escapes what users typed
    esc = render(
        "review.posted",
        locale="en",
        tz="UTC",
        data={"name": "<b>x</b>", "rating": 5, "comment": None},
    )
    assert "&lt;b&gt;x&lt;/b&gt;" in esc.html
    assert "<b>x</b>" in esc.text


def test_backoff_grows_with_equal_jitter() -> None:
    from notifications.service import backoff

    lows = [backoff(n, base_s=1, cap_s=60, rand=lambda: 0.0) for n in range(1, 9)]
    highs = [backoff(n, base_s=1, cap_s=60, rand=lambda: 1.0) for n in range(1, 9)]
    assert lows == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert highs == [1, 2, 4, 8, 16, 32, 60, 60]
    assert all(highs[i] <= lows[i + 1] * 2 for i in range(7))


def test_settings_refuse_a_retry_cap_above_the_visibility_timeout() -> None:
    from pydantic import ValidationError

    from core.settings import Settings

    with pytest.raises(ValidationError, match="visibility_timeout"):
        Settings(notifications_retry_max_s=7200, celery_visibility_timeout_s=7200)
    Settings(notifications_retry_max_s=3600, celery_visibility_timeout_s=7200)


# --- the main path, through a real worker -------------------------------------------------


async def test_confirmed_booking_one_email_in_the_students_language_and_one_in_app(
    api: httpx.AsyncClient,
    db: psycopg.Connection[Any],
    clock: dict[str, Any],
    smtp_sink: SmtpSink,
    start_worker: Any,
    database_url: str,
) -> None:
    tutor = create_provider(db)  # 3000 EUR an hour
    slot = create_slot(db, tutor, minutes=90, capacity=3)
    student = create_user(db, full_name="Zoé Martin")
    set_user(db, student, locale="fr", time_zone="Europe/Paris")
    booking = await _hold(api, student, slot)
    await confirm(uuid.UUID(booking["id"]))
    _worker(start_worker)

    assert drain(database_url) >= 2  # booking.held, booking.confirmed
    # held → student; confirmed → student and provider
    wait_for(lambda: len(smtp_sink.messages) == 3, "three emails")
    wait_for(lambda: all(r["state"] == "sent" for r in rows(db, "channel = 'email'")), "sent")
    email = db.execute("SELECT email FROM users WHERE id = %s", (student,)).fetchone()[0]
    mine = [m for m in smtp_sink.messages if m["To"] == email]
    confirmed = [m for m in mine if m["Subject"].startswith("Réservation confirmée")]
    assert len(confirmed) == 1
    assert len(mine) == 2
    text = _text(confirmed[0])
    assert text.startswith("Bonjour Zoé Martin")
    assert "45,00 €" in text
    assert "13:00" in text
    assert "Bonjour Zoé Martin" in _html(confirmed[0])
    sent = rows(db, "user_id = %s AND kind = 'booking.confirmed'", (student,))
    assert [(r["channel"], r["state"], r["attempts"]) for r in sent] == [
        ("email", "sent", 1), ("in_app", "sent", 0),
    ]  # fmt: skip

    # the inbox: two in-app notifications, newest first; reading one
    h = bearer(student, "student")
    page = (await api.get("/api/v1/me/notifications", headers=h)).json()
    assert [i["kind"] for i in page["items"]] == ["booking.confirmed", "booking.held"]
    assert page["items"][0]["data"]["booking_id"] == booking["id"]
    first = page["items"][0]["id"]
    r = await api.post(f"/api/v1/me/notifications/{first}/read", headers=h)
    assert r.status_code == 200
    assert r.json()["read_at"] is not None
    unread = (await api.get("/api/v1/me/notifications?unread=true", headers=h)).json()
    assert [i["kind"] for i in unread["items"]] == ["booking.held"]
    one = (await api.get("/api/v1/me/notifications?limit=1", headers=h)).json()
    two = (
        await api.get(f"/api/v1/me/notifications?limit=1&cursor={one['next_cursor']}", headers=h)
    ).json()
    assert [i["kind"] for i in one["items"] + two["items"]] == ["booking.confirmed", "booking.held"]
    assert two["next_cursor"] is None
    other = create_user(db)
    r = await api.post(f"/api/v1/me/notifications/{first}/read", headers=bearer(other, "student"))
    assert r.status_code == 404
    assert r.json()["code"] == "notification_not_found"
    r = await api.get("/api/v1/me/notifications?cursor=nope", headers=h)
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_cursor"

    # a replayed outbox (checkpoint rewound) notifies nobody twice
    before = len(rows(db))
    db.execute(
        "UPDATE indexer_checkpoints SET txid = '0', outbox_id = 0 WHERE consumer = 'notifications'"
    )
    assert drain(database_url) >= 2
    assert len(rows(db)) == before
    assert len(smtp_sink.messages) == 3


async def test_transient_failures_retry_with_growing_delays_then_dead_letters_requeue(
    api: httpx.AsyncClient,
    db: psycopg.Connection[Any],
    smtp_sink: SmtpSink,
    start_worker: Any,
    database_url: str,
) -> None:
    from typer.testing import CliRunner

    from cli.main import app as cli

    tutor = create_provider(db)
    student = create_user(db)
    _worker(start_worker, NOTIFICATIONS_MAX_ATTEMPTS="4")

    # 451 twice, then accepted: sent at the third attempt, delays growing
    smtp_sink.fail_next(451, 2)
    b1 = insert_booking_event(
        db, student=student, provider=tutor, starts_at=utcnow() + timedelta(days=3)
    )
    db.execute(
        "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
        " VALUES ('booking', %s, 'booking.expired', %s::jsonb)",
        (str(b1), f'{{"booking_id": "{b1}"}}'),
    )
    drain(database_url)
    row = wait_for(
        lambda: [
            r
            for r in rows(db, "user_id = %s AND channel = 'email'", (student,))
            if r["state"] == "sent"
        ],
        "the email sent after two failures",
    )[0]
    assert row["attempts"] == 3
    tries = db.execute(
        "SELECT attempt, outcome, retry_in_s FROM notification_attempts WHERE notification_id = %s"
        " ORDER BY attempt", (row["id"],),
    ).fetchall()  # fmt: skip
    assert [(a, o) for a, o, _ in tries] == [(1, "retry"), (2, "retry"), (3, "sent")]
    d1, d2 = tries[0][2], tries[1][2]
    assert 0.1 <= d1 <= 0.2 <= d2 <= 0.4
    assert d2 > d1
    assert sum(1 for m in smtp_sink.messages if m["To"] == row["address"]) == 1

    # 550: permanent, dead at once; the admin re-queues it and it is sent
    smtp_sink.fail_next(550, 1)
    b2 = insert_booking_event(
        db, student=student, provider=tutor, starts_at=utcnow() + timedelta(days=4)
    )
    db.execute(
        "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
        " VALUES ('booking', %s, 'booking.expired', %s::jsonb)",
        (str(b2), f'{{"booking_id": "{b2}"}}'),
    )
    drain(database_url)
    dead = wait_for(lambda: rows(db, "state = 'dead'"), "a dead letter")
    assert len(dead) == 1
    assert dead[0]["attempts"] == 1
    assert "550" in dead[0]["last_error"]
    admin = create_user(db, role="admin")
    listed = (
        await api.get("/api/v1/admin/notifications/dead", headers=bearer(admin, "admin"))
    ).json()
    assert [d["id"] for d in listed["items"]] == [str(dead[0]["id"])]
    r = await api.get("/api/v1/admin/notifications/dead", headers=bearer(student, "student"))
    assert r.status_code == 403
    r = await api.post(
        "/api/v1/admin/notifications/dead/requeue",
        headers=bearer(admin, "admin"),
        json={"ids": [str(dead[0]["id"])]},
    )
    assert r.status_code == 200
    assert r.json()["requeued"] == [str(dead[0]["id"])]
    wait_for(
        lambda: rows(db, "id = %s AND state = 'sent'", (dead[0]["id"],)),
        "the re-queued letter sent",
    )

    # the CLI does the same
    smtp_sink.fail_next(550, 1)
    b3 = insert_booking_event(
        db, student=student, provider=tutor, starts_at=utcnow() + timedelta(days=5)
    )
    db.execute(
        "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
        " VALUES ('booking', %s, 'booking.expired', %s::jsonb)",
        (str(b3), f'{{"booking_id": "{b3}"}}'),
    )
    drain(database_url)
    dead = wait_for(lambda: rows(db, "state = 'dead'"), "another dead letter")
    out = CliRunner().invoke(cli, ["notifications", "retry-dead"])
    assert out.exit_code == 0, out.output
    assert "re-queued 1 dead letter" in out.output
    wait_for(
        lambda: rows(db, "id = %s AND state = 'sent'", (dead[0]["id"],)), "sent after retry-dead"
    )
    assert CliRunner().invoke(cli, ["notifications", "retry-dead", "not-an-id"]).exit_code == 2


async def test_reminders_sent_once_when_beat_fires_twice(
    db: psycopg.Connection[Any], smtp_sink: SmtpSink, start_worker: Any, redis_url: str
) -> None:
    from notifications.tasks import send_reminders

    tutor = create_provider(db)
    student = create_user(db)
    set_user(db, student, locale="en", time_zone="Asia/Tokyo")
    set_user(db, tutor, locale="en")
    soon = insert_booking_event(
        db, student=student, provider=tutor, starts_at=utcnow() + timedelta(minutes=40)
    )
    tomorrow = insert_booking_event(
        db, student=student, provider=tutor, starts_at=utcnow() + timedelta(hours=20)
    )
    insert_booking_event(
        db, student=student, provider=tutor, starts_at=utcnow() + timedelta(days=3)
    )
    insert_booking_event(
        db,
        student=student,
        provider=tutor,
        starts_at=utcnow() + timedelta(hours=5),
        status="canceled",
    )
    _worker(start_worker)
    first = send_reminders()
    second = send_reminders()  # the beat firing twice
    assert first == 4
    assert second == 0
    wait_for(lambda: len(smtp_sink.messages) == 4, "four reminder emails")
    kinds = sorted(
        (str(r["kind"]), str(r["data"]["booking_id"])) for r in rows(db, "channel = 'email'")
    )
    assert kinds == sorted([("reminder.1h", str(soon))] * 2 + [("reminder.24h", str(tomorrow))] * 2)
    subjects = sorted(m["Subject"] for m in smtp_sink.messages)
    assert subjects[0] == "In one hour: your session"
    assert subjects[-1].startswith("Tomorrow: your session")
    assert send_reminders() == 0
    assert len(smtp_sink.messages) == 4


# --- preferences ------------------------------------------------------------------------


async def test_preferences_are_respected_and_transactional_email_stays_on(
    api: httpx.AsyncClient, db: psycopg.Connection[Any], database_url: str, redis_url: str
) -> None:
    tutor = create_provider(db)
    student = create_user(db)
    set_user(db, student, phone="+33612345678")
    h = bearer(student, "student")
    prefs = (await api.get("/api/v1/me/notification-preferences", headers=h)).json()["items"]
    by = {(p["kind"], p["channel"]): p for p in prefs}
    assert len(prefs) == 12 * 4
    assert by[("booking.confirmed", "email")] == {
        "kind": "booking.confirmed",
        "channel": "email",
        "enabled": True,
        "locked": True,
    }
    assert by[("booking.confirmed", "sms")]["enabled"] is False
    assert by[("reminder.1h", "sms")]["enabled"] is True
    assert by[("review.posted", "email")]["locked"] is False

    r = await api.put("/api/v1/me/notification-preferences", headers=h,
                      json={"items": [{"kind": "booking.confirmed", "channel": "email", "enabled": False}]})  # fmt: skip
    assert r.status_code == 422
    assert r.json()["code"] == "transactional_email"
    r = await api.put("/api/v1/me/notification-preferences", headers=h,
                      json={"items": [{"kind": "nope", "channel": "email", "enabled": False}]})  # fmt: skip
    assert r.status_code == 422
    r = await api.put("/api/v1/me/notification-preferences", headers=h, json={"items": [
        {"kind": "booking.confirmed", "channel": "in_app", "enabled": False},
        {"kind": "booking.confirmed", "channel": "sms", "enabled": True},
    ]})  # fmt: skip
    assert r.status_code == 200, r.text
    got = {(p["kind"], p["channel"]): p["enabled"] for p in r.json()["items"]}
    assert got[("booking.confirmed", "in_app")] is False
    assert got[("booking.confirmed", "sms")] is True

    b = insert_booking_event(
        db, student=student, provider=tutor, starts_at=utcnow() + timedelta(days=3)
    )
    db.execute(
        "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) VALUES"
        " ('booking', %s, 'booking.confirmed', %s::jsonb)", (str(b), f'{{"booking_id": "{b}"}}'),
    )  # fmt: skip
    drain(database_url)
    mine = rows(db, "user_id = %s", (student,))
    assert sorted(r["channel"] for r in mine) == ["email", "sms"]
    assert next(r for r in mine if r["channel"] == "sms")["address"] == "+33612345678"
    # the provider kept the defaults: email and in-app
    assert sorted(r["channel"] for r in rows(db, "user_id = %s", (tutor,))) == ["email", "in_app"]


# --- SMS and push through their SDKs ------------------------------------------------------


def test_sms_and_push_go_through_the_sdks_to_the_standins(
    db: psycopg.Connection[Any], standins: dict[str, Any], database_url: str, redis_url: str
) -> None:
    from notifications import service
    from notifications.channels import get_channel

    student = create_user(db)
    bad = create_user(db)
    set_user(db, student, phone="+33612345678", locale="fr")
    set_user(db, bad, phone="+15005550001")
    for u, token in ((student, "device-token-1"), (bad, "unregistered-token")):
        db.execute("INSERT INTO push_devices (user_id, token) VALUES (%s, %s)", (u, token))
        db.execute(
            "INSERT INTO notification_preferences (user_id, kind, channel, enabled) VALUES (%s, 'reminder.1h', 'email', false)",
            (u,),
        )
    for u in (student, bad):
        insert_booking_event(
            db, student=u, provider=create_provider(db), starts_at=utcnow() + timedelta(minutes=30)
        )
    with db.transaction():
        ids = service.send_reminders(db, now=utcnow())
    queued = {
        r["id"]: r for r in rows(db, "state = 'queued' AND user_id IN (%s, %s)", (student, bad))
    }
    assert sorted(r["channel"] for r in queued.values()) == ["push", "push", "sms", "sms"]
    assert set(queued) <= set(ids)

    standins["fcm"].recorder.failures.append(503)  # the first push: FCM unavailable
    outcomes = {}
    for nid, r in sorted(
        queued.items(), key=lambda kv: (kv[1]["channel"], str(kv[1]["user_id"]) != str(student))
    ):
        outcomes[(r["channel"], r["user_id"] == student)] = service.deliver(
            db, nid, get_channel
        ).state
    assert outcomes[("sms", True)] == "sent"
    assert outcomes[("sms", False)] == "dead"
    assert outcomes[("push", False)] == "dead"  # UNREGISTERED is permanent
    assert outcomes[("push", True)] in ("retry", "sent")  # firebase-admin retries 503 itself
    sms = standins["twilio"].recorder.items
    assert [(m["to"], m["from"]) for m in sms] == [("+33612345678", "+15005550006")]
    assert sms[0]["body"].startswith("Votre séance avec Provider commence le")
    dead = {r["channel"]: r["last_error"] for r in rows(db, "state = 'dead'")}
    assert "21211" in dead["sms"]
    assert "Unregistered" in dead["push"]
    if outcomes[("push", True)] == "retry":
        nid = next(
            i for i, r in queued.items() if r["channel"] == "push" and r["user_id"] == student
        )
        db.execute("UPDATE notifications SET next_attempt_at = now() WHERE id = %s", (nid,))
        assert service.deliver(db, nid, get_channel).state == "sent"
    pushes = standins["fcm"].recorder.items
    assert len(pushes) == 1
    assert pushes[0]["message"]["token"] == "device-token-1"
    assert pushes[0]["message"]["notification"]["title"] == "Dans une heure : votre séance"
    # a sent row is never sent again
    sent = next(i for i, r in queued.items() if r["channel"] == "sms" and r["user_id"] == student)
    assert service.deliver(db, sent, get_channel).state == "skipped"
    assert len(standins["twilio"].recorder.items) == 1


# --- events emitted by payments -------------------------------------------------------------


def test_payment_refund_and_payout_events_reach_their_recipients(
    db: psycopg.Connection[Any], database_url: str, redis_url: str
) -> None:
    tutor = create_provider(db)
    student = create_user(db)
    b = insert_booking_event(
        db, student=student, provider=tutor, starts_at=utcnow() + timedelta(days=3)
    )
    pay = db.execute(
        "INSERT INTO payments (booking_id, payer_id, provider_id, gateway, gateway_ref, price_minor,"
        " amount_minor, currency, status, failure_message)"
        " VALUES (%s, %s, %s, 'stripe', 'pi_x', 1000, 1000, 'EUR', 'failed', 'card declined') RETURNING id",
        (b, student, tutor),
    ).fetchone()[0]
    payout = db.execute(
        "INSERT INTO payouts (provider_id, currency, gross_minor, fee_minor, net_minor)"
        " VALUES (%s, 'EUR', 5000, 0, 5000) RETURNING id", (tutor,),
    ).fetchone()[0]  # fmt: skip
    review = db.execute(
        "INSERT INTO reviews (booking_id, provider_id, student_id, author_id, rating)"
        " VALUES (%s, %s, %s, %s, 5) RETURNING id", (b, tutor, student, student),
    ).fetchone()[0]  # fmt: skip
    for kind, payload in (
        ("payment.failed", {"payment_id": str(pay), "booking_id": str(b)}),
        ("payout.paid", {"payout_id": str(payout), "provider_id": str(tutor)}),
        ("review.posted", {"review_id": str(review), "provider_id": str(tutor)}),
        ("review.posted", {"review_id": str(uuid.uuid4()), "provider_id": str(tutor)}),  # gone
        ("booking.refunded", {"booking_id": str(b)}),  # nobody hears about it
    ):
        db.execute(
            "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) VALUES ('x', '1', %s, %s::jsonb)",
            (kind, __import__("json").dumps(payload)),
        )
    drain(database_url)
    got = sorted((r["kind"], r["channel"], r["user_id"] == tutor) for r in rows(db))
    assert got == [
        ("payment.failed", "email", False), ("payment.failed", "in_app", False),
        ("payout.paid", "email", True), ("payout.paid", "in_app", True),
        ("review.posted", "email", True), ("review.posted", "in_app", True),
    ]  # fmt: skip
    failed = rows(db, "kind = 'payment.failed' AND channel = 'email'")[0]
    assert "10.00" in failed["subject"] or "card declined" in failed["body_text"]


def test_a_refund_is_told_to_whoever_paid_not_to_the_student(
    db: psycopg.Connection[Any], database_url: str, redis_url: str
) -> None:
    tutor = create_provider(db)
    student, parent = create_user(db), create_user(db, role="parent")
    b = insert_booking_event(
        db, student=student, provider=tutor, starts_at=utcnow() + timedelta(days=3)
    )
    pay = db.execute(
        "INSERT INTO payments (booking_id, payer_id, provider_id, gateway, gateway_ref, price_minor,"
        " amount_minor, captured_minor, currency, status, succeeded_at) VALUES"
        " (%s, %s, %s, 'stripe', 'pi_p', 1000, 1000, 1000, 'EUR', 'succeeded', now()) RETURNING id",
        (b, parent, tutor),
    ).fetchone()[0]
    refund = db.execute(
        "INSERT INTO refunds (payment_id, booking_id, seq, amount_minor, currency, reason)"
        " VALUES (%s, %s, 1, 400, 'EUR', 'booking_canceled') RETURNING id", (pay, b),
    ).fetchone()[0]  # fmt: skip
    db.execute(
        "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
        " VALUES ('refund', %s, 'refund.succeeded', %s::jsonb)",
        (str(refund), __import__("json").dumps({"refund_id": str(refund), "booking_id": str(b)})),
    )
    drain(database_url)
    told = rows(db, "kind = 'refund.succeeded'")
    assert {r["user_id"] for r in told} == {parent}
    assert {r["channel"] for r in told} == {"email", "in_app"}
    email = next(r for r in told if r["channel"] == "email")
    assert "4,00" in email["subject"]  # the payer's locale (fr by default)


async def test_admin_queues_reports_broker_workers_and_states(
    api: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    admin = create_user(db, role="admin")
    r = await api.get("/api/v1/admin/queues", headers=bearer(admin, "admin"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["queues"] == {"celery": 0}
    assert body["workers"] == []
    assert body["dead_letters"] == 0
    r = await api.get("/api/v1/admin/queues", headers=bearer(create_user(db), "student"))
    assert r.status_code == 403


async def test_a_posted_review_reaches_the_provider_with_its_rating_and_comment(
    api: httpx.AsyncClient, db: psycopg.Connection[Any], database_url: str, app: Any
) -> None:
    """`review.posted` carries keys only: the consumer reads the review by `review_id`,
    so the provider's in-app notice shows the real stars and comment (not "?")."""
    from api.deps import get_now
    from tests.reviews.helpers import AFTER, completed_booking, tutor

    app.dependency_overrides[get_now] = lambda: AFTER
    provider = tutor(db)
    booking, student = completed_booking(db, provider)
    r = await api.post(
        f"/api/v1/bookings/{booking}/review",
        headers=bearer(student, "student"),
        json={"rating": 4, "comment": "Very clear explanations", "locale": "en"},
    )
    assert r.status_code == 201, r.text
    drain(database_url)
    (notice,) = rows(db, "kind = 'review.posted' AND channel = 'in_app'")
    assert notice["user_id"] == provider
    shown = f"{notice['subject']} {notice['body_text']}"
    assert "4/5" in shown, shown
    assert "?" not in notice["subject"], shown
    (email,) = rows(db, "kind = 'review.posted' AND channel = 'email'")
    assert "4/5" in email["subject"]
    assert "Very clear explanations" in email["body_text"]
