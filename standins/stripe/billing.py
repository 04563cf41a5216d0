"""Stripe Billing in the stand-in: Customers, Products, Prices, Subscriptions, Invoices.

Mixed into `StripeStandin` (same lock, fixtures, events and idempotency). Shapes follow
the API version the stand-in announces (`2025-09-30.clover`): a subscription's period is
on its item (`items.data[0].current_period_start/end`), an invoice names its subscription
in `parent.subscription_details.subscription`.

- `POST /v1/customers` (email, name, metadata), `GET /v1/customers/{id}`;
- `POST /v1/products` (name, metadata), `POST /v1/prices` (product, unit_amount, currency,
  `recurring[interval]=month`, metadata), `GET /v1/prices/{id}`;
- `POST /v1/subscriptions` (customer, `items[0][price]`, default_payment_method, metadata):
  the first invoice is made and charged at once with the payment method — paid: the
  subscription is `active` (`customer.subscription.created`, `invoice.paid`); declined
  (the test cards of `DECLINES`): `incomplete`, the invoice `open`
  (`invoice.payment_failed`);
- `GET /v1/subscriptions/{id}`, `POST /v1/subscriptions/{id}` (`cancel_at_period_end`),
  `DELETE /v1/subscriptions/{id}` (ends it now: `customer.subscription.deleted`);
- `GET /v1/invoices/{id}`, `GET /v1/invoices?subscription=`.

Test helpers, like Stripe's test clocks (no auth):

- `POST /_standin/subscriptions/{id}/advance` (`fail=true` to decline the renewal): the
  period moves one month on; a subscription set to cancel at period end is `canceled`
  (`customer.subscription.deleted`), any other gets a new invoice charged with its payment
  method: paid (`invoice.paid`, status `active`) or declined (`invoice.payment_failed`,
  status `past_due`);
- `POST /_standin/invoices/{id}/pay` and `/fail`: an open invoice paid (the subscription
  `active` again) or declined once more.
"""

from __future__ import annotations

import calendar
import copy
import time
from datetime import UTC, datetime
from typing import Any

DECLINING_METHODS = frozenset(
    {
        "pm_card_chargeDeclined",
        "pm_card_chargeDeclinedInsufficientFunds",
        "pm_card_chargeDeclinedExpiredCard",
    }
)


def add_month(ts: int, months: int = 1) -> int:
    """`ts` (unix seconds) plus `months` calendar months, the day clamped to the month's
    last (Stripe's billing-cycle rule: Jan 31 → Feb 28)."""
    d = datetime.fromtimestamp(ts, UTC)
    month0 = d.month - 1 + months
    year, month = d.year + month0 // 12, month0 % 12 + 1
    day = min(d.day, calendar.monthrange(year, month)[1])
    return int(d.replace(year=year, month=month, day=day).timestamp())


