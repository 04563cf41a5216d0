"""The student journey in Debian's headless Chromium (Playwright for Python) against the
real API and a fresh stack (API and worker subprocesses, the Stripe stand-in): map → provider page → slot and seats → hold (countdown) → test payment (fails, then succeeds) → confirmed by the webhook → my bookings (cancel
with the refund shown first, the join button inside the window only), and a second
browser watching the seats left drop while the first holds.

The pages' clock is moved with `?now=` (honoured only under ENV=test: the pages send it
as `X-Test-Now`, which the API reads only in that environment), never by waiting.
Screenshots of every page go to `artifacts/screenshots/journey-*.png`.
"""

from __future__ import annotations

import re
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.test_web_browser import SHOTS
from tests.booking.helpers import create_slot
from tests.conftest import DEFAULT_PASSWORD, bearer, create_user, free_port
from tests.payments.kit import Process, served, unbalanced
from tests.sessions.livekit_standin import API_KEY as LIVEKIT_KEY
from tests.sessions.livekit_standin import API_SECRET as LIVEKIT_SECRET
from tests.sessions.livekit_standin import start_standin as start_livekit
from tests.sessions.livekit_standin import stop_standin as stop_livekit

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def live_server(search_dataset: str) -> Iterator[str]:
    """A fresh stack on the seeded test marketplace: the API and a Celery worker as
    subprocesses, the Stripe stand-in (no publishable key: the pages' test-payment step)
    sending signed webhooks; its base URL. Tiles point at a closed port."""
    import redis

    from tests.conftest import TEST_REDIS_URL

    redis.Redis.from_url(TEST_REDIS_URL).flushdb()
    livekit = start_livekit()
    extra = {
        "MAP_TILE_URL": f"http://127.0.0.1:{free_port()}/tiles/{{z}}/{{x}}/{{y}}.png",
        "LIVEKIT_URL": livekit.url,
        "LIVEKIT_API_KEY": LIVEKIT_KEY,
        "LIVEKIT_API_SECRET": LIVEKIT_SECRET,
    }
    try:
        with served(search_dataset, extra_env=extra) as stack:
            # the live-seat relay: outbox → Redis streams → the API's SSE
            live = Process(
                [sys.executable, "-m", "cli", "notifications", "relay", "--consumer", "live"],
                stack.env,
            )
            try:
                yield stack.url
            finally:
                live.stop()
    finally:
        stop_livekit(livekit)
    with psycopg.connect(search_dataset) as db:
        assert unbalanced(db) == []
        over = db.execute(
            "SELECT id FROM availability_slots WHERE seats_taken > capacity"
        ).fetchall()
        assert over == []


NOW = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)  # the seeded slots start on 2030-03-04
# an extra group class, before the seeded providers' local daytime (no overlap)
CLASS_START = datetime(2030, 3, 3, 5, 0, tzinfo=UTC)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"journey-{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def tutor(live_server: str, search_dataset: str) -> dict[str, Any]:
    """The first tutor of "mathematics around Paris" (what the map shows first) with an
    extra 3-seat group class; its id and that slot's id."""
    with httpx.Client(base_url=f"{live_server}/api/v1", timeout=30) as c:
        first = c.get(
            "/search/tutors",
            params={"subject": "mathematics", "lat": 48.8566, "lng": 2.3522, "radius_km": 10,
                    "sort": "distance", "limit": 1},
        ).json()["items"][0]  # fmt: skip
    with psycopg.connect(search_dataset, autocommit=True) as db:
        slot = create_slot(db, first["id"], start=CLASS_START, minutes=60, capacity=3)
    return {"id": first["id"], "name": first["display_name"], "slot": str(slot)}


def _student(search_dataset: str) -> tuple[str, str, dict[str, str]]:
    with psycopg.connect(search_dataset, autocommit=True) as db:
        email = f"student-{uuid.uuid4().hex[:8]}@example.com"
        uid = create_user(db, role="student", email=email)
    return str(uid), email, bearer(uid, "student")


def _signed_in(page: Any, email: str, headers: dict[str, str]) -> None:
    token = headers["Authorization"].removeprefix("Bearer ")
    page.add_init_script(
        f"localStorage.setItem('educonnect.token', '{token}');"
        f"localStorage.setItem('educonnect.email', '{email}');"
    )


