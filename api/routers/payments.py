"""Payments: a booking's payment intent, the Stripe webhook, payouts and the finance report.

The request owns the unit of work: handlers commit, then call the gateway for follow-ups
(a payout's transfer) and commit again, so no row lock is held across a network call.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response, status

from api.deps import AdminUser, NowDep, ProviderUser, SessionDep, require_role
from api.errors import problem_responses
from core.errors import ValidationFailed
from core.logging import get_logger
from payments import inbox, payouts, service
from payments.errors import AmountNotSupported
from payments.provider import PaymentProvider, ProviderError
from payments.schemas import (
    BalanceOut,
    FinanceReport,
    PaymentIntentOut,
    PayoutApprove,
    PayoutOut,
    PayoutPage,
    PayoutReject,
    PayoutRequest,
    PayoutStatus,
    WebhookAck,
)
from payments.stripe_adapter import UnrepresentableAmount, get_provider
from profiles.models import User

router = APIRouter(tags=["payments"])
log = get_logger(__name__)
Payer = Annotated[User, Depends(require_role("student", "parent"))]


async def get_payment_provider() -> PaymentProvider:
    """The payment gateway (Stripe, or its local stand-in without `STRIPE_SECRET_KEY`).
    Async on purpose: FastAPI runs a sync dependency in its thread pool (a hop per call)."""
    return get_provider()


ProviderDep = Annotated[PaymentProvider, Depends(get_payment_provider)]


@router.post(
    "/bookings/{booking_id}/payment-intent",
    response_model=PaymentIntentOut,
    summary="Create or return the booking's payment intent (its student or parent)",
    responses=problem_responses(401, 403, 404, 409, 422, 502, 503),
)
async def create_payment_intent(
    booking_id: uuid.UUID, user: Payer, session: SessionDep, gateway: ProviderDep, now: NowDep
) -> Response:
    """For a `pending`, unexpired hold: a Stripe PaymentIntent of `price_minor` (+
    `SERVICE_FEE_MINOR`) in the booking's currency, created once (Stripe idempotency key
    `pi:{booking_id}`: retries and concurrent calls return the same intent and payment).
    Once created, the same intent is returned whatever the booking's state. 404
    `booking_not_found` (not the caller's), 409 `booking_not_payable` (not pending, hold
    expired, free) or `payment_conflict`, 422 `amount_not_supported`, 502/503 gateway.

    The body is serialized here (the service built it, typed): FastAPI does not validate
    a returned `Response` against `response_model` again, which stays for the OpenAPI."""
    out = await service.create_intent(session, gateway, user=user, booking_id=booking_id, now=now)
    await session.commit()
    return Response(out.model_dump_json().encode(), media_type="application/json")


_ACK = {
    True: orjson.dumps(WebhookAck(duplicate=False).model_dump()),
    False: orjson.dumps(WebhookAck(duplicate=True).model_dump()),
}


@router.post(
    "/payments/webhooks/stripe",
    response_class=Response,
    summary="Stripe webhook endpoint (signed events)",
    responses={
        200: {"model": WebhookAck, "description": "Stored (or stored before)"},
        **problem_responses(400),
    },
    openapi_extra={
        "parameters": [
            {
                "name": "Stripe-Signature",
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": "t=<unix time>,v1=<HMAC-SHA256 hex>[,v1=…] (Stripe's scheme)",
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
    },
)
async def stripe_webhook(request: Request) -> Response:
    """Verified on the raw body with `stripe.WebhookSignature.verify_header` (any `v1`
    signature of the secret, 300 s tolerance); 400 `invalid_signature` stores nothing. A
    valid event is stored once by its id (committed before the answer, in a group commit
    with the events arriving at the same time) and answered at once (`WebhookAck`, a
    constant body); after the commit the inbox queues a Celery drain that re-reads the
    object from Stripe and applies it (so order and duplicates do not matter). Kept lean
    on purpose: no dependency, no body model, no response validation."""
    gateway = get_provider()
    body = await request.body()
    event = service.verify_webhook(gateway, body=body, headers=request.headers)
    stored = await inbox.writer(gateway.name).store(event)
    return Response(_ACK[stored.inserted], media_type="application/json")


# --- payouts ---------------------------------------------------------------------------


@router.get(
    "/payouts/balance",
    response_model=BalanceOut,
    summary="The provider's available balance per currency",
    responses=problem_responses(401, 403),
)
async def my_balance(user: ProviderUser, session: SessionDep) -> BalanceOut:
    """Earnings less refunds and payouts requested, per currency (minor units), from the
    ledger."""
    return BalanceOut(balances=await payouts.balances(session, provider_id=user.id))


@router.post(
    "/payouts",
    response_model=PayoutOut,
    status_code=status.HTTP_201_CREATED,
    summary="Request a payout of the available balance (provider)",
    responses=problem_responses(401, 403, 409, 422),
)
async def request_payout(
    user: ProviderUser, session: SessionDep, data: PayoutRequest | None = None
) -> PayoutOut:
    """`amount_minor` (default: all) of the balance in `currency` (default: the first
    currency with a balance); `PAYOUT_FEE_MINOR` is kept, the rest paid. 409
    `insufficient_balance` above the available balance (concurrent requests are
    serialized: together they never exceed it)."""
    out = await payouts.request_payout(
        session, user=user, data=data or PayoutRequest(), profile_currency=None
    )
    await session.commit()
    return out


@router.get(
    "/payouts",
    response_model=PayoutPage,
    summary="The provider's payouts, newest first",
    responses=problem_responses(401, 403, 422),
)
async def my_payouts(
    user: ProviderUser, session: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> PayoutPage:
    """The caller's payout requests and their states."""
    items = await payouts.list_payouts(session, provider_id=user.id, status=None, limit=limit)
    return PayoutPage(items=items)


@router.get(
    "/admin/payouts",
    response_model=PayoutPage,
    summary="Payouts (admin), newest first, optionally in one status",
    responses=problem_responses(401, 403, 422),
)
async def admin_payouts(
    user: AdminUser,
    session: SessionDep,
    status_: Annotated[PayoutStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> PayoutPage:
    """All providers' payouts (`status=pending` for the queue to decide)."""
    items = await payouts.list_payouts(session, provider_id=None, status=status_, limit=limit)
    return PayoutPage(items=items)


async def _pay(
    session: SessionDep,
    gateway: PaymentProvider,
    *,
    admin: User,
    payout: PayoutOut,
    account: str | None,
    reference: str | None,
    now: datetime,
) -> PayoutOut:
    """Pay an approved payout: manually with `reference`, else by a Stripe Transfer to
    `account` (key `po:{payout_id}`: a retry never pays twice)."""
    if reference is not None:
        out = await payouts.mark_paid(
            session, actor=admin, payout_id=payout.id, method="manual", reference=reference,
            transfer_ref=None, gateway=gateway.name, now=now,
        )  # fmt: skip
        await session.commit()
        return out
    destination = payouts.require_account(account)
    try:
        transfer = await gateway.create_transfer(
            destination=destination, amount_minor=payout.net_minor, currency=payout.currency,
            idempotency_key=f"po:{payout.id}", metadata={"payout_id": str(payout.id)},
        )  # fmt: skip
    except UnrepresentableAmount as exc:
        raise AmountNotSupported(
            f"Stripe cannot transfer {payout.net_minor} minor units of {payout.currency};"
            " pay it manually with a `reference`."
        ) from exc
    except ProviderError as exc:
        raise service.gateway_error(exc) from exc
    out = await payouts.mark_paid(
        session, actor=admin, payout_id=payout.id, method="stripe_transfer", reference=None,
        transfer_ref=transfer.ref, gateway=gateway.name, now=now,
    )  # fmt: skip
    await session.commit()
    return out


@router.post(
    "/admin/payouts/{payout_id}/approve",
    response_model=PayoutOut,
    summary="Approve a pending payout, and pay it (admin, audited)",
    responses=problem_responses(401, 403, 404, 409, 422, 502, 503),
)
async def approve_payout(
    payout_id: uuid.UUID,
    user: AdminUser,
    session: SessionDep,
    gateway: ProviderDep,
    now: NowDep,
    data: PayoutApprove | None = None,
) -> PayoutOut:
    """pending → approved, then paid: with `reference`, marked paid manually; else by a
    Stripe Transfer to the provider's connected account. Without a connected account (or
    when Stripe fails: 502/503) it stays `approved`; pay it with `/pay`."""
    approved, account = await payouts.approve(session, admin=user, payout_id=payout_id, now=now)
    await session.commit()
    reference = data.reference if data else None
    if reference is None and account is None:
        return approved
    return await _pay(
        session, gateway, admin=user, payout=approved, account=account, reference=reference, now=now
    )


@router.post(
    "/admin/payouts/{payout_id}/pay",
    response_model=PayoutOut,
    summary="Pay an approved payout (admin, audited)",
    responses=problem_responses(401, 403, 404, 409, 422, 502, 503),
)
async def pay_payout(
    payout_id: uuid.UUID,
    user: AdminUser,
    session: SessionDep,
    gateway: ProviderDep,
    now: NowDep,
    data: PayoutApprove | None = None,
) -> PayoutOut:
    """approved → paid, manually (`reference`) or by Stripe Transfer. 409
    `payout_state_conflict` unless approved, `no_payout_account` without a connected
    account and reference."""
    payout, account = await payouts.get_with_account(session, payout_id=payout_id)
    await session.commit()
    return await _pay(
        session, gateway, admin=user, payout=payout, account=account,
        reference=data.reference if data else None, now=now,
    )  # fmt: skip


@router.post(
    "/admin/payouts/{payout_id}/reject",
    response_model=PayoutOut,
    summary="Reject a payout (admin, audited): the amount returns to the balance",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def reject_payout(
    payout_id: uuid.UUID, data: PayoutReject, user: AdminUser, session: SessionDep, now: NowDep
) -> PayoutOut:
    """pending or approved → rejected with `reason`."""
    out = await payouts.reject(
        session, admin=user, payout_id=payout_id, reason=data.reason, now=now
    )
    await session.commit()
    return out


@router.get(
    "/admin/reports/finance",
    response_model=FinanceReport,
    response_model_by_alias=True,
    summary="Finance report per currency, from the ledger (admin)",
    responses=problem_responses(401, 403, 422),
)
async def finance_report(
    user: AdminUser,
    session: SessionDep,
    from_: Annotated[datetime, Query(alias="from", description="Start, inclusive (RFC 3339)")],
    to: Annotated[datetime, Query(description="End, exclusive (RFC 3339)")],
    currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None,
) -> FinanceReport:
    """Gross captured, refunds, commission, service fees, provider earnings, payouts paid
    in `[from, to)` and pending at `to`, per currency (minor units)."""
    if from_.tzinfo is None or to.tzinfo is None:
        raise ValidationFailed("`from` and `to` need a time zone (e.g. 2030-01-01T00:00:00Z).")
    if to <= from_:
        raise ValidationFailed("`to` must be after `from`.")
    return await payouts.finance_report(session, from_=from_, to=to, currency=currency)
