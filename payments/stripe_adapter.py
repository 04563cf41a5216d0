"""The Stripe adapter of the `PaymentProvider` port, on the official `stripe` SDK.

One `stripe.StripeClient` per process (its async methods, on the SDK's httpx client) and, for
the hot paths — creating an intent and re-reading one — one per event loop on the SDK's
aiohttp client, through `raw_request_async` (the SDK's auth, retries, idempotency keys and
error types; the JSON answer read as a dict, without building `StripeObject`s), all with
`base_addresses={"api": STRIPE_API_BASE}` when set, which is how the local stand-in
(`standins/stripe`) is reached when no `STRIPE_SECRET_KEY` is configured. Webhooks are
verified with `stripe.WebhookSignature.verify_header` (HMAC-SHA256 of `"{t}.{raw body}"`, any
of several `v1` signatures, `STRIPE_WEBHOOK_TOLERANCE_S`, default 300 s) and parsed once.

Units: Stripe amounts are in "the currency's smallest unit" as Stripe defines it, which is
ISO 4217's minor unit except for a few currencies (Stripe docs, "Supported currencies":
zero-decimal list incl. MGA; ISK as two-decimal with amounts divisible by 100; three-decimal
BHD JOD KWD OMR TND with amounts divisible by 10). `to_stripe_amount` /
`from_stripe_amount` convert, and refuse an amount Stripe cannot represent exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote

import orjson
import stripe

from core.money import MINOR_UNIT_EXPONENT
from core.settings import Settings, get_settings
from payments.provider import (
    IdempotencyConflict,
    Intent,
    IntentRequest,
    IntentStatus,
    InvalidWebhook,
    ProviderError,
    ProviderUnavailable,
    Refund,
    RefundStatus,
    Transfer,
    WebhookEvent,
)

# Stripe's decimals where they differ from ISO 4217 (source: Stripe docs, currencies).
STRIPE_EXPONENT: dict[str, int] = {"MGA": 0, "ISK": 2}
# Stripe's granularity in its own units: the amount must be a multiple of this.
STRIPE_STEP: dict[str, int] = {"ISK": 100, "BHD": 10, "JOD": 10, "KWD": 10, "OMR": 10, "TND": 10}


class UnrepresentableAmount(ValueError):
    """An amount Stripe cannot take in this currency (e.g. 12345 TND millimes)."""


def _pow10(n: int) -> int:
    return int(10**n)


def _exponents(currency: str) -> tuple[int, int]:
    iso = MINOR_UNIT_EXPONENT[currency]
    return iso, STRIPE_EXPONENT.get(currency, iso)


def to_stripe_amount(amount_minor: int, currency: str) -> int:
    """ISO minor units → Stripe's unit. Raises `UnrepresentableAmount` when the amount is not
    a multiple of what Stripe accepts (3-decimal currencies: multiples of 10 millimes…)."""
    iso, st = _exponents(currency)
    if st >= iso:
        value = amount_minor * _pow10(st - iso)
    else:
        div = _pow10(iso - st)
        if amount_minor % div:
            raise UnrepresentableAmount(f"{amount_minor} {currency} minor units")
        value = amount_minor // div
    if value % STRIPE_STEP.get(currency, 1):
        raise UnrepresentableAmount(f"{amount_minor} {currency} minor units")
    return value


def from_stripe_amount(amount: int, currency: str) -> int:
    """Stripe's unit → ISO minor units (exact for every amount Stripe sends)."""
    iso, st = _exponents(currency)
    return amount * _pow10(iso - st) if iso >= st else amount // _pow10(st - iso)


def stripe_round_down(amount_minor: int, currency: str) -> int:
    """The largest amount ≤ `amount_minor` (ISO minor units) that Stripe can represent."""
    iso, st = _exponents(currency)
    step = STRIPE_STEP.get(currency, 1) * (_pow10(iso - st) if iso > st else 1)
    if st > iso:
        step = max(1, STRIPE_STEP.get(currency, 1) // _pow10(st - iso))
    return amount_minor - amount_minor % step


def _plain(obj: Any) -> Mapping[str, Any]:
    """A plain dict of an SDK object (StripeObject is not a Mapping since v13)."""
    to_dict = getattr(obj, "to_dict", None)
    return cast(Mapping[str, Any], to_dict() if callable(to_dict) else obj)


_INTENT_STATUS: dict[str, IntentStatus] = {
    "requires_payment_method": "requires_payment",
    "requires_confirmation": "requires_payment",
    "requires_action": "requires_payment",
    "processing": "processing",
    "requires_capture": "processing",
    "succeeded": "succeeded",
    "canceled": "canceled",
}


def intent_from_stripe(pi: Any) -> Intent:
    """Our `Intent` from a Stripe PaymentIntent (an SDK object or its dict).

    A `requires_payment_method` intent with a `last_payment_error` is `failed` (an attempt
    was declined; the customer may retry on the same intent)."""
    pi = _plain(pi)
    currency = str(pi["currency"]).upper()
    status = _INTENT_STATUS.get(str(pi["status"]), "requires_payment")
    error = pi.get("last_payment_error")
    if status == "requires_payment" and error:
        status = "failed"
    return Intent(
        ref=str(pi["id"]),
        status=status,
        amount_minor=from_stripe_amount(int(pi["amount"]), currency),
        amount_received_minor=from_stripe_amount(int(pi.get("amount_received") or 0), currency),
        currency=currency,
        created=datetime.fromtimestamp(int(pi["created"]), UTC),
        metadata={str(k): str(v) for k, v in (pi.get("metadata") or {}).items()},
        client_secret=pi.get("client_secret"),
        next_action=None,
        failure_code=(error.get("decline_code") or error.get("code")) if error else None,
        failure_message=error.get("message") if error else None,
    )


_REFUND_STATUS: dict[str, RefundStatus] = {
    "pending": "pending",
    "requires_action": "pending",
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "canceled",
}


def refund_from_stripe(re: Any) -> Refund:
    """Our `Refund` from a Stripe Refund."""
    re = _plain(re)
    currency = str(re["currency"]).upper()
    return Refund(
        ref=str(re["id"]),
        payment_ref=str(re.get("payment_intent") or ""),
        status=_REFUND_STATUS.get(str(re["status"]), "pending"),
        amount_minor=from_stripe_amount(int(re["amount"]), currency),
        currency=currency,
        metadata={str(k): str(v) for k, v in (re.get("metadata") or {}).items()},
        failure_reason=re.get("failure_reason"),
    )


def _translate(exc: stripe.StripeError) -> ProviderError:
    status = exc.http_status
    message = exc.user_message or str(exc)
    if isinstance(exc, stripe.IdempotencyError):
        return IdempotencyConflict(message, code="idempotency_error", status=status)
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError) or (
        status is not None and status >= 500
    ):
        return ProviderUnavailable(message, code=exc.code, status=status)
    return ProviderError(message, code=exc.code, status=status)


class StripeProvider:
    """`PaymentProvider` on Stripe (see the module docstring)."""

    name = "stripe"

    def __init__(self, settings: Settings) -> None:
        self._key = settings.stripe_secret_key or settings.stripe_standin_api_key
        base = settings.stripe_api_base or (
            settings.stripe_standin_url if settings.stripe_uses_standin else None
        )
        self._base: Any = cast(Any, {"api": base} if base else None)
        self._retries = settings.stripe_max_network_retries
        self._timeout_s = settings.stripe_timeout_s
        http = stripe.HTTPXClient(timeout=settings.stripe_timeout_s)
        self.client = stripe.StripeClient(
            self._key, base_addresses=self._base, max_network_retries=self._retries,
            http_client=http,
        )  # fmt: skip
        self._hot: dict[int, tuple[asyncio.AbstractEventLoop, stripe.StripeClient, Any]] = {}
        self.webhook_secret = settings.stripe_webhook_secret
        self.tolerance_s = settings.stripe_webhook_tolerance_s

    def _hot_client(self) -> stripe.StripeClient:
        """The SDK client of the hot paths (an intent's creation and re-read) for the
        running event loop: on the SDK's `AIOHTTPClient`, whose pooled keep-alive
        connections belong to the loop that opened them, so one client per loop (a uvicorn
        or Celery process has one for its life). Measured here it costs about half the CPU
        of the httpx client per call."""
        loop = asyncio.get_running_loop()
        hot = self._hot.get(id(loop))
        if hot is None or hot[0] is not loop:
            self._hot = {k: v for k, v in self._hot.items() if not v[0].is_closed()}
            import aiohttp

            http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=self._timeout_s))
            client = stripe.StripeClient(
                self._key, base_addresses=self._base, max_network_retries=self._retries,
                http_client=http,
            )  # fmt: skip
            hot = self._hot[id(loop)] = (loop, client, http)
        return hot[1]

    async def aclose(self) -> None:
        """Close the running event loop's hot client: its aiohttp session and pooled
        connections (a later call opens a new one). Call it before the loop closes (an
        app's shutdown, a worker process's exit): a session left open is reported as
        "Unclosed client session" when collected."""
        hot = self._hot.pop(id(asyncio.get_running_loop()), None)
        if hot is not None:
            await hot[2].close_async()

    def representable(self, amount_minor: int, currency: str) -> int:
        """`stripe_round_down`: three-decimal currencies move whole 10s of millimes."""
        return stripe_round_down(amount_minor, currency)

    async def create_intent(self, request: IntentRequest) -> Intent:
        """`POST /v1/payment_intents` with our idempotency key; card and wallets through
        automatic payment methods; `metadata` as given."""
        params: dict[str, Any] = {
            "amount": to_stripe_amount(request.amount_minor, request.currency),
            "currency": request.currency.lower(),
            "metadata": dict(request.metadata),
            "automatic_payment_methods": {"enabled": True},
        }
        if request.description:
            params["description"] = request.description
        try:
            answer = await self._hot_client().raw_request_async(
                "post", "/v1/payment_intents", idempotency_key=request.idempotency_key, **params
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return intent_from_stripe(answer.data)

    async def get_intent(self, ref: str) -> Intent:
        """`GET /v1/payment_intents/{ref}`."""
        try:
            answer = await self._hot_client().raw_request_async(
                "get", f"/v1/payment_intents/{quote(ref, safe='')}"
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return intent_from_stripe(answer.data)

    async def cancel_intent(self, ref: str, *, idempotency_key: str) -> Intent:
        """`POST /v1/payment_intents/{ref}/cancel`; an intent already succeeded or canceled
        is re-read and returned as it is."""
        try:
            pi = await self.client.v1.payment_intents.cancel_async(
                ref, None, {"idempotency_key": idempotency_key}
            )
        except stripe.InvalidRequestError as exc:
            if exc.code == "payment_intent_unexpected_state":
                return await self.get_intent(ref)
            raise _translate(exc) from exc
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return intent_from_stripe(pi)

    async def list_intents(self, *, created_since: datetime, limit: int = 10_000) -> list[Intent]:
        """`GET /v1/payment_intents?created[gte]=…`, following `starting_after` pages of
        100, at most `limit` intents, newest first."""
        out: list[Intent] = []
        params: dict[str, Any] = {"limit": 100, "created": {"gte": int(created_since.timestamp())}}
        try:
            while len(out) < limit:
                page = await self.client.v1.payment_intents.list_async(cast(Any, params))
                out.extend(intent_from_stripe(pi) for pi in page.data)
                if not page.has_more or not page.data:
                    break
                params["starting_after"] = page.data[-1].id
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return out[:limit]

    async def create_refund(
        self,
        *,
        payment_ref: str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> Refund:
        """`POST /v1/refunds` for the intent, with our idempotency key."""
        params = {
            "payment_intent": payment_ref,
            "amount": to_stripe_amount(amount_minor, currency),
            "metadata": dict(metadata),
        }
        try:
            re = await self.client.v1.refunds.create_async(
                cast(Any, params), {"idempotency_key": idempotency_key}
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return refund_from_stripe(re)

    async def list_refunds(self, payment_ref: str) -> list[Refund]:
        """`GET /v1/refunds?payment_intent=…` (100 at most: a booking has a few)."""
        try:
            page = await self.client.v1.refunds.list_async(
                {"payment_intent": payment_ref, "limit": 100}
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return [refund_from_stripe(r) for r in page.data]

    async def create_transfer(
        self,
        *,
        destination: str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> Transfer:
        """`POST /v1/transfers` to a connected account, with our idempotency key."""
        params = {
            "amount": to_stripe_amount(amount_minor, currency),
            "currency": currency.lower(),
            "destination": destination,
            "metadata": dict(metadata),
        }
        try:
            tr = await self.client.v1.transfers.create_async(
                cast(Any, params), {"idempotency_key": idempotency_key}
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return Transfer(
            ref=str(tr.id),
            amount_minor=from_stripe_amount(int(tr.amount), currency),
            currency=currency,
            destination=destination,
        )

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """`stripe.WebhookSignature.verify_header` on the raw body, then one JSON parse of
        it: raises `InvalidWebhook` for a missing, malformed, wrong (none of the `v1`
        signatures matches) or stale (older than the tolerance) signature, or a body that
        is not a JSON event. The SDK's `Webhook.construct_event` would also build an `Event`
        object (an OrderedDict parse and a tree of `StripeObject`s) that nothing here reads:
        the stored payload is the verified raw body, parsed once."""
        try:
            stripe.WebhookSignature.verify_header(
                body, headers.get("stripe-signature"), self.webhook_secret, self.tolerance_s
            )
            payload = orjson.loads(body)
        except (stripe.SignatureVerificationError, ValueError, UnicodeDecodeError) as exc:
            raise InvalidWebhook(str(exc)) from exc
        if (
            not isinstance(payload, dict)
            or payload.get("object") != "event"
            or not (payload.get("id") and payload.get("type"))
        ):
            raise InvalidWebhook("the body is not a Stripe event")
        obj = payload.get("data", {}).get("object", {}) or {}
        kind: Any = "other"
        ref: str | None = None
        obj_type = obj.get("object")
        if obj_type == "payment_intent":
            kind, ref = "payment", obj.get("id")
        elif obj_type in ("refund", "charge"):
            kind, ref = "refund", obj.get("payment_intent")
        elif obj_type == "transfer":
            kind, ref = "transfer", obj.get("id")
        elif obj_type in ("invoice", "subscription"):
            kind, ref = obj_type, obj.get("id")
        return WebhookEvent(
            event_id=str(payload["id"]),
            type=str(payload["type"]),
            object_kind=kind,
            object_ref=str(ref) if ref else None,
            payload=payload,
        )


_providers: dict[tuple[str | None, str | None, str, str], StripeProvider] = {}


def get_provider() -> StripeProvider:
    """The process's Stripe provider (one SDK client; rebuilt when the settings change)."""
    s = get_settings()
    key = (s.stripe_secret_key, s.stripe_api_base, s.stripe_standin_url, s.stripe_webhook_secret)
    provider = _providers.get(key)
    if provider is None:
        provider = _providers[key] = StripeProvider(s)
    return provider


async def close_clients() -> None:
    """Close the hot SDK clients of the running event loop, of every provider built in
    this process (`StripeProvider.aclose`)."""
    for provider in list(_providers.values()):
        await provider.aclose()