class BillingMixin:
    """The Billing resources of `StripeStandin` (see the module docstring)."""

    # provided by StripeStandin
    fixtures: dict[str, dict[str, Any]]
    customers: dict[str, dict[str, Any]]
    products: dict[str, dict[str, Any]]
    prices: dict[str, dict[str, Any]]
    subscriptions: dict[str, dict[str, Any]]
    invoices: dict[str, dict[str, Any]]

    def _fixture(self, name: str, **values: Any) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def _event(
        self, type_: str, obj: dict[str, Any], idempotency_key: str | None
    ) -> None:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def _missing(kind: str, object_id: str) -> Exception:
        from standins.stripe.server import StripeError

        return StripeError(
            404, "invalid_request_error", f"No such {kind}: '{object_id}'",
            code="resource_missing", param="id",
        )  # fmt: skip

    @staticmethod
    def _invalid(message: str, param: str | None = None) -> Exception:
        from standins.stripe.server import StripeError

        return StripeError(400, "invalid_request_error", message, param=param)

    @staticmethod
    def _new_id(prefix: str) -> str:
        from standins.stripe.server import new_id

        return new_id(prefix)

    # ---------------------------------------------------------------- customers

    def create_customer(self, params: dict[str, Any], key: str | None) -> dict[str, Any]:
        """`POST /v1/customers`."""
        customer = self._fixture(
            "customer", id=self._new_id("cus"), created=int(time.time()),
            email=params.get("email"), discount=None,
            metadata=dict(params.get("metadata") or {}), currency=None,
        )  # fmt: skip
        customer["name"] = params.get("name")  # `name` is `_fixture`'s own parameter
        self.customers[customer["id"]] = customer
        self._event("customer.created", customer, key)
        return customer

    def get_customer(self, params: dict[str, Any], key: str | None, cid: str) -> dict[str, Any]:
        """`GET /v1/customers/{id}`."""
        if cid not in self.customers:
            raise self._missing("customer", cid)
        return self.customers[cid]

    # ---------------------------------------------------------------- products, prices

    def create_product(self, params: dict[str, Any], key: str | None) -> dict[str, Any]:
        """`POST /v1/products`."""
        if not params.get("name"):
            raise self._invalid("Missing required param: name.", "name")
        product = self._fixture(
            "product", id=self._new_id("prod"), created=int(time.time()),
            updated=int(time.time()), description=None,
            default_price=None, package_dimensions=None, type="service",
            metadata=dict(params.get("metadata") or {}),
        )  # fmt: skip
        product["name"] = params["name"]
        self.products[product["id"]] = product
        return product

    def create_price(self, params: dict[str, Any], key: str | None) -> dict[str, Any]:
        """`POST /v1/prices`: product, unit_amount, currency, recurring[interval]."""
        product = str(params.get("product", ""))
        if product not in self.products:
            raise self._missing("product", product)
        try:
            amount = int(params.get("unit_amount", ""))
        except ValueError:
            raise self._invalid("Invalid integer: unit_amount", "unit_amount") from None
        if amount < 1:
            raise self._invalid("unit_amount must be positive.", "unit_amount")
        recurring = params.get("recurring")
        price = self._fixture(
            "price", id=self._new_id("price"), created=int(time.time()), product=product,
            currency=str(params.get("currency", "")).lower(), unit_amount=amount,
            unit_amount_decimal=str(amount), transform_quantity=None, custom_unit_amount=None,
            metadata=dict(params.get("metadata") or {}),
            type="recurring" if recurring else "one_time",
            recurring=(
                {"interval": recurring.get("interval", "month"), "interval_count": 1,
                 "meter": None, "usage_type": "licensed", "trial_period_days": None}
                if isinstance(recurring, dict) else None
            ),
        )  # fmt: skip
        self.prices[price["id"]] = price
        return price

    def get_price(self, params: dict[str, Any], key: str | None, pid: str) -> dict[str, Any]:
        """`GET /v1/prices/{id}`."""
        if pid not in self.prices:
            raise self._missing("price", pid)
        return self.prices[pid]

    # ---------------------------------------------------------------- subscriptions

    def _subscription(self, sid: str) -> dict[str, Any]:
        if sid not in self.subscriptions:
            raise self._missing("subscription", sid)
        return self.subscriptions[sid]

    def _invoice(self, iid: str) -> dict[str, Any]:
        if iid not in self.invoices:
            raise self._missing("invoice", iid)
        return self.invoices[iid]

    @staticmethod
    def _period(sub: dict[str, Any]) -> tuple[int, int]:
        item = sub["items"]["data"][0]
        return int(item["current_period_start"]), int(item["current_period_end"])

    def create_subscription(self, params: dict[str, Any], key: str | None) -> dict[str, Any]:
        """`POST /v1/subscriptions`: the first invoice is charged at once."""
        customer = str(params.get("customer", ""))
        if customer not in self.customers:
            raise self._missing("customer", customer)
        items = params.get("items")
        if not isinstance(items, list) or not items or "price" not in items[0]:
            raise self._invalid("Missing required param: items.", "items")
        price = self.prices.get(str(items[0]["price"]))
        if price is None or not price.get("recurring"):
            raise self._invalid("A subscription needs a recurring price.", "items")
        now = int(time.time())
        sid = self._new_id("sub")
        item = copy.deepcopy(self.fixtures["subscription"]["items"]["data"][0])
        item.update(
            id=self._new_id("si"), created=now, price=copy.deepcopy(price), quantity=1,
            subscription=sid, current_period_start=now, current_period_end=add_month(now),
            metadata={},
        )  # fmt: skip
        sub = self._fixture(
            "subscription", id=sid, created=now, start_date=now, billing_cycle_anchor=now,
            customer=customer, currency=price["currency"], status="incomplete",
            cancel_at=None, canceled_at=None, ended_at=None, cancel_at_period_end=False,
            trial_end=None, trial_start=None, pending_update=None, transfer_data=None,
            next_pending_invoice_item_invoice=None, pending_invoice_item_interval=None,
            default_payment_method=params.get("default_payment_method") or "pm_card_visa",
            metadata=dict(params.get("metadata") or {}), latest_invoice=None,
            items={"object": "list", "data": [item], "has_more": False,
                   "url": f"/v1/subscription_items?subscription={sid}"},
        )  # fmt: skip
        self.subscriptions[sid] = sub
        self._event("customer.subscription.created", sub, key)
        self._bill(sub, "subscription_create", key)
        return sub

    def _bill(
        self, sub: dict[str, Any], reason: str, key: str | None, *, fail: bool = False
    ) -> None:
        """Make the invoice of the subscription's current period and charge it."""
        price = sub["items"]["data"][0]["price"]
        start, end = self._period(sub)
        iid = self._new_id("in")
        line = copy.deepcopy(self.fixtures["invoice"]["lines"]["data"][0])
        line.update(
            id=self._new_id("il"), invoice=iid, amount=price["unit_amount"],
            currency=price["currency"], period={"start": start, "end": end}, quantity=1,
            subscription=sub["id"], description=f"1 x {price['product']}", subtotal=price["unit_amount"],
            parent={"type": "subscription_item_details", "invoice_item_details": None,
                    "subscription_item_details": {"invoice_item": None, "proration": False,
                                                  "proration_details": None,
                                                  "subscription": sub["id"],
                                                  "subscription_item": sub["items"]["data"][0]["id"]}},
        )  # fmt: skip
        invoice = self._fixture(
            "invoice", id=iid, created=int(time.time()), customer=sub["customer"],
            currency=price["currency"], amount_due=price["unit_amount"], amount_paid=0,
            amount_remaining=price["unit_amount"], subtotal=price["unit_amount"],
            total=price["unit_amount"], billing_reason=reason, status="open",
            attempt_count=0, attempted=False, period_start=start, period_end=end,
            from_invoice=None, last_finalization_error=None, due_date=None,
            lines={"object": "list", "data": [line], "has_more": False,
                   "url": f"/v1/invoices/{iid}/lines"},
            parent={"type": "subscription_details", "quote_details": None,
                    "subscription_details": {"metadata": dict(sub["metadata"]),
                                             "subscription": sub["id"]}},
            status_transitions={"finalized_at": int(time.time()), "marked_uncollectible_at": None,
                                "paid_at": None, "voided_at": None},
        )  # fmt: skip
        self.invoices[iid] = invoice
        sub["latest_invoice"] = iid
        self._charge(invoice, key, fail=fail or sub["default_payment_method"] in DECLINING_METHODS)

    def _charge(self, invoice: dict[str, Any], key: str | None, *, fail: bool) -> None:
        sub = self.subscriptions[invoice["parent"]["subscription_details"]["subscription"]]
        invoice["attempt_count"] += 1
        invoice["attempted"] = True
        if fail:
            was = sub["status"]
            sub["status"] = "incomplete" if was == "incomplete" else "past_due"
            self._event("invoice.payment_failed", invoice, key)
            if sub["status"] != was:
                self._event("customer.subscription.updated", sub, key)
            return
        invoice.update(status="paid", amount_paid=invoice["amount_due"], amount_remaining=0)
        invoice["status_transitions"]["paid_at"] = int(time.time())
        was = sub["status"]
        sub["status"] = "active"
        self._event("invoice.paid", invoice, key)
        if was != "active":
            self._event("customer.subscription.updated", sub, key)

    def get_subscription(self, params: dict[str, Any], key: str | None, sid: str) -> dict[str, Any]:
        """`GET /v1/subscriptions/{id}`."""
        return self._subscription(sid)

    def update_subscription(
        self, params: dict[str, Any], key: str | None, sid: str
    ) -> dict[str, Any]:
        """`POST /v1/subscriptions/{id}`: `cancel_at_period_end`, `metadata`."""
        sub = self._subscription(sid)
        if sub["status"] == "canceled":
            raise self._invalid("A canceled subscription can only update its metadata.")
        if "cancel_at_period_end" in params:
            flag = str(params["cancel_at_period_end"]).lower() == "true"
            sub["cancel_at_period_end"] = flag
            sub["cancel_at"] = self._period(sub)[1] if flag else None
        if isinstance(params.get("metadata"), dict):
            sub["metadata"].update(params["metadata"])
        self._event("customer.subscription.updated", sub, key)
        return sub

    def delete_subscription(
        self, params: dict[str, Any], key: str | None, sid: str
    ) -> dict[str, Any]:
        """`DELETE /v1/subscriptions/{id}`: ends it now."""
        sub = self._subscription(sid)
        if sub["status"] != "canceled":
            self._end(sub, key)
        return sub

    def _end(self, sub: dict[str, Any], key: str | None) -> None:
        now = int(time.time())
        sub.update(status="canceled", canceled_at=sub.get("canceled_at") or now, ended_at=now)
        self._event("customer.subscription.deleted", sub, key)

    # ---------------------------------------------------------------- invoices

    def get_invoice(self, params: dict[str, Any], key: str | None, iid: str) -> dict[str, Any]:
        """`GET /v1/invoices/{id}`."""
        return self._invoice(iid)

    def list_invoices(self, params: dict[str, Any], key: str | None) -> dict[str, Any]:
        """`GET /v1/invoices?subscription=` (newest first, `limit` ≤ 100)."""
        limit = max(1, min(100, int(params.get("limit") or 10)))
        sid = params.get("subscription")
        items = [
            i for i in self.invoices.values()
            if sid is None or i["parent"]["subscription_details"]["subscription"] == sid
        ]  # fmt: skip
        items.sort(key=lambda i: (i["created"], i["period_start"]), reverse=True)
        return {"object": "list", "data": items[:limit], "has_more": len(items) > limit,
                "url": "/v1/invoices"}  # fmt: skip

    # ---------------------------------------------------------------- test clocks

    def advance_subscription(self, sid: str, *, fail: bool) -> dict[str, Any]:
        """Move the subscription to its next period (see the module docstring)."""
        sub = self._subscription(sid)
        if sub["status"] == "canceled":
            raise self._invalid("This subscription has ended.")
        if sub["cancel_at_period_end"]:
            self._end(sub, None)
            return sub
        _, end = self._period(sub)
        item = sub["items"]["data"][0]
        item["current_period_start"], item["current_period_end"] = end, add_month(end)
        self._bill(sub, "subscription_cycle", None, fail=fail)
        return sub

    def settle_invoice(self, iid: str, *, paid: bool) -> dict[str, Any]:
        """Pay an open invoice, or decline it once more."""
        invoice = self._invoice(iid)
        if invoice["status"] != "open":
            raise self._invalid(f"This invoice is {invoice['status']}.")
        self._charge(invoice, None, fail=not paid)
        return invoice
