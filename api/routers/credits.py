"""Credits: the plan catalogue (admin), pack purchases, subscriptions, the wallet.

Handlers own the unit of work: they commit. The POSTs that move money (a pack purchase, a
subscription) require an `Idempotency-Key` like `POST /bookings`: a retry with the same
key replays the first answer instead of charging twice. Gateway calls (Stripe PaymentIntents and
Billing, or the local stand-in) happen inside the request; a subscription's row is
committed before the gateway is asked, so its webhooks always find it.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from api.deps import AdminUser, CurrentUser, NowDep, SessionDep, require_role
from api.errors import problem_responses
from api.idempotency import IdempotentRoute, idempotent
from credits import service
from credits.billing import Billing, get_billing
from credits.schemas import (
    BalanceOut,
    CreditCostTable,
    PlanCreate,
    PlanList,
    PlanOut,
    PlanPatch,
    PurchaseCreate,
    PurchaseOut,
    SubscriptionCreate,
    SubscriptionList,
    SubscriptionOut,
    TransactionPage,
)
from payments.provider import PaymentProvider
from payments.stripe_adapter import get_provider
from profiles.models import User

router = APIRouter(tags=["credits"], route_class=IdempotentRoute)
Payer = Annotated[User, Depends(require_role("student", "parent"))]


async def get_payment_provider() -> PaymentProvider:
    """The payment gateway (Stripe, or its local stand-in)."""
    return get_provider()


async def get_billing_gateway() -> Billing:
    """The subscription gateway (Stripe Billing, or the local stand-in)."""
    return get_billing()


ProviderDep = Annotated[PaymentProvider, Depends(get_payment_provider)]
BillingDep = Annotated[Billing, Depends(get_billing_gateway)]


# --- catalogue (admin) -----------------------------------------------------------------


@router.get(
    "/admin/plans",
    response_model=PlanList,
    summary="Plans and packs with their prices (admin)",
    responses=problem_responses(401, 403),
)
async def admin_list_plans(user: AdminUser, session: SessionDep) -> PlanList:
    """Every plan (monthly, credits per paid month) and pack (credits once), on sale or
    not, with a price per currency (minor units)."""
    return await service.list_plans(session)


@router.post(
    "/admin/plans",
    response_model=PlanOut,
    status_code=status.HTTP_201_CREATED,
    summary="Add a plan or pack (admin)",
    responses=problem_responses(401, 403, 409, 422),
)
async def admin_create_plan(data: PlanCreate, user: AdminUser, session: SessionDep) -> PlanOut:
    """409 `plan_code_taken`; 422 validation (a pack grants ≥ 1 credit, one price per
    currency)."""
    out = await service.create_plan(session, data=data)
    await session.commit()
    return out


@router.patch(
    "/admin/plans/{plan_id}",
    response_model=PlanOut,
    summary="Change a plan or pack, or its prices (admin)",
    responses=problem_responses(401, 403, 404, 422),
)
async def admin_patch_plan(
    plan_id: uuid.UUID, data: PlanPatch, user: AdminUser, session: SessionDep
) -> PlanOut:
    """Fields given change; `prices` sets the amounts of the currencies named. Running
    subscriptions keep their price. 404 `plan_not_found`."""
    out = await service.patch_plan(session, plan_id=plan_id, data=data)
    await session.commit()
    return out


@router.get(
    "/admin/credit-costs",
    response_model=CreditCostTable,
    summary="The credit cost per service type and slot length (admin)",
    responses=problem_responses(401, 403),
)
async def admin_get_costs(user: AdminUser, session: SessionDep) -> CreditCostTable:
    """Per seat: the row of the slot's type with the smallest `max_minutes` ≥ its length."""
    return await service.get_costs(session)


@router.put(
    "/admin/credit-costs",
    response_model=CreditCostTable,
    summary="Replace the credit cost table (admin)",
    responses=problem_responses(401, 403, 422),
)
async def admin_put_costs(
    data: CreditCostTable, user: AdminUser, session: SessionDep
) -> CreditCostTable:
    """Bookings already paid keep what they spent."""
    out = await service.put_costs(session, table=data)
    await session.commit()
    return out


@router.get(
    "/plans",
    response_model=PlanList,
    summary="Plans and packs on sale",
    responses=problem_responses(401),
)
async def list_plans(user: CurrentUser, session: SessionDep) -> PlanList:
    """The active catalogue with prices per currency (minor units)."""
    return await service.list_plans(session, active_only=True)


# --- purchases -------------------------------------------------------------------------


@router.post(
    "/credits/purchases",
    response_model=PurchaseOut,
    status_code=status.HTTP_201_CREATED,
    summary="Buy a pack of credits (a payment intent to confirm; Idempotency-Key required)",
    responses=problem_responses(400, 401, 403, 404, 409, 422, 502, 503),
)
@idempotent(required=True)
async def buy_pack(
    data: PurchaseCreate, user: Payer, session: SessionDep, gateway: ProviderDep
) -> PurchaseOut:
    """A Stripe PaymentIntent of the pack's price in `currency` (confirm it with
    `client_secret`); the credits reach the caller's wallet when Stripe's
    `payment_intent.succeeded` webhook is processed, once. 404 `plan_not_found`; 422
    `wrong_plan_kind`, `currency_not_offered`; 502/503 gateway.

    400 `idempotency_key_missing` / `idempotency_key_invalid`; 409
    `idempotency_key_in_use` while the first request with the key runs; 422
    `idempotency_key_mismatch` for the key with another body. A retry with the same key
    replays the first answer (the same PaymentIntent), `Idempotent-Replayed: true`."""
    out = await service.start_purchase(session, gateway, user=user, data=data)
    await session.commit()
    return out


# --- subscriptions ---------------------------------------------------------------------


@router.post(
    "/subscriptions",
    response_model=SubscriptionOut,
    status_code=status.HTTP_201_CREATED,
    summary="Subscribe to a monthly plan (for yourself, or a parent for a child; "
    "Idempotency-Key required)",
    responses=problem_responses(400, 401, 403, 404, 409, 422, 502, 503),
)
@idempotent(required=True)
async def subscribe(
    data: SubscriptionCreate, user: Payer, session: SessionDep, billing: BillingDep
) -> SubscriptionOut:
    """A Stripe Subscription of the plan's price in `currency`; its first invoice is
    charged with `payment_method` at once: `active` when paid (each paid month's credits
    arrive by the `invoice.paid` webhook, once per invoice), `incomplete` when declined.
    403 `forbidden` (not a linked child); 404 `plan_not_found`; 409
    `subscription_exists`; 422 `wrong_plan_kind`, `currency_not_offered`, validation;
    502/503 gateway (the subscription is then `incomplete_expired`).

    400 `idempotency_key_missing` / `idempotency_key_invalid`; 409
    `idempotency_key_in_use` while the first request with the key runs; 422
    `idempotency_key_mismatch` for the key with another body. A retry with the same key
    replays the first answer (the first invoice is charged once)."""
    opened = await service.open_subscription(session, user=user, data=data)
    await session.commit()
    try:
        out = await service.activate_subscription(
            session, billing, sub_id=opened.id, payment_method=data.payment_method,
            email=user.email,
        )  # fmt: skip
    finally:
        await session.commit()
    return out


@router.post(
    "/subscriptions/{subscription_id}/cancel",
    response_model=SubscriptionOut,
    summary="Cancel a subscription at the end of its period (its payer)",
    responses=problem_responses(401, 403, 404, 409, 422, 502, 503),
)
async def cancel_subscription(
    subscription_id: uuid.UUID, user: Payer, session: SessionDep, billing: BillingDep
) -> SubscriptionOut:
    """`cancel_at_period_end` becomes true; the subscription stays `active` (and its
    month's credits stay) until the period ends, then `canceled`. Idempotent. 404
    `subscription_not_found`; 409 `subscription_not_cancelable` (ended)."""
    out = await service.cancel_subscription(session, billing, user=user, sub_id=subscription_id)
    await session.commit()
    return out


@router.get(
    "/me/subscription",
    response_model=SubscriptionList,
    summary="My live subscriptions (as payer or as student)",
    responses=problem_responses(401),
)
async def my_subscription(user: CurrentUser, session: SessionDep) -> SubscriptionList:
    """Live = incomplete, active, past_due or unpaid (a parent may hold one per child)."""
    return await service.my_subscriptions(session, user=user)


# --- the wallet ------------------------------------------------------------------------


@router.get(
    "/me/credits",
    response_model=BalanceOut,
    summary="My credit balance and next expiry",
    responses=problem_responses(401),
)
async def my_credits(user: CurrentUser, session: SessionDep, now: NowDep) -> BalanceOut:
    """Unexpired credits of the caller's wallet, and the earliest expiry with how many
    credits lapse then."""
    return await service.balance(session, user=user, now=now)


@router.get(
    "/me/credits/history",
    response_model=TransactionPage,
    summary="My credit movements, newest first",
    responses=problem_responses(401, 422),
)
async def my_credit_history(
    user: CurrentUser,
    session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> TransactionPage:
    """MONTHLY_ALLOCATION, PURCHASE, REFUND (+credits, with their expiry), USAGE and
    EXPIRATION (-credits); follow `next_cursor`. 422 for a cursor not from here."""
    return await service.history(session, user=user, cursor=cursor, limit=limit)
