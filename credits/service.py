"""Business rules of credits: the catalogue, pack purchases, subscriptions, the wallet,
spending on bookings, refunds on cancellation, expiry. No HTTP; never commits.

The wallet is the payer's (`owner_id`): a student's own, or a parent's, which pays for
its linked children's bookings; a parent's plan for a child grants to the parent's wallet.
Grants expire `validity_months` (12 by default) after they are granted; spending takes
the credits expiring first (FIFO by `expires_at`, then id) under the grants' row locks, so
concurrent bookings of one wallet queue and none spends a credit twice; the CHECK
`remaining BETWEEN 0 AND credits` is the database's refusal of a negative balance.

Every grant has a unique `source_key` (`purchase:{id}`, `invoice:{in_…}`,
`refund:{spend_id}:{n}`): a webhook delivered twice, a retried task or the reconciling
beat job grant nothing twice. Money movements go to the payments ledger
(`credits.ledger`) in the same transaction.

Lock order with booking: the slot (booking's hold), then the wallet's grants; a
cancellation locks the slot and booking, then the booking's spends.
"""

from __future__ import annotations

import base64
import calendar
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from booking.schemas import BookingOut
from core import outbox
from core.errors import Forbidden
from core.logging import get_logger
from core.settings import get_settings
from credits import ledger as cl
from credits import repository as repo
from credits.billing import Billing, Invoice, Subscription
from credits.errors import (
    CurrencyNotOffered,
    InsufficientCredits,
    NoCreditCost,
    PlanCodeTaken,
    PlanNotFound,
    SubscriptionExists,
    SubscriptionNotCancelable,
    SubscriptionNotFound,
    WrongPlanKind,
)
from credits.models import CreditGrant, CreditPlan, CreditSubscription
from credits.schemas import (
    BalanceOut,
    CreditCostRow,
    CreditCostTable,
    NextExpiry,
    PlanCreate,
    PlanList,
    PlanOut,
    PlanPatch,
    PriceOut,
    PurchaseCreate,
    PurchaseOut,
    SubscriptionCreate,
    SubscriptionList,
    SubscriptionOut,
    TransactionOut,
    TransactionPage,
)
from payments import service as payments
from payments.errors import AmountNotSupported
from payments.provider import Intent, IntentRequest, PaymentProvider, ProviderError
from payments.stripe_adapter import UnrepresentableAmount
from profiles import service as profiles
from profiles.errors import field_errors
from profiles.models import User

log = get_logger(__name__)
EXPIRING_EVENT = "credits.expiring"


def add_months(at: datetime, months: int) -> datetime:
    """`at` plus `months` calendar months, the day clamped to the month's last (a grant of
    Feb 29 expires on Feb 28 the year after)."""
    month0 = at.month - 1 + months
    year, month = at.year + month0 // 12, month0 % 12 + 1
    return at.replace(year=year, month=month, day=min(at.day, calendar.monthrange(year, month)[1]))


# --- catalogue -------------------------------------------------------------------------


async def _plan_out(session: AsyncSession, plans: list[CreditPlan]) -> list[PlanOut]:
    prices = await repo.prices_of(session, [p.id for p in plans])
    return [
        PlanOut(
            id=p.id, code=p.code, kind=p.kind,
            name=p.name, description=p.description, credits=p.credits,
            billing_interval=p.billing_interval,
            validity_months=p.validity_months, active=p.active,
            prices=[PriceOut(currency=x.currency, amount_minor=x.amount_minor)
                    for x in prices.get(p.id, [])],
        )
        for p in plans
    ]  # fmt: skip


async def list_plans(session: AsyncSession, *, active_only: bool = False) -> PlanList:
    """Plans and packs with their prices (all, or those on sale)."""
    plans = list(await repo.list_plans(session, active_only=active_only))
    return PlanList(items=await _plan_out(session, plans))


async def create_plan(session: AsyncSession, *, data: PlanCreate) -> PlanOut:
    """Add a plan or pack. Raises `PlanCodeTaken` (409)."""
    plan = await repo.insert_plan(
        session, code=data.code, kind=data.kind, name=data.name, description=data.description,
        credits=data.credits, billing_interval="month" if data.kind == "plan" else None,
        validity_months=data.validity_months, active=data.active,
    )  # fmt: skip
    if plan is None:
        raise PlanCodeTaken(f"A plan with code {data.code} exists.")
    for price in data.prices:
        await repo.upsert_price(
            session, plan_id=plan.id, currency=price.currency, amount_minor=price.amount_minor
        )
    return (await _plan_out(session, [plan]))[0]


async def patch_plan(session: AsyncSession, *, plan_id: uuid.UUID, data: PlanPatch) -> PlanOut:
    """Change a plan's fields and prices (existing subscriptions keep the Stripe Price they
    were made with). Raises `PlanNotFound` (404), `ValidationFailed` (422: a pack without
    credits)."""
    plan = await repo.get_plan(session, plan_id=plan_id, lock=True)
    if plan is None:
        raise PlanNotFound("No plan with this id.")
    values = {  # an explicit null clears the description only; the others are required
        k: v
        for k, v in data.model_dump(exclude_unset=True, exclude={"prices"}).items()
        if v is not None or k == "description"
    }
    if plan.kind == "pack" and values.get("credits") == 0:
        raise field_errors([("credits", "a pack grants at least one credit")])
    if values:
        plan = await repo.update_plan(session, plan.id, **values)
    for price in data.prices or []:
        await repo.upsert_price(
            session, plan_id=plan.id, currency=price.currency, amount_minor=price.amount_minor
        )
    return (await _plan_out(session, [plan]))[0]


async def get_costs(session: AsyncSession) -> CreditCostTable:
    """The credit cost table."""
    rows = await repo.list_costs(session)
    return CreditCostTable(
        items=[
            CreditCostRow(service_type=r.service_type, max_minutes=r.max_minutes, credits=r.credits)
            for r in rows
        ]
    )


async def put_costs(session: AsyncSession, *, table: CreditCostTable) -> CreditCostTable:
    """Replace the credit cost table (bookings already paid keep what they spent)."""
    await repo.replace_costs(session, [r.model_dump() for r in table.items])
    return await get_costs(session)


def service_type(*, mode: str, capacity: int) -> str:
    """`group` for a slot of more than one seat, else its mode (`online`, `in_person`)."""
    return "group" if capacity > 1 else mode


