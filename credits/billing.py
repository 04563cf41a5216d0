"""Stripe Billing for credits: Customers, Products/Prices, Subscriptions, Invoices.

The port (`Billing`) is what the credits domain needs from a subscription gateway; the
adapter (`StripeBilling`) speaks to Stripe through the official SDK with the payments
adapter's `StripeClient` (so the local stand-in, `standins/stripe`, answers when no
`STRIPE_SECRET_KEY` is set). Every creating call carries our idempotency key, derived
from our ids (`cus:{user_id}`, `prod:{plan_id}`, `price:{plan_id}:{currency}:{amount}`,
`sub:{subscription_id}`), so retries never create a second object.

Webhooks are never trusted beyond the id of the object they name: the invoice and the
subscription are re-read here (`get_invoice`, `get_subscription`). Shapes are those of
API version `2025-09-30.clover`: the period is on the subscription's item, the invoice
names its subscription under `parent.subscription_details`.

Amounts are ISO minor units on our side, converted with the payments adapter's rules.
Raises `ProviderError` / `ProviderUnavailable` (payments.provider) like the payments port.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import stripe

from payments.provider import ProviderError
from payments.stripe_adapter import (
    _plain,
    _translate,
    from_stripe_amount,
    get_provider,
    to_stripe_amount,
)


def _ts(value: Any) -> datetime | None:
    return None if value in (None, 0) else datetime.fromtimestamp(int(value), UTC)


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription as the gateway sees it: Stripe's `status` (incomplete, active,
    past_due, unpaid, canceled, incomplete_expired), the current period (UTC), whether it
    ends at the period's end, our `metadata` (`subscription_id`)."""

    ref: str
    status: str
    customer_ref: str
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    latest_invoice: str | None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Invoice:
    """An invoice: `status` draft | open | paid | uncollectible | void; `amount_paid_minor`
    in `currency` (ISO minor units); the billed period; `subscription_ref`."""

    ref: str
    status: str
    subscription_ref: str | None
    amount_paid_minor: int
    currency: str
    period_start: datetime | None
    period_end: datetime | None
    paid_at: datetime | None
    attempt_count: int


def subscription_from_stripe(obj: Any) -> Subscription:
    """Our `Subscription` from a Stripe Subscription (SDK object or dict)."""
    sub = _plain(obj)
    items = (sub.get("items") or {}).get("data") or [{}]
    item = items[0]
    latest = sub.get("latest_invoice")
    if isinstance(latest, Mapping):
        latest = latest.get("id")
    return Subscription(
        ref=str(sub["id"]),
        status=str(sub["status"]),
        customer_ref=str(sub.get("customer") or ""),
        current_period_start=_ts(item.get("current_period_start")),
        current_period_end=_ts(item.get("current_period_end")),
        cancel_at_period_end=bool(sub.get("cancel_at_period_end")),
        canceled_at=_ts(sub.get("canceled_at")),
        latest_invoice=str(latest) if latest else None,
        metadata={str(k): str(v) for k, v in (sub.get("metadata") or {}).items()},
    )


def invoice_from_stripe(obj: Any) -> Invoice:
    """Our `Invoice` from a Stripe Invoice (SDK object or dict)."""
    inv = _plain(obj)
    currency = str(inv["currency"]).upper()
    parent = inv.get("parent") or {}
    details = parent.get("subscription_details") or {}
    sub_ref = details.get("subscription") or inv.get("subscription")
    transitions = inv.get("status_transitions") or {}
    return Invoice(
        ref=str(inv["id"]),
        status=str(inv.get("status") or "draft"),
        subscription_ref=str(sub_ref) if sub_ref else None,
        amount_paid_minor=from_stripe_amount(int(inv.get("amount_paid") or 0), currency),
        currency=currency,
        period_start=_ts(inv.get("period_start")),
        period_end=_ts(inv.get("period_end")),
        paid_at=_ts(transitions.get("paid_at")),
        attempt_count=int(inv.get("attempt_count") or 0),
    )


class Billing(Protocol):
    """A subscription gateway (Stripe Billing)."""

    name: str

    async def ensure_customer(self, *, user_id: str, email: str | None) -> str:
        """The gateway customer of our user (created once: key `cus:{user_id}`)."""
        ...

    async def create_product(self, *, plan_id: str, name: str) -> str:
        """A product for our plan (key `prod:{plan_id}`); returns its id."""
        ...

    async def create_price(
        self, *, plan_id: str, product_ref: str, amount_minor: int, currency: str, monthly: bool
    ) -> str:
        """A price of the product (key derived from plan, currency and amount)."""
        ...

    async def create_subscription(
        self,
        *,
        subscription_id: str,
        customer_ref: str,
        price_ref: str,
        payment_method: str,
        metadata: Mapping[str, str],
    ) -> Subscription:
        """Subscribe the customer to the price (key `sub:{subscription_id}`); the first
        invoice is charged at once with `payment_method`."""
        ...

    async def get_subscription(self, ref: str) -> Subscription:
        """Re-read a subscription (the source of truth)."""
        ...

    async def cancel_at_period_end(self, ref: str) -> Subscription:
        """Let the subscription end when its current period does."""
        ...

    async def get_invoice(self, ref: str) -> Invoice:
        """Re-read an invoice (the source of truth)."""
        ...

    async def list_invoices(self, subscription_ref: str) -> list[Invoice]:
        """The subscription's invoices, newest first (at most 100)."""
        ...


