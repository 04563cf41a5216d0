"""Pydantic schemas of the payments API. Money: integer minor units of ISO 4217 `currency`
(2500 EUR = 25.00 €, 1500 XOF = 1500 F CFA, 45000 TND = 45.000 DT); times RFC 3339 UTC."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

_PAYOUT_EXAMPLE: dict[str, JsonValue] = {
    "id": "0f7c2f0e-9b1d-4a57-8a57-2c1d0f4b9e21",
    "provider_id": "7d1e2c3b-4a5f-4e6d-8c7b-9a0f1e2d3c4b",
    "currency": "EUR",
    "gross_minor": 25500,
    "fee_minor": 0,
    "net_minor": 25500,
    "status": "paid",
    "method": "stripe_transfer",
    "reference": None,
    "transfer_ref": "tr_1Pgc7BB7WZ01zgkWVJfE40RX",
    "reject_reason": None,
    "requested_at": "2030-03-01T12:00:00Z",
    "decided_at": "2030-03-02T09:00:00Z",
    "paid_at": "2030-03-02T09:00:01Z",
}
_FINANCE_ROW_EXAMPLE: dict[str, JsonValue] = {
    "currency": "EUR",
    "gross_minor": 450000,
    "refunds_minor": 30000,
    "commission_minor": 63000,
    "service_fees_minor": 0,
    "provider_earnings_minor": 357000,
    "payouts_paid_minor": 250000,
    "payout_fees_minor": 0,
    "payouts_pending_minor": 25500,
}

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

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"received": True, "duplicate": False}]}
    )

    received: bool = True
    duplicate: bool = Field(description="True when this event id was stored before")


class PayoutRequest(BaseModel):
    """A payout request: `currency` (default: the provider's profile currency) and
    `amount_minor` (default: the whole available balance in that currency)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{}, {"currency": "EUR", "amount_minor": 20000}]},
    )

    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    amount_minor: int | None = Field(default=None, gt=0, le=10**15)


class PayoutOut(BaseModel):
    """A payout: `gross_minor` leaves the provider's balance, `fee_minor` is kept by the
    platform, `net_minor` is paid."""

    model_config = ConfigDict(
        from_attributes=True, json_schema_extra={"examples": [_PAYOUT_EXAMPLE]}
    )

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

    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [_PAYOUT_EXAMPLE]}]})

    items: list[PayoutOut]


class PayoutReject(BaseModel):
    """Why a payout is rejected (shown to the provider)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "KYC documents missing"}]}
    )

    reason: str = Field(min_length=1, max_length=500)


class PayoutApprove(BaseModel):
    """Approve a payout. With `reference`, it is marked paid manually (a bank transfer made
    outside Stripe); without, it is paid by a Stripe Transfer to the provider's connected
    account when it has one, else it stays `approved` until paid manually."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{}, {"reference": "SEPA-2030-03-0042"}]}
    )

    reference: str | None = Field(default=None, min_length=1, max_length=200)


class BalanceOut(BaseModel):
    """A provider's available balance per currency (ledger sum of its account)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"balances": {"EUR": 25500, "XOF": 150000}}]}
    )

    balances: dict[str, int]


class FinanceRow(BaseModel):
    """One currency's figures over the period (minor units), from the ledger."""

    model_config = ConfigDict(json_schema_extra={"examples": [_FINANCE_ROW_EXAMPLE]})

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

    model_config = ConfigDict(
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "from": "2030-03-01T00:00:00Z",
                    "to": "2030-04-01T00:00:00Z",
                    "currencies": [_FINANCE_ROW_EXAMPLE],
                }
            ]
        },
    )