def _hold(live_server: str, headers: dict[str, str], slot: str, seats: int, now: datetime) -> Any:
    with httpx.Client(base_url=f"{live_server}/api/v1", timeout=30) as c:
        r = c.post(
            "/bookings",
            json={"slot_id": slot, "seats": seats},
            headers={**headers, "Idempotency-Key": f'"{uuid.uuid4()}"', "X-Test-Now": _iso(now)},
        )
    assert r.status_code == 201, r.text
    return r.json()


def _confirmed_booking(
    live_server: str, search_dataset: str, tutor: dict[str, Any], start: datetime
) -> tuple[str, dict[str, str], Any]:
    """A student with a 1:1 booking starting at `start`, paid through the API (the pages'
    test-payment route, the stand-in's signed webhook, the worker): confirmed."""
    _, email, headers = _student(search_dataset)
    with psycopg.connect(search_dataset, autocommit=True) as db:
        slot = create_slot(db, tutor["id"], start=start, minutes=60, capacity=1)
    booking = _hold(live_server, headers, str(slot), 1, NOW)
    with httpx.Client(base_url=live_server, timeout=30) as c:
        r = c.post(
            f"/api/v1/bookings/{booking['id']}/payment-intent",
            headers={**headers, "Idempotency-Key": f'"{uuid.uuid4()}"'},
        )
        assert r.status_code in (200, 201), r.text
        intent = r.json()["client_secret"].split("_secret_")[0]
        assert c.post(f"/_test/payment_intents/{intent}/succeed").status_code == 200
        for _ in range(300):
            got = c.get(f"/api/v1/bookings/{booking['id']}", headers=headers).json()
            if got["status"] != "pending":
                break
            time.sleep(0.1)
    assert got["status"] == "confirmed", got
    return email, headers, got


def test_map_to_provider_to_a_hold_with_its_countdown(
    page_factory: Any,
    tutor: dict[str, Any],
) -> None:
    """Map → the tutor's page (profile, reviews, slots) → sign in (a new student account)
    → 2 seats of the group class held, a countdown from 5:00 and the pay step shown."""
    from playwright.sync_api import expect

    page = page_factory(locale="fr-FR")
    page.goto(f"/?lang=fr&now={_iso(NOW)}")
    page.get_by_label("Matière ou mots-clés").fill("mathématiques")
    page.get_by_role("button", name="Rechercher").click()
    link = page.locator("#result-list > li").first.get_by_role("link", name=tutor["name"])
    expect(link).to_be_visible()
    _shot(page, "1-map")
    link.click()
    expect(page).to_have_url(f"{page.url.split('/providers')[0]}/providers/{tutor['id']}?lang=fr")
    expect(page.locator("#provider-name")).to_have_text(tutor["name"])
    # the page has no `now`: come back with the test clock
    page.goto(f"/providers/{tutor['id']}?lang=fr&now={_iso(NOW)}")
    seats = page.locator(f"[data-slot-id='{tutor['slot']}'] .seats-left")
    expect(seats).to_have_attribute("data-seats-left", "3")
    _shot(page, "2-provider")

    # keyboard only: the slot, 2 seats, Hold → sign-in (account creation) → back
    page.locator(f"#slot-{tutor['slot']}").focus()
    page.keyboard.press("Space")
    page.locator("#seats").fill("2")
    page.get_by_role("button", name="Réserver ce créneau").press("Enter")
    expect(page).to_have_url(re.compile(r"/signin\?"))
    page.get_by_label("Créer un compte élève").check()
    page.get_by_label("Nom complet").fill("Élève Test")
    page.get_by_label("E-mail").fill(f"journey-{uuid.uuid4().hex[:8]}@example.com")
    page.get_by_label("Mot de passe").fill(DEFAULT_PASSWORD)
    _shot(page, "3-signin")
    page.get_by_role("button", name="Créer le compte et se connecter").click()
    expect(page.locator("#provider-name")).to_have_text(tutor["name"])
    expect(page.locator(f"#slot-{tutor['slot']}")).to_be_checked()
    page.locator("#seats").fill("2")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/bookings")) as held:
        page.get_by_role("button", name="Réserver ce créneau").click()
    assert held.value.status == 201
    countdown = page.locator("#hold-countdown")
    expect(countdown).to_contain_text("Réservé pour vous pendant 4:5")
    left = int(countdown.get_attribute("data-seconds-left") or 0)
    assert 290 <= left <= 300
    expect(seats).to_have_attribute("data-seats-left", "1")
    _shot(page, "4-hold")

    # pay: the labelled test step asks the stand-in to fail, then to succeed, the intent;
    # the signed webhook confirms the booking through the worker
    expect(page.locator("#test-payment")).to_contain_text("Paiement de test")
    page.get_by_role("button", name="Simuler un paiement refusé").click()
    expect(page.locator("#checkout-status")).to_contain_text("Le paiement a échoué")
    page.get_by_role("button", name="Simuler un paiement réussi").click()
    expect(page.locator("#checkout-status")).to_have_attribute(
        "data-status", "confirmed", timeout=30_000
    )
    expect(page.locator("#checkout-status")).to_contain_text("Confirmé")
    _shot(page, "5-confirmed")
    page.locator("#checkout-next a").click()
    item = page.locator("li.booking").first
    expect(item.locator(".status")).to_have_text("Confirmée")
    expect(item).to_contain_text(tutor["name"])
    _shot(page, "6-my-bookings")


