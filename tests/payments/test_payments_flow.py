"""Payments end to end: the API and a Celery worker as real subprocesses, the Stripe
stand-in over HTTP (its webhooks signed by it and verified by `stripe.Webhook`), real
PostgreSQL and Redis. Holds are taken through the booking API; the student "pays" the way
Stripe.js would, by confirming the PaymentIntent at the stand-in with the SDK. Effects of
the webhook task are awaited by bounded polling, never by sleeping.

Every test ends with the ledger balanced per transaction and per currency.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
import stripe

from core.settings import get_settings
from payments import tasks
from tests.booking.helpers import create_slot
from tests.conftest import bearer, create_provider, create_user, truncate_all
from tests.payments.kit import (
    API_KEY,
    Stack,
    running_stack,
    stripe_env,
    unbalanced,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(database_url: str) -> Iterator[Stack]:
    with running_stack(database_url) as s:
        yield s


@pytest.fixture(autouse=True)
def market(stack: Stack, database_url: str) -> Iterator[dict[str, Any]]:
    """A tutor with a 1:1 slot in 3 days, two students, an admin; the stand-in delivering
    webhooks. Afterwards: the ledger balances, then the tables are emptied."""
    stack.standin.standin.reset()
    stack.standin.standin.deliver = True
    stack.standin.standin.refund_status = "succeeded"
    with psycopg.connect(database_url, autocommit=True) as db:
        tutor = create_provider(db)
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
        slot = create_slot(db, tutor, start=start, minutes=60, capacity=1)
        data = {
            "db": db,
            "tutor": tutor,
            "slot": slot,
            "alice": create_user(db, role="student"),
            "bob": create_user(db, role="student"),
            "admin": create_user(db, role="admin"),
        }
        try:
            yield data
            wait_for(lambda: settled(db), "every webhook event processed", 30)
            assert unbalanced(db) == []
        finally:
            truncate_all(database_url)


def settled(db: psycopg.Connection[Any]) -> bool:
    """No webhook event left unprocessed and no refund pending."""
    row = db.execute(
        "SELECT (SELECT count(*) FROM webhook_events WHERE processed_at IS NULL)"
        " + (SELECT count(*) FROM refunds WHERE status = 'pending')"
    ).fetchone()
    return row is not None and row[0] == 0


def hold(stack: Stack, student: Any, slot: Any) -> dict[str, Any]:
    r = stack.http.post(
        "/api/v1/bookings",
        json={"slot_id": str(slot)},
        headers={**bearer(student, "student"), "Idempotency-Key": f'"{uuid.uuid4()}"'},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def pay_intent(stack: Stack, student: Any, booking_id: Any) -> httpx.Response:
    return stack.http.post(
        f"/api/v1/bookings/{booking_id}/payment-intent", headers=bearer(student, "student")
    )


def one(db: psycopg.Connection[Any], sql: str, *args: Any) -> Any:
    row = db.execute(sql, args).fetchone()
    return None if row is None else (row[0] if len(row) == 1 else row)


def booking_status(db: psycopg.Connection[Any], booking_id: Any) -> str:
    return str(one(db, "SELECT status FROM bookings WHERE id = %s", booking_id))


def payment_row(db: psycopg.Connection[Any], booking_id: Any) -> Any:
    return db.execute(
        "SELECT status, gateway_ref, captured_minor, refunded_minor FROM payments"
        " WHERE booking_id = %s",
        (booking_id,),
    ).fetchone()


def ledger_kinds(db: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in db.execute("SELECT kind FROM ledger_transactions ORDER BY created_at")]


def paid(stack: Stack, market: dict[str, Any], start: datetime | None = None) -> dict[str, Any]:
    """Alice's booking — of the market's slot, or of a new one-seat slot at `start` —
    paid through the stand-in and confirmed by the webhook."""
    slot = market["slot"]
    if start is not None:
        slot = create_slot(market["db"], market["tutor"], start=start, minutes=60, capacity=1)
    booking = hold(stack, market["alice"], slot)
    assert pay_intent(stack, market["alice"], booking["id"]).status_code == 200
    (intent,) = stack.intents_of(booking["id"])
    stack.sdk.v1.payment_intents.confirm(intent["id"], {"payment_method": "pm_card_visa"})
    wait_for(lambda: booking_status(market["db"], booking["id"]) == "confirmed", "confirmation")
    return booking


def payments_cli(stack: Stack, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`educonnect payments <args>` in a process of its own, on the stack's settings."""
    env = {**os.environ, **stripe_env(stack.standin.url, database_url)}
    cmd = [sys.executable, "-m", "cli", "payments", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def _reconcile(stack: Stack, database_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return payments_cli(stack, database_url, "reconcile", "--since", "1d", *extra)


# ------------------------------------------------------------------ happy path


def test_hold_intent_webhook_confirmed_and_five_concurrent_intent_calls_one_intent(
    stack: Stack, market: dict[str, Any]
) -> None:
    db = market["db"]
    booking = hold(stack, market["alice"], market["slot"])
    with ThreadPoolExecutor(5) as pool:
        answers = list(
            pool.map(lambda _: pay_intent(stack, market["alice"], booking["id"]), range(5))
        )
    assert [a.status_code for a in answers] == [200] * 5, [a.text for a in answers]
    bodies = [a.json() for a in answers]
    assert len({b["payment_id"] for b in bodies}) == 1
    assert len({b["client_secret"] for b in bodies}) == 1
    assert bodies[0]["amount_minor"] == booking["price_minor"]
    assert (bodies[0]["currency"], bodies[0]["status"]) == ("EUR", "requires_payment")
    (intent,) = stack.intents_of(booking["id"])
    assert intent["amount"] == booking["price_minor"]
    assert one(db, "SELECT count(*) FROM payments") == 1

    # Bob (another student) cannot pay Alice's booking.
    assert pay_intent(stack, market["bob"], booking["id"]).status_code == 404

    stack.sdk.v1.payment_intents.confirm(intent["id"], {"payment_method": "pm_card_visa"})
    wait_for(lambda: booking_status(db, booking["id"]) == "confirmed", "the booking confirmed")
    status, ref, captured, refunded = payment_row(db, booking["id"])
    assert (status, ref, captured, refunded) == (
        "succeeded",
        intent["id"],
        booking["price_minor"],
        0,
    )
    wait_for(lambda: settled(db), "events processed")
    assert ledger_kinds(db) == ["payment"]
    earned = one(
        db,
        "SELECT sum(amount_minor) FROM ledger_entries WHERE account = %s",
        f"provider:{market['tutor']}",
    )
    assert earned == booking["price_minor"] - booking["price_minor"] * 1500 // 10_000
    # once paid, the same intent is still returned (never a second one)
    again = pay_intent(stack, market["alice"], booking["id"])
    assert (again.json()["payment_id"], again.json()["status"]) == (
        bodies[0]["payment_id"],
        "succeeded",
    )
    assert len(stack.intents_of(booking["id"])) == 1


# ------------------------------------------------------------------ duplicates, order


def test_succeeded_before_created_and_three_deliveries_confirm_once(
    stack: Stack, market: dict[str, Any]
) -> None:
    db = market["db"]
    stack.standin.standin.deliver = False
    booking = hold(stack, market["alice"], market["slot"])
    assert pay_intent(stack, market["alice"], booking["id"]).status_code == 200
    (intent,) = stack.intents_of(booking["id"])
    stack.sdk.v1.payment_intents.confirm(intent["id"], {"payment_method": "pm_card_visa"})
    events = {
        e["type"]: e["id"]
        for e in stack.standin.standin.events.values()
        if e["data"]["object"].get("id") == intent["id"]
    }
    order = [events["payment_intent.succeeded"], events["payment_intent.created"]]
    order += [events["payment_intent.succeeded"]] * 2
    statuses = [stack.standin.standin.deliver_now(evt) for evt in order]
    assert statuses == [200, 200, 200, 200]
    wait_for(
        lambda: settled(db) and booking_status(db, booking["id"]) == "confirmed", "confirmation"
    )
    assert one(db, "SELECT count(*) FROM webhook_events") == 2
    assert one(db, "SELECT count(*) FROM audit_log WHERE action = 'booking.confirmed'") == 1
    assert one(db, "SELECT count(*) FROM outbox WHERE event_type = 'booking.confirmed'") == 1
    assert ledger_kinds(db) == ["payment"]


# ------------------------------------------------------------------ failure and retry


def test_declined_card_confirms_nothing_keeps_the_hold_and_a_retry_succeeds(
    stack: Stack, market: dict[str, Any]
) -> None:
    db = market["db"]
    booking = hold(stack, market["alice"], market["slot"])
    expiry = one(db, "SELECT hold_expires_at FROM bookings WHERE id = %s", booking["id"])
    assert pay_intent(stack, market["alice"], booking["id"]).status_code == 200
    (intent,) = stack.intents_of(booking["id"])
    with pytest.raises(stripe.CardError):
        stack.sdk.v1.payment_intents.confirm(
            intent["id"], {"payment_method": "pm_card_chargeDeclined"}
        )
    wait_for(lambda: payment_row(db, booking["id"])[0] == "failed", "the payment failed")
    assert booking_status(db, booking["id"]) == "pending"
    assert one(db, "SELECT hold_expires_at FROM bookings WHERE id = %s", booking["id"]) == expiry
    assert ledger_kinds(db) == []
    retry = pay_intent(stack, market["alice"], booking["id"]).json()
    assert retry["status"] == "failed"
    stack.sdk.v1.payment_intents.confirm(intent["id"], {"payment_method": "pm_card_visa"})
    wait_for(lambda: booking_status(db, booking["id"]) == "confirmed", "the retry confirmed")
    assert payment_row(db, booking["id"])[0] == "succeeded"


# ------------------------------------------------------------------ seat resold


def test_success_after_the_hold_expired_and_the_seat_was_resold_refunds_in_full(
    stack: Stack, market: dict[str, Any]
) -> None:
    db = market["db"]
    first = hold(stack, market["alice"], market["slot"])
    assert pay_intent(stack, market["alice"], first["id"]).status_code == 200
    (intent,) = stack.intents_of(first["id"])
    # Alice's hold lapses (time passes); Bob takes the seat.
    db.execute(
        "UPDATE bookings SET hold_expires_at = now() - interval '1 minute' WHERE id = %s",
        (first["id"],),
    )
    second = hold(stack, market["bob"], market["slot"])
    # Alice's payment goes through late.
    stack.sdk.v1.payment_intents.confirm(intent["id"], {"payment_method": "pm_card_visa"})
    wait_for(lambda: settled(db) and one(db, "SELECT count(*) FROM refunds") == 1, "the refund")
    status, _, captured, refunded = payment_row(db, first["id"])
    assert (status, captured, refunded) == ("succeeded", first["price_minor"], first["price_minor"])
    assert one(db, "SELECT status, amount_minor FROM refunds") == (
        "succeeded",
        first["price_minor"],
    )
    assert booking_status(db, first["id"]) == "expired"
    assert booking_status(db, second["id"]) == "pending"
    assert sorted(ledger_kinds(db)) == ["payment", "refund"]
    tutor_balance = one(
        db, "SELECT coalesce(sum(amount_minor), 0) FROM ledger_entries WHERE account = %s",
        f"provider:{market['tutor']}",
    )  # fmt: skip
    assert tutor_balance == 0
    (refund,) = stack.standin.standin.refunds.values()
    assert refund["amount"] == first["price_minor"]
    assert refund["metadata"]["booking_id"] == first["id"]


# ------------------------------------------------------------------ cancellation


def test_canceling_a_confirmed_booking_refunds_the_policy_share_then_booking_refunded(
    stack: Stack, market: dict[str, Any], database_url: str
) -> None:
    db = market["db"]
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=5)
    booking = paid(stack, market, soon)
    r = stack.http.post(
        f"/api/v1/bookings/{booking['id']}/cancel", headers=bearer(market["alice"], "student")
    )
    assert r.status_code == 200, r.text
    due = r.json()["refund_due_minor"]
    assert 0 < due < booking["price_minor"]  # 5 h before: the platform policy's 50 % tier
    wait_for(lambda: booking_status(db, booking["id"]) == "refunded", "the booking refunded")
    assert one(db, "SELECT status, amount_minor, seq FROM refunds") == ("succeeded", due, 1)
    assert payment_row(db, booking["id"])[3] == due
    wait_for(lambda: settled(db), "events processed")
    assert sorted(ledger_kinds(db)) == ["payment", "refund"]
    key = f"re:{booking['id']}:1"
    assert (API_KEY, key) in stack.standin.standin.idempotency


def _race_once(stack: Stack, market: dict[str, Any], start: datetime) -> tuple[str, int]:
    """Cancel a paid-at-the-same-instant hold; returns the booking's final state and what
    stays charged (captured less refunded)."""
    db = market["db"]
    slot = create_slot(db, market["tutor"], start=start, minutes=60, capacity=1)
    booking = hold(stack, market["alice"], slot)
    assert pay_intent(stack, market["alice"], booking["id"]).status_code == 200
    (intent,) = stack.intents_of(booking["id"])
    go = threading.Barrier(2)

    def cancel() -> int:
        go.wait()
        r = stack.http.post(
            f"/api/v1/bookings/{booking['id']}/cancel", headers=bearer(market["alice"], "student")
        )
        return r.status_code

    def succeed() -> str:
        go.wait()
        try:
            stack.sdk.v1.payment_intents.confirm(intent["id"], {"payment_method": "pm_card_visa"})
            return "paid"
        except stripe.InvalidRequestError:
            return "too_late"  # canceled at Stripe first

    with ThreadPoolExecutor(2) as pool:
        c, s = pool.submit(cancel), pool.submit(succeed)
        assert c.result() in (200, 409)
        s.result()

    def final() -> tuple[str, int] | None:
        if not settled(db):
            return None
        status, _, captured, refunded = payment_row(db, booking["id"])
        state = booking_status(db, booking["id"])
        if state in ("pending", "confirmed"):
            return None  # the cancellation (or its refund) is still to come
        return state, (captured - refunded if status == "succeeded" else 0)

    return wait_for(final, "a final state")  # type: ignore[no-any-return]


def test_cancel_racing_a_late_success_never_ends_charged_and_canceled(
    stack: Stack, market: dict[str, Any]
) -> None:
    for days in (4, 5, 6):
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)
        state, charged = _race_once(stack, market, start)
        # canceled with nothing kept (never charged, or charged and refunded in full), or
        # confirmed then canceled and refunded (≥ 24 h before: the whole price)
        assert (state, charged) in (("canceled", 0), ("refunded", 0)), (state, charged)


