"""The payment provider port: what the payments domain needs from a payment gateway.

The shape fits a card gateway with client-side confirmation (Stripe: the browser confirms
the PaymentIntent with its `client_secret`) and an asynchronous Mobile Money aggregator
(the customer approves a push on the phone; the result arrives only by webhook). Hence:

- creating an intent returns what the client needs to act (`client_secret` and/or
  `next_action`), never a final result;
- the truth is re-read with `get_intent` / `list_refunds` whenever a webhook says something
  changed (webhooks are at-least-once and unordered), so a webhook's body is never trusted
  beyond its id, type and the object it names;
- every creating call carries our idempotency key, derived from our own ids.

Amounts are integer minor units of ISO 4217 `currency` (upper case) on this side of the
port; adapters convert to their gateway's units. Adapters raise `ProviderError` (or
`ProviderUnavailable` for transport failures and 5xx, which callers retry).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

IntentStatus = Literal["requires_payment", "processing", "succeeded", "failed", "canceled"]
RefundStatus = Literal["pending", "succeeded", "failed", "canceled"]


class ProviderError(Exception):
    """The gateway refused a request (`code` is the gateway's, e.g. `amount_too_large`)."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class ProviderUnavailable(ProviderError):
    """The gateway could not be reached or failed (network error, 5xx, 429): retry later."""


class IdempotencyConflict(ProviderError):
    """Our idempotency key was used before with other parameters (a bug or a changed price)."""


class InvalidWebhook(Exception):
    """A webhook whose signature is missing, wrong or stale, or whose body is not an event."""


@dataclass(frozen=True, slots=True)
class IntentRequest:
    """Ask for a payment of `amount_minor` `currency` (ISO 4217, upper case).

    `idempotency_key` (≤ 255 chars) makes retries return the first intent; `metadata` is
    stored with the intent at the gateway (string values) and comes back in webhooks.
    """

    idempotency_key: str
    amount_minor: int
    currency: str
    metadata: Mapping[str, str]
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Intent:
    """A payment as the gateway sees it now.

    `status` is normalized: `requires_payment` (waiting for the customer), `processing`,
    `succeeded` (captured: `amount_received_minor`), `failed` (the last attempt was declined;
    the customer may retry on the same intent), `canceled` (final). `client_secret` (Stripe)
    or `next_action` (e.g. Mobile Money instructions) is what the client needs to pay.
    """

    ref: str
    status: IntentStatus
    amount_minor: int
    amount_received_minor: int
    currency: str
    created: datetime
    metadata: Mapping[str, str] = field(default_factory=dict)
    client_secret: str | None = None
    next_action: Mapping[str, Any] | None = None
    failure_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True, slots=True)
class Refund:
    """A refund as the gateway sees it: `amount_minor` of the intent `payment_ref`."""

    ref: str
    payment_ref: str
    status: RefundStatus
    amount_minor: int
    currency: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    failure_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Transfer:
    """Money sent to a provider's connected account (`destination`)."""

    ref: str
    amount_minor: int
    currency: str
    destination: str


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A verified webhook: its gateway id (`event_id`, the dedupe key), `type`, the kind and
    id of the object it is about (`payment`: an intent ref; `refund`: the intent ref the
    refund belongs to; `transfer`; `invoice` and `subscription`: Stripe Billing objects,
    handled by the credits domain; `other`), and the parsed body (kept for audit)."""

    event_id: str
    type: str
    object_kind: Literal["payment", "refund", "transfer", "invoice", "subscription", "other"]
    object_ref: str | None
    payload: Mapping[str, Any]


class PaymentProvider(Protocol):
    """A payment gateway (Stripe now; a Mobile Money aggregator later)."""

    name: str
    """Stable gateway name stored with payments and webhook events (`stripe`)."""

    def representable(self, amount_minor: int, currency: str) -> int:
        """The largest amount ≤ `amount_minor` the gateway can move in `currency`."""
        ...

    async def create_intent(self, request: IntentRequest) -> Intent:
        """Create (or, for a used idempotency key, return) the intent. Raises
        `ProviderError`, `IdempotencyConflict`, `ProviderUnavailable`."""
        ...

    async def get_intent(self, ref: str) -> Intent:
        """Re-read an intent from the gateway (the source of truth)."""
        ...

    async def cancel_intent(self, ref: str, *, idempotency_key: str) -> Intent:
        """Cancel an unpaid intent (no effect on the money if it already succeeded: the
        returned intent says so)."""
        ...

    async def list_intents(self, *, created_since: datetime, limit: int = 10_000) -> list[Intent]:
        """Intents created at or after `created_since`, newest first (reconciliation)."""
        ...

    async def create_refund(
        self,
        *,
        payment_ref: str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> Refund:
        """Refund part or all of a succeeded intent. Raises `ProviderError` (e.g. more
        than what is left to refund)."""
        ...

    async def list_refunds(self, payment_ref: str) -> list[Refund]:
        """Every refund of the intent `payment_ref`."""
        ...

    async def create_transfer(
        self,
        *,
        destination: str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> Transfer:
        """Send `amount_minor` to a connected account (payouts)."""
        ...

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """Verify a webhook on its raw body and headers (lower-case names) and parse it.
        Raises `InvalidWebhook`."""
        ...
