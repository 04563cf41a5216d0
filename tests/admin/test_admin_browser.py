"""End-to-end: the back-office page (`/admin`) in Debian's headless Chromium (Playwright
for Python) against the real API served by uvicorn in a thread: the admin signs in,
sees the pending KYC and the open complaints, and approves a provider.

No sleeps: Playwright's auto-waiting `expect(...)`. The browser only reaches the test
server. Without `/usr/bin/chromium` the test skips with that reason (the `browser` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import (
    BROWSER_TIMEOUT_MS,
    DEFAULT_PASSWORD,
    create_provider,
    create_user,
    serve_app,
)
from tests.reviews.helpers import completed_booking

pytestmark = pytest.mark.browser


@pytest.fixture
def live_server(db: psycopg.Connection[Any]) -> Iterator[str]:
    with serve_app() as base:
        yield base


@pytest.fixture
def page(browser: Any, live_server: str) -> Iterator[Any]:
    errors: list[str] = []
    ctx = browser.new_context(locale="en-GB", base_url=live_server)
    ctx.set_default_timeout(BROWSER_TIMEOUT_MS)
    ctx.route(
        "**/*",
        lambda route: (
            route.continue_() if route.request.url.startswith(live_server) else route.abort()
        ),
    )
    pg = ctx.new_page()
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, errors


def test_admin_page_lists_pending_kyc_and_open_complaints(
    page: Any, db: psycopg.Connection[Any]
) -> None:
    from playwright.sync_api import expect

    create_user(db, role="admin", email="boss@example.com")
    waiting = create_provider(db, kyc_status="pending")
    db.execute(
        "UPDATE provider_profiles SET display_name = 'Awa Diop' WHERE user_id = %s", (waiting,)
    )
    create_provider(db)  # verified: not listed
    tutor = create_provider(db)
    booking, student = completed_booking(db, tutor)
    db.execute(
        "INSERT INTO complaints (booking_id, filed_by, reason) VALUES (%s, %s, 'No show')",
        (booking, student),
    )

    page.goto("/admin?lang=en")
    page.fill("#email", "boss@example.com")
    page.fill("#password", "wrong-password-123")
    page.click("#login button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("Sign-in failed.")
    page.fill("#password", DEFAULT_PASSWORD)
    page.click("#login button[type=submit]")

    kyc = page.locator("#kyc-table tbody tr")
    expect(kyc).to_have_count(1)
    expect(kyc.first.locator("td").first).to_have_text("Awa Diop")
    complaints = page.locator("#complaints-table tbody tr")
    expect(complaints).to_have_count(1)
    expect(complaints.first.locator("td").nth(1)).to_have_text("No show")
    expect(complaints.first.locator("td").nth(2)).to_have_text("open")

    kyc.first.locator("button[data-decision=approve]").click()
    expect(kyc).to_have_count(0)
    expect(page.locator("#kyc-empty")).to_be_visible()
    row = db.execute(
        "SELECT kyc_status FROM provider_profiles WHERE user_id = %s", (waiting,)
    ).fetchone()
    assert row == ("verified",)
    page.screenshot(path=str(_shot("admin-page.png")))


def _shot(name: str) -> Any:
    from pathlib import Path

    d = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
    d.mkdir(parents=True, exist_ok=True)
    return d / name
