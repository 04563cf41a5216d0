"""Payments without bookings: the Stripe stand-in through the official SDK, currency units,
webhook signature checks (done by `stripe.Webhook`), the ledger's database guarantees,
payouts and the finance report. Real PostgreSQL and Redis; the stand-in over HTTP on a
free port; no mock of our code."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest
import stripe

from core.settings import get_settings
from payments.stripe_adapter import (
    UnrepresentableAmount,
    from_stripe_amount,
    intent_from_stripe,
    stripe_round_down,
    to_stripe_amount,
)
from standins.stripe import StandinHTTPServer
from tests.conftest import bearer, create_provider, create_user
from tests.payments.kit import API_KEY, WEBHOOK_PATH, WEBHOOK_SECRET, standin_running, unbalanced


@pytest.fixture(scope="module")
def standin() -> Iterator[StandinHTTPServer]:
    """The stand-in on a free port (no webhook delivery: tests post events themselves)."""
    with standin_running(webhook_url=None) as server:
        yield server


@pytest.fixture(autouse=True)
def stripe_settings(standin: StandinHTTPServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point the settings (and so the Stripe adapter) at the stand-in for each test."""
    monkeypatch.setenv("STRIPE_STANDIN_URL", standin.url)
    monkeypatch.setenv("STRIPE_STANDIN_API_KEY", API_KEY)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("STRIPE_SECRET_KEY", "")
    monkeypatch.setenv("STRIPE_MAX_NETWORK_RETRIES", "0")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def db(db: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """conftest's `db`; after the test (before the tables are emptied) every ledger
    transaction and every currency sums to zero."""
    yield db
    assert unbalanced(db) == []


@pytest.fixture
async def app(app: Any, database_url: str) -> AsyncIterator[Any]:
    """conftest's `app`; after the test (before the tables are emptied) the ledger
    balances per transaction and per currency."""
    yield app
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert unbalanced(conn) == []


@pytest.fixture
def ledger_db(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The test database (balanced-ledger check included, see `db`)."""
    return db


def sdk(standin: StandinHTTPServer) -> stripe.StripeClient:
    return stripe.StripeClient(
        API_KEY, base_addresses={"api": standin.url}, http_client=stripe.HTTPXClient()
    )


# ------------------------------------------------------------------ the stand-in


async def test_standin_idempotency_same_key_same_intent_other_params_400(
    standin: StandinHTTPServer,
) -> None:
    client = sdk(standin)
    params: Any = {"amount": 4500, "currency": "eur", "metadata": {"booking_id": "b-1"}}
    first, second = await asyncio.gather(
        client.v1.payment_intents.create_async(params, {"idempotency_key": "pi:b-1"}),
        client.v1.payment_intents.create_async(params, {"idempotency_key": "pi:b-1"}),
    )
    assert first.id == second.id
    assert first.metadata["booking_id"] == "b-1"
    assert first.client_secret.startswith(first.id + "_secret_")
    other: Any = {"amount": 4600, "currency": "eur"}
    with pytest.raises(stripe.IdempotencyError):
        await client.v1.payment_intents.create_async(other, {"idempotency_key": "pi:b-1"})
    with pytest.raises(stripe.AuthenticationError):
        await stripe.StripeClient(
            "sk_test_wrong", base_addresses={"api": standin.url}, http_client=stripe.HTTPXClient()
        ).v1.payment_intents.retrieve_async(first.id)


async def test_standin_decline_then_success_and_refund_limits(standin: StandinHTTPServer) -> None:
    client = sdk(standin)
    pi = await client.v1.payment_intents.create_async({"amount": 2000, "currency": "usd"})
    with pytest.raises(stripe.CardError) as declined:
        await client.v1.payment_intents.confirm_async(
            pi.id, {"payment_method": "pm_card_chargeDeclined"}
        )
    assert declined.value.code == "card_declined"
    failed = await client.v1.payment_intents.retrieve_async(pi.id)
    assert failed.status == "requires_payment_method"
    assert failed.last_payment_error is not None
    paid = await client.v1.payment_intents.confirm_async(pi.id, {"payment_method": "pm_card_visa"})
    assert (paid.status, paid.amount_received) == ("succeeded", 2000)
    refund = await client.v1.refunds.create_async({"payment_intent": pi.id, "amount": 1500})
    assert (refund.status, refund.amount) == ("succeeded", 1500)
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        await client.v1.refunds.create_async({"payment_intent": pi.id, "amount": 501})
    assert too_much.value.code == "amount_too_large"
    types = [
        e["type"] for e in standin.standin.events.values() if e["data"]["object"].get("id") == pi.id
    ]
    assert types == [
        "payment_intent.created",
        "payment_intent.payment_failed",
        "payment_intent.succeeded",
    ]


def test_standin_signs_webhooks_the_stripe_library_verifies(standin: StandinHTTPServer) -> None:
    event_id = next(iter(standin.standin.events), None)
    if event_id is None:
        standin.standin.create_intent({"amount": "100", "currency": "eur"}, None)
        event_id = next(iter(standin.standin.events))
    body, headers = standin.standin.signed_delivery(event_id)
    event = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], WEBHOOK_SECRET)
    assert event.id == event_id
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, headers["Stripe-Signature"], "whsec_other")


# ------------------------------------------------------------------ currency units


def test_stripe_units_zero_two_and_three_decimal_currencies() -> None:
    assert to_stripe_amount(2550, "EUR") == 2550
    assert to_stripe_amount(1500, "XOF") == 1500  # zero-decimal: F CFA are whole
    assert to_stripe_amount(45000, "TND") == 45000  # 45.000 DT, millimes
    with pytest.raises(UnrepresentableAmount):
        to_stripe_amount(45005, "TND")  # Stripe: three-decimal amounts end in 0
    assert stripe_round_down(45005, "TND") == 45000
    assert to_stripe_amount(5, "ISK") == 500  # ISK: two-decimal at Stripe, divisible by 100
    assert from_stripe_amount(500, "ISK") == 5
    assert to_stripe_amount(12300, "MGA") == 123  # MGA: zero-decimal at Stripe, 2 in ISO
    with pytest.raises(UnrepresentableAmount):
        to_stripe_amount(12345, "MGA")
    assert stripe_round_down(12345, "MGA") == 12300
    intent = intent_from_stripe(
        {"id": "pi_1", "status": "succeeded", "amount": 123, "amount_received": 123,
         "currency": "mga", "created": 1_700_000_000, "metadata": {"booking_id": "x"}}
    )  # fmt: skip
    assert (intent.amount_minor, intent.currency, intent.status) == (12300, "MGA", "succeeded")


# ------------------------------------------------------------------ webhook signatures


def _event_body(event_id: str = "evt_test_1") -> str:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {"object": {"id": "pi_unknown", "object": "payment_intent"}},
        }
    )


def _sign(body: str, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp)


def _stored(db: psycopg.Connection[Any]) -> int:
    return int(db.execute("SELECT count(*) FROM webhook_events").fetchone()[0])  # type: ignore[index]


@pytest.mark.parametrize(
    "case",
    ["forged", "stale", "body_changed", "missing", "malformed", "no_v1"],
)
async def test_bad_webhook_signature_is_400_and_stores_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection[Any], case: str
) -> None:
    body = _event_body()
    headers = {"Content-Type": "application/json"}
    if case == "forged":
        headers["Stripe-Signature"] = _sign(body, secret="whsec_attacker")
    elif case == "stale":
        headers["Stripe-Signature"] = _sign(body, timestamp=int(time.time()) - 301)
    elif case == "body_changed":
        headers["Stripe-Signature"] = _sign(body)
        body = body.replace("pi_unknown", "pi_someone_else")
    elif case == "malformed":
        headers["Stripe-Signature"] = "garbage"
    elif case == "no_v1":
        headers["Stripe-Signature"] = _sign(body).replace("v1=", "v0=")
    r = await api.post(WEBHOOK_PATH, content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "invalid_signature"
    assert _stored(db) == 0


async def test_webhook_with_several_v1_signatures_is_stored_once(
    api: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    body = _event_body("evt_rotation")
    good = _sign(body)
    t, v1 = good.split(",")
    rotated = f"{t},v1={'0' * 64},{v1}"  # an old secret's signature first (secret rotation)
    headers = {"Content-Type": "application/json", "Stripe-Signature": rotated}
    first = await api.post(WEBHOOK_PATH, content=body, headers=headers)
    again = await api.post(WEBHOOK_PATH, content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert _stored(db) == 1


# ------------------------------------------------------------------ the ledger in the database


def _post(db: psycopg.Connection[Any], lines: list[tuple[str, int]], currency: str = "EUR") -> None:
    with db.transaction():
        txn = db.execute(
            "INSERT INTO ledger_transactions (kind, key) VALUES ('payment', %s) RETURNING id",
            (f"test:{uuid.uuid4()}",),
        ).fetchone()
        assert txn is not None
        for account, amount in lines:
            db.execute(
                "INSERT INTO ledger_entries (txn_id, account, amount_minor, currency)"
                " VALUES (%s, %s, %s, %s)",
                (txn[0], account, amount, currency),
            )


def test_an_unbalanced_ledger_transaction_is_refused_at_commit(
    ledger_db: psycopg.Connection[Any],
) -> None:
    _post(ledger_db, [("cash:stripe", -1000), ("provider:x", 850), ("platform:commission", 150)])
    with pytest.raises(psycopg.errors.CheckViolation, match="does not balance"):
        _post(ledger_db, [("cash:stripe", -1000), ("provider:x", 900)])
    with pytest.raises(psycopg.errors.CheckViolation, match="append-only"):
        ledger_db.execute("UPDATE ledger_entries SET amount_minor = 1")
    rows = ledger_db.execute("SELECT count(*) FROM ledger_entries").fetchone()
    assert rows == (3,)


# ------------------------------------------------------------------ payouts and the report


def _earn(
    db: psycopg.Connection[Any], provider_id: Any, amount: int, currency: str = "EUR"
) -> None:
    """A captured payment's posting for `provider_id` earning `amount` (85 % share)."""
    gross = amount * 100 // 85
    _post(
        db,
        [
            ("cash:stripe", -gross),
            (f"provider:{provider_id}", amount),
            ("platform:commission", gross - amount),
        ],
        currency,
    )


@pytest.fixture
async def people(ledger_db: psycopg.Connection[Any]) -> dict[str, Any]:
    tutor = create_provider(ledger_db)
    admin = create_user(ledger_db, role="admin")
    _earn(ledger_db, tutor, 8500)
    return {"tutor": tutor, "admin": admin, "db": ledger_db}


async def test_payout_above_balance_refused_and_concurrent_requests_never_exceed_it(
    api: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    tutor = bearer(people["tutor"], "tutor")
    balance = await api.get("/api/v1/payouts/balance", headers=tutor)
    assert balance.json() == {"balances": {"EUR": 8500}}
    too_much = await api.post("/api/v1/payouts", json={"amount_minor": 8501}, headers=tutor)
    assert too_much.status_code == 409
    assert too_much.json()["code"] == "insufficient_balance"
    results = await asyncio.gather(
        *(api.post("/api/v1/payouts", json={"amount_minor": 5000}, headers=tutor) for _ in range(3))
    )
    assert sorted(r.status_code for r in results) == [201, 409, 409]
    after = await api.get("/api/v1/payouts/balance", headers=tutor)
    assert after.json() == {"balances": {"EUR": 3500}}
    mine = await api.get("/api/v1/payouts", headers=tutor)
    assert [p["gross_minor"] for p in mine.json()["items"]] == [5000]


async def test_payout_approval_is_admin_only_paid_by_transfer_or_manually_and_audited(
    api: httpx.AsyncClient, people: dict[str, Any], standin: StandinHTTPServer
) -> None:
    db = people["db"]
    tutor, admin = bearer(people["tutor"], "tutor"), bearer(people["admin"], "admin")
    first = (await api.post("/api/v1/payouts", json={"amount_minor": 3000}, headers=tutor)).json()
    second = (await api.post("/api/v1/payouts", json={"amount_minor": 2000}, headers=tutor)).json()
    third = (await api.post("/api/v1/payouts", json={"amount_minor": 1000}, headers=tutor)).json()
    assert first["status"] == "pending"
    denied = await api.post(f"/api/v1/admin/payouts/{first['id']}/approve", headers=tutor)
    assert denied.status_code == 403
    queue = await api.get("/api/v1/admin/payouts", params={"status": "pending"}, headers=admin)
    assert len(queue.json()["items"]) == 3

    # No connected account: approved, then paid manually with a reference.
    approved = await api.post(f"/api/v1/admin/payouts/{first['id']}/approve", headers=admin)
    assert approved.json()["status"] == "approved"
    transfer_refused = await api.post(f"/api/v1/admin/payouts/{first['id']}/pay", headers=admin)
    assert transfer_refused.json()["code"] == "no_payout_account"
    paid = await api.post(
        f"/api/v1/admin/payouts/{first['id']}/pay",
        json={"reference": "SEPA-2030-001"},
        headers=admin,
    )
    assert (paid.json()["status"], paid.json()["method"]) == ("paid", "manual")

    # With a connected account: approving pays by a Stripe Transfer of the net amount.
    db.execute(
        "UPDATE provider_profiles SET stripe_account_id = 'acct_1TestTutor' WHERE user_id = %s",
        (people["tutor"],),
    )
    by_stripe = await api.post(f"/api/v1/admin/payouts/{second['id']}/approve", headers=admin)
    body = by_stripe.json()
    assert (body["status"], body["method"]) == ("paid", "stripe_transfer")
    transfer = standin.standin.transfers[body["transfer_ref"]]
    assert (transfer["amount"], transfer["destination"]) == (2000, "acct_1TestTutor")
    again = await api.post(f"/api/v1/admin/payouts/{second['id']}/approve", headers=admin)
    assert again.json()["code"] == "payout_state_conflict"

    rejected = await api.post(
        f"/api/v1/admin/payouts/{third['id']}/reject", json={"reason": "KYC pending"}, headers=admin
    )
    assert rejected.json()["status"] == "rejected"
    balance = await api.get("/api/v1/payouts/balance", headers=tutor)
    assert balance.json() == {"balances": {"EUR": 8500 - 3000 - 2000}}

    actions = db.execute(
        "SELECT action, count(*) FROM audit_log WHERE entity_type = 'payout' GROUP BY action"
        " ORDER BY action"
    ).fetchall()
    assert actions == [
        ("payout.approved", 2), ("payout.paid", 2), ("payout.rejected", 1), ("payout.requested", 3),
    ]  # fmt: skip

    report = await api.get(
        "/api/v1/admin/reports/finance",
        params={"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z", "currency": "EUR"},
        headers=admin,
    )
    assert report.status_code == 200, report.text
    (eur,) = report.json()["currencies"]
    assert eur["gross_minor"] == 10000
    assert eur["commission_minor"] == 1500
    assert eur["provider_earnings_minor"] == 8500
    assert eur["payouts_paid_minor"] == 5000
    assert eur["payouts_pending_minor"] == 0
    forbidden = await api.get(
        "/api/v1/admin/reports/finance",
        params={"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"},
        headers=tutor,
    )
    assert forbidden.status_code == 403


async def test_concurrent_deliveries_are_stored_once_each_in_group_commits(
    api: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    bodies = [_event_body(f"evt_group_{i}") for i in range(5)]
    deliveries = [b for b in bodies for _ in range(3)]  # every event delivered 3 times at once
    answers = await asyncio.gather(
        *(
            api.post(WEBHOOK_PATH, content=b, headers={"Stripe-Signature": _sign(b)})
            for b in deliveries
        )
    )
    assert [a.status_code for a in answers] == [200] * 15
    assert _stored(db) == 5
    rows = db.execute("SELECT event_id, type, object_ref FROM webhook_events ORDER BY event_id")
    assert [r[0] for r in rows] == [f"evt_group_{i}" for i in range(5)]


class _GatedGateway:
    """The Stripe adapter, except that re-reading the intent `held` waits for `gate`: one
    event whose gateway answer is slow."""

    def __init__(self, inner: Any, held: str) -> None:
        self.inner, self.held, self.gate = inner, held, asyncio.Event()
        self.name = inner.name

    async def get_intent(self, ref: str) -> Any:
        if ref == self.held:
            await self.gate.wait()
        return await self.inner.get_intent(ref)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_slow_gateway_answer_holds_only_its_own_event_in_the_drain(
    app: Any, db: psycopg.Connection[Any], standin: StandinHTTPServer
) -> None:
    from payments import jobs
    from payments.stripe_adapter import get_provider

    client = sdk(standin)
    refs = [
        (await client.v1.payment_intents.create_async({"amount": 3000, "currency": "eur"})).id
        for _ in range(4)
    ]

    def store(n: int) -> None:
        db.execute(
            "INSERT INTO webhook_events (source, event_id, type, object_kind, object_ref,"
            " payload) VALUES ('stripe', %s, 'payment_intent.succeeded', 'payment', %s, '{}')",
            (f"evt_slow_{n}", refs[n]),
        )

    def processed() -> set[str]:
        rows = db.execute("SELECT object_ref FROM webhook_events WHERE processed_at IS NOT NULL")
        return {str(r[0]) for r in rows}

    async def until(predicate: Any, what: str) -> None:  # bounded polling, no fixed wait
        deadline = time.monotonic() + 30
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    gateway = _GatedGateway(get_provider(), held=refs[0])
    for n in range(3):
        store(n)
    drain = asyncio.create_task(jobs.drain(gateway, concurrency=4))  # type: ignore[arg-type]
    await until(lambda: processed() == set(refs[1:3]), "the two events claimed with it")
    store(3)  # stored while the first event's re-read is still in flight
    await until(lambda: processed() == set(refs[1:]), "the event stored meanwhile")
    assert not drain.done()
    gateway.gate.set()
    assert await drain == jobs.Drained(processed=4, failed=0, retry_in=None)
    assert processed() == set(refs)


async def test_the_app_closes_the_stripe_sdk_session_of_its_loop_at_shutdown(
    database_url: str, redis_url: str, standin: StandinHTTPServer
) -> None:
    from api.app import create_app
    from payments.stripe_adapter import get_provider

    ref = (
        await sdk(standin).v1.payment_intents.create_async({"amount": 900, "currency": "eur"})
    ).id
    application = create_app()
    async with application.router.lifespan_context(application):
        provider = get_provider()
        assert (await provider.get_intent(ref)).ref == ref  # on this loop's aiohttp client
        session = provider._hot[id(asyncio.get_running_loop())][2]._session
        assert not session.closed
    assert session.closed  # no "Unclosed client session" when the loop goes


# ------------------------------------------------------------------ service fee per currency


def test_service_fee_setting_is_per_currency_and_refuses_one_number_for_all() -> None:
    from pydantic import ValidationError

    from core.settings import Settings
    from payments.ledger import service_fee

    s = Settings(service_fee_minor="EUR:150, xof:100,TND:500", service_fee_bps=333)  # type: ignore[arg-type]
    assert s.service_fee_minor == {"EUR": 150, "XOF": 100, "TND": 500}
    assert Settings(service_fee_minor="0").service_fee_minor == {}  # type: ignore[arg-type]
    assert Settings(service_fee_minor="").service_fee_minor == {}  # type: ignore[arg-type]
    for bad in ("150", "EUR:1.5", "EUR:-1", "ZZZ:10", "EUR150"):
        with pytest.raises(ValidationError):
            Settings(service_fee_minor=bad)  # type: ignore[arg-type]
    fixed = s.service_fee_minor
    assert service_fee(price_minor=3000, currency="EUR", bps=333, fixed=fixed) == 99 + 150
    assert service_fee(price_minor=15000, currency="XOF", bps=333, fixed=fixed) == 499 + 100
    assert service_fee(price_minor=45000, currency="TND", bps=333, fixed=fixed) == 1498 + 500
    assert service_fee(price_minor=3000, currency="USD", bps=0, fixed=fixed) == 0


@pytest.mark.parametrize(
    ("currency", "rate", "fee"),
    [
        ("EUR", 3000, 249),  # 30.00 €: 99 (3.33 %) + 1.50 €
        ("XOF", 15000, 599),  # 15 000 F CFA (no decimals): 499 + 100 F CFA
        ("TND", 45000, 1990),  # 45.000 DT: 1498 + 500 millimes = 1998, down to 1.990 DT
    ],
)
async def test_intent_amount_adds_the_currency_s_service_fee(
    api: httpx.AsyncClient,
    db: psycopg.Connection[Any],
    standin: StandinHTTPServer,
    monkeypatch: pytest.MonkeyPatch,
    currency: str,
    rate: int,
    fee: int,
) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.booking.helpers import create_slot

    monkeypatch.setenv("SERVICE_FEE_BPS", "333")
    monkeypatch.setenv("SERVICE_FEE_MINOR", "EUR:150,XOF:100,TND:500")
    get_settings.cache_clear()
    tutor = create_provider(db)
    db.execute(
        "UPDATE provider_profiles SET hourly_rate_minor = %s, currency = %s WHERE user_id = %s",
        (rate, currency, tutor),
    )
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    slot = create_slot(db, tutor, start=start, minutes=60)
    student = create_user(db, role="student")
    held = await api.post(
        "/api/v1/bookings", json={"slot_id": str(slot)},
        headers={**bearer(student, "student"), "Idempotency-Key": f'"{uuid.uuid4()}"'},
    )  # fmt: skip
    assert held.status_code == 201, held.text
    assert (held.json()["price_minor"], held.json()["currency"]) == (rate, currency)
    r = await api.post(
        f"/api/v1/bookings/{held.json()['id']}/payment-intent", headers=bearer(student, "student")
    )
    assert r.status_code == 200, r.text
    assert (r.json()["amount_minor"], r.json()["currency"]) == (rate + fee, currency)
    row = db.execute(
        "SELECT price_minor, service_fee_minor, amount_minor, gateway_ref FROM payments"
    ).fetchone()
    assert row is not None
    assert tuple(row[:3]) == (rate, fee, rate + fee)
    with standin.standin.lock:
        intent = standin.standin.intents[row[3]]
    # Stripe's units: XOF has none below the franc, TND millimes (amounts ending in 0)
    assert (intent["amount"], intent["currency"]) == (rate + fee, currency.lower())


def test_beat_schedule_runs_the_payments_sweep_every_payments_sweep_s() -> None:
    from core.celery_app import TASK_MODULES, celery_config
    from core.settings import Settings
    from payments import tasks

    entry = celery_config(Settings(payments_sweep_s=45))["beat_schedule"]["payments-sweep"]
    assert (entry["task"], entry["schedule"]) == ("payments.sweep", 45.0)
    assert "payments.tasks" in TASK_MODULES  # what a worker imports at start
    assert tasks.sweep.name == "payments.sweep"
