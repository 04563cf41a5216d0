"""A local HTTP stand-in of the Stripe API (the subset EduConnect uses), for tests and `make run`.

The official `stripe` SDK points at it with `base_addresses={"api": "http://127.0.0.1:PORT"}`.
Every object it returns starts as a deep copy of Stripe's own sample from `fixtures.json`
(vendored from stripe/openapi's `fixtures3.json`, see FIXTURES.md), with ids, amounts,
states and metadata overwritten, so the SDK parses the shapes the real API sends.

Endpoints (form-encoded like the real API, `Authorization: Bearer <secret key>`):

- `POST /v1/payment_intents`, `GET /v1/payment_intents[?limit&starting_after&created[gte]]`,
  `GET /v1/payment_intents/{id}`, `POST /v1/payment_intents/{id}/confirm`
  (`payment_method=pm_card_visa` succeeds; `pm_card_chargeDeclined`,
  `pm_card_chargeDeclinedInsufficientFunds`, `pm_card_chargeDeclinedExpiredCard` fail with a
  402 `card_error`), `POST /v1/payment_intents/{id}/cancel`;
- `POST /v1/refunds` (`payment_intent`, `amount`), `GET /v1/refunds/{id}`,
  `GET /v1/refunds?payment_intent=`; `POST /v1/transfers` (`destination=acct_…`).

Like Stripe: `Idempotency-Key` replays the first response for the same key and parameters and
answers 400 `idempotency_error` for the same key with other parameters; three-decimal
currencies need amounts ending in 0; a refund above the unrefunded amount is a 400.

Client side, as Stripe.js calls it (CORS open, the publishable key and the PaymentIntent's
`client_secret` as form fields instead of a secret key): `GET /v1/payment_intents/{id}` and
`POST /v1/payment_intents/{id}/confirm`. `GET /v3/` serves `stripe_js.js`, a stand-in of
Stripe.js v3 (the Payment Element subset the pages use) that calls those two routes, so a
browser test routes `https://js.stripe.com/v3/` and `https://api.stripe.com` here.

Webhooks: every state change makes an `event` that is POSTed (when a URL is configured) with
`Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}" with the whsec secret>`,
retried a few times with backoff; four delivery threads, so deliveries overlap and arrive in
any order, as Stripe's do. Test helpers (no auth), like `stripe trigger`:

- `POST /_standin/payment_intents/{id}/succeed` and `/fail` (`decline_code`);
- `POST /_standin/refunds/{id}/succeed` and `/fail` (refunds start `pending` when the
  config says `refund_status=pending`);
- Billing (Customers, Products, Prices, Subscriptions, Invoices) and its test clocks:
  `standins/stripe/billing.py`;
- `POST /_standin/config` (`webhook_url`, `deliver=true|false`, `refund_status`,
  `outage=true|false`: every API call answers Stripe's 500 `api_error` meanwhile;
  `latency_ms`: added to every `/v1/` answer, outside the lock, as Stripe's network and
  server time are; default 0);
- `GET /_standin/events`, `POST /_standin/events/{id}/deliver` (deliver again: duplicates);
- `GET /_standin/stats` (requests served and server-side time percentiles, ms) and
  `POST /_standin/stats/reset` (start counting again);
- `POST /_standin/reset` (forget everything: a fresh account);
- `GET /_standin/health`.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import queue
import re
import secrets
import string
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from standins.stripe.billing import BillingMixin

API_VERSION = "2025-09-30.clover"
FIXTURES_PATH = Path(__file__).with_name("fixtures.json")
STRIPE_JS_PATH = Path(__file__).with_name("stripe_js.js")
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
DECLINES: dict[str, tuple[str, str, str]] = {
    # payment method → (code, decline_code, message), as Stripe's test cards
    "pm_card_chargeDeclined": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "pm_card_chargeDeclinedExpiredCard": (
        "expired_card",
        "expired_card",
        "Your card has expired.",
    ),
}
_ALPHABET = string.ascii_letters + string.digits
DELIVERY_THREADS = 4


def load_fixtures(path: Path = FIXTURES_PATH) -> dict[str, dict[str, Any]]:
    """The vendored Stripe sample objects by resource name (`payment_intent`, `refund`, …)."""
    resources: dict[str, dict[str, Any]] = json.loads(path.read_text())["resources"]
    return resources


def new_id(prefix: str) -> str:
    """A Stripe-looking id: `prefix` + '_' + 24 random base62 characters."""
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def sign(payload: str, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` header of `payload`: `t=<timestamp>,v1=<HMAC-SHA256 hex of
    "{timestamp}.{payload}" keyed with the whole `whsec_…` secret>` (Stripe's scheme)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def parse_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding back to nested values: `metadata[k]=v` → {"metadata": {"k":
    "v"}}, `a[0]=x` → {"a": ["x"]}."""
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        parts = re.findall(r"[^\[\]]+", raw_key)
        if not parts:
            continue
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def lists(v: Any) -> Any:
        if isinstance(v, dict):
            if v and all(k.isdigit() for k in v):
                return [lists(v[k]) for k in sorted(v, key=int)]
            return {k: lists(x) for k, x in v.items()}
        return v

    converted: dict[str, Any] = lists(root)
    return converted