def test_the_provider_page_shows_reviews_with_their_histogram(
    page_factory: Any,
    live_server: str,
    tutor: dict[str, Any],
) -> None:
    """The histogram has a row per star count, each with the API's count."""
    from playwright.sync_api import expect

    with httpx.Client(base_url=f"{live_server}/api/v1", timeout=30) as c:
        r = c.get(f"/providers/{tutor['id']}/reviews")
    assert r.status_code == 200, r.text
    histogram = r.json()["rating"]["histogram"]
    page = page_factory(locale="en-GB")
    page.goto(f"/providers/{tutor['id']}?lang=en")
    rows = page.locator("#histogram tr")
    expect(rows).to_have_count(5)
    for stars in range(1, 6):
        expect(page.locator(f"#histogram tr[data-stars='{stars}'] .count")).to_have_text(
            str(histogram.get(str(stars), 0))
        )


def test_a_second_browser_sees_the_seats_drop_while_the_first_holds(
    page_factory: Any,
    live_server: str,
    search_dataset: str,
    tutor: dict[str, Any],
) -> None:
    from playwright.sync_api import expect

    with psycopg.connect(search_dataset, autocommit=True) as db:
        slot = str(create_slot(db, tutor["id"], start=CLASS_START + timedelta(hours=1, minutes=30),
                               minutes=60, capacity=4))  # fmt: skip
    watcher = page_factory(locale="en-GB")
    watcher.goto(f"/providers/{tutor['id']}?lang=en&now={_iso(NOW)}")
    seats = watcher.locator(f"[data-slot-id='{slot}'] .seats-left")
    expect(seats).to_have_text("4 seats left")
    expect(watcher.locator("body")).to_have_attribute("data-live", "open")  # SSE, not polling

    _, email, headers = _student(search_dataset)
    holder = page_factory(locale="en-GB")
    _signed_in(holder, email, headers)
    holder.goto(f"/providers/{tutor['id']}?lang=en&now={_iso(NOW)}")
    holder.locator(f"#slot-{slot}").check()
    holder.locator("#seats").fill("3")
    holder.get_by_role("button", name="Hold this slot").click()
    expect(holder.locator("#hold-countdown")).to_contain_text("Held for you for")
    # the watcher's page, untouched, follows
    expect(seats).to_have_text("1 seat left")
    _shot(watcher, "7-seats-live")


