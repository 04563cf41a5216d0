"""Credits end to end: the API and a Celery worker as real subprocesses, the Stripe
stand-in over HTTP (Billing objects, PaymentIntents, webhooks it signs and
`stripe.Webhook` verifies), real PostgreSQL and Redis. Renewals, declines and period ends
are driven with the stand-in's test-clock helpers; effects of the webhook task are awaited
by bounded polling, never by sleeping. Every test ends with the ledger balanced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import stripe

from tests.booking.helpers import key, link_child
from tests.conftest import bearer, create_user, truncate_all
from tests.credits.helpers import create_plan
from tests.payments.kit import (
    API_KEY,
    Stack,
    running_stack,
    unbalanced,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(database_url: str) -> Iterator[Stack]:
    with running_stack(database_url) as s:
        yield s


def settled(db: psycopg.Connection[Any]) -> bool:
    row = db.execute("SELECT count(*) FROM webhook_events WHERE processed_at IS NULL").fetchone()
    return row is not None and row[0] == 0


@pytest.fixture(autouse=True)
def market(stack: Stack, database_url: str) -> Iterator[dict[str, Any]]:
    """A parent with a linked child, the plans; afterwards every event processed and the
    ledger balanced, then the tables emptied."""
    stack.standin.standin.reset()
    stack.standin.standin.deliver = True
    with psycopg.connect(database_url, autocommit=True) as db:
        parent, child = create_user(db, role="parent"), create_user(db, role="student")
        link_child(db, parent, child)
        create_plan(db, code="HYBRIDE", credits=4, prices={"EUR": 9900})
        create_plan(db, code="PACK_5", kind="pack", credits=5, prices={"EUR": 12500})
        try:
            yield {"db": db, "parent": parent, "child": child}
            wait_for(lambda: settled(db), "every webhook event processed", 30)
            assert unbalanced(db) == []
        finally:
            truncate_all(database_url)


def grants(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT type, credits, remaining, value_minor, currency, owner_id FROM credit_grants"
        " ORDER BY granted_at, id"
    ).fetchall()


def sub_status(db: psycopg.Connection[Any]) -> str | None:
    row = db.execute("SELECT status FROM credit_subscriptions").fetchone()
    return None if row is None else str(row[0])


def run(coro: Any) -> Any:
    """Run a job in this process on a loop of its own (its pooled connections closed after,
    so the next call's loop never meets them)."""
    from core.db import dispose_engines

    async def main() -> Any:
        try:
            return await coro
        finally:
            await dispose_engines()

    return asyncio.run(main())


def fresh_billing(stack: Stack) -> Any:
    """Our Billing adapter on an SDK client of its own (its async HTTP client belongs to
    the loop of the `run` that uses it)."""
    from credits.billing import StripeBilling

    http = stripe.HTTPXClient()
    return StripeBilling(
        stripe.StripeClient(API_KEY, base_addresses={"api": stack.standin.url}, http_client=http)
    )


def subscribe(
    stack: Stack, m: dict[str, Any], pm: str = "pm_card_visa", idem: dict[str, str] | None = None
) -> httpx.Response:
    return stack.http.post(
        "/api/v1/subscriptions",
        json={"plan_code": "HYBRIDE", "currency": "EUR", "student_id": str(m["child"]),
              "payment_method": pm},
        headers={**bearer(m["parent"], "parent"), **(key() if idem is None else idem)},
    )  # fmt: skip


def test_paid_invoice_grants_the_month_once_even_delivered_twice(
    stack: Stack, market: dict[str, Any]
) -> None:
    db, parent = market["db"], market["parent"]
    r = subscribe(stack, market)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "active"
    assert r.json()["credits_per_period"] == 4
    wait_for(lambda: len(grants(db)) == 1, "the month's credits granted")
    assert grants(db) == [("MONTHLY_ALLOCATION", 4, 4, 9900, "EUR", parent)]

    (paid,) = stack.events("invoice.paid")
    for _ in range(2):  # Stripe delivers at least once: twice more, signed again
        assert stack.standin.standin.deliver_now(paid["id"]) == 200
    wait_for(lambda: settled(db), "the redeliveries processed")
    # and the task's own path run once more for the same invoice grants nothing either
    from credits import jobs

    ref = paid["data"]["object"]["id"]
    assert run(jobs.sync_invoice(fresh_billing(stack), ref=ref)) is False
    assert len(grants(db)) == 1

    r = stack.http.get("/api/v1/me/credits", headers=bearer(parent, "parent"))
    assert r.json()["balance"] == 4
    r = stack.http.get("/api/v1/me/subscription", headers=bearer(market["child"], "student"))
    assert [s["status"] for s in r.json()["items"]] == ["active"]
    rows = db.execute(
        "SELECT e.account, e.amount_minor FROM ledger_entries e JOIN ledger_transactions t"
        " ON t.id = e.txn_id WHERE t.kind = 'credit_sale' ORDER BY e.account"
    ).fetchall()
    assert rows == [("cash:stripe", -9900), ("credits:liability", 9900)]


def test_renewal_grants_again_a_failed_payment_is_past_due_and_grants_nothing(
    stack: Stack, market: dict[str, Any]
) -> None:
    db = market["db"]
    assert subscribe(stack, market).status_code == 201
    wait_for(lambda: len(grants(db)) == 1, "the first month")
    ref = db.execute("SELECT gateway_ref FROM credit_subscriptions").fetchone()
    assert ref is not None
    standin = stack.standin.standin

    with standin.lock:
        standin.advance_subscription(ref[0], fail=False)
    wait_for(lambda: len(grants(db)) == 2, "the second month")

    with standin.lock:
        standin.advance_subscription(ref[0], fail=True)
    wait_for(lambda: sub_status(db) == "past_due", "the subscription past due")
    wait_for(lambda: settled(db), "the failure processed")
    assert len(grants(db)) == 2

    (failed,) = stack.events("invoice.payment_failed")
    with standin.lock:
        standin.settle_invoice(failed["data"]["object"]["id"], paid=True)
    wait_for(lambda: len(grants(db)) == 3, "the late payment's month")
    wait_for(lambda: sub_status(db) == "active", "active again")


def test_a_declined_first_invoice_leaves_it_incomplete_without_credits(
    stack: Stack, market: dict[str, Any]
) -> None:
    db = market["db"]
    r = subscribe(stack, market, pm="pm_card_chargeDeclined")
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "incomplete"
    wait_for(lambda: bool(stack.events("invoice.payment_failed")), "the decline")
    wait_for(lambda: settled(db), "the decline processed")
    assert grants(db) == []
    # a live (incomplete) subscription blocks a second one for the same child
    assert subscribe(stack, market).status_code == 409


def test_cancel_at_period_end_keeps_the_month_then_ends(
    stack: Stack, market: dict[str, Any]
) -> None:
    db, parent = market["db"], market["parent"]
    sub = subscribe(stack, market).json()
    wait_for(lambda: len(grants(db)) == 1, "the first month")
    r = stack.http.post(
        f"/api/v1/subscriptions/{sub['id']}/cancel", headers=bearer(parent, "parent")
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["cancel_at_period_end"]) == ("active", True)
    other = stack.http.post(
        f"/api/v1/subscriptions/{sub['id']}/cancel",
        headers=bearer(market["child"], "student"),
    )
    assert other.status_code == 404  # only its payer cancels it

    ref = db.execute("SELECT gateway_ref FROM credit_subscriptions").fetchone()
    assert ref is not None
    with stack.standin.standin.lock:
        stack.standin.standin.advance_subscription(ref[0], fail=False)  # the period ends
    wait_for(lambda: sub_status(db) == "canceled", "customer.subscription.deleted applied")
    assert len(grants(db)) == 1  # no renewal
    assert grants(db)[0][2] == 4  # the month's credits stay
    r = stack.http.post(
        f"/api/v1/subscriptions/{sub['id']}/cancel", headers=bearer(parent, "parent")
    )
    assert r.status_code == 409


def test_a_pack_grants_its_credits_when_the_payment_succeeds_once(
    stack: Stack, market: dict[str, Any]
) -> None:
    db, child = market["db"], market["child"]
    r = stack.http.post(
        "/api/v1/credits/purchases",
        json={"plan_code": "PACK_5", "currency": "EUR"},
        headers={**bearer(child, "student"), **key()},
    )
    assert r.status_code == 201, r.text
    purchase = r.json()
    assert (purchase["status"], purchase["amount_minor"]) == ("pending", 12500)
    intent_id = purchase["client_secret"].split("_secret_")[0]
    wait_for(lambda: settled(db), "the intent's creation event processed")
    assert grants(db) == []  # nothing before the payment

    stack.sdk.v1.payment_intents.confirm(intent_id, {"payment_method": "pm_card_visa"})
    wait_for(lambda: len(grants(db)) == 1, "the pack's credits")
    (succeeded,) = stack.events("payment_intent.succeeded")
    assert stack.standin.standin.deliver_now(succeeded["id"]) == 200
    wait_for(lambda: settled(db), "the redelivery processed")
    assert grants(db) == [("PURCHASE", 5, 5, 12500, "EUR", child)]
    status = db.execute("SELECT status FROM credit_purchases").fetchone()
    assert status == ("succeeded",)

    r = stack.http.post(
        "/api/v1/credits/purchases",
        json={"plan_code": "HYBRIDE", "currency": "EUR"},
        headers={**bearer(child, "student"), **key()},
    )
    assert (r.status_code, r.json()["code"]) == (422, "wrong_plan_kind")
    r = stack.http.post(
        "/api/v1/credits/purchases",
        json={"plan_code": "PACK_5", "currency": "USD"},
        headers={**bearer(child, "student"), **key()},
    )
    assert (r.status_code, r.json()["code"]) == (422, "currency_not_offered")


def test_a_purchase_refused_by_a_gateway_outage_can_be_retried_at_once_with_its_key(
    stack: Stack, market: dict[str, Any]
) -> None:
    db, child = market["db"], market["child"]
    same = {**bearer(child, "student"), **key()}
    pack = {"plan_code": "PACK_5", "currency": "EUR"}
    stack.standin.standin.outage = True
    try:
        r = stack.http.post("/api/v1/credits/purchases", json=pack, headers=same)
    finally:
        stack.standin.standin.outage = False
    assert (r.status_code, r.json()["code"]) == (503, "payment_gateway_unavailable")
    assert db.execute("SELECT count(*) FROM credit_purchases").fetchone() == (0,)
    # its unit of work rolled back and the key was released: the retry runs now, once
    r = stack.http.post("/api/v1/credits/purchases", json=pack, headers=same)
    assert r.status_code == 201, r.text
    assert "idempotent-replayed" not in r.headers
    replay = stack.http.post("/api/v1/credits/purchases", json=pack, headers=same)
    assert (replay.status_code, replay.headers["idempotent-replayed"]) == (201, "true")
    assert replay.json()["id"] == r.json()["id"]
    assert db.execute("SELECT count(*) FROM credit_purchases").fetchone() == (1,)
    wait_for(lambda: settled(db), "the intent's creation event processed")


def test_the_allocation_job_catches_up_a_paid_invoice_whose_webhook_was_lost(
    stack: Stack, market: dict[str, Any]
) -> None:
    from datetime import timedelta

    from credits import jobs

    db = market["db"]
    assert subscribe(stack, market).status_code == 201
    wait_for(lambda: len(grants(db)) == 1, "the first month")
    wait_for(lambda: settled(db), "the first events processed")
    row = db.execute("SELECT gateway_ref, current_period_end FROM credit_subscriptions").fetchone()
    assert row is not None
    standin = stack.standin.standin
    with standin.lock:
        standin.deliver = False  # the renewal's webhooks never arrive
        standin.advance_subscription(row[0], fail=False)
    assert len(grants(db)) == 1

    after_period = row[1] + timedelta(seconds=1)
    assert run(jobs.allocate_monthly(fresh_billing(stack), now=lambda: after_period)) == 1
    assert [g[0] for g in grants(db)] == ["MONTHLY_ALLOCATION", "MONTHLY_ALLOCATION"]
    # run again (its period moved on: not due; and due or not, an invoice grants once)
    later = after_period + timedelta(days=40)
    assert run(jobs.allocate_monthly(fresh_billing(stack), now=lambda: later)) == 0
    assert len(grants(db)) == 2


def test_money_moving_posts_require_an_idempotency_key_and_replay_the_first_answer(
    stack: Stack, market: dict[str, Any]
) -> None:
    db, parent, child = market["db"], market["parent"], market["child"]
    pack = {"plan_code": "PACK_5", "currency": "EUR"}
    r = stack.http.post("/api/v1/credits/purchases", json=pack, headers=bearer(child, "student"))
    assert (r.status_code, r.headers["content-type"]) == (400, "application/problem+json")
    assert r.json()["code"] == "idempotency_key_missing"
    r = subscribe(stack, market, idem={})
    assert (r.status_code, r.json()["code"]) == (400, "idempotency_key_missing")
    assert db.execute("SELECT count(*) FROM credit_purchases").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM credit_subscriptions").fetchone() == (0,)

    same = key()
    first = stack.http.post(
        "/api/v1/credits/purchases", json=pack, headers={**bearer(child, "student"), **same}
    )
    again = stack.http.post(
        "/api/v1/credits/purchases", json=pack, headers={**bearer(child, "student"), **same}
    )
    assert first.status_code == again.status_code == 201, first.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert db.execute("SELECT count(*) FROM credit_purchases").fetchone() == (1,)
    with stack.standin.standin.lock:
        assert len(stack.standin.standin.intents) == 1
    other = stack.http.post(
        "/api/v1/credits/purchases",
        json={**pack, "currency": "USD"},
        headers={**bearer(child, "student"), **same},
    )
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_mismatch")

    sub_key = key()
    first = subscribe(stack, market, idem=sub_key)
    again = subscribe(stack, market, idem=sub_key)
    assert first.status_code == again.status_code == 201, first.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert db.execute("SELECT count(*) FROM credit_subscriptions").fetchone() == (1,)
    assert len(stack.events("invoice.paid")) == 1
    wait_for(lambda: len(grants(db)) == 1, "the month's credits granted")
    assert grants(db) == [("MONTHLY_ALLOCATION", 4, 4, 9900, "EUR", parent)]