class StripeError(Exception):
    """An error answered like Stripe: `{"error": {type, code, message, param, …}}`."""

    def __init__(self, status: int, type_: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": type_, "message": message, **extra}}


@dataclass
class Response:
    """An answer of the stand-in: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _int(params: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    raw = params.get(name)
    if raw is None:
        if required:
            raise StripeError(
                400, "invalid_request_error", f"Missing required param: {name}.", param=name
            )
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise StripeError(
            400, "invalid_request_error", f"Invalid integer: {raw}", param=name
        ) from None
    return value


class StripeStandin(BillingMixin):
    """In-memory Stripe state, request dispatch, idempotency and webhook delivery.

    Thread-safe: every request runs under one lock (the stand-in is small; the lock also
    makes concurrent duplicates of one idempotency key resolve to the first response).
    """

    def __init__(
        self,
        *,
        api_key: str = "sk_test_standin",
        publishable_key: str = "pk_test_standin",
        webhook_secret: str = "whsec_standin",  # noqa: S107 - a local stand-in's secret
        webhook_url: str | None = None,
        deliver: bool = True,
        refund_status: str = "succeeded",
    ) -> None:
        self.api_key = api_key
        self.publishable_key = publishable_key
        self.webhook_secret = webhook_secret
        self.webhook_url = webhook_url
        self.deliver = deliver
        self.refund_status = refund_status
        self.outage = False  # every API call answers Stripe's 500 `api_error` while set
        self.refused: list[str] = []  # "METHOD path" of each call refused by an outage
        self.latency_ms = 0.0
        self.fixtures = load_fixtures()
        self.lock = threading.RLock()
        self.intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.transfers: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.products: dict[str, dict[str, Any]] = {}
        self.prices: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.idempotency: dict[tuple[str, str], tuple[str, Response]] = {}
        self.server_times_ms: list[float] = []
        self._outbox: queue.Queue[str | None] = queue.Queue()
        # several deliveries at once, as Stripe makes them (unordered, concurrent): one slow
        # answer does not hold back the events behind it
        self._delivery = [
            threading.Thread(target=self._deliver_loop, daemon=True)
            for _ in range(DELIVERY_THREADS)
        ]
        for thread in self._delivery:
            thread.start()

    def reset(self) -> None:
        """Forget every object, event and idempotency key (a fresh test account)."""
        with self.lock:
            for table in (
                self.intents, self.charges, self.refunds, self.transfers, self.events,
                self.customers, self.products, self.prices, self.subscriptions, self.invoices,
            ):  # fmt: skip
                table.clear()
            self.idempotency.clear()
            self.server_times_ms.clear()

    # ---------------------------------------------------------------- objects

    def _fixture(self, name: str, **values: Any) -> dict[str, Any]:
        obj = copy.deepcopy(self.fixtures[name])
        obj.update(values)
        return obj

    def _event(self, type_: str, obj: dict[str, Any], idempotency_key: str | None) -> None:
        event = self._fixture(
            "event",
            id=new_id("evt"),
            type=type_,
            created=int(time.time()),
            api_version=API_VERSION,
            livemode=False,
            pending_webhooks=1 if self.webhook_url else 0,
            data={"object": copy.deepcopy(obj)},
            request={"id": new_id("req"), "idempotency_key": idempotency_key},
        )
        self.events[event["id"]] = event
        if self.deliver and self.webhook_url:
            self._outbox.put(event["id"])

    # ---------------------------------------------------------------- webhooks

    def signed_delivery(self, event_id: str) -> tuple[bytes, dict[str, str]]:
        """The body and headers Stripe would POST for `event_id` now."""
        with self.lock:
            body = json.dumps(self.events[event_id], indent=2)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": sign(body, self.webhook_secret, int(time.time())),
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }
        return body.encode(), headers

    def deliver_now(self, event_id: str) -> int:
        """POST one event to the webhook URL; returns the HTTP status (0: unreachable)."""
        url = self.webhook_url
        if not url:
            return 0
        body, headers = self.signed_delivery(event_id)
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def _deliver_loop(self) -> None:
        while True:
            event_id = self._outbox.get()
            if event_id is None:
                return
            # Stripe retries for 3 days; the stand-in a few times within seconds.
            for delay in (0.0, 0.2, 0.5, 1.0, 2.0):
                time.sleep(delay)
                with self.lock:
                    known = event_id in self.events
                if not known:  # forgotten by a reset while queued: never kill the thread
                    break
                if 200 <= self.deliver_now(event_id) < 300:
                    break

    def close(self) -> None:
        """Stop the delivery threads (queued events are dropped)."""
        for _ in self._delivery:
            self._outbox.put(None)

    # ---------------------------------------------------------------- dispatch

    def handle(
        self, method: str, path: str, query: str, body: bytes, headers: dict[str, str]
    ) -> Response:
        """Answer one HTTP request (method, path, query string, raw body, lower-cased
        headers)."""
        t0 = time.perf_counter()
        try:
            params = parse_form(parse_qsl(query, keep_blank_values=True))
            if body:
                params.update(parse_form(parse_qsl(body.decode(), keep_blank_values=True)))
            with self.lock:
                if path.startswith("/_standin/"):
                    return self._helpers(method, path, params)
                if "authorization" not in headers and "key" in params:
                    return self._client_side(method, path, params)
                if self.outage:
                    self.refused.append(f"{method} {path}")
                    raise StripeError(
                        500, "api_error", "An unknown error occurred (stand-in outage)."
                    )
                self._authenticate(headers)
                key = headers.get("idempotency-key")
                if method == "POST" and key:
                    return self._idempotent(key, method, path, params)
                return self._route(method, path, params, None)
        except StripeError as exc:
            return Response(exc.status, exc.body)
        finally:
            if not path.startswith("/_standin/"):  # the API's time, not the test helpers'
                self.server_times_ms.append((time.perf_counter() - t0) * 1000)

    def _authenticate(self, headers: dict[str, str]) -> None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.api_key:
            raise StripeError(
                401, "invalid_request_error", "Invalid API Key provided.", code="api_key_invalid"
            )

    def _client_side(self, method: str, path: str, params: dict[str, Any]) -> Response:
        """What Stripe.js may do with a publishable key: read or confirm one PaymentIntent
        whose `client_secret` it holds. The answer carries `Access-Control-Allow-Origin: *`,
        as Stripe's API does, so a page's script can read it."""
        cors = {"Access-Control-Allow-Origin": "*"}
        try:
            if params.get("key") != self.publishable_key:
                raise StripeError(
                    401,
                    "invalid_request_error",
                    f"Invalid API Key provided: {params.get('key')}",
                    code="api_key_invalid",
                )
            parts = [p for p in path.split("/") if p]
            public = (method == "GET" and len(parts) == 3) or (
                method == "POST" and len(parts) == 4 and parts[3] == "confirm"
            )
            if not public or parts[:2] != ["v1", "payment_intents"]:
                raise StripeError(
                    403,
                    "invalid_request_error",
                    "This API call cannot be made with a publishable API key.",
                    code="secret_key_required",
                )
            intent = self._intent(parts[2])
            if params.get("client_secret") != intent["client_secret"]:
                raise StripeError(
                    400,
                    "invalid_request_error",
                    "The client_secret provided does not match the client_secret associated"
                    " with the PaymentIntent.",
                    code="payment_intent_invalid_parameter",
                    param="client_secret",
                )
            if method == "POST":
                params = {k: v for k, v in params.items() if k not in ("key", "client_secret")}
                intent = self._confirm(intent, params, None)
            return Response(200, intent, cors)
        except StripeError as exc:
            return Response(exc.status, exc.body, cors)

    def _idempotent(self, key: str, method: str, path: str, params: dict[str, Any]) -> Response:
        fingerprint = json.dumps([method, path, params], sort_keys=True)
        stored = self.idempotency.get((self.api_key, key))
        if stored is not None:
            if stored[0] != fingerprint:
                raise StripeError(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters"
                    " they were first used with. Try using a key other than"
                    f" '{key}' if you meant to execute a different request.",
                )
            first = stored[1]
            return Response(
                first.status, first.body, {**first.headers, "Idempotent-Replayed": "true"}
            )
        try:
            response = self._route(method, path, params, key)
        except StripeError as exc:
            response = Response(exc.status, exc.body)
        response.headers["Idempotency-Key"] = key
        self.idempotency[(self.api_key, key)] = (fingerprint, response)
        return response

    def _route(self, method: str, path: str, params: dict[str, Any], key: str | None) -> Response:
        parts = [p for p in path.split("/") if p]
        if len(parts) < 2 or parts[0] != "v1":
            raise StripeError(
                404, "invalid_request_error", f"Unrecognized request URL ({method}: {path})."
            )
        resource, rest = parts[1], parts[2:]
        table: dict[tuple[str, str, int], Callable[..., dict[str, Any]]] = {
            ("POST", "payment_intents", 0): self.create_intent,
            ("GET", "payment_intents", 0): self.list_intents,
            ("GET", "payment_intents", 1): self.get_intent,
            ("POST", "payment_intents", 2): self.intent_action,
            ("POST", "refunds", 0): self.create_refund,
            ("GET", "refunds", 0): self.list_refunds,
            ("GET", "refunds", 1): self.get_refund,
            ("POST", "transfers", 0): self.create_transfer,
            ("GET", "transfers", 1): self.get_transfer,
            ("POST", "customers", 0): self.create_customer,
            ("GET", "customers", 1): self.get_customer,
            ("POST", "products", 0): self.create_product,
            ("POST", "prices", 0): self.create_price,
            ("GET", "prices", 1): self.get_price,
            ("POST", "subscriptions", 0): self.create_subscription,
            ("GET", "subscriptions", 1): self.get_subscription,
            ("POST", "subscriptions", 1): self.update_subscription,
            ("DELETE", "subscriptions", 1): self.delete_subscription,
            ("GET", "invoices", 0): self.list_invoices,
            ("GET", "invoices", 1): self.get_invoice,
        }
        fn = table.get((method, resource, len(rest)))
        if fn is None:
            raise StripeError(
                404, "invalid_request_error", f"Unrecognized request URL ({method}: {path})."
            )
        return Response(200, fn(params, key, *rest))

    # ---------------------------------------------------------------- payment intents

    def _intent(self, intent_id: str) -> dict[str, Any]:
        intent = self.intents.get(intent_id)
        if intent is None:
            raise StripeError(
                404,
                "invalid_request_error",
                f"No such payment_intent: '{intent_id}'",
                code="resource_missing",
                param="intent",
            )
        return intent

    def create_intent(self, params: dict[str, Any], key: str | None) -> dict[str, Any]:
        """`POST /v1/payment_intents`: amount, currency, metadata, description, confirm,
        payment_method."""
        amount = _int(params, "amount")
        currency = str(params.get("currency", "")).lower()
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise StripeError(400, "invalid_request_error", "Invalid currency.", param="currency")
        assert amount is not None
        if amount < 1:
            raise StripeError(
                400,
                "invalid_request_error",
                "This value must be greater than or equal to 1.",
                param="amount",
                code="parameter_invalid_integer",
            )
        if currency in THREE_DECIMAL and amount % 10:
            raise StripeError(
                400,
                "invalid_request_error",
                f"For {currency.upper()}, the amount must be divisible by 10.",
                param="amount",
                code="invalid_charge_amount",
            )
        intent_id = new_id("pi")
        intent = self._fixture(
            "payment_intent",
            id=intent_id,
            amount=amount,
            amount_capturable=0,
            amount_received=0,
            currency=currency,
            client_secret=f"{intent_id}_secret_{new_id('s')[2:]}",
            created=int(time.time()),
            canceled_at=None,
            cancellation_reason=None,
            description=params.get("description"),
            last_payment_error=None,
            latest_charge=None,
            metadata=dict(params.get("metadata") or {}),
            next_action=None,
            payment_method=None,
            processing=None,
            status="requires_payment_method",
            transfer_data=None,
        )
        self.intents[intent_id] = intent
        self._event("payment_intent.created", intent, key)
        if str(params.get("confirm", "false")).lower() == "true":
            return self._confirm(intent, params, key)
        return intent

    def list_intents(self, params: dict[str, Any], key: str | None) -> dict[str, Any]:
        """`GET /v1/payment_intents`: newest first, `limit` (≤ 100), `starting_after`,
        `created[gte]`."""
        limit = max(1, min(100, _int(params, "limit", required=False) or 10))
        created = params.get("created")
        gte = int(created["gte"]) if isinstance(created, dict) and "gte" in created else None
        items = sorted(self.intents.values(), key=lambda i: (i["created"], i["id"]), reverse=True)
        if gte is not None:
            items = [i for i in items if i["created"] >= gte]
        after = params.get("starting_after")
        if after:
            ids = [i["id"] for i in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return {
            "object": "list",
            "data": page,
            "has_more": len(items) > limit,
            "url": "/v1/payment_intents",
        }

    def get_intent(self, params: dict[str, Any], key: str | None, intent_id: str) -> dict[str, Any]:
        """`GET /v1/payment_intents/{id}`."""
        return self._intent(intent_id)

    def intent_action(
        self, params: dict[str, Any], key: str | None, intent_id: str, action: str
    ) -> dict[str, Any]:
        """`POST /v1/payment_intents/{id}/confirm` or `/cancel`."""
        intent = self._intent(intent_id)
        if action == "confirm":
            return self._confirm(intent, params, key)
        if action == "cancel":
            if intent["status"] in ("succeeded", "canceled"):
                raise StripeError(
                    400,
                    "invalid_request_error",
                    "You cannot cancel this PaymentIntent because it has a status of"
                    f" {intent['status']}.",
                    code="payment_intent_unexpected_state",
                    payment_intent=intent,
                )
            intent.update(
                status="canceled",
                canceled_at=int(time.time()),
                cancellation_reason=params.get("cancellation_reason") or "requested_by_customer",
            )
            self._event("payment_intent.canceled", intent, key)
            return intent
        raise StripeError(404, "invalid_request_error", f"Unrecognized request URL ({action}).")

    def _confirm(
        self, intent: dict[str, Any], params: dict[str, Any], key: str | None
    ) -> dict[str, Any]:
        if intent["status"] not in ("requires_payment_method", "requires_confirmation"):
            raise StripeError(
                400,
                "invalid_request_error",
                f"This PaymentIntent's status is {intent['status']}; it cannot be confirmed.",
                code="payment_intent_unexpected_state",
                payment_intent=intent,
            )
        method = str(params.get("payment_method") or "pm_card_visa")
        decline = DECLINES.get(method)
        if decline is not None:
            self.fail_intent(intent["id"], decline_code=decline[1], payment_method=method, key=key)
            code, decline_code, message = decline
            raise StripeError(
                402,
                "card_error",
                message,
                code=code,
                decline_code=decline_code,
                payment_intent=intent,
            )
        return self.succeed_intent(intent["id"], payment_method=method, key=key)

    def succeed_intent(
        self, intent_id: str, *, payment_method: str = "pm_card_visa", key: str | None = None
    ) -> dict[str, Any]:
        """Capture the whole amount: the intent `succeeded`, a charge, the events."""
        intent = self._intent(intent_id)
        if intent["status"] in ("succeeded", "canceled"):
            raise StripeError(
                400,
                "invalid_request_error",
                f"This PaymentIntent's status is {intent['status']}.",
                code="payment_intent_unexpected_state",
            )
        charge_id = new_id("ch")
        charge = self._fixture(
            "charge",
            id=charge_id,
            amount=intent["amount"],
            amount_captured=intent["amount"],
            amount_refunded=0,
            captured=True,
            created=int(time.time()),
            currency=intent["currency"],
            metadata=dict(intent["metadata"]),
            paid=True,
            payment_intent=intent_id,
            payment_method=payment_method,
            refunded=False,
            status="succeeded",
        )
        self.charges[charge_id] = charge
        intent.update(
            status="succeeded",
            amount_received=intent["amount"],
            latest_charge=charge_id,
            payment_method=payment_method,
            last_payment_error=None,
        )
        self._event("payment_intent.succeeded", intent, key)
        return intent

    def fail_intent(
        self,
        intent_id: str,
        *,
        decline_code: str = "generic_decline",
        payment_method: str = "pm_card_chargeDeclined",
        key: str | None = None,
    ) -> dict[str, Any]:
        """A declined attempt: back to `requires_payment_method` with `last_payment_error`
        (the customer may try another card), and `payment_intent.payment_failed`."""
        intent = self._intent(intent_id)
        if intent["status"] in ("succeeded", "canceled"):
            raise StripeError(
                400,
                "invalid_request_error",
                f"This PaymentIntent's status is {intent['status']}.",
                code="payment_intent_unexpected_state",
            )
        intent.update(
            status="requires_payment_method",
            payment_method=None,
            last_payment_error={
                "type": "card_error",
                "code": "card_declined",
                "decline_code": decline_code,
                "message": "Your card was declined.",
                "payment_method": {"id": payment_method, "object": "payment_method"},
            },
        )
        self._event("payment_intent.payment_failed", intent, key)
        return intent

    # ---------------------------------------------------------------- refunds

    def _refund(self, refund_id: str) -> dict[str, Any]:
        refund = self.refunds.get(refund_id)
        if refund is None:
            raise StripeError(
                404,
                "invalid_request_error",
                f"No such refund: '{refund_id}'",
                code="resource_missing",
                param="id",
            )
        return refund

    def create_refund(self, params: dict[str, Any], key: str | None) -> dict[str, Any]:
        """`POST /v1/refunds`: payment_intent, amount (default: what is left), reason,
        metadata."""
        intent = self._intent(str(params.get("payment_intent", "")))
        if intent["status"] != "succeeded" or not intent["latest_charge"]:
            raise StripeError(
                400,
                "invalid_request_error",
                f"This PaymentIntent ({intent['id']}) does not have a successful charge to refund.",
                code="charge_not_refundable",
            )
        charge = self.charges[intent["latest_charge"]]
        left = (
            charge["amount_captured"]
            - charge["amount_refunded"]
            - sum(
                r["amount"]
                for r in self.refunds.values()
                if r["charge"] == charge["id"] and r["status"] == "pending"
            )
        )
        amount = _int(params, "amount", required=False)
        amount = left if amount is None else amount
        if amount < 1 or amount > left:
            code = "charge_already_refunded" if left == 0 else "amount_too_large"
            raise StripeError(
                400,
                "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                code=code,
                param="amount",
            )
        if intent["currency"] in THREE_DECIMAL and amount % 10:
            raise StripeError(
                400,
                "invalid_request_error",
                f"For {intent['currency'].upper()}, the amount must be divisible by 10.",
                param="amount",
                code="invalid_charge_amount",
            )
        refund = self._fixture(
            "refund",
            id=new_id("re"),
            amount=amount,
            charge=charge["id"],
            created=int(time.time()),
            currency=intent["currency"],
            metadata=dict(params.get("metadata") or {}),
            payment_intent=intent["id"],
            reason=params.get("reason"),
            status="pending",
        )
        self.refunds[refund["id"]] = refund
        self._event("refund.created", refund, key)
        if self.refund_status == "succeeded":
            self.settle_refund(refund["id"], succeeded=True, key=key)
        return refund

    def settle_refund(
        self, refund_id: str, *, succeeded: bool, key: str | None = None
    ) -> dict[str, Any]:
        """A pending refund `succeeded` (the charge's `amount_refunded` grows, events
        `refund.updated` and `charge.refunded`) or `failed` (`refund.updated`)."""
        refund = self._refund(refund_id)
        if refund["status"] != "pending":
            raise StripeError(400, "invalid_request_error", "This refund is not pending.")
        refund["status"] = "succeeded" if succeeded else "failed"
        if not succeeded:
            refund["failure_reason"] = "declined"
            self._event("refund.updated", refund, key)
            return refund
        charge = self.charges[refund["charge"]]
        charge["amount_refunded"] += refund["amount"]
        charge["refunded"] = charge["amount_refunded"] == charge["amount_captured"]
        self._event("refund.updated", refund, key)
        self._event("charge.refunded", charge, key)
        return refund

    def list_refunds(self, params: dict[str, Any], key: str | None) -> dict[str, Any]:
        """`GET /v1/refunds?payment_intent=` (newest first, at most `limit` ≤ 100)."""
        limit = max(1, min(100, _int(params, "limit", required=False) or 10))
        pi = params.get("payment_intent")
        items = [r for r in self.refunds.values() if pi is None or r["payment_intent"] == pi]
        items.sort(key=lambda r: (r["created"], r["id"]), reverse=True)
        return {
            "object": "list",
            "data": items[:limit],
            "has_more": len(items) > limit,
            "url": "/v1/refunds",
        }

    def get_refund(self, params: dict[str, Any], key: str | None, refund_id: str) -> dict[str, Any]:
        """`GET /v1/refunds/{id}`."""
        return self._refund(refund_id)

    # ---------------------------------------------------------------- transfers

    def create_transfer(self, params: dict[str, Any], key: str | None) -> dict[str, Any]:
        """`POST /v1/transfers`: amount, currency, destination (`acct_…`), metadata."""
        amount = _int(params, "amount")
        assert amount is not None
        destination = str(params.get("destination", ""))
        if not destination.startswith("acct_"):
            raise StripeError(
                400,
                "invalid_request_error",
                f"No such destination: '{destination}'",
                code="resource_missing",
                param="destination",
            )
        if amount < 1:
            raise StripeError(400, "invalid_request_error", "Invalid amount.", param="amount")
        transfer_id = new_id("tr")
        transfer = self._fixture(
            "transfer",
            id=transfer_id,
            amount=amount,
            amount_reversed=0,
            balance_transaction=new_id("txn"),
            created=int(time.time()),
            currency=str(params.get("currency", "")).lower(),
            description=params.get("description"),
            destination=destination,
            destination_payment=new_id("py"),
            metadata=dict(params.get("metadata") or {}),
            reversals={
                "data": [],
                "has_more": False,
                "object": "list",
                "url": f"/v1/transfers/{transfer_id}/reversals",
            },
            transfer_group=params.get("transfer_group"),
        )
        self.transfers[transfer_id] = transfer
        self._event("transfer.created", transfer, key)
        return transfer

    def get_transfer(
        self, params: dict[str, Any], key: str | None, transfer_id: str
    ) -> dict[str, Any]:
        """`GET /v1/transfers/{id}`."""
        transfer = self.transfers.get(transfer_id)
        if transfer is None:
            raise StripeError(
                404,
                "invalid_request_error",
                f"No such transfer: '{transfer_id}'",
                code="resource_missing",
            )
        return transfer

    # ---------------------------------------------------------------- test helpers

    def _helpers(self, method: str, path: str, params: dict[str, Any]) -> Response:
        parts = [p for p in path.split("/") if p][1:]
        if parts == ["health"]:
            return Response(200, {"ok": True})
        if parts == ["stats"]:
            times = sorted(self.server_times_ms)
            pct = {
                f"p{q}": (times[min(len(times) - 1, int(len(times) * q / 100))] if times else None)
                for q in (50, 95, 99)
            }
            return Response(200, {"requests": len(times), "server_ms": pct})
        if parts == ["stats", "reset"] and method == "POST":
            self.server_times_ms.clear()
            return Response(200, {"reset": True})
        if parts == ["reset"] and method == "POST":
            self.reset()
            return Response(200, {"reset": True})
        if parts == ["events"] and method == "GET":
            events = sorted(self.events.values(), key=lambda e: e["created"])
            return Response(200, {"object": "list", "data": events})
        if parts == ["config"] and method == "POST":
            if "webhook_url" in params:
                self.webhook_url = params["webhook_url"] or None
            if "deliver" in params:
                self.deliver = str(params["deliver"]).lower() == "true"
            if "refund_status" in params:
                self.refund_status = str(params["refund_status"])
            if "outage" in params:
                self.outage = str(params["outage"]).lower() == "true"
            if "latency_ms" in params:
                self.latency_ms = max(0.0, float(params["latency_ms"]))
            return Response(
                200,
                {
                    "webhook_url": self.webhook_url,
                    "deliver": self.deliver,
                    "refund_status": self.refund_status,
                    "outage": self.outage,
                    "latency_ms": self.latency_ms,
                },
            )
        if method == "POST" and len(parts) == 3:
            kind, object_id, action = parts
            if kind == "events" and action == "deliver":
                if object_id not in self.events:
                    raise StripeError(404, "invalid_request_error", f"No such event: '{object_id}'")
                self._outbox.put(object_id)
                return Response(200, {"queued": object_id})
            if kind == "payment_intents" and action == "succeed":
                return Response(200, self.succeed_intent(object_id))
            if kind == "payment_intents" and action == "fail":
                code = str(params.get("decline_code") or "generic_decline")
                return Response(200, self.fail_intent(object_id, decline_code=code))
            if kind == "subscriptions" and action == "advance":
                fail = str(params.get("fail", "false")).lower() == "true"
                return Response(200, self.advance_subscription(object_id, fail=fail))
            if kind == "invoices" and action in ("pay", "fail"):
                return Response(200, self.settle_invoice(object_id, paid=action == "pay"))
            if kind == "refunds" and action in ("succeed", "fail"):
                return Response(200, self.settle_refund(object_id, succeeded=action == "succeed"))
        raise StripeError(404, "invalid_request_error", f"Unknown test helper ({method}: {path}).")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: the headers and the body go out in two writes; with Nagle on, the body
    # waits for the client's delayed ACK of the headers (~40 ms a response on Linux),
    # which Stripe's API does not add.
    disable_nagle_algorithm = True
    server: StandinHTTPServer

    def _serve(self) -> None:
        split = urlsplit(self.path)
        if self.command == "GET" and split.path in ("/v3", "/v3/"):
            script = STRIPE_JS_PATH.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript; charset=utf-8")
            self.send_header("Content-Length", str(len(script)))
            self.end_headers()
            self.wfile.write(script)
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        standin = self.server.standin
        response = standin.handle(self.command, split.path, split.query, body, headers)
        if standin.latency_ms and split.path.startswith("/v1/"):
            time.sleep(standin.latency_ms / 1000)  # this connection's thread only
        payload = json.dumps(response.body).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Request-Id", new_id("req"))
        self.send_header("Stripe-Version", API_VERSION)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _serve
    do_POST = _serve
    do_DELETE = _serve

    def do_OPTIONS(self) -> None:
        """A CORS preflight: allowed from any origin, as Stripe's API answers it."""
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, POST")
        self.send_header("Access-Control-Allow-Headers", "Content-Type, Stripe-Version")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


class StandinHTTPServer(ThreadingHTTPServer):
    """`ThreadingHTTPServer` (HTTP/1.1 keep-alive) serving one `StripeStandin`."""

    daemon_threads = True
    # the listen backlog: socketserver's default of 5 drops the SYNs of a client opening
    # more connections at once (retried by the kernel 1 s later), which Stripe does not
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], standin: StripeStandin) -> None:
        self.standin = standin
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        """`http://host:port` of the listening socket."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


def start(
    host: str = "127.0.0.1", port: int = 0, **options: Any
) -> tuple[StandinHTTPServer, threading.Thread]:
    """Serve a new stand-in on `host:port` (0 = a free port) in a daemon thread; returns the
    server (its `.url`, `.standin`) and the thread. `options` go to `StripeStandin`."""
    server = StandinHTTPServer((host, port), StripeStandin(**options))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread
