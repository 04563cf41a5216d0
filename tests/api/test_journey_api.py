"""The journey's API additions: the refund preview before a cancel, the test clock
(`X-Test-Now`, ENV=test only), the journey pages (FR/EN, config) and the pages'
test-payment route (refused in production or with a real Stripe key)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tests.booking.helpers import NOW, SLOT_START, confirm, create_slot, key
from tests.conftest import bearer, create_provider, create_user


@pytest.fixture
def clock(app: Any) -> dict[str, Any]:
    from api.deps import get_now

    state = {"now": NOW}
    app.dependency_overrides[get_now] = lambda: state["now"]
    return state


async def _confirmed(api: httpx.AsyncClient, db: psycopg.Connection[Any]) -> tuple[Any, Any, Any]:
    tutor = create_provider(db)
    slot = create_slot(db, tutor, minutes=60)
    student = create_user(db)
    r = await api.post(
        "/api/v1/bookings", headers={**bearer(student, "student"), **key()},
        json={"slot_id": str(slot)},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    return tutor, student, r.json()


async def test_cancel_preview_says_what_cancel_then_refunds(
    api: httpx.AsyncClient, db: psycopg.Connection[Any], clock: dict[str, Any]
) -> None:
    tutor, student, booking = await _confirmed(api, db)
    url = f"/api/v1/bookings/{booking['id']}"
    # a pending hold: nothing paid, nothing refunded
    r = await api.get(f"{url}/cancel-preview", headers=bearer(student, "student"))
    assert r.status_code == 200, r.text
    assert (r.json()["refund_due_minor"], r.json()["refund_percent"]) == (0, 0)
    await confirm(booking["id"])
    for hours, percent in ((30, 100), (10, 50), (1, 0)):
        clock["now"] = SLOT_START - timedelta(hours=hours)
        r = await api.get(f"{url}/cancel-preview", headers=bearer(student, "student"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["refund_percent"] == percent
        assert body["refund_due_minor"] == booking["price_minor"] * percent // 100
        assert body["currency"] == "EUR"
    # the provider cancelling always refunds in full
    r = await api.get(f"{url}/cancel-preview", headers=bearer(tutor, "tutor"))
    assert r.json()["refund_percent"] == 100
    # nothing was canceled; the cancel then gives what the preview said
    clock["now"] = SLOT_START - timedelta(hours=10)
    preview = (await api.get(f"{url}/cancel-preview", headers=bearer(student, "student"))).json()
    done = await api.post(f"{url}/cancel", headers=bearer(student, "student"), json={})
    assert done.status_code == 200, done.text
    assert done.json()["refund_due_minor"] == preview["refund_due_minor"]
    again = await api.get(f"{url}/cancel-preview", headers=bearer(student, "student"))
    assert (again.status_code, again.json()["code"]) == (409, "invalid_transition")
    stranger = create_user(db)
    r = await api.get(f"{url}/cancel-preview", headers=bearer(stranger, "student"))
    assert (r.status_code, r.json()["code"]) == (404, "booking_not_found")
    r = await api.get(f"{url}/cancel-preview")
    assert r.status_code == 401


async def test_cancel_preview_after_the_start_is_409(
    api: httpx.AsyncClient, db: psycopg.Connection[Any], clock: dict[str, Any]
) -> None:
    _, student, booking = await _confirmed(api, db)
    clock["now"] = SLOT_START + timedelta(minutes=1)
    r = await api.get(
        f"/api/v1/bookings/{booking['id']}/cancel-preview", headers=bearer(student, "student")
    )
    assert (r.status_code, r.json()["code"]) == (409, "booking_started")


async def test_x_test_now_moves_the_clock_only_under_env_test(
    api: httpx.AsyncClient, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hold's expiry follows the header's instant under ENV=test; elsewhere the
    header is ignored (the slot, in 2030, is then held at the real time)."""
    from core.settings import get_settings

    tutor = create_provider(db)
    slot = create_slot(db, tutor, capacity=2)
    moved = "2030-03-01T12:00:00Z"
    student = create_user(db)
    r = await api.post(
        "/api/v1/bookings", json={"slot_id": str(slot)},
        headers={**bearer(student, "student"), **key(), "X-Test-Now": moved},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["hold_expires_at"].startswith("2030-03-01T12:05:00")
    monkeypatch.setenv("ENV", "prod")
    monkeypatch.setenv("SECRET_KEY", "x" * 64)
    get_settings.cache_clear()
    try:
        other = create_user(db)
        r = await api.post(
            "/api/v1/bookings", json={"slot_id": str(slot)},
            headers={**bearer(other, "student"), **key(), "X-Test-Now": moved},
        )  # fmt: skip
    finally:
        monkeypatch.setenv("ENV", "test")
        get_settings.cache_clear()
    assert r.status_code == 201, r.text
    assert not r.json()["hold_expires_at"].startswith("2030")


@pytest.fixture
async def web(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    from api.app import create_app
    from core.settings import get_settings

    get_settings.cache_clear()
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c
    get_settings.cache_clear()


def _config(html: str) -> dict[str, Any]:
    m = re.search(r'<script id="page-config" type="application/json">(.*?)</script>', html, re.S)
    assert m is not None
    data: dict[str, Any] = json.loads(m.group(1))
    return data


@pytest.mark.parametrize(
    ("path", "fr", "en"),
    [
        ("/providers/8317d15e-17ef-4ac0-954c-79f6467635bf", "Prochains créneaux", "Upcoming slots"),
        ("/signin", "Créer un compte élève", "Create a student account"),
        ("/me/bookings", "Mes réservations", "My bookings"),
    ],
)
async def test_journey_pages_in_both_languages(
    web: httpx.AsyncClient, path: str, fr: str, en: str
) -> None:
    for lang, text in (("fr", fr), ("en", en)):
        r = await web.get(path, params={"lang": lang, "now": "2030-03-01T12:00:00Z"})
        assert r.status_code == 200
        assert text in r.text
        assert "{{" not in r.text
        cfg = _config(r.text)
        assert cfg["testNow"] == "2030-03-01T12:00:00Z"  # ENV=test
        assert cfg["paymentMode"] == "test"
        assert (cfg["joinBeforeS"], cfg["joinAfterS"]) == (900, 900)
    assert (await web.get("/providers/not-a-uuid")).status_code == 422


async def test_publishable_key_selects_the_payment_element(
    web: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.settings import get_settings

    monkeypatch.setenv("STRIPE_PUBLISHABLE_KEY", "pk_test_123")
    get_settings.cache_clear()
    r = await web.get("/providers/8317d15e-17ef-4ac0-954c-79f6467635bf")
    cfg = _config(r.text)
    assert (cfg["paymentMode"], cfg["stripePublishableKey"]) == ("stripe", "pk_test_123")
    assert "https://js.stripe.com" in r.headers["content-security-policy"]
    monkeypatch.delenv("STRIPE_PUBLISHABLE_KEY")
    get_settings.cache_clear()
    r = await web.get("/providers/8317d15e-17ef-4ac0-954c-79f6467635bf")
    assert "stripe.com" not in r.headers["content-security-policy"]


async def test_the_test_payment_route_is_refused_in_prod_or_with_real_stripe(
    web: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.settings import get_settings

    assert (await web.post("/_test/payment_intents/pi_1/refund")).status_code == 404
    assert (await web.post("/_test/payment_intents/not-an-id/succeed")).status_code == 404
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_real")
    get_settings.cache_clear()
    assert (await web.post("/_test/payment_intents/pi_1/succeed")).status_code == 404
    monkeypatch.delenv("STRIPE_SECRET_KEY")
    monkeypatch.setenv("ENV", "prod")
    monkeypatch.setenv("SECRET_KEY", "x" * 64)
    get_settings.cache_clear()
    try:
        assert (await web.post("/_test/payment_intents/pi_1/succeed")).status_code == 404
    finally:
        monkeypatch.setenv("ENV", "test")
        get_settings.cache_clear()
