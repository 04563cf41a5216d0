"""Pydantic schemas of the payments API. Money: integer minor units of ISO 4217 `currency`
(2500 EUR = 25.00 €, 1500 XOF = 1500 F CFA, 45000 TND = 45.000 DT); times RFC 3339 UTC."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PaymentStatus = Literal["requires_payment", "processing", "succeeded", "failed", "canceled"]
PayoutStatus = Literal["pending", "approved", "paid", "rejected"]


class PaymentIntentOut(BaseModel):
    """The booking's payment and what the client needs to pay it (Stripe.js
    `confirmPayment` with `client_secret`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "payment_id": "5b0f6f3e-3c2a-4c41-9a3c-0c0a3f7f4c11",
                    "client_secret": "pi_3Q…_secret_…",
                    "amount_minor": 4500,
                    "currency": "EUR",
                    "status": "requires_payment",
                }
            ]
        }
    )

    payment_id: uuid.UUID
    client_secret: str | None = Field(description="Give to Stripe.js; never log or store it")
    amount_minor: int = Field(description="Price plus service fee, minor units of `currency`")
    currency: str = Field(description="ISO 4217, upper case")
    status: PaymentStatus


class WebhookAck(BaseModel):
    """The answer to a webhook delivery: stored (or already stored) and queued."""

    received: bool = True
    duplicate: bool = Field(description="True when this event id was stored before")


class PayoutRequest(BaseModel):
    """A payout request: `currency` (default: the provider's profile currency) and
    `amount_minor` (default: the whole available balance in that currency)."""

    model_config = ConfigDict(extra="forbid")

    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    amount_minor: int | None = Field(default=None, gt=0, le=10**15)


class PayoutOut(BaseModel):
    """A payout: `gross_minor` leaves the provider's balance, `fee_minor` is kept by the
    platform, `net_minor` is paid."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    provider_id: uuid.UUID
    currency: str
    gross_minor: int
    fee_minor: int
    net_minor: int
    status: PayoutStatus
    method: Literal["stripe_transfer", "manual"] | None
    reference: str | None = Field(description="Manual payment reference, if any")
    transfer_ref: str | None = Field(description="Stripe Transfer id, if paid by Stripe")
    reject_reason: str | None
    requested_at: datetime
    decided_at: datetime | None
    paid_at: datetime | None


class PayoutPage(BaseModel):
    """Payouts, newest first."""

    items: list[PayoutOut]


class PayoutReject(BaseModel):
    """Why a payout is rejected (shown to the provider)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)


class PayoutApprove(BaseModel):
    """Approve a payout. With `reference`, it is marked paid manually (a bank transfer made
    outside Stripe); without, it is paid by a Stripe Transfer to the provider's connected
    account when it has one, else it stays `approved` until paid manually."""

    model_config = ConfigDict(extra="forbid")

    reference: str | None = Field(default=None, min_length=1, max_length=200)


class BalanceOut(BaseModel):
    """A provider's available balance per currency (ledger sum of its account)."""

    balances: dict[str, int]


class FinanceRow(BaseModel):
    """One currency's figures over the period (minor units), from the ledger."""

    currency: str
    gross_minor: int = Field(description="Payments captured")
    refunds_minor: int = Field(description="Refunds paid back")
    commission_minor: int = Field(description="Platform commission, net of refunds")
    service_fees_minor: int = Field(description="Service fees, net of refunds")
    provider_earnings_minor: int = Field(description="Providers' share, net of refunds")
    payouts_paid_minor: int = Field(description="Payouts paid in the period (gross)")
    payout_fees_minor: int
    payouts_pending_minor: int = Field(description="Payouts requested and unpaid at `to`")
    credits_sold_minor: int = Field(
        default=0, description="Credits sold (packs, paid monthly invoices), at what was paid"
    )
    credits_spent_minor: int = Field(default=0, description="Value of credits used on bookings")
    credits_refunded_minor: int = Field(
        default=0, description="Value of credits given back by cancellations"
    )
    credits_expired_minor: int = Field(default=0, description="Value of credits lapsed unused")
    credits_outstanding_minor: int = Field(
        default=0,
        description="Credits sold, not spent nor expired, at `to` (the liability): all-time"
        " sold - spent + refunded - expired",
    )
    subscription_fees_minor: int = Field(
        default=0, description="Plans granting no credits (platform income)"
    )


class FinanceReport(BaseModel):
    """Finance report of `[from, to)`, per currency."""

    from_: datetime = Field(alias="from")
    to: datetime
    currencies: list[FinanceRow]

    model_config = ConfigDict(populate_by_name=True)