# ------------------------------------------------------------------ gateway outage at cancel


def _refused(stack: Stack, call: str) -> int:
    with stack.standin.standin.lock:
        return sum(c == call for c in stack.standin.standin.refused)


def _sweep(stack: Stack, database_url: str) -> str:
    done = payments_cli(stack, database_url, "sweep", "--older-than", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_cancel_during_a_gateway_outage_answers_with_its_refund_recorded_and_the_sweep_sends_it(
    stack: Stack, market: dict[str, Any], database_url: str
) -> None:
    db = market["db"]
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    booking = paid(stack, market, start)
    attempts = get_settings().stripe_max_network_retries + 1  # the SDK's, per call
    standin = stack.standin.standin
    standin.refused.clear()
    standin.outage = True
    try:
        r = stack.http.post(
            f"/api/v1/bookings/{booking['id']}/cancel", headers=bearer(market["alice"], "student")
        )
        assert r.status_code == 200, r.text
        due = r.json()["refund_due_minor"]
        assert due == booking["price_minor"]  # ≥ 24 h before: the whole price
        # committed with the cancellation, before the answer: owed, and reserved on the payment
        assert one(db, "SELECT status, amount_minor, reason FROM refunds") == (
            "pending", due, "booking_canceled",
        )  # fmt: skip
        assert payment_row(db, booking["id"])[3] == due
        assert booking_status(db, booking["id"]) == "canceled"
        # the after-answer send met the outage (each SDK attempt refused), and gave up
        wait_for(lambda: _refused(stack, "POST /v1/refunds") == attempts, "the refused sends")
    finally:
        standin.outage = False
    assert one(db, "SELECT status FROM refunds") == "pending"
    # beat's sweep, run by the stack's worker (what is due now, not after a minute)
    tasks.sweep.apply_async(kwargs={"older_than_s": 0})
    wait_for(lambda: booking_status(db, booking["id"]) == "refunded", "the booking refunded")
    assert one(db, "SELECT status, seq FROM refunds") == ("succeeded", 1)
    assert (API_KEY, f"re:{booking['id']}:1") in standin.idempotency
    wait_for(lambda: settled(db), "events processed")
    assert sorted(ledger_kinds(db)) == ["payment", "refund"]


def test_canceling_an_unpaid_hold_cancels_its_intent_and_the_sweep_does_what_an_outage_left(
    stack: Stack, market: dict[str, Any], database_url: str
) -> None:
    db, alice = market["db"], market["alice"]
    standin = stack.standin.standin

    def unpaid(days: int) -> tuple[dict[str, Any], str]:
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)
        slot = create_slot(db, market["tutor"], start=start, minutes=60, capacity=1)
        booking = hold(stack, alice, slot)
        assert pay_intent(stack, alice, booking["id"]).status_code == 200
        (intent,) = stack.intents_of(booking["id"])
        return booking, str(intent["id"])

    def cancel(booking: dict[str, Any]) -> None:
        r = stack.http.post(
            f"/api/v1/bookings/{booking['id']}/cancel", headers=bearer(alice, "student")
        )
        assert r.status_code == 200, r.text
        assert r.json()["refund_due_minor"] == 0

    def intent_status(ref: str) -> str:
        with standin.lock:
            return str(standin.intents[ref]["status"])

    # the after-answer work cancels the intent at Stripe: it can no longer be paid
    booking, ref = unpaid(11)
    cancel(booking)
    wait_for(lambda: payment_row(db, booking["id"])[0] == "canceled", "the payment canceled")
    assert intent_status(ref) == "canceled"
    with pytest.raises(stripe.InvalidRequestError):
        stack.sdk.v1.payment_intents.confirm(ref, {"payment_method": "pm_card_visa"})

    # during an outage it cannot: the intent stays open until the sweep
    attempts = get_settings().stripe_max_network_retries + 1
    booking, ref = unpaid(12)
    wait_for(lambda: settled(db), "the intent's events processed")
    standin.refused.clear()
    standin.outage = True
    try:
        cancel(booking)
        cancel_call = f"POST /v1/payment_intents/{ref}/cancel"
        wait_for(lambda: _refused(stack, cancel_call) == attempts, "the refused cancels")
        # then its re-read, refused too (the worker's re-read of an event delivered late
        # may be among them: at least as many)
        read = f"GET /v1/payment_intents/{ref}"
        wait_for(lambda: _refused(stack, read) >= attempts, "the refused re-reads")
    finally:
        standin.outage = False
    assert payment_row(db, booking["id"])[0] == "requires_payment"
    assert intent_status(ref) == "requires_payment_method"
    assert "1 open intent(s) of canceled bookings canceled" in _sweep(stack, database_url)
    assert intent_status(ref) == "canceled"
    assert payment_row(db, booking["id"])[0] == "canceled"
    assert booking_status(db, booking["id"]) == "canceled"


