"""The stand-in's Stripe Billing through the official SDK (our `StripeBilling` adapter) and
its HTTP test-clock helpers: customers once per key, the first invoice charged at once,
renewals paid or declined, late payment, cancel at period end, every event signed so that
`stripe.Webhook.construct_event` accepts it. No database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe

from credits.billing import StripeBilling
from standins.stripe import StandinHTTPServer
from standins.stripe.billing import add_month
from tests.payments.kit import API_KEY, WEBHOOK_SECRET, standin_running


@pytest.fixture(scope="module")
def standin() -> Iterator[StandinHTTPServer]:
    with standin_running(deliver=False) as server:
        yield server


def billing(server: StandinHTTPServer) -> StripeBilling:
    http = stripe.HTTPXClient()
    return StripeBilling(
        stripe.StripeClient(API_KEY, base_addresses={"api": server.url}, http_client=http)
    )


def types(server: StandinHTTPServer) -> list[str]:
    events = sorted(server.standin.events.values(), key=lambda e: e["created"])
    return [e["type"] for e in events]


async def _subscribe(b: StripeBilling, tag: str, pm: str = "pm_card_visa") -> Any:
    cus = await b.ensure_customer(user_id=tag, email=f"{tag}@example.com")
    assert await b.ensure_customer(user_id=tag, email=f"{tag}@example.com") == cus
    prod = await b.create_product(plan_id=tag, name="Hybride")
    price = await b.create_price(
        plan_id=tag, product_ref=prod, amount_minor=9900, currency="EUR", monthly=True
    )
    return await b.create_subscription(
        subscription_id=tag, customer_ref=cus, price_ref=price, payment_method=pm,
        metadata={"subscription_id": tag},
    )  # fmt: skip


async def test_subscription_lifecycle_through_the_sdk_and_the_helpers(
    standin: StandinHTTPServer,
) -> None:
    b = billing(standin)
    sub = await _subscribe(b, "s-life")
    assert sub.status == "active"
    assert sub.metadata == {"subscription_id": "s-life"}
    assert sub.current_period_start is not None
    assert sub.current_period_end is not None
    first = await b.get_invoice(sub.latest_invoice or "")
    assert (first.status, first.amount_paid_minor, first.currency) == ("paid", 9900, "EUR")
    assert first.subscription_ref == sub.ref

    helpers = httpx.AsyncClient(base_url=standin.url)
    r = await helpers.post(f"/_standin/subscriptions/{sub.ref}/advance", data={"fail": "true"})
    assert r.status_code == 200
    assert r.json()["status"] == "past_due"
    declined = await b.get_invoice(r.json()["latest_invoice"])
    assert (declined.status, declined.attempt_count) == ("open", 1)
    assert declined.period_start == sub.current_period_end
    r = await helpers.post(f"/_standin/invoices/{declined.ref}/pay")
    assert r.json()["status"] == "paid"
    assert (await b.get_subscription(sub.ref)).status == "active"

    ended = await b.cancel_at_period_end(sub.ref)
    assert ended.cancel_at_period_end
    assert ended.status == "active"
    r = await helpers.post(f"/_standin/subscriptions/{sub.ref}/advance")
    assert r.json()["status"] == "canceled"
    invoices = await b.list_invoices(sub.ref)
    assert [i.status for i in invoices] == ["paid", "paid"]  # no invoice for the period after
    assert types(standin)[-1] == "customer.subscription.deleted"
    assert "invoice.payment_failed" in types(standin)


async def test_a_declined_first_invoice_leaves_it_incomplete(standin: StandinHTTPServer) -> None:
    sub = await _subscribe(billing(standin), "s-declined", pm="pm_card_chargeDeclined")
    assert sub.status == "incomplete"


async def test_every_billing_event_is_signed_for_the_sdk(standin: StandinHTTPServer) -> None:
    await _subscribe(billing(standin), "s-signed")
    for event_id in list(standin.standin.events):
        body, headers = standin.standin.signed_delivery(event_id)
        event = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], WEBHOOK_SECRET)
        assert event.id == event_id


def test_add_month_clamps_to_the_months_last_day() -> None:
    from datetime import UTC, datetime

    jan31 = int(datetime(2031, 1, 31, 9, tzinfo=UTC).timestamp())
    assert datetime.fromtimestamp(add_month(jan31), UTC) == datetime(2031, 2, 28, 9, tzinfo=UTC)
    assert datetime.fromtimestamp(add_month(jan31, 12), UTC) == datetime(2032, 1, 31, 9, tzinfo=UTC)