async def booking_cost(
    session: AsyncSession, *, slot_id: uuid.UUID, starts_at: datetime, ends_at: datetime,
    seats: int,
) -> int:  # fmt: skip
    """Credits a booking costs: the cost table's credits per seat for the slot's service
    type and length (minutes, rounded up), times `seats`. Raises `NoCreditCost` (422)."""
    slot = await profiles.lock_slot(session, slot_id, lock=False)
    if slot is None:
        raise NoCreditCost("The slot is gone.")
    kind = service_type(mode=slot.mode, capacity=slot.capacity)
    minutes = -(-int((ends_at - starts_at).total_seconds()) // 60)
    per_seat = await repo.cost_for(session, service_type=kind, minutes=minutes)
    if per_seat is None:
        raise NoCreditCost(f"A {kind} slot of {minutes} minutes cannot be paid with credits.")
    return per_seat * seats


# --- pack purchases --------------------------------------------------------------------


def purchase_key(purchase_id: uuid.UUID) -> str:
    """Our gateway idempotency key of a pack's intent: `cp:{purchase_id}`."""
    return f"cp:{purchase_id}"


async def _priced_plan(
    session: AsyncSession, *, code: str, currency: str, kind: str
) -> tuple[CreditPlan, int]:
    plan = await repo.get_plan(session, code=code)
    if plan is None or not plan.active:
        raise PlanNotFound(f"No plan or pack {code} on sale.")
    if plan.kind != kind:
        raise WrongPlanKind(f"{code} is a {plan.kind}, not a {kind}.")
    prices = {p.currency: p for p in (await repo.prices_of(session, [plan.id])).get(plan.id, [])}
    if currency not in prices:
        raise CurrencyNotOffered(
            f"{code} is sold in {', '.join(sorted(prices)) or 'no currency'}, not {currency}."
        )
    return plan, prices[currency].amount_minor


async def start_purchase(
    session: AsyncSession, provider: PaymentProvider, *, user: User, data: PurchaseCreate
) -> PurchaseOut:
    """Buy a pack: a `pending` purchase and a PaymentIntent of its price (key
    `cp:{purchase_id}`, metadata `credit_purchase_id`); credits are granted when the
    intent succeeds (`apply_purchase`). Raises `PlanNotFound` (404), `WrongPlanKind`,
    `CurrencyNotOffered` (422), gateway errors (502/503, `payments.service.gateway_error`)."""
    plan, amount = await _priced_plan(
        session, code=data.plan_code, currency=data.currency, kind="pack"
    )
    purchase = await repo.insert_purchase(
        session, owner_id=user.id, plan_id=plan.id, credits=plan.credits, amount_minor=amount,
        currency=data.currency, gateway=provider.name,
    )  # fmt: skip
    try:
        intent = await provider.create_intent(
            IntentRequest(
                idempotency_key=purchase_key(purchase.id), amount_minor=amount,
                currency=data.currency, metadata={"credit_purchase_id": str(purchase.id)},
                description=f"EduConnect {plan.name}",
            )
        )  # fmt: skip
    except UnrepresentableAmount as exc:
        raise AmountNotSupported(
            f"The gateway cannot take {amount} minor units of {data.currency}."
        ) from exc
    except ProviderError as exc:
        raise payments.gateway_error(exc) from exc
    purchase = await repo.update_purchase(session, purchase.id, gateway_ref=intent.ref)
    return PurchaseOut(
        id=purchase.id, plan_code=plan.code, credits=purchase.credits,
        amount_minor=amount, currency=data.currency, status="pending",
        client_secret=intent.client_secret,
    )  # fmt: skip


async def apply_purchase(
    session: AsyncSession, *, gateway: str, intent: Intent, now: datetime
) -> str | None:
    """Move a pack purchase to its intent's state (re-read from the gateway), under the
    purchase's row lock; on `succeeded` grant its credits (`PURCHASE`, once: key
    `purchase:{id}`) and post the sale. Returns the new status (None: unknown purchase)."""
    raw = intent.metadata.get("credit_purchase_id")
    if raw is None:
        return None
    purchase = await repo.get_purchase(session, uuid.UUID(raw), lock=True)
    if purchase is None:
        return None
    if purchase.status == "succeeded" or intent.status == "requires_payment":
        return purchase.status
    if intent.status != "succeeded":
        if intent.status in ("failed", "canceled") and purchase.status != intent.status:
            await repo.update_purchase(session, purchase.id, status=intent.status)
        return intent.status
    await repo.update_purchase(session, purchase.id, status="succeeded", succeeded_at=now)
    plan = await repo.get_plan(session, plan_id=purchase.plan_id)
    months = plan.validity_months if plan else get_settings().credits_validity_months
    grant = await repo.insert_grant(
        session, owner_id=purchase.owner_id, type="PURCHASE", credits=purchase.credits,
        value_minor=intent.amount_received_minor or purchase.amount_minor,
        currency=purchase.currency, granted_at=now, expires_at=add_months(now, months),
        source_key=f"purchase:{purchase.id}", purchase_id=purchase.id,
    )  # fmt: skip
    if grant is not None:
        await payments.post_ledger(
            session, kind="credit_sale", key=f"credit_sale:{grant.id}", currency=grant.currency,
            lines=cl.sale_lines(gateway=gateway, amount_minor=grant.value_minor, grants_credits=True),
        )  # fmt: skip
    return "succeeded"


# --- subscriptions ---------------------------------------------------------------------


async def _sub_out(session: AsyncSession, subs: list[CreditSubscription]) -> list[SubscriptionOut]:
    plans = await repo.plan_codes(session, {s.plan_id for s in subs})
    return [
        SubscriptionOut(
            id=s.id, plan_code=plans[s.plan_id].code, student_id=s.student_id,
            owner_id=s.owner_id, currency=s.currency, amount_minor=s.amount_minor,
            credits_per_period=plans[s.plan_id].credits,
            status=s.status,
            current_period_start=s.current_period_start,
            current_period_end=s.current_period_end,
            cancel_at_period_end=s.cancel_at_period_end, canceled_at=s.canceled_at,
        )
        for s in subs
    ]  # fmt: skip


async def _student_of(session: AsyncSession, user: User, student_id: uuid.UUID | None) -> uuid.UUID:
    if user.role == "student":
        if student_id not in (None, user.id):
            raise Forbidden("A student subscribes for itself only.")
        return user.id
    if student_id is None:
        raise field_errors([("student_id", "a parent names the child the plan is for")])
    if not await profiles.is_parent_of(session, parent_id=user.id, child_id=student_id):
        raise Forbidden("This account is not a child linked to yours.")
    return student_id


async def open_subscription(
    session: AsyncSession, *, user: User, data: SubscriptionCreate
) -> CreditSubscription:
    """First step of subscribing (commit it before `activate_subscription`, so the
    gateway's webhooks find the row): an `incomplete` subscription of the plan for the
    student (the caller, or its linked child), paid by the caller. Raises `PlanNotFound`
    (404), `WrongPlanKind` / `CurrencyNotOffered` / `ValidationFailed` (422), `Forbidden`
    (403: not a linked child), `SubscriptionExists` (409: the student has a live one)."""
    plan, amount = await _priced_plan(
        session, code=data.plan_code, currency=data.currency, kind="plan"
    )
    student_id = await _student_of(session, user, data.student_id)
    try:
        async with session.begin_nested():
            return await repo.insert_subscription(
                session, owner_id=user.id, student_id=student_id, plan_id=plan.id,
                currency=data.currency, amount_minor=amount, gateway="stripe",
            )  # fmt: skip
    except IntegrityError as exc:
        if "credit_subscriptions_one_live" in str(exc.orig):
            raise SubscriptionExists("This student already has a live subscription.") from None
        raise


async def activate_subscription(
    session: AsyncSession,
    billing: Billing,
    *,
    sub_id: uuid.UUID,
    payment_method: str,
    email: str | None,
) -> SubscriptionOut:
    """Second step: the gateway customer (once per payer, with the payer's `email`), the plan's Product and Price
    (once per plan and amount), then the gateway subscription (key `sub:{id}`), whose
    first invoice is charged at once; the row takes the gateway's state. On a gateway
    error the row becomes `incomplete_expired` (commit it) and the error is raised
    (`payments.service.gateway_error`: 502/503)."""
    sub = await repo.get_subscription(session, sub_id=sub_id, lock=True)
    assert sub is not None
    plan = await repo.get_plan(session, plan_id=sub.plan_id, lock=True)
    assert plan is not None
    try:
        customer = await repo.customer_ref(session, sub.owner_id)
        if customer is None:
            customer = await billing.ensure_customer(user_id=str(sub.owner_id), email=email)
            await repo.save_customer(session, sub.owner_id, billing.name, customer)
        product = plan.stripe_product_ref
        if product is None:
            product = await billing.create_product(plan_id=str(plan.id), name=plan.name)
            await repo.set_product_ref(session, plan.id, product)
        price = next(
            p for p in (await repo.prices_of(session, [plan.id]))[plan.id]
            if p.currency == sub.currency
        )  # fmt: skip
        price_ref = price.stripe_price_ref
        if price_ref is None:
            price_ref = await billing.create_price(
                plan_id=str(plan.id), product_ref=product, amount_minor=price.amount_minor,
                currency=price.currency, monthly=True,
            )  # fmt: skip
            await repo.set_price_ref(session, plan.id, price.currency, price_ref)
        remote = await billing.create_subscription(
            subscription_id=str(sub.id), customer_ref=customer, price_ref=price_ref,
            payment_method=payment_method, metadata={"subscription_id": str(sub.id)},
        )  # fmt: skip
    except UnrepresentableAmount as exc:
        await repo.update_subscription(session, sub.id, status="incomplete_expired")
        raise AmountNotSupported(
            f"The gateway cannot take {sub.amount_minor} minor units of {sub.currency}."
        ) from exc
    except ProviderError as exc:
        await repo.update_subscription(session, sub.id, status="incomplete_expired")
        raise payments.gateway_error(exc) from exc
    sub = await repo.update_subscription(
        session, sub.id, gateway_ref=remote.ref, customer_ref=customer, **_mirror(remote)
    )
    return (await _sub_out(session, [sub]))[0]


def _mirror(remote: Subscription) -> dict[str, object]:
    return {
        "status": remote.status,
        "current_period_start": remote.current_period_start,
        "current_period_end": remote.current_period_end,
        "cancel_at_period_end": remote.cancel_at_period_end,
        "canceled_at": remote.canceled_at,
    }


async def _local(session: AsyncSession, remote: Subscription) -> CreditSubscription | None:
    sub = await repo.get_subscription(session, ref=remote.ref, lock=True)
    if sub is None and "subscription_id" in remote.metadata:
        sub = await repo.get_subscription(
            session, sub_id=uuid.UUID(remote.metadata["subscription_id"]), lock=True
        )
    return sub


async def apply_subscription(
    session: AsyncSession, *, remote: Subscription
) -> CreditSubscription | None:
    """Mirror the gateway's subscription (re-read by the caller) onto ours, under its row
    lock (found by ref, or by our id in its metadata before the ref was stored)."""
    sub = await _local(session, remote)
    if sub is None:
        log.warning("credits_unknown_subscription", ref=remote.ref)
        return None
    return await repo.update_subscription(
        session, sub.id, gateway_ref=remote.ref, **_mirror(remote)
    )


async def apply_invoice(
    session: AsyncSession, *, gateway: str, invoice: Invoice, remote: Subscription, now: datetime
) -> CreditGrant | None:
    """A subscription's invoice (both re-read from the gateway): mirror the subscription;
    when the invoice is `paid`, grant the plan's credits for the month
    (`MONTHLY_ALLOCATION`, once per invoice: key `invoice:{ref}`) to the payer's wallet,
    expiring `validity_months` after `now`, and post the sale (`subscription_fee` for a
    plan without credits). A failed payment grants nothing (the subscription is
    `past_due`). Returns the new grant (None: nothing granted now)."""
    sub = await apply_subscription(session, remote=remote)
    if sub is None or invoice.status != "paid" or invoice.amount_paid_minor <= 0:
        return None
    plan = await repo.get_plan(session, plan_id=sub.plan_id)
    assert plan is not None
    key = f"invoice:{invoice.ref}"
    if plan.credits == 0:
        await payments.post_ledger(
            session, kind="subscription_fee", key=f"subscription_fee:{invoice.ref}",
            currency=invoice.currency,
            lines=cl.sale_lines(gateway=gateway, amount_minor=invoice.amount_paid_minor,
                                grants_credits=False),
        )  # fmt: skip
        return None
    grant = await repo.insert_grant(
        session, owner_id=sub.owner_id, type="MONTHLY_ALLOCATION", credits=plan.credits,
        value_minor=invoice.amount_paid_minor, currency=invoice.currency, granted_at=now,
        expires_at=add_months(now, plan.validity_months), source_key=key,
        subscription_id=sub.id,
    )  # fmt: skip
    if grant is not None:
        await payments.post_ledger(
            session, kind="credit_sale", key=f"credit_sale:{grant.id}", currency=grant.currency,
            lines=cl.sale_lines(gateway=gateway, amount_minor=grant.value_minor, grants_credits=True),
        )  # fmt: skip
    return grant


async def my_subscriptions(session: AsyncSession, *, user: User) -> SubscriptionList:
    """The live subscriptions the caller pays for or benefits from."""
    subs = list(await repo.live_subscriptions(session, user.id))
    return SubscriptionList(items=await _sub_out(session, subs))


async def cancel_subscription(
    session: AsyncSession, billing: Billing, *, user: User, sub_id: uuid.UUID
) -> SubscriptionOut:
    """Cancel at the period's end (the credits of the paid period stay): the gateway
    stops renewing, and its `customer.subscription.deleted` at the end makes it
    `canceled`. Idempotent. Raises `SubscriptionNotFound` (404: not the caller's, as
    payer), `SubscriptionNotCancelable` (409: ended), gateway errors (502/503)."""
    sub = await repo.get_subscription(session, sub_id=sub_id, lock=True)
    if sub is None or sub.owner_id != user.id:
        raise SubscriptionNotFound("No subscription with this id.")
    if sub.status in ("canceled", "incomplete_expired") or sub.gateway_ref is None:
        raise SubscriptionNotCancelable(f"This subscription is {sub.status}.")
    if not sub.cancel_at_period_end:
        try:
            remote = await billing.cancel_at_period_end(sub.gateway_ref)
        except ProviderError as exc:
            raise payments.gateway_error(exc) from exc
        sub = await repo.update_subscription(session, sub.id, **_mirror(remote))
    return (await _sub_out(session, [sub]))[0]


# --- the wallet ------------------------------------------------------------------------


async def balance(session: AsyncSession, *, user: User, now: datetime) -> BalanceOut:
    """The caller's unexpired credits at `now` and its next expiry."""
    total, first, count = await repo.balance(session, user.id, now=now)
    return BalanceOut(
        balance=total,
        next_expiry=NextExpiry(expires_at=first, credits=count) if first is not None else None,
    )


def _cursor(at: datetime, row_id: uuid.UUID) -> str:
    raw = orjson.dumps([at.isoformat(), str(row_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _uncursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, row_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed, uuid.UUID(row_id)
    except (ValueError, TypeError, AttributeError, orjson.JSONDecodeError):
        raise field_errors(
            [("cursor", "not a cursor returned by this endpoint")], location="query"
        ) from None


async def history(
    session: AsyncSession, *, user: User, cursor: str | None, limit: int
) -> TransactionPage:
    """The caller's credit movements, newest first, `limit` a page (keyset cursor).
    Raises `ValidationFailed` (422) for a foreign cursor."""
    after = _uncursor(cursor) if cursor else None
    rows = await repo.history(session, user.id, after=after, limit=limit + 1)
    items = [
        TransactionOut(
            id=r.id, type=r.type, credits=int(r.credits), at=r.at, expires_at=r.expires_at,
            booking_id=r.booking_id,
        )
        for r in rows[:limit]
    ]  # fmt: skip
    last = items[-1] if len(rows) > limit else None
    return TransactionPage(
        items=items, next_cursor=_cursor(last.at, last.id) if last is not None else None
    )


# --- spending on bookings ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spent:
    """What paying a booking took: credits in all and per grant."""

    credits: int
    grants: list[tuple[uuid.UUID, int]]


async def spend_for_booking(
    session: AsyncSession,
    *,
    booking: BookingOut,
    payer_id: uuid.UUID,
    now: datetime,
    lock: bool = True,
    after_read: Callable[[], Awaitable[None]] | None = None,
) -> Spent:
    """Take the booking's cost (`booking_cost`) from the payer's wallet, earliest expiry
    first, under the grants' row locks (`FOR UPDATE` in expiry order), with a `USAGE`
    spend per grant touched and its ledger posting (the liability becomes the provider's
    earning and the commission). `lock=False` reads without the lock and writes absolute
    balances (only the race-control test: it shows the lost update the lock prevents);
    `after_read` is awaited between the read and the writes (a test hook widening the race
    window). Raises `InsufficientCredits` (409: `needed`, `available`), `NoCreditCost` (422)."""
    needed = await booking_cost(
        session, slot_id=booking.slot_id, starts_at=booking.starts_at, ends_at=booking.ends_at,
        seats=booking.seats,
    )  # fmt: skip
    grants = await repo.wallet_grants(session, payer_id, now=now, lock=lock)
    available = sum(g.remaining for g in grants)
    if after_read is not None:
        await after_read()
    if available < needed:
        raise InsufficientCredits(
            f"This booking costs {needed} credit(s); {available} available.",
            needed=needed, available=available,
        )  # fmt: skip
    bps = get_settings().platform_fee_bps
    left, taken = needed, []
    for g in grants:
        if left == 0:
            break
        n = min(left, g.remaining)
        consumed_before = g.credits - g.remaining
        if lock:
            await repo.take(session, g.id, n)
        else:
            await repo.set_remaining(session, g.id, g.remaining - n)
        value = cl.share(g.value_minor, g.credits, consumed_before, n)
        spend = await repo.insert_spend(
            session, grant_id=g.id, owner_id=payer_id, type="USAGE", credits=n,
            value_minor=value, currency=g.currency, booking_id=booking.id, created_at=now,
        )  # fmt: skip
        await payments.post_ledger(
            session, kind="credit_spend", key=f"credit_spend:{spend.id}", currency=g.currency,
            lines=cl.spend_lines(provider_id=booking.provider_id, value_minor=value, bps=bps),
            booking_id=booking.id,
        )  # fmt: skip
        taken.append((g.id, n))
        left -= n
    return Spent(needed, taken)


async def pay_booking(
    session: AsyncSession, *, booking: BookingOut, payer_id: uuid.UUID, now: datetime
) -> BookingOut:
    """Pay a fresh hold with credits and confirm it, in the caller's transaction (both or
    neither commit). Raises `InsufficientCredits` (409), `NoCreditCost` (422)."""
    from booking import service as booking_service

    await spend_for_booking(session, booking=booking, payer_id=payer_id, now=now)
    result = await booking_service.confirm(
        session, booking_id=booking.id, now=now, actor_id=payer_id
    )
    return result.booking


async def refund_booking(
    session: AsyncSession, *, booking_id: uuid.UUID, percent: int, now: datetime
) -> int:
    """After a booking paid with credits is canceled (same transaction): give back
    `percent` % of its credits (rounded down) as `REFUND` grants carrying the original
    grants' expiry — from the latest-expiring first — with the reversing ledger lines;
    credits whose original expiry has passed are not given back. A booking not paid
    with credits gives nothing. Returns the credits given back; when some were, a
    canceled booking with a refund due becomes `refunded`."""
    from booking import service as booking_service

    spends = await repo.booking_spends(session, booking_id, lock=True)
    if not spends:
        return 0
    spent = sum(s.credits for s, _ in spends)
    already = sum(s.refunded for s, _ in spends)
    owed = max(0, spent * percent // 100 - already)
    bps = get_settings().platform_fee_bps
    provider_id = await _provider_of(session, booking_id)
    given = 0
    for spend, grant in spends:
        n = min(owed - given, spend.credits - spend.refunded)
        if n <= 0 or grant.expires_at <= now:
            continue
        value, lines = cl.refund_lines(
            provider_id=provider_id, spend_value=spend.value_minor, spend_credits=spend.credits,
            before=spend.refunded, credits=n, bps=bps,
        )  # fmt: skip
        refund = await repo.insert_grant(
            session, owner_id=spend.owner_id, type="REFUND", credits=n, value_minor=value,
            currency=spend.currency, granted_at=now, expires_at=grant.expires_at,
            source_key=f"refund:{spend.id}:{spend.refunded}", booking_id=booking_id,
        )  # fmt: skip
        if refund is None:
            continue
        await repo.add_refunded(session, spend.id, n)
        await payments.post_ledger(
            session, kind="credit_refund", key=f"credit_refund:{refund.id}",
            currency=spend.currency, lines=lines, booking_id=booking_id,
        )  # fmt: skip
        given += n
    if given:
        booking = await booking_service.get_booking_for_system(session, booking_id=booking_id)
        if booking is not None and booking.status == "canceled" and booking.refund_due_minor:
            await booking_service.mark_refunded(session, booking_id=booking_id, now=now)
    return given


async def _provider_of(session: AsyncSession, booking_id: uuid.UUID) -> uuid.UUID:
    from booking import service as booking_service

    booking = await booking_service.get_booking_for_system(session, booking_id=booking_id)
    assert booking is not None
    return booking.provider_id


# --- expiry ----------------------------------------------------------------------------


async def expire_lapsed(session: AsyncSession, *, now: datetime, limit: int = 500) -> int:
    """Write an `EXPIRATION` for every grant lapsed at `now` with credits left (at most
    `limit`, skipping grants locked by a concurrent spend or job): its remaining credits
    and value leave the wallet and become breakage in the ledger. Idempotent: an expired
    grant has nothing left (and a unique index allows one expiry per grant). Returns how
    many grants expired."""
    grants = await repo.lapsed_grants(session, now=now, limit=limit)
    for g in grants:
        consumed_before = g.credits - g.remaining
        value = cl.share(g.value_minor, g.credits, consumed_before, g.remaining)
        await repo.take(session, g.id, g.remaining)
        spend = await repo.insert_spend(
            session, grant_id=g.id, owner_id=g.owner_id, type="EXPIRATION", credits=g.remaining,
            value_minor=value, currency=g.currency, created_at=now,
        )  # fmt: skip
        await payments.post_ledger(
            session, kind="credit_expiry", key=f"credit_expiry:{spend.id}", currency=g.currency,
            lines=cl.expiry_lines(value_minor=value),
        )  # fmt: skip
    return len(grants)


async def notify_expiring(session: AsyncSession, *, now: datetime, limit: int = 500) -> int:
    """Emit one outbox event `credits.expiring` (keys only: `owner_id`, `grant_id`) per
    grant with credits left expiring within `CREDITS_EXPIRY_NOTICE_DAYS` (7) of `now`,
    once per grant. Returns how many were emitted."""
    days = get_settings().credits_expiry_notice_days
    grants = await repo.expiring_unnotified(
        session, now=now, until=now + timedelta(days=days), limit=limit
    )
    for g in grants:
        await outbox.emit(
            session, aggregate_type="credit_wallet", aggregate_id=str(g.owner_id),
            event_type=EXPIRING_EVENT,
            payload={"owner_id": str(g.owner_id), "grant_id": str(g.id)},
        )  # fmt: skip
    await repo.mark_notified(session, [g.id for g in grants], now)
    return len(grants)


async def subscriptions_due(session: AsyncSession, *, now: datetime, limit: int = 500) -> list[str]:
    """Gateway refs of live subscriptions whose period ended by `now` (the monthly
    allocation job re-reads them and their invoices)."""
    return await repo.subscriptions_due(session, now=now, limit=limit)