class StripeBilling:
    """`Billing` on Stripe through the payments adapter's `StripeClient`."""

    name = "stripe"

    def __init__(self, client: stripe.StripeClient) -> None:
        self.client = client

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except stripe.StripeError as exc:
            raise _translate(exc) from exc

    async def ensure_customer(self, *, user_id: str, email: str | None) -> str:
        """`POST /v1/customers` with key `cus:{user_id}` and metadata `user_id`."""
        params: dict[str, Any] = {"metadata": {"user_id": user_id}}
        if email:
            params["email"] = email
        cus = await self._call(
            self.client.v1.customers.create_async(
                cast(Any, params), {"idempotency_key": f"cus:{user_id}"}
            )
        )
        return str(cus.id)

    async def create_product(self, *, plan_id: str, name: str) -> str:
        """`POST /v1/products` (key `prod:{plan_id}`)."""
        params = {"name": name, "metadata": {"plan_id": plan_id}}
        prod = await self._call(
            self.client.v1.products.create_async(
                cast(Any, params), {"idempotency_key": f"prod:{plan_id}"}
            )
        )
        return str(prod.id)

    async def create_price(
        self, *, plan_id: str, product_ref: str, amount_minor: int, currency: str, monthly: bool
    ) -> str:
        """`POST /v1/prices` (key `price:{plan_id}:{currency}:{amount}`), recurring monthly
        for a plan."""
        params: dict[str, Any] = {
            "product": product_ref,
            "unit_amount": to_stripe_amount(amount_minor, currency),
            "currency": currency.lower(),
            "metadata": {"plan_id": plan_id},
        }
        if monthly:
            params["recurring"] = {"interval": "month"}
        price = await self._call(
            self.client.v1.prices.create_async(
                cast(Any, params),
                {"idempotency_key": f"price:{plan_id}:{currency}:{amount_minor}"},
            )
        )
        return str(price.id)

    async def create_subscription(
        self,
        *,
        subscription_id: str,
        customer_ref: str,
        price_ref: str,
        payment_method: str,
        metadata: Mapping[str, str],
    ) -> Subscription:
        """`POST /v1/subscriptions` (key `sub:{subscription_id}`)."""
        params = {
            "customer": customer_ref,
            "items": [{"price": price_ref}],
            "default_payment_method": payment_method,
            "metadata": dict(metadata),
        }
        sub = await self._call(
            self.client.v1.subscriptions.create_async(
                cast(Any, params), {"idempotency_key": f"sub:{subscription_id}"}
            )
        )
        return subscription_from_stripe(sub)

    async def get_subscription(self, ref: str) -> Subscription:
        """`GET /v1/subscriptions/{id}`."""
        return subscription_from_stripe(
            await self._call(self.client.v1.subscriptions.retrieve_async(ref))
        )

    async def cancel_at_period_end(self, ref: str) -> Subscription:
        """`POST /v1/subscriptions/{id}` with `cancel_at_period_end=true` (idempotent)."""
        params = {"cancel_at_period_end": True}
        return subscription_from_stripe(
            await self._call(self.client.v1.subscriptions.update_async(ref, cast(Any, params)))
        )

    async def get_invoice(self, ref: str) -> Invoice:
        """`GET /v1/invoices/{id}`."""
        return invoice_from_stripe(await self._call(self.client.v1.invoices.retrieve_async(ref)))

    async def list_invoices(self, subscription_ref: str) -> list[Invoice]:
        """`GET /v1/invoices?subscription=…&limit=100`."""
        params = {"subscription": subscription_ref, "limit": 100}
        page = await self._call(self.client.v1.invoices.list_async(cast(Any, params)))
        return [invoice_from_stripe(i) for i in page.data]


def get_billing() -> StripeBilling:
    """The process's billing gateway, on the payments provider's SDK client."""
    return StripeBilling(get_provider().client)


__all__ = [
    "Billing",
    "Invoice",
    "ProviderError",
    "StripeBilling",
    "Subscription",
    "get_billing",
    "invoice_from_stripe",
    "subscription_from_stripe",
]
