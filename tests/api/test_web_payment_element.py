"""The booking flow's Stripe path in Debian's headless Chromium: with a publishable key
configured, the provider page loads Stripe.js and pays through the Payment Element.

Stripe's network is not reachable here, so the browser's requests to `js.stripe.com/v3/`
and `api.stripe.com` are routed to the local Stripe stand-in, which serves a stand-in of
Stripe.js (`standins/stripe/stripe_js.js`) and answers its publishable-key calls as
Stripe's API does (confirm with the client secret, CORS open). Everything after the
confirmation is the production path: the stand-in's signed webhook, the API's verification,
the worker's confirmation. A declined test card leaves the hold intact; the right one
confirms the booking.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.test_web_browser import SHOTS, TIMEOUT_MS
from tests.booking.helpers import create_slot
from tests.conftest import bearer, create_user
from tests.payments.kit import served, unbalanced

pytestmark = pytest.mark.browser

PUBLISHABLE_KEY = "pk_test_standin"
NOW = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)
# before the seeded providers' local daytime, apart from the other browser tests' slots
START = datetime(2030, 3, 2, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def stripe_stack(search_dataset: str) -> Iterator[tuple[str, Any]]:
    """The API (with `STRIPE_PUBLISHABLE_KEY`) and a Celery worker as subprocesses, the
    Stripe stand-in sending signed webhooks to the API; (API base URL, stand-in server)."""
    import redis

    from tests.conftest import TEST_REDIS_URL

    redis.Redis.from_url(TEST_REDIS_URL).flushdb()
    keys = {"STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY}
    with served(search_dataset, extra_env=keys, publishable_key=PUBLISHABLE_KEY) as stack:
        yield stack.url, stack.standin
    with psycopg.connect(search_dataset) as db:
        assert unbalanced(db) == []


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_payment_element_declined_card_then_paid_and_confirmed(
    browser: Any,
    stripe_stack: tuple[str, Any],
    search_dataset: str,
) -> None:
    from playwright.sync_api import expect

    base, standin = stripe_stack
    with httpx.Client(base_url=f"{base}/api/v1", timeout=30) as c:
        tutor = c.get(
            "/search/tutors",
            params={"subject": "physics", "lat": 48.8566, "lng": 2.3522, "radius_km": 20,
                    "sort": "distance", "limit": 1},
        ).json()["items"][0]  # fmt: skip
    with psycopg.connect(search_dataset, autocommit=True) as db:
        slot = str(create_slot(db, tutor["id"], start=START, minutes=60, capacity=1))
        email = f"pe-{uuid.uuid4().hex[:8]}@example.com"
        uid = create_user(db, role="student", email=email)
    token = bearer(uid, "student")["Authorization"].removeprefix("Bearer ")

    ctx = browser.new_context(locale="en-GB", viewport={"width": 1400, "height": 900},
                              base_url=base)  # fmt: skip
    ctx.set_default_timeout(TIMEOUT_MS)
    to_stripe: list[str] = []
    refused: list[str] = []

    def route(r: Any) -> None:
        url = r.request.url
        if url.startswith(base):
            r.continue_()
        elif url.startswith(("https://js.stripe.com/", "https://api.stripe.com/")):
            # Stripe's hosts → the local stand-in, same path, method, headers and body
            to_stripe.append(f"{r.request.method} {url}")
            path = url.split("/", 3)[3]
            r.fulfill(response=r.fetch(url=f"{standin.url}/{path}"))
        else:
            refused.append(url)
            r.abort()

    ctx.route("**/*", route)
    ctx.add_init_script(
        f"localStorage.setItem('educonnect.token', '{token}');"
        f"localStorage.setItem('educonnect.email', '{email}');"
    )
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"/providers/{tutor['id']}?lang=en&now={_iso(NOW)}")
        page.locator(f"#slot-{slot}").check()
        with page.expect_response(lambda r: r.url.endswith("/api/v1/bookings")) as held:
            page.get_by_role("button", name="Hold this slot").click()
        assert held.value.status == 201
        booking_id = held.value.json()["id"]

        # the Payment Element, not the test-payment step
        expect(page.locator("#stripe-payment")).to_be_visible()
        expect(page.locator("#test-payment")).to_be_hidden()
        card = page.get_by_label("Card number")
        card.fill("4000 0000 0000 0002")
        page.locator("#pay-stripe").click()
        expect(page.locator("#checkout-status")).to_contain_text("Your card was declined.")
        expect(page.locator("#pay-stripe")).to_be_enabled()
        with httpx.Client(base_url=f"{base}/api/v1", timeout=30) as c:
            got = c.get(f"/bookings/{booking_id}", headers={"Authorization": f"Bearer {token}"})
        assert got.json()["status"] == "pending"  # the hold is intact: the student may retry

        card.fill("4242 4242 4242 4242")
        page.locator("#pay-stripe").click()
        status = page.locator("#checkout-status")
        expect(status).to_have_attribute("data-status", "confirmed", timeout=30_000)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "payment-element-confirmed.png"), full_page=True)
    finally:
        ctx.close()

    assert not errors, errors
    assert not refused, refused
    assert "GET https://js.stripe.com/v3/" in to_stripe
    confirms = [u for u in to_stripe if u.startswith("POST https://api.stripe.com/")]
    assert len(confirms) == 2, to_stripe  # declined, then paid: both went through Stripe.js
    intents = [
        pi for pi in standin.standin.intents.values()
        if pi["metadata"].get("booking_id") == booking_id
    ]  # fmt: skip
    assert [(pi["status"], pi["payment_method"]) for pi in intents] == [
        ("succeeded", "pm_card_visa")
    ]
    with psycopg.connect(search_dataset) as db:
        row = db.execute(
            "SELECT b.status, p.status FROM bookings b JOIN payments p ON p.booking_id = b.id"
            " WHERE b.id = %s",
            (booking_id,),
        ).fetchone()
    assert row == ("confirmed", "succeeded")