def test_cancel_shows_the_refund_before_confirming(
    page_factory: Any,
    live_server: str,
    search_dataset: str,
    tutor: dict[str, Any],
) -> None:
    """10 h before the start the platform policy refunds 50 %: the dialog says so first,
    then the booking is canceled with that refund."""
    from playwright.sync_api import expect

    start = datetime(2030, 3, 2, 5, 0, tzinfo=UTC)
    email, headers, booking = _confirmed_booking(live_server, search_dataset, tutor, start)
    half = booking["price_minor"] // 2
    page = page_factory(locale="en-GB")
    _signed_in(page, email, headers)
    page.goto(f"/me/bookings?lang=en&now={_iso(start - timedelta(hours=10))}")
    item = page.locator(f"li[data-id='{booking['id']}']")
    expect(item.locator(".status")).to_have_text("Confirmed")
    _shot(page, "8-bookings")
    item.get_by_role("button", name="Cancel").click()
    refund = page.locator("#cancel-refund")
    expect(refund).to_contain_text("(50 %)")
    assert refund.get_attribute("data-refund-minor") == str(half)
    _shot(page, "9-cancel-dialog")
    page.get_by_role("button", name="Cancel the booking").click()
    expect(item.locator(".status")).to_have_text("Canceled")
    expect(item.locator(".refund")).to_be_visible()
    with psycopg.connect(search_dataset) as db:
        row = db.execute(
            "SELECT status, refund_due_minor FROM bookings WHERE id = %s", (booking["id"],)
        ).fetchone()
    # canceled with that refund due; the payments side may already have paid it back
    assert row is not None
    assert row[0] in ("canceled", "refunded")
    assert row[1] == half


def test_the_join_button_appears_only_inside_the_window(
    page_factory: Any,
    live_server: str,
    search_dataset: str,
    tutor: dict[str, Any],
) -> None:
    """The window opens 15 min before the start and closes 15 min after the end."""
    from playwright.sync_api import expect

    start = datetime(2030, 3, 2, 7, 0, tzinfo=UTC)
    email, headers, booking = _confirmed_booking(live_server, search_dataset, tutor, start)
    for now, shown in (
        (start - timedelta(minutes=20), False),
        (start - timedelta(minutes=10), True),
        (start + timedelta(minutes=70), True),
        (start + timedelta(minutes=80), False),
    ):
        page = page_factory(locale="en-GB")
        _signed_in(page, email, headers)
        page.goto(f"/me/bookings?lang=en&now={_iso(now)}")
        item = page.locator(f"li[data-id='{booking['id']}']")
        expect(item.locator(".status")).to_have_text("Confirmed")
        join = item.get_by_role("button", name="Join the lesson")
        expect(join).to_have_count(1 if shown else 0)
        if not shown and now < start:
            expect(item.locator(".join-later")).to_be_visible()
        if shown and now < start:
            # the page asks for the session token (the clock says: inside the window)
            join.click()
            expect(item.locator(".room-ready")).to_have_attribute(
                "data-room", f"ec-booking-{booking['id']}"
            )
            _shot(page, "10-join")


def test_a_review_after_the_lesson_reaches_the_histogram(
    page_factory: Any, live_server: str, search_dataset: str, tutor: dict[str, Any]
) -> None:
    """The lesson ends, the provider marks it completed; the student rates it 4 stars
    from my bookings; the provider page's histogram counts it."""
    from playwright.sync_api import expect

    start = datetime(2030, 3, 2, 9, 0, tzinfo=UTC)
    email, headers, booking = _confirmed_booking(live_server, search_dataset, tutor, start)
    after = start + timedelta(hours=2)
    with httpx.Client(base_url=f"{live_server}/api/v1", timeout=30) as c:
        before = c.get(f"/providers/{tutor['id']}/reviews").json()["rating"]["histogram"]
        done = c.post(
            f"/bookings/{booking['id']}/complete",
            headers={**bearer(tutor["id"], "tutor"), "X-Test-Now": _iso(after)},
        )
        assert done.status_code == 200, done.text
    page = page_factory(locale="en-GB")
    _signed_in(page, email, headers)
    page.goto(f"/me/bookings?lang=en&now={_iso(after)}")
    form = page.locator(f"#review-{booking['id']}")
    form.get_by_label("4 ★").check()
    form.get_by_label("Comment (optional)").fill("Clear and patient.")
    _shot(page, "11-review")
    form.get_by_role("button", name="Send the review").click()
    expect(page.locator(f"li[data-id='{booking['id']}'] .review-thanks")).to_be_visible()
    page.goto(f"/providers/{tutor['id']}?lang=en")
    expect(page.locator("#histogram tr[data-stars='4'] .count")).to_have_text(
        str(before.get("4", 0) + 1)
    )
    expect(page.locator("#review-list")).to_contain_text("Clear and patient.")
