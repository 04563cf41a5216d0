"""Every SQL statement of the payments domain. Functions take the caller's `AsyncSession`
and never commit. State changes are compare-and-swap: an UPDATE guarded by the expected
current state, returning the row only when it moved."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from payments.ledger import Line
from payments.models import LedgerEntry, Payment, Payout, Refund, WebhookEvent

# --- payments --------------------------------------------------------------------------


# Plain SQL: SQLAlchemy does not cache the compiled form of an ORM INSERT … ON CONFLICT
# (`[no key]` in its log: a few ms of compilation on every call).
_INSERT_PAYMENT = text(
    "INSERT INTO payments (booking_id, payer_id, provider_id, gateway, gateway_ref,"
    " price_minor, service_fee_minor, amount_minor, currency)"
    " VALUES (:booking_id, :payer_id, :provider_id, :gateway, :gateway_ref, :price_minor,"
    " :service_fee_minor, :amount_minor, :currency)"
    " ON CONFLICT (booking_id) DO NOTHING RETURNING *"
)


async def insert_payment(
    session: AsyncSession,
    *,
    booking_id: uuid.UUID,
    payer_id: uuid.UUID,
    provider_id: uuid.UUID,
    gateway: str,
    gateway_ref: str,
    price_minor: int,
    service_fee_minor: int,
    amount_minor: int,
    currency: str,
) -> Payment | None:
    """Insert a payment; None when the booking already has one (ON CONFLICT DO NOTHING:
    concurrent creators wait for the first and then see its row)."""
    params = {
        "booking_id": booking_id, "payer_id": payer_id, "provider_id": provider_id,
        "gateway": gateway, "gateway_ref": gateway_ref, "price_minor": price_minor,
        "service_fee_minor": service_fee_minor, "amount_minor": amount_minor,
        "currency": currency,
    }  # fmt: skip
    stmt = select(Payment).from_statement(_INSERT_PAYMENT)
    return (await session.execute(stmt, params)).scalar_one_or_none()


async def get_payment(session: AsyncSession, payment_id: uuid.UUID) -> Payment | None:
    """The payment `payment_id`, or None."""
    return (
        await session.execute(select(Payment).where(Payment.id == payment_id))
    ).scalar_one_or_none()


async def get_payment_by_booking(
    session: AsyncSession, booking_id: uuid.UUID, *, lock: bool = False
) -> Payment | None:
    """The booking's payment (row-locked `FOR UPDATE` when `lock`), or None."""
    stmt = select(Payment).where(Payment.booking_id == booking_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def lock_payments(
    session: AsyncSession,
    *,
    booking_ids: Sequence[uuid.UUID] = (),
    slot_id: uuid.UUID | None = None,
) -> None:
    """Take the row locks (`FOR UPDATE`, in id order) of the payments of `booking_ids`,
    or of every booking of `slot_id` still pending or confirmed."""
    if slot_id is not None:
        await session.execute(_LOCK_SLOT_PAYMENTS, {"slot": slot_id})
    if booking_ids:
        await session.execute(_LOCK_PAYMENTS, {"ids": list(booking_ids)})


_LOCK_PAYMENTS = text("SELECT id FROM payments WHERE booking_id = ANY(:ids) ORDER BY id FOR UPDATE")
_LOCK_SLOT_PAYMENTS = text(
    "SELECT p.id FROM payments p JOIN bookings b ON b.id = p.booking_id"
    " WHERE b.slot_id = :slot AND b.status IN ('pending', 'confirmed')"
    " ORDER BY p.id FOR UPDATE OF p"
)


async def stale_cancellations(
    session: AsyncSession, *, older_than: datetime, limit: int = 500
) -> tuple[list[uuid.UUID], list[tuple[uuid.UUID, str]]]:
    """What cancellations left for the gateway and nobody did (the process that answered
    died before its after-commit work): the ids of refunds still `pending` created before
    `older_than`, and `(booking_id, intent ref)` of bookings canceled before it whose
    payment is still open (an intent that could still be paid). Oldest first."""
    refunds = await session.execute(
        select(Refund.id)
        .where(Refund.status == "pending", Refund.created_at < older_than)
        .order_by(Refund.created_at)
        .limit(limit)
    )
    intents = await session.execute(_STALE_OPEN_INTENTS, {"before": older_than, "n": limit})
    return list(refunds.scalars()), [(r.booking_id, r.gateway_ref) for r in intents]


_STALE_OPEN_INTENTS = text(
    "SELECT p.booking_id, p.gateway_ref FROM payments p JOIN bookings b ON b.id = p.booking_id"
    " WHERE b.status = 'canceled' AND b.canceled_at < :before"
    " AND p.status IN ('requires_payment', 'processing', 'failed')"
    " ORDER BY b.canceled_at LIMIT :n"
)


async def get_payment_by_ref(
    session: AsyncSession, gateway: str, ref: str, *, lock: bool = False
) -> Payment | None:
    """The payment of the gateway's intent `ref` (row-locked when `lock`), or None."""
    stmt = select(Payment).where(Payment.gateway == gateway, Payment.gateway_ref == ref)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def move_payment(
    session: AsyncSession,
    payment_id: uuid.UUID,
    *,
    from_states: Iterable[str],
    to_state: str,
    **values: Any,
) -> Payment | None:
    """CAS: set `status = to_state` (and `values`) only if the status is in `from_states`;
    returns the updated payment, or None when it was not in one of them."""
    stmt = (
        update(Payment)
        .where(Payment.id == payment_id, Payment.status.in_(list(from_states)))
        .values(status=to_state, updated_at=func.now(), **values)
        .returning(Payment)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


# `succeed_payment`'s statement, built once (building it per call was ~10 % of a
# confirmation's worker CPU): the locked read of the intent's payment as a CTE, the CAS.
_SUCCEED_OLD = (
    select(Payment.id, Payment.status)
    .where(Payment.gateway == bindparam("p_gateway"), Payment.gateway_ref == bindparam("p_ref"))
    .with_for_update()
    .cte("old")
)
_SUCCEED = (
    update(Payment)
    .where(
        Payment.id == _SUCCEED_OLD.c.id,
        _SUCCEED_OLD.c.status.in_(bindparam("p_from", expanding=True)),
    )
    .values(
        status="succeeded",
        captured_minor=bindparam("p_captured"),
        succeeded_at=bindparam("p_now"),
        failure_code=None,
        failure_message=None,
        updated_at=func.now(),
    )
    .returning(Payment, _SUCCEED_OLD.c.status)
    .execution_options(synchronize_session=False, populate_existing=True)
)


async def succeed_payment(
    session: AsyncSession,
    gateway: str,
    ref: str,
    *,
    from_states: Iterable[str],
    captured_minor: int,
    now: datetime,
) -> tuple[Payment, str] | None:
    """The row lock and the CAS of a payment's success in one statement: the payment of
    the gateway's intent `ref`, locked, becomes `succeeded` (captured `captured_minor`,
    `succeeded_at = now`, failure cleared) when its status is in `from_states`. Returns
    the updated payment and its status before, or None when there is no such payment or
    it is in another state (nothing changed; the row is locked if it exists)."""
    params = {
        "p_gateway": gateway, "p_ref": ref, "p_from": list(from_states),
        "p_captured": captured_minor, "p_now": now,
    }  # fmt: skip
    row = (await session.execute(_SUCCEED, params)).one_or_none()
    return None if row is None else (row[0], row[1])


async def replace_intent(
    session: AsyncSession,
    payment_id: uuid.UUID,
    *,
    old_ref: str,
    new_ref: str,
    price_minor: int,
    service_fee_minor: int,
    amount_minor: int,
) -> Payment | None:
    """CAS: point the payment at the gateway intent `new_ref` (status `requires_payment`,
    the new amounts) only while it still points at the canceled `old_ref` and nothing was
    captured; returns the updated payment, or None (another call replaced it first)."""
    stmt = (
        update(Payment)
        .where(
            Payment.id == payment_id, Payment.gateway_ref == old_ref,
            Payment.status != "succeeded", Payment.captured_minor == 0,
        )
        .values(
            gateway_ref=new_ref, status="requires_payment", price_minor=price_minor,
            service_fee_minor=service_fee_minor, amount_minor=amount_minor,
            failure_code=None, failure_message=None, updated_at=func.now(),
        )
        .returning(Payment)
        .execution_options(synchronize_session=False, populate_existing=True)
    )  # fmt: skip
    return (await session.execute(stmt)).scalar_one_or_none()


_BOOKING_FOR_PAYMENT = text(
    "SELECT id, booked_by, provider_id, price_minor, currency::text AS currency"
    " FROM bookings WHERE id = :id"
)


@dataclass(frozen=True, slots=True)
class PayableBooking:
    """What a payment row needs of its booking: who booked it (the payer), the provider,
    the price (minor units) and its currency."""

    id: uuid.UUID
    payer_id: uuid.UUID
    provider_id: uuid.UUID
    price_minor: int
    currency: str


async def booking_for_payment(
    session: AsyncSession, booking_id: uuid.UUID
) -> PayableBooking | None:
    """The booking's payer, provider, price and currency (any status), or None."""
    row = (await session.execute(_BOOKING_FOR_PAYMENT, {"id": booking_id})).one_or_none()
    if row is None:
        return None
    return PayableBooking(
        row.id, row.booked_by, row.provider_id, int(row.price_minor), str(row.currency).strip()
    )


# --- refunds ---------------------------------------------------------------------------


async def next_refund_seq(session: AsyncSession, payment_id: uuid.UUID) -> int:
    """The next refund number of the payment (call with the payment row locked)."""
    stmt = select(func.coalesce(func.max(Refund.seq), 0) + 1).where(Refund.payment_id == payment_id)
    return int((await session.execute(stmt)).scalar_one())


async def insert_refund(session: AsyncSession, **values: Any) -> Refund:
    """Insert a refund; the `refunds_reserve` trigger adds it to the payment's
    `refunded_minor`, and the payment's CHECK raises `IntegrityError` beyond capture."""
    stmt = insert(Refund).values(**values).returning(Refund)
    return (await session.execute(stmt)).scalar_one()


async def get_refund(
    session: AsyncSession, refund_id: uuid.UUID, *, lock: bool = False
) -> Refund | None:
    """The refund `refund_id` (row-locked when `lock`), or None."""
    stmt = select(Refund).where(Refund.id == refund_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_refund_by_ref(
    session: AsyncSession, ref: str, *, lock: bool = False
) -> Refund | None:
    """The refund the gateway knows as `ref`, or None."""
    stmt = select(Refund).where(Refund.gateway_ref == ref)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def pending_refund_ids(
    session: AsyncSession, payment_id: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Ids of refunds still `pending` (of one payment, or all)."""
    stmt = select(Refund.id).where(Refund.status == "pending").order_by(Refund.created_at)
    if payment_id is not None:
        stmt = stmt.where(Refund.payment_id == payment_id)
    return list((await session.execute(stmt)).scalars().all())


async def move_refund(
    session: AsyncSession,
    refund_id: uuid.UUID,
    *,
    from_states: Iterable[str],
    to_state: str,
    **values: Any,
) -> Refund | None:
    """CAS on a refund's status (see `move_payment`)."""
    stmt = (
        update(Refund)
        .where(Refund.id == refund_id, Refund.status.in_(list(from_states)))
        .values(status=to_state, updated_at=func.now(), **values)
        .returning(Refund)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def set_refund_ref(session: AsyncSession, refund_id: uuid.UUID, ref: str) -> None:
    """Record the gateway's id of a refund."""
    await session.execute(
        update(Refund)
        .where(Refund.id == refund_id, Refund.gateway_ref.is_(None))
        .values(gateway_ref=ref, updated_at=func.now())
        .execution_options(synchronize_session=False, populate_existing=True)
    )


async def succeeded_refunds_total(
    session: AsyncSession, payment_id: uuid.UUID, *, excluding: uuid.UUID | None = None
) -> int:
    """Sum of the payment's succeeded refunds (minor units), optionally but one."""
    stmt = select(func.coalesce(func.sum(Refund.amount_minor), 0)).where(
        Refund.payment_id == payment_id, Refund.status == "succeeded"
    )
    if excluding is not None:
        stmt = stmt.where(Refund.id != excluding)
    return int((await session.execute(stmt)).scalar_one())


# --- webhook inbox ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """The inbox row of an event: its id, whether this delivery inserted it, whether it
    was processed already."""

    id: int
    inserted: bool
    processed: bool


async def get_event(
    session: AsyncSession, row_id: int, *, lock: bool = False
) -> WebhookEvent | None:
    """The inbox row `row_id` (row-locked when `lock`: one processor at a time)."""
    stmt = select(WebhookEvent).where(WebhookEvent.id == row_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


_MARK_PROCESSED = text(
    "UPDATE webhook_events SET attempts = attempts + 1, last_error = NULL,"
    " claimed_until = NULL, processed_at = now() WHERE id = :id"
)
_MARK_FAILED = text(
    "UPDATE webhook_events SET attempts = attempts + 1, last_error = :error,"
    " claimed_until = NULL, next_attempt_at = now()"
    " + make_interval(secs => least(300.0, :retry_s * power(2, attempts)))"
    " WHERE id = :id"
)


async def mark_event(
    session: AsyncSession, row_id: int, *, processed: bool, error: str | None, retry_s: float
) -> None:
    """Count an attempt and release the claim: `processed_at` when it succeeded, else
    `last_error` and the next attempt `retry_s * 2^attempts` (≤ 300 s) later. Plain SQL
    (one statement per processed event: no ORM compilation on this path)."""
    if processed:
        await session.execute(_MARK_PROCESSED, {"id": row_id})
    else:
        await session.execute(_MARK_FAILED, {"id": row_id, "error": error, "retry_s": retry_s})


_CLAIM = text(
    "UPDATE webhook_events SET claimed_until = now() + make_interval(secs => :lease_s)"
    " WHERE id IN (SELECT id FROM webhook_events WHERE processed_at IS NULL"
    " AND attempts < :max_attempts AND next_attempt_at <= now()"
    " AND (claimed_until IS NULL OR claimed_until < now())"
    " ORDER BY received_at LIMIT :limit FOR UPDATE SKIP LOCKED)"
    " RETURNING id, object_kind, object_ref"
)
_NEXT_RETRY = text(
    "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM webhook_events"
    " WHERE processed_at IS NULL AND attempts < :max_attempts"
)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A stored event to process: its row id and the object it names."""

    id: int
    object_kind: str
    object_ref: str | None


async def claim_events(
    session: AsyncSession, *, limit: int, lease_s: float, max_attempts: int
) -> list[Claimed]:
    """Claim up to `limit` events due for processing (oldest first) for `lease_s` seconds;
    concurrent drains skip each other's rows (SKIP LOCKED) and claims."""
    params = {"limit": limit, "lease_s": lease_s, "max_attempts": max_attempts}
    rows = (await session.execute(_CLAIM, params)).all()
    return [Claimed(int(r.id), str(r.object_kind), r.object_ref) for r in rows]


async def next_retry_in(session: AsyncSession, *, max_attempts: int) -> float | None:
    """Seconds until the next failed event is due again (None: none waiting)."""
    value = (await session.execute(_NEXT_RETRY, {"max_attempts": max_attempts})).scalar_one()
    return None if value is None else max(0.0, float(value))


async def unprocessed_events(
    session: AsyncSession, *, older_than: datetime, limit: int
) -> list[int]:
    """Ids of events not processed yet, received before `older_than` (the sweeper)."""
    stmt = (
        select(WebhookEvent.id)
        .where(WebhookEvent.processed_at.is_(None), WebhookEvent.received_at < older_than)
        .order_by(WebhookEvent.received_at)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars().all())


# --- ledger ----------------------------------------------------------------------------


# One statement, one round trip: the transaction and its lines (a data-modifying CTE; no
# lines are written when the key was posted before). The constraint trigger checks the sum
# at commit.
_POST = text(
    "WITH t AS (INSERT INTO ledger_transactions (kind, key) VALUES (:kind, :key)"
    " ON CONFLICT (key) DO NOTHING RETURNING id),"
    " e AS (INSERT INTO ledger_entries (txn_id, account, amount_minor, currency, booking_id,"
    " payment_id, refund_id, payout_id)"
    " SELECT t.id, l.account, l.amount_minor, :currency, CAST(:booking_id AS uuid),"
    " CAST(:payment_id AS uuid), CAST(:refund_id AS uuid), CAST(:payout_id AS uuid)"
    " FROM t, unnest(CAST(:accounts AS text[]), CAST(:amounts AS bigint[]))"
    " AS l(account, amount_minor))"
    " SELECT id FROM t"
)


async def post(
    session: AsyncSession,
    *,
    kind: str,
    key: str,
    currency: str,
    lines: Sequence[Line],
    booking_id: uuid.UUID | None = None,
    payment_id: uuid.UUID | None = None,
    refund_id: uuid.UUID | None = None,
    payout_id: uuid.UUID | None = None,
) -> uuid.UUID | None:
    """Post one ledger transaction with its lines in one statement, unless `key` was
    posted before (then None, and nothing is written). The constraint trigger checks at
    commit that the lines sum to zero."""
    params = {
        "kind": kind, "key": key, "currency": currency, "booking_id": booking_id,
        "payment_id": payment_id, "refund_id": refund_id, "payout_id": payout_id,
        "accounts": [ln.account for ln in lines], "amounts": [ln.amount_minor for ln in lines],
    }  # fmt: skip
    txn_id = (await session.execute(_POST, params)).scalar_one_or_none()
    return None if txn_id is None else uuid.UUID(str(txn_id))


async def account_balances(session: AsyncSession, account: str) -> dict[str, int]:
    """The account's balance per currency (sum of its signed lines)."""
    stmt = (
        select(LedgerEntry.currency, func.sum(LedgerEntry.amount_minor))
        .where(LedgerEntry.account == account)
        .group_by(LedgerEntry.currency)
    )
    return {str(c).strip(): int(s) for c, s in (await session.execute(stmt)).all()}


_REPORT = text(
    """
    SELECT e.currency,
        coalesce(sum(-e.amount_minor) FILTER (WHERE t.kind = 'payment' AND e.account LIKE 'cash:%'), 0) AS gross,
        coalesce(sum(e.amount_minor) FILTER (WHERE t.kind = 'refund' AND e.account LIKE 'cash:%'), 0) AS refunds,
        coalesce(sum(e.amount_minor) FILTER (WHERE e.account = 'platform:commission'), 0) AS commission,
        coalesce(sum(e.amount_minor) FILTER (WHERE e.account = 'platform:service_fee'), 0) AS service_fees,
        coalesce(sum(e.amount_minor) FILTER (WHERE t.kind IN ('payment', 'refund',
                 'credit_spend', 'credit_refund') AND e.account LIKE 'provider:%'), 0)
                 AS provider_earnings,
        coalesce(sum(-e.amount_minor) FILTER (WHERE t.kind = 'payout_paid'
                 AND e.account = 'payouts:pending'), 0) AS payouts_paid,
        coalesce(sum(e.amount_minor) FILTER (WHERE e.account = 'platform:payout_fee'), 0) AS payout_fees,
        coalesce(sum(e.amount_minor) FILTER (WHERE t.kind = 'credit_sale'
                 AND e.account = 'credits:liability'), 0) AS credits_sold,
        coalesce(sum(-e.amount_minor) FILTER (WHERE t.kind = 'credit_spend'
                 AND e.account = 'credits:liability'), 0) AS credits_spent,
        coalesce(sum(e.amount_minor) FILTER (WHERE t.kind = 'credit_refund'
                 AND e.account = 'credits:liability'), 0) AS credits_refunded,
        coalesce(sum(-e.amount_minor) FILTER (WHERE t.kind = 'credit_expiry'
                 AND e.account = 'credits:liability'), 0) AS credits_expired,
        coalesce(sum(e.amount_minor) FILTER (WHERE e.account = 'platform:subscriptions'), 0)
                 AS subscription_fees
    FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.txn_id
    WHERE e.created_at >= :from_ AND e.created_at < :to_
      AND (CAST(:currency AS text) IS NULL OR e.currency = :currency)
    GROUP BY e.currency ORDER BY e.currency
    """
)
_PENDING_PAYOUTS = text(
    "SELECT currency, coalesce(sum(amount_minor), 0) AS pending FROM ledger_entries"
    " WHERE account = 'payouts:pending' AND created_at < :to_"
    " AND (CAST(:currency AS text) IS NULL OR currency = :currency) GROUP BY currency"
)
_OUTSTANDING_CREDITS = text(
    "SELECT currency, coalesce(sum(amount_minor), 0) AS outstanding FROM ledger_entries"
    " WHERE account = 'credits:liability' AND created_at < :to_"
    " AND (CAST(:currency AS text) IS NULL OR currency = :currency) GROUP BY currency"
)


async def finance_rows(
    session: AsyncSession, *, from_: datetime, to: datetime, currency: str | None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Per-currency sums of the ledger lines created in `[from_, to)`, and the balances at
    `to` per currency of `payouts:pending` and of `credits:liability` (the credits sold
    and not yet spent or expired, under the key `credits:{currency}`)."""
    params = {"from_": from_, "to_": to, "currency": currency}
    rows = [dict(r._mapping) for r in (await session.execute(_REPORT, params)).all()]
    pending = {
        str(r.currency).strip(): int(r.pending)
        for r in (await session.execute(_PENDING_PAYOUTS, params)).all()
    }
    for r in (await session.execute(_OUTSTANDING_CREDITS, params)).all():
        pending[f"credits:{str(r.currency).strip()}"] = int(r.outstanding)
    return rows, pending


# --- payouts ---------------------------------------------------------------------------


async def lock_provider(session: AsyncSession, provider_id: uuid.UUID) -> str | None:
    """Row-lock the provider's profile (serializes its payout requests); returns its
    `stripe_account_id` (None when it has none). Raises `NoResultFound` for no profile."""
    row = (
        await session.execute(
            text("SELECT stripe_account_id FROM provider_profiles WHERE user_id = :id FOR UPDATE"),
            {"id": provider_id},
        )
    ).one()
    return None if row.stripe_account_id is None else str(row.stripe_account_id)


async def provider_stripe_account(session: AsyncSession, provider_id: uuid.UUID) -> str | None:
    """The provider's Stripe connected account id, or None."""
    value = (
        await session.execute(
            text("SELECT stripe_account_id FROM provider_profiles WHERE user_id = :id"),
            {"id": provider_id},
        )
    ).scalar_one_or_none()
    return None if value is None else str(value)


async def insert_payout(session: AsyncSession, **values: Any) -> Payout:
    """Insert a payout request."""
    return (await session.execute(insert(Payout).values(**values).returning(Payout))).scalar_one()


async def get_payout(
    session: AsyncSession, payout_id: uuid.UUID, *, lock: bool = False
) -> Payout | None:
    """The payout `payout_id` (row-locked when `lock`), or None."""
    stmt = select(Payout).where(Payout.id == payout_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def move_payout(
    session: AsyncSession,
    payout_id: uuid.UUID,
    *,
    from_states: Iterable[str],
    to_state: str,
    **values: Any,
) -> Payout | None:
    """CAS on a payout's status (see `move_payment`)."""
    stmt = (
        update(Payout)
        .where(Payout.id == payout_id, Payout.status.in_(list(from_states)))
        .values(status=to_state, updated_at=func.now(), **values)
        .returning(Payout)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_payouts(
    session: AsyncSession,
    *,
    provider_id: uuid.UUID | None = None,
    status: str | None = None,
    limit: int = 100,
) -> Sequence[Payout]:
    """Payouts, newest first, of one provider and/or in one status."""
    stmt = select(Payout).order_by(Payout.requested_at.desc(), Payout.id).limit(limit)
    if provider_id is not None:
        stmt = stmt.where(Payout.provider_id == provider_id)
    if status is not None:
        stmt = stmt.where(Payout.status == status)
    return (await session.execute(stmt)).scalars().all()