# ------------------------------------------------------------------ database guarantee


def test_a_refund_above_the_captured_amount_is_refused_by_the_database(
    stack: Stack, market: dict[str, Any]
) -> None:
    db = market["db"]
    booking = paid(stack, market)
    payment_id, captured = db.execute(
        "SELECT id, captured_minor FROM payments WHERE booking_id = %s", (booking["id"],)
    ).fetchone()
    insert = (
        "INSERT INTO refunds (payment_id, booking_id, seq, amount_minor, currency, reason)"
        " VALUES (%s, %s, %s, %s, 'EUR', 'test')"
    )
    db.execute(insert, (payment_id, booking["id"], 1, captured - 100))
    with pytest.raises(psycopg.errors.CheckViolation, match="payments_refunds_within_capture"):
        db.execute(insert, (payment_id, booking["id"], 2, 101))
    db.execute("UPDATE refunds SET status = 'failed'")  # release, so the fixture settles


# ------------------------------------------------------------------ complaint refunds


def _complaint(stack: Stack, student: Any, booking_id: Any) -> str:
    r = stack.http.post(
        f"/api/v1/bookings/{booking_id}/complaints",
        headers=bearer(student, "student"),
        json={"reason": "The tutor left after ten minutes"},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_a_complaint_closed_with_a_partial_refund_refunds_at_stripe_and_never_beyond(
    stack: Stack, market: dict[str, Any]
) -> None:
    db, alice, admin = market["db"], market["alice"], market["admin"]
    booking = paid(stack, market)
    captured = payment_row(db, booking["id"])[2]
    part = booking["price_minor"] // 3
    assert 0 < part < captured

    first = _complaint(stack, alice, booking["id"])
    r = stack.http.patch(
        f"/api/v1/admin/complaints/{first}",
        headers=bearer(admin, "admin"),
        json={"status": "closed", "note": "partly refunded", "refund_minor": part},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["refund_due_minor"], r.json()["refund_status"]) == (part, "refunded")
    # at Stripe (the stand-in): one refund of that amount, under our idempotency key
    with stack.standin.standin.lock:
        at_stripe = [x["amount"] for x in stack.standin.standin.refunds.values()]
    assert at_stripe == [part]
    assert (API_KEY, f"re:{booking['id']}:1") in stack.standin.standin.idempotency
    assert one(db, "SELECT status, amount_minor, reason FROM refunds") == (
        "succeeded", part, f"complaint:{first}",
    )  # fmt: skip
    assert payment_row(db, booking["id"])[3] == part
    assert booking_status(db, booking["id"]) == "confirmed"  # a complaint cancels nothing
    assert sorted(ledger_kinds(db)) == ["payment", "refund"]
    assert unbalanced(db) == []

    # a second complaint asking for more than what remains refundable: 409, nothing written
    second = _complaint(stack, alice, booking["id"])
    audits = one(db, "SELECT count(*) FROM audit_log")
    r = stack.http.patch(
        f"/api/v1/admin/complaints/{second}",
        headers=bearer(admin, "admin"),
        json={"status": "closed", "note": "the rest and more", "refund_minor": captured - part + 1},
    )
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "refund_too_large"
    assert r.json()["refundable_minor"] == captured - part
    assert one(db, "SELECT status, refund_status FROM complaints WHERE id = %s", second) == (
        "open", None,
    )  # fmt: skip
    assert one(db, "SELECT count(*) FROM refunds") == 1
    assert one(db, "SELECT count(*) FROM audit_log") == audits
    assert payment_row(db, booking["id"])[3] == part
    with stack.standin.standin.lock:
        assert len(stack.standin.standin.refunds) == 1


# ------------------------------------------------------------------ reconciliation


def test_reconcile_reports_then_fixes_a_missed_webhook(
    stack: Stack, market: dict[str, Any], database_url: str
) -> None:
    db = market["db"]
    stack.standin.standin.deliver = False
    booking = hold(stack, market["alice"], market["slot"])
    assert pay_intent(stack, market["alice"], booking["id"]).status_code == 200
    (intent,) = stack.intents_of(booking["id"])
    stack.sdk.v1.payment_intents.confirm(intent["id"], {"payment_method": "pm_card_visa"})
    report = _reconcile(stack, database_url)
    assert report.returncode == 0, report.stderr
    assert f"differs\t{intent['id']}\tlocal=requires_payment\tstripe=succeeded" in report.stdout
    assert booking_status(db, booking["id"]) == "pending"
    fixed = _reconcile(stack, database_url, "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"fixed\t{intent['id']}" in fixed.stdout
    assert booking_status(db, booking["id"]) == "confirmed"
    assert ledger_kinds(db) == ["payment"]


def _orphan(stack: Stack, booking: dict[str, Any]) -> str:
    """The intent our API would have created for the booking, created at the stand-in
    directly (same key and metadata) with no local row: a crash before the commit."""
    pi = stack.sdk.v1.payment_intents.create(
        {"amount": booking["price_minor"], "currency": booking["currency"].lower(),
         "metadata": {"booking_id": booking["id"]}},
        {"idempotency_key": f"pi:{booking['id']}"},
    )  # fmt: skip
    stack.sdk.v1.payment_intents.confirm(pi.id, {"payment_method": "pm_card_visa"})
    return str(pi.id)


def test_reconcile_adopts_an_orphan_intent_and_confirms_its_booking(
    stack: Stack, market: dict[str, Any], database_url: str
) -> None:
    db = market["db"]
    stack.standin.standin.deliver = False
    booking = hold(stack, market["alice"], market["slot"])
    ref = _orphan(stack, booking)
    report = _reconcile(stack, database_url)
    assert report.returncode == 0, report.stderr
    assert f"orphan\t{ref}\tlocal=missing\tstripe=succeeded\tbooking={booking['id']}" in (
        report.stdout
    )
    assert payment_row(db, booking["id"]) is None
    fixed = _reconcile(stack, database_url, "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"adopted\t{ref}" in fixed.stdout
    assert booking_status(db, booking["id"]) == "confirmed"
    assert payment_row(db, booking["id"])[:3] == ("succeeded", ref, booking["price_minor"])
    assert one(db, "SELECT payer_id FROM payments") == market["alice"]
    assert ledger_kinds(db) == ["payment"]
    # adopted once: a second run finds nothing, and the payer's retry returns that intent
    again = _reconcile(stack, database_url, "--fix")
    assert "0 difference(s)" in again.stdout, again.stdout
    r = pay_intent(stack, market["alice"], booking["id"])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"


def test_an_adopted_orphan_of_a_canceled_booking_is_refunded_in_full(
    stack: Stack, market: dict[str, Any], database_url: str
) -> None:
    db = market["db"]
    stack.standin.standin.deliver = False
    booking = hold(stack, market["alice"], market["slot"])
    r = stack.http.post(
        f"/api/v1/bookings/{booking['id']}/cancel", headers=bearer(market["alice"], "student")
    )
    assert r.status_code == 200, r.text
    ref = _orphan(stack, booking)  # paid in the instant the hold was canceled
    fixed = _reconcile(stack, database_url, "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"adopted\t{ref}" in fixed.stdout
    status, gateway_ref, captured, refunded = payment_row(db, booking["id"])
    assert (status, gateway_ref, captured, refunded) == ("succeeded", ref, captured, captured)
    assert booking_status(db, booking["id"]) in ("canceled", "refunded")
    assert ledger_kinds(db) == ["payment", "refund"]
    with stack.standin.standin.lock:
        (refund,) = stack.standin.standin.refunds.values()
    assert (refund["payment_intent"], refund["amount"]) == (ref, booking["price_minor"])


# ------------------------------------------------------------------ a canceled intent


def test_a_canceled_intent_is_replaced_once_never_two_live(
    stack: Stack, market: dict[str, Any]
) -> None:
    db = market["db"]
    booking = hold(stack, market["alice"], market["slot"])
    first = pay_intent(stack, market["alice"], booking["id"])
    assert first.status_code == 200, first.text
    old_ref = payment_row(db, booking["id"])[1]
    stack.sdk.v1.payment_intents.cancel(old_ref)
    wait_for(lambda: payment_row(db, booking["id"])[0] == "canceled", "the cancel applied")
    with ThreadPoolExecutor(5) as pool:
        answers = list(
            pool.map(lambda _: pay_intent(stack, market["alice"], booking["id"]), range(5))
        )
    assert [a.status_code for a in answers] == [200] * 5, [a.text for a in answers]
    assert {a.json()["client_secret"] for a in answers} != {first.json()["client_secret"]}
    assert len({a.json()["client_secret"] for a in answers}) == 1
    assert {a.json()["status"] for a in answers} == {"requires_payment"}
    intents = stack.intents_of(booking["id"])
    live = [i for i in intents if i["status"] != "canceled"]
    assert len(intents) == 2
    assert len(live) == 1
    assert live[0]["metadata"]["intent_attempt"] == "2"
    with stack.standin.standin.lock:
        keys = {k for _, k in stack.standin.standin.idempotency}
    assert f"pi:{booking['id']}:2" in keys
    status, ref, _, _ = payment_row(db, booking["id"])
    assert (status, ref) == ("requires_payment", live[0]["id"])
    stack.sdk.v1.payment_intents.confirm(ref, {"payment_method": "pm_card_visa"})
    wait_for(lambda: booking_status(db, booking["id"]) == "confirmed", "the booking confirmed")
    assert ledger_kinds(db) == ["payment"]
    # the old, canceled intent is not a difference for the reconciliation
    again = pay_intent(stack, market["alice"], booking["id"])
    assert again.json()["status"] == "succeeded"


def test_a_canceled_intent_of_an_expired_hold_is_not_replaced(
    stack: Stack, market: dict[str, Any]
) -> None:
    db = market["db"]
    booking = hold(stack, market["alice"], market["slot"])
    assert pay_intent(stack, market["alice"], booking["id"]).status_code == 200
    ref = payment_row(db, booking["id"])[1]
    stack.sdk.v1.payment_intents.cancel(ref)
    db.execute(
        "UPDATE bookings SET hold_expires_at = now() - interval '1 second' WHERE id = %s",
        (booking["id"],),
    )
    r = pay_intent(stack, market["alice"], booking["id"])
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "booking_not_payable"
    assert len(stack.intents_of(booking["id"])) == 1
