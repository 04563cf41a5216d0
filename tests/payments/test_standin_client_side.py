"""The Stripe stand-in's client side, as Stripe.js uses it: a publishable key and the
PaymentIntent's client secret may read and confirm that one intent, nothing more; answers
are CORS-open; `GET /v3/` serves the Stripe.js stand-in."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from standins.stripe import StandinHTTPServer
from tests.payments.kit import standin_running

PK = "pk_test_standin"


@pytest.fixture(scope="module")
def standin() -> Iterator[StandinHTTPServer]:
    with standin_running(webhook_url=None) as server:
        yield server


def _intent(standin: StandinHTTPServer) -> dict[str, str]:
    with standin.standin.lock:
        intent = standin.standin.create_intent(
            {"amount": "2500", "currency": "eur", "metadata": {"booking_id": "b1"}}, None
        )
    return {"id": intent["id"], "client_secret": intent["client_secret"]}


def test_publishable_key_confirms_its_intent_with_the_client_secret(
    standin: StandinHTTPServer,
) -> None:
    pi = _intent(standin)
    with httpx.Client(base_url=standin.url) as c:
        declined = c.post(
            f"/v1/payment_intents/{pi['id']}/confirm",
            data={"key": PK, "client_secret": pi["client_secret"],
                  "payment_method": "pm_card_chargeDeclined"},
        )  # fmt: skip
        assert declined.status_code == 402
        assert declined.json()["error"]["decline_code"] == "generic_decline"
        assert declined.headers["access-control-allow-origin"] == "*"
        ok = c.post(
            f"/v1/payment_intents/{pi['id']}/confirm",
            data={"key": PK, "client_secret": pi["client_secret"],
                  "payment_method": "pm_card_visa"},
        )  # fmt: skip
        assert ok.status_code == 200, ok.text
        assert (ok.json()["status"], ok.json()["payment_method"]) == ("succeeded", "pm_card_visa")
        read = c.get(
            f"/v1/payment_intents/{pi['id']}",
            params={"key": PK, "client_secret": pi["client_secret"]},
        )
        assert read.json()["status"] == "succeeded"


def test_publishable_key_is_refused_without_the_right_secret_or_for_server_calls(
    standin: StandinHTTPServer,
) -> None:
    pi = _intent(standin)
    other = _intent(standin)
    with httpx.Client(base_url=standin.url) as c:
        wrong = c.post(
            f"/v1/payment_intents/{pi['id']}/confirm",
            data={"key": PK, "client_secret": other["client_secret"]},
        )
        assert wrong.status_code == 400
        assert wrong.json()["error"]["param"] == "client_secret"
        bad_key = c.post(
            f"/v1/payment_intents/{pi['id']}/confirm",
            data={"key": "pk_test_other", "client_secret": pi["client_secret"]},
        )
        assert bad_key.status_code == 401
        create = c.post("/v1/payment_intents", data={"key": PK, "amount": "100",
                                                       "currency": "eur"})  # fmt: skip
        assert create.status_code == 403
        assert create.json()["error"]["code"] == "secret_key_required"
    assert standin.standin.intents[pi["id"]]["status"] == "requires_payment_method"


def test_stripe_js_stand_in_is_served_at_v3(standin: StandinHTTPServer) -> None:
    with httpx.Client(base_url=standin.url) as c:
        r = c.get("/v3/")
        pre = c.options("/v1/payment_intents/pi_x/confirm")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert "window.Stripe = Stripe" in r.text
    assert "confirmPayment" in r.text
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "*"
