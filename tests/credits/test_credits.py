"""Credits on the real database: FIFO spending, concurrent bookings against one wallet
(with a control run without the row locks), refunds with the original expiry, the expiry
job with the clock injected, the finance report's liability. Services are called as the
routes call them (each contender in its own session and connection); the API tests go
through the ASGI app with the clock overridden.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from api.deps import get_now
from booking import service as booking_service
from booking.schemas import BookingCreate
from core.db import async_session_factory
from credits import jobs
from credits import service as credits
from credits.errors import InsufficientCredits
from tests.booking.helpers import NOW, create_slot, key, student
from tests.conftest import bearer, create_provider, create_user
from tests.credits.helpers import default_costs, grant, liability, remaining
from tests.payments.kit import unbalanced

YEAR = timedelta(days=365)


def _slots(db: psycopg.Connection, tutor: Any, n: int, *, minutes: int = 60) -> list[uuid.UUID]:
    """`n` non-overlapping 1:1 online slots from 3 days after NOW, 2 h apart: the first of
    `tutor`, the others each of a tutor of its own (a slot filling up bumps its provider's
    row, which would otherwise be a second point of contention between contenders)."""
    start = NOW + timedelta(days=3)
    return [
        create_slot(
            db, tutor if i == 0 else create_provider(db),
            start=start + i * timedelta(hours=2), minutes=minutes,
        )
        for i in range(n)
    ]  # fmt: skip


async def _book_with_credits(
    uid: Any, slot: uuid.UUID, *, lock: bool = True, hook: Any = None
) -> Any:
    """Hold and pay with credits in one session and transaction, as the route does."""
    async with async_session_factory()() as session:
        try:
            held = await booking_service.hold(
                session, actor=student(uid), data=BookingCreate(slot_id=slot), now=NOW
            )
            await credits.spend_for_booking(
                session, booking=held, payer_id=uid, now=NOW, lock=lock, after_read=hook
            )
            result = await booking_service.confirm(session, booking_id=held.id, now=NOW)
            await session.commit()
            return result.booking
        except Exception as exc:  # returned, so every contender's session ends cleanly
            return exc


def _balance(db: psycopg.Connection, owner: Any) -> int:
    row = db.execute(
        "SELECT coalesce(sum(remaining), 0) FROM credit_grants WHERE owner_id = %s"
        " AND expires_at > %s",
        (owner, NOW),
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def wallet(db: psycopg.Connection) -> dict[str, Any]:
    default_costs(db)
    return {"db": db, "tutor": create_provider(db), "alice": create_user(db, role="student")}


async def test_fifo_takes_the_credits_expiring_first_across_two_grants(
    wallet: dict[str, Any],
) -> None:
    db, alice = wallet["db"], wallet["alice"]
    late = grant(db, alice, 5, expires_at=NOW + YEAR)
    early = grant(db, alice, 1, expires_at=NOW + timedelta(days=30))
    # a 2-hour online slot costs 2 credits: 1 from the early grant, then 1 from the late
    (slot,) = _slots(db, wallet["tutor"], 1, minutes=120)

    booking = await _book_with_credits(alice, slot)

    assert booking.status == "confirmed"
    assert (remaining(db, early), remaining(db, late)) == (0, 4)
    spends = db.execute(
        "SELECT grant_id, credits, value_minor FROM credit_spends WHERE booking_id = %s"
        " ORDER BY value_minor",
        (booking.id,),
    ).fetchall()
    assert sorted((g, c) for g, c, _ in spends) == sorted([(early, 1), (late, 1)])
    assert sum(v for *_, v in spends) == 5000  # 2,500 a credit from each grant
    assert unbalanced(db) == []


async def test_ten_concurrent_bookings_against_three_credits_confirm_exactly_three(
    wallet: dict[str, Any],
) -> None:
    db, alice = wallet["db"], wallet["alice"]
    g = grant(db, alice, 3, expires_at=NOW + YEAR)
    slots = _slots(db, wallet["tutor"], 10)
    arrived = 0

    async def hook() -> None:
        nonlocal arrived
        arrived += 1

    results = await asyncio.gather(*(_book_with_credits(alice, s, hook=hook) for s in slots))

    assert not [
        r for r in results if isinstance(r, Exception) and not isinstance(r, InsufficientCredits)
    ], results
    confirmed = [r for r in results if not isinstance(r, InsufficientCredits)]
    refused = [r for r in results if isinstance(r, InsufficientCredits)]
    assert (len(confirmed), len(refused)) == (3, 7)
    assert all(b.status == "confirmed" for b in confirmed)
    assert all(e.extra == {"needed": 1, "available": 0} for e in refused)
    assert remaining(db, g) == 0
    assert _balance(db, alice) == 0
    row = db.execute("SELECT count(*), sum(credits) FROM credit_spends").fetchone()
    assert row == (3, 3)
    # the refused holds rolled back with their refusal: nothing else holds a seat
    held = db.execute("SELECT count(*) FROM bookings").fetchone()
    assert held == (3,)
    assert unbalanced(db) == []


async def test_control_without_the_row_locks_the_same_credits_are_spent_twice(
    wallet: dict[str, Any],
) -> None:
    """The race is real: with the grants read unlocked and every contender past the read
    before any writes, all ten pay with the same three credits (lost updates)."""
    db, alice = wallet["db"], wallet["alice"]
    g = grant(db, alice, 3, expires_at=NOW + YEAR)
    slots = _slots(db, wallet["tutor"], 10)
    arrived, all_read = 0, asyncio.Event()

    async def hook() -> None:
        nonlocal arrived
        arrived += 1
        if arrived == len(slots):
            all_read.set()
        await asyncio.wait_for(all_read.wait(), 20)

    results = await asyncio.gather(
        *(_book_with_credits(alice, s, lock=False, hook=hook) for s in slots)
    )

    assert not [r for r in results if isinstance(r, Exception)], results
    row = db.execute("SELECT sum(credits) FROM credit_spends").fetchone()
    assert row == (10,)  # ten credits spent from a grant of three
    assert remaining(db, g) == 2  # and the balance says only one was


async def test_the_database_refuses_a_negative_balance(wallet: dict[str, Any]) -> None:
    db, alice = wallet["db"], wallet["alice"]
    g = grant(db, alice, 1, expires_at=NOW + YEAR)
    with pytest.raises(psycopg.errors.CheckViolation, match="credit_grants_remaining"):
        db.execute("UPDATE credit_grants SET remaining = remaining - 2 WHERE id = %s", (g,))


async def test_booking_with_credits_and_cancel_refunds_them_with_the_original_expiry(
    wallet: dict[str, Any], app: Any, api: Any
) -> None:
    db, alice = wallet["db"], wallet["alice"]
    app.dependency_overrides[get_now] = lambda: NOW
    expiry = NOW + timedelta(days=40)
    g = grant(db, alice, 2, expires_at=expiry)
    (slot,) = _slots(db, wallet["tutor"], 1, minutes=120)
    headers = bearer(alice, "student")

    r = await api.post(
        "/api/v1/bookings",
        json={"slot_id": str(slot), "payment_method": "credits"},
        headers={**headers, **key()},
    )
    assert r.status_code == 201, r.text
    booking = r.json()
    assert booking["status"] == "confirmed"
    assert remaining(db, g) == 0
    r = await api.get("/api/v1/me/credits", headers=headers)
    assert r.json() == {"balance": 0, "next_expiry": None}

    # three days ahead: the platform policy refunds 100 %
    r = await api.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=headers)
    assert r.status_code == 200, r.text

    refund = db.execute(
        "SELECT type, credits, remaining, expires_at, value_minor FROM credit_grants"
        " WHERE booking_id = %s",
        (booking["id"],),
    ).fetchall()
    assert refund == [("REFUND", 2, 2, expiry, 5000)]
    r = await api.get("/api/v1/me/credits", headers=headers)
    assert r.json()["balance"] == 2
    assert r.json()["next_expiry"]["credits"] == 2
    status = db.execute("SELECT status FROM bookings WHERE id = %s", (booking["id"],)).fetchone()
    assert status == ("refunded",)
    r = await api.get("/api/v1/me/credits/history?limit=2", headers=headers)
    page = r.json()
    # both at NOW (the injected clock): newest first, ties by id
    assert sorted((i["type"], i["credits"]) for i in page["items"]) == [
        ("REFUND", 2), ("USAGE", -2),
    ]  # fmt: skip
    assert page["next_cursor"] is not None
    r = await api.get(
        f"/api/v1/me/credits/history?limit=50&cursor={page['next_cursor']}", headers=headers
    )
    assert [i["type"] for i in r.json()["items"]] == ["PURCHASE"]
    # the liability is back to the whole grant; the provider's earning is reversed
    assert liability(db) == 0  # the test grant was inserted without a sale posting
    assert unbalanced(db) == []


async def test_not_enough_credits_is_a_409_and_holds_nothing(
    wallet: dict[str, Any], app: Any, api: Any
) -> None:
    db, alice = wallet["db"], wallet["alice"]
    app.dependency_overrides[get_now] = lambda: NOW
    grant(db, alice, 1, expires_at=NOW + YEAR)
    (slot,) = _slots(db, wallet["tutor"], 1, minutes=120)
    r = await api.post(
        "/api/v1/bookings",
        json={"slot_id": str(slot), "payment_method": "credits"},
        headers={**bearer(alice, "student"), **key()},
    )
    assert r.status_code == 409
    assert r.json()["code"] == "insufficient_credits"
    assert (r.json()["needed"], r.json()["available"]) == (2, 1)
    assert db.execute("SELECT count(*) FROM bookings").fetchone() == (0,)


async def test_expiry_job_is_idempotent_and_notifies_a_week_before(
    wallet: dict[str, Any],
) -> None:
    db, alice = wallet["db"], wallet["alice"]
    lapses = NOW + timedelta(days=10)
    g = grant(db, alice, 3, expires_at=lapses, value_minor=7500)
    kept = grant(db, alice, 1, expires_at=NOW + YEAR)

    # 8 days before: nothing to say yet; 6 days before: one notice, once
    assert await jobs.expire_and_notify(now=lambda: lapses - timedelta(days=8)) == (0, 0)
    assert await jobs.expire_and_notify(now=lambda: lapses - timedelta(days=6)) == (0, 1)
    assert await jobs.expire_and_notify(now=lambda: lapses - timedelta(days=5)) == (0, 0)
    events = db.execute(
        "SELECT event_type, payload FROM outbox WHERE event_type = 'credits.expiring'"
    ).fetchall()
    assert events == [("credits.expiring", {"owner_id": str(alice), "grant_id": str(g)})]

    after = lapses + timedelta(seconds=1)
    assert await jobs.expire_and_notify(now=lambda: after) == (1, 0)
    assert await jobs.expire_and_notify(now=lambda: after) == (0, 0)  # twice: nothing more
    rows = db.execute("SELECT grant_id, type, credits, value_minor FROM credit_spends").fetchall()
    assert rows == [(g, "EXPIRATION", 3, 7500)]
    assert (remaining(db, g), remaining(db, kept)) == (0, 1)
    assert liability(db) == -7500  # breakage of a grant inserted without its sale
    assert unbalanced(db) == []


async def test_finance_report_outstanding_equals_grants_minus_spends_minus_expiries(
    wallet: dict[str, Any], app: Any, api: Any
) -> None:
    """Sales through the service (ledger postings), a spend, a refund and an expiry: the
    report's outstanding liability is what the grants' values less spends and expiries
    leave, and sold - spent + refunded - expired."""
    db, alice, tutor = wallet["db"], wallet["alice"], wallet["tutor"]
    admin = create_user(db, role="admin")
    app.dependency_overrides[get_now] = lambda: NOW
    from payments.provider import Intent

    # two packs sold through the purchase path (the intents re-read as succeeded)
    from tests.credits.helpers import create_plan

    pack = create_plan(db, code="PACK_3", kind="pack", credits=3, prices={"EUR": 7500})
    for days in (-35, 355):  # granted 400 and 10 days before NOW
        purchase = uuid.uuid4()
        db.execute(
            "INSERT INTO credit_purchases (id, owner_id, plan_id, credits, amount_minor,"
            " currency, gateway, gateway_ref) VALUES (%s, %s, %s, 3, 7500, 'EUR', 'stripe', %s)",
            (purchase, alice, pack, f"pi_{purchase.hex}"),
        )
        intent = Intent(
            ref=f"pi_{purchase.hex}", status="succeeded", amount_minor=7500,
            amount_received_minor=7500, currency="EUR", created=NOW,
            metadata={"credit_purchase_id": str(purchase)},
        )  # fmt: skip
        at = NOW - timedelta(days=365) + timedelta(days=days)
        async with async_session_factory()() as session, session.begin():
            assert await credits.apply_purchase(session, gateway="stripe", intent=intent, now=at)
        async with async_session_factory()() as session, session.begin():  # a replay: nothing
            await credits.apply_purchase(session, gateway="stripe", intent=intent, now=at)
    assert db.execute("SELECT count(*) FROM credit_grants").fetchone() == (2,)
    # the first pack lapsed 35 days before NOW: the nightly job at NOW expires it
    await jobs.expire_and_notify(now=lambda: NOW)
    slots = _slots(db, tutor, 2)
    b1 = await _book_with_credits(alice, slots[0])
    await _book_with_credits(alice, slots[1])
    async with async_session_factory()() as session, session.begin():
        await booking_service.cancel(
            session, booking_id=b1.id, actor=student(alice), reason=None, now=NOW
        )
        assert await credits.refund_booking(session, booking_id=b1.id, percent=100, now=NOW) == 1

    r = await api.get(
        "/api/v1/admin/reports/finance?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z",
        headers=bearer(admin, "admin"),
    )
    assert r.status_code == 200, r.text
    (eur,) = r.json()["currencies"]
    assert (eur["credits_sold_minor"], eur["credits_spent_minor"]) == (15000, 5000)
    assert (eur["credits_refunded_minor"], eur["credits_expired_minor"]) == (2500, 7500)
    grants = db.execute("SELECT sum(value_minor) FROM credit_grants").fetchone()
    spends = db.execute(
        "SELECT coalesce(sum(value_minor) FILTER (WHERE type = 'USAGE'), 0),"
        " coalesce(sum(value_minor) FILTER (WHERE type = 'EXPIRATION'), 0) FROM credit_spends"
    ).fetchone()
    assert grants is not None
    assert spends is not None
    assert eur["credits_outstanding_minor"] == grants[0] - spends[0] - spends[1] == 5000
    assert eur["credits_outstanding_minor"] == 15000 - 5000 + 2500 - 7500
    assert eur["provider_earnings_minor"] + eur["commission_minor"] == 5000 - 2500
    assert unbalanced(db) == []


async def test_admin_manages_plans_and_costs(app: Any, api: Any, db: psycopg.Connection) -> None:
    admin = create_user(db, role="admin")
    headers = bearer(admin, "admin")
    plan = {
        "code": "DUO", "kind": "plan", "name": "Duo", "credits": 2,
        "prices": [{"currency": "EUR", "amount_minor": 4900}],
    }  # fmt: skip
    r = await api.post("/api/v1/admin/plans", json=plan, headers=headers)
    assert r.status_code == 201, r.text
    created = r.json()
    assert (created["billing_interval"], created["validity_months"]) == ("month", 12)
    assert (await api.post("/api/v1/admin/plans", json=plan, headers=headers)).status_code == 409
    bad_pack = {**plan, "code": "EMPTY", "kind": "pack", "credits": 0}
    assert (
        await api.post("/api/v1/admin/plans", json=bad_pack, headers=headers)
    ).status_code == 422

    r = await api.patch(
        f"/api/v1/admin/plans/{created['id']}",
        json={"credits": 3, "prices": [{"currency": "USD", "amount_minor": 5500}]},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["credits"] == 3
    assert r.json()["prices"] == [
        {"currency": "EUR", "amount_minor": 4900}, {"currency": "USD", "amount_minor": 5500},
    ]  # fmt: skip
    r = await api.patch(f"/api/v1/admin/plans/{uuid.uuid4()}", json={}, headers=headers)
    assert (r.status_code, r.json()["code"]) == (404, "plan_not_found")
    codes = [
        p["code"] for p in (await api.get("/api/v1/admin/plans", headers=headers)).json()["items"]
    ]
    assert "DUO" in codes

    table = {"items": [{"service_type": "group", "max_minutes": 90, "credits": 1}]}
    r = await api.put("/api/v1/admin/credit-costs", json=table, headers=headers)
    assert (r.status_code, r.json()) == (200, table)
    student_headers = bearer(create_user(db, role="student"), "student")
    assert (await api.get("/api/v1/admin/plans", headers=student_headers)).status_code == 403
    r = await api.get("/api/v1/plans", headers=student_headers)
    assert "DUO" in [p["code"] for p in r.json()["items"]]


async def test_a_parent_pays_a_childs_booking_from_its_own_wallet(
    wallet: dict[str, Any], app: Any, api: Any
) -> None:
    from tests.booking.helpers import link_child

    db = wallet["db"]
    parent = create_user(db, role="parent")
    link_child(db, parent, wallet["alice"])
    grant(db, parent, 2, expires_at=NOW + YEAR)
    app.dependency_overrides[get_now] = lambda: NOW
    (slot,) = _slots(db, wallet["tutor"], 1)
    r = await api.post(
        "/api/v1/bookings",
        json={"slot_id": str(slot), "student_id": str(wallet["alice"]),
              "payment_method": "credits"},
        headers={**bearer(parent, "parent"), **key()},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    assert (r.json()["status"], r.json()["student_id"]) == ("confirmed", str(wallet["alice"]))
    assert _balance(db, parent) == 1
    r = await api.get("/api/v1/me/credits", headers=bearer(parent, "parent"))
    assert r.json()["balance"] == 1


def test_the_cli_runs_the_expiry_job_at_an_instant(wallet: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from cli.main import app as cli

    db, alice = wallet["db"], wallet["alice"]
    grant(db, alice, 2, expires_at=NOW)
    at = (NOW + timedelta(seconds=1)).isoformat()
    result = CliRunner().invoke(cli, ["credits", "expire", "--at", at])
    assert result.exit_code == 0, result.output
    assert "1 grant(s) expired" in result.output
    result = CliRunner().invoke(cli, ["credits", "expire", "--at", at])
    assert "0 grant(s) expired" in result.output


async def test_a_complaint_refund_on_a_credits_booking_gives_the_credits_back(
    wallet: dict[str, Any], app: Any, api: Any
) -> None:
    """An admin closing a complaint with a refund of the whole price on a booking paid
    with credits: the credits come back at once (REFUND grant, original expiry) and the
    complaint is `refunded`; the ledger stays balanced."""
    db, alice = wallet["db"], wallet["alice"]
    app.dependency_overrides[get_now] = lambda: NOW
    expiry = NOW + timedelta(days=40)
    grant(db, alice, 2, expires_at=expiry)
    (slot,) = _slots(db, wallet["tutor"], 1, minutes=120)
    r = await api.post(
        "/api/v1/bookings",
        json={"slot_id": str(slot), "payment_method": "credits"},
        headers={**bearer(alice, "student"), **key()},
    )
    assert r.status_code == 201, r.text
    booking = r.json()
    assert booking["price_minor"] > 0
    r = await api.post(
        f"/api/v1/bookings/{booking['id']}/complaints",
        headers=bearer(alice, "student"),
        json={"reason": "No show"},
    )
    assert r.status_code == 201, r.text
    admin = create_user(db, role="admin")
    r = await api.patch(
        f"/api/v1/admin/complaints/{r.json()['id']}",
        headers=bearer(admin, "admin"),
        json={"status": "closed", "note": "refunded", "refund_minor": booking["price_minor"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["refund_status"] == "refunded"
    refund = db.execute(
        "SELECT type, credits, expires_at FROM credit_grants WHERE booking_id = %s",
        (booking["id"],),
    ).fetchall()
    assert refund == [("REFUND", 2, expiry)]
    assert db.execute("SELECT count(*) FROM refunds").fetchone() == (0,)
    assert unbalanced(db) == []
