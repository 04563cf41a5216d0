"""Business rules of payments: intents, webhook intake, payment and refund state changes,
the ledger postings that go with them.

Functions take the caller's `AsyncSession` and never commit (the request, task or command
that owns the unit of work does: `payments.jobs` for the background flows). Gateway calls
go through the `PaymentProvider` port; every state change is a compare-and-swap on the
row, taken under its row lock, so duplicate and out-of-order webhooks, retries and the
reconciliation command all converge on one outcome: money never taken twice, a booking
never confirmed without its payment nor charged without a seat.

Lock order (deadlock-free with the booking domain): the payment row, then the booking's
slot and booking (inside `booking.service.confirm`). A cancellation takes them in the same
order (`lock_for_cancellation` before the booking service's cancel), so the refund it owes
is recorded in its own transaction (`record_cancellation`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from booking.schemas import BookingOut
from core import outbox
from core.logging import get_logger
from core.settings import get_settings
from payments import ledger
from payments import repository as repo
from payments.errors import (
    AmountNotSupported,
    BookingNotPayable,
    GatewayRefused,
    GatewayUnavailable,
    InvalidSignature,
    PaymentConflict,
    RefundTooLarge,
)
from payments.models import Payment, Refund
from payments.provider import (
    IdempotencyConflict,
    Intent,
    IntentRequest,
    InvalidWebhook,
    PaymentProvider,
    ProviderError,
    ProviderUnavailable,
    WebhookEvent,
)
from payments.provider import Refund as GatewayRefund
from payments.schemas import PaymentIntentOut
from payments.stripe_adapter import UnrepresentableAmount
from profiles.models import User

log = get_logger(__name__)

# Payment states a newer gateway state may replace (never a succeeded or canceled one).
_OPEN = ("requires_payment", "processing", "failed")


def intent_key(booking_id: uuid.UUID, attempt: int = 1) -> str:
    """Our gateway idempotency key of a booking's intent: `pi:{booking_id}` for the first,
    `pi:{booking_id}:{attempt}` for the replacement of a canceled one (attempt 2, 3, …)."""
    return f"pi:{booking_id}" if attempt == 1 else f"pi:{booking_id}:{attempt}"


# The metadata key holding a replacement intent's attempt number (absent: the first).
ATTEMPT_KEY = "intent_attempt"


def refund_key(booking_id: uuid.UUID, seq: int) -> str:
    """Our gateway idempotency key of a booking's `seq`-th refund: `re:{booking_id}:{seq}`."""
    return f"re:{booking_id}:{seq}"


def gateway_error(exc: ProviderError) -> Exception:
    """The API error for a gateway failure (503 to retry, 409 on a key conflict, 502)."""
    if isinstance(exc, ProviderUnavailable):
        return GatewayUnavailable("The payment gateway did not answer; retry shortly.")
    if isinstance(exc, IdempotencyConflict):
        return PaymentConflict(
            "The gateway holds another request for this booking (its price changed)."
        )
    return GatewayRefused(f"The payment gateway refused the request: {exc}")


# --- the booking side ------------------------------------------------------------------


async def _booking_for_payer(
    session: AsyncSession, *, user: User, booking_id: uuid.UUID
) -> BookingOut:
    """The booking if `user` is its student or a parent of its student (404 otherwise:
    the booking service hides other people's bookings; the route admits only students and
    parents, so a visible booking is the caller's or its child's)."""
    from booking import service as booking_service
    from booking.errors import BookingNotFound

    booking = await booking_service.get_booking(session, booking_id=booking_id, actor=user)
    if user.role not in ("student", "parent"):
        raise BookingNotFound("No booking with this id.")
    return booking


# --- intents ---------------------------------------------------------------------------


def _intent_out(payment: Payment, intent: Intent | None) -> PaymentIntentOut:
    return PaymentIntentOut(
        payment_id=payment.id,
        client_secret=intent.client_secret if intent else None,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        status=payment.status,
    )


def _payable(booking: BookingOut, now: datetime) -> None:
    """Raise `BookingNotPayable` unless the booking is a pending, unexpired, priced hold."""
    if booking.status != "pending" or booking.hold_expires_at <= now:
        raise BookingNotPayable(
            f"Only a pending hold can be paid; this booking is {booking.status}"
            + (" and its hold has expired." if booking.status == "pending" else ".")
        )
    if booking.price_minor <= 0:
        raise BookingNotPayable("This booking is free: there is nothing to pay.")


def _intent_request(
    provider: PaymentProvider, booking: BookingOut, *, attempt: int
) -> tuple[IntentRequest, int]:
    """The gateway request of the booking's `attempt`-th intent and its service fee."""
    settings = get_settings()
    fee = provider.representable(
        ledger.service_fee(
            price_minor=booking.price_minor, currency=booking.currency,
            bps=settings.service_fee_bps, fixed=settings.service_fee_minor,
        ),
        booking.currency,
    )  # fmt: skip
    metadata = {"booking_id": str(booking.id)}
    if attempt > 1:
        metadata[ATTEMPT_KEY] = str(attempt)
    request = IntentRequest(
        idempotency_key=intent_key(booking.id, attempt),
        amount_minor=booking.price_minor + fee,
        currency=booking.currency,
        metadata=metadata,
        description=f"EduConnect booking {booking.id}",
    )
    return request, fee


async def _gateway_intent(provider: PaymentProvider, request: IntentRequest) -> Intent:
    try:
        return await provider.create_intent(request)
    except UnrepresentableAmount as exc:
        raise AmountNotSupported(
            f"The gateway cannot take {request.amount_minor} minor units of {request.currency}."
        ) from exc
    except ProviderError as exc:
        raise gateway_error(exc) from exc


async def create_intent(
    session: AsyncSession,
    provider: PaymentProvider,
    *,
    user: User,
    booking_id: uuid.UUID,
    now: datetime,
) -> PaymentIntentOut:
    """Create — or return the existing — gateway intent of a pending, unexpired booking of
    `user` (its student, or the parent who booked it) and its `payments` row.

    Amount = the booking's `price_minor` + the service fee (`ledger.service_fee`: the
    `SERVICE_FEE_BPS` rate plus the currency's `SERVICE_FEE_MINOR`, rounded down to what the
    gateway can move), in its currency, with the gateway idempotency key `pi:{booking_id}`
    (concurrent or repeated calls get one intent; the unique `payments.booking_id` gives
    one row) and metadata `booking_id`. When the booking's intent was canceled at the
    gateway and the hold is still payable, a new intent replaces it (key
    `pi:{booking_id}:{n}`, n = 2, 3, … from the canceled one's `intent_attempt` metadata, so
    concurrent callers create the same one) and the row moves to it: a booking never has two
    live intents. Raises `BookingNotFound` (404), `BookingNotPayable` (409: not pending,
    hold expired, free), `AmountNotSupported` (422), `PaymentConflict` (409),
    `GatewayUnavailable` (503), `GatewayRefused` (502).
    """
    booking = await _booking_for_payer(session, user=user, booking_id=booking_id)
    existing = await repo.get_payment_by_booking(session, booking_id)
    if existing is not None:
        try:
            intent = await provider.get_intent(existing.gateway_ref)
        except ProviderError as exc:
            raise gateway_error(exc) from exc
        if intent.status != "canceled" or existing.status == "succeeded":
            return _intent_out(existing, intent)
        _payable(booking, now)
        return await _replace_canceled(session, provider, booking, existing, intent)
    _payable(booking, now)
    request, fee = _intent_request(provider, booking, attempt=1)
    intent = await _gateway_intent(provider, request)
    payment = await repo.insert_payment(
        session,
        booking_id=booking_id,
        payer_id=user.id,
        provider_id=booking.provider_id,
        gateway=provider.name,
        gateway_ref=intent.ref,
        price_minor=booking.price_minor,
        service_fee_minor=fee,
        amount_minor=request.amount_minor,
        currency=booking.currency,
    )
    if payment is None:  # a concurrent call inserted it first (same intent: same key)
        payment = await repo.get_payment_by_booking(session, booking_id)
        assert payment is not None
    return _intent_out(payment, intent)


async def _replace_canceled(
    session: AsyncSession,
    provider: PaymentProvider,
    booking: BookingOut,
    payment: Payment,
    canceled: Intent,
) -> PaymentIntentOut:
    """A new intent for a payable booking whose intent was canceled; the payment row moves
    to it (CAS on the canceled ref: a concurrent replacement, which created the same intent
    with the same key, wins and is returned)."""
    attempt = int(canceled.metadata.get(ATTEMPT_KEY, "1")) + 1
    request, fee = _intent_request(provider, booking, attempt=attempt)
    intent = await _gateway_intent(provider, request)
    moved = await repo.replace_intent(
        session, payment.id, old_ref=canceled.ref, new_ref=intent.ref,
        price_minor=booking.price_minor, service_fee_minor=fee, amount_minor=request.amount_minor,
    )  # fmt: skip
    if moved is not None:
        log.info("payment_intent_replaced", payment_id=str(payment.id), old=canceled.ref,
                 new=intent.ref, attempt=attempt)  # fmt: skip
        return _intent_out(moved, intent)
    current = await repo.get_payment_by_booking(session, booking.id, lock=True)
    assert current is not None
    if current.gateway_ref != intent.ref:
        try:
            intent = await provider.get_intent(current.gateway_ref)
        except ProviderError as exc:
            raise gateway_error(exc) from exc
    return _intent_out(current, intent)


# --- webhook intake --------------------------------------------------------------------


def verify_webhook(
    provider: PaymentProvider, *, body: bytes, headers: Mapping[str, str]
) -> WebhookEvent:
    """Verify the raw body's signature (the provider's rules; `headers` looked up by
    lower-case name, e.g. Starlette's case-insensitive `Headers`); raises
    `InvalidSignature` (400) without touching the database."""
    try:
        return provider.parse_webhook(body, headers)
    except InvalidWebhook as exc:
        raise InvalidSignature(f"Webhook rejected: {exc}") from exc


# --- payment state ---------------------------------------------------------------------


@dataclass
class Applied:
    """What `apply_intent` did: the payment's status before and after, the booking
    outcome when it was confirmed or refused, refunds to execute at the gateway."""

    payment_id: uuid.UUID | None
    before: str | None
    after: str | None
    booking_outcome: str | None = None
    refund_ids: list[uuid.UUID] = field(default_factory=list)


async def apply_intent(
    session: AsyncSession, *, gateway: str, intent: Intent, now: datetime
) -> Applied:
    """Move the local payment to the gateway's state of `intent` (re-read from the gateway
    by the caller), compare-and-swap under the payment's row lock.

    - `succeeded`: payment → succeeded (captured), the ledger's payment transaction, and
      the booking confirmed in the same transaction when its hold is valid or its seats
      still free; when the booking cannot be confirmed (seats gone, canceled, expired) a
      full refund is recorded (`refund_ids`: the caller executes it after commit).
    - `failed` / `canceled` / `processing`: the payment follows; the booking's hold keeps
      its expiry (the student may retry on the same intent).
    An already-applied state changes nothing (duplicates, out-of-order events).
    """
    if intent.status == "succeeded":  # the common case: lock and CAS in one statement
        done = await repo.succeed_payment(
            session, gateway, intent.ref, from_states=(*_OPEN, "canceled"),
            captured_minor=intent.amount_received_minor, now=now,
        )  # fmt: skip
        if done is not None:
            return await _succeeded(session, gateway, done[0], before=done[1], now=now)
    payment = await repo.get_payment_by_ref(session, gateway, intent.ref, lock=True)
    if payment is None:
        log.warning("payment_unknown_intent", gateway=gateway, ref=intent.ref)
        return Applied(None, None, None)
    before = payment.status
    result = Applied(payment.id, before, before)
    if intent.status == "succeeded":
        if before == "succeeded":
            return result
        moved = await repo.move_payment(
            session, payment.id, from_states=(*_OPEN, "canceled"), to_state="succeeded",
            captured_minor=intent.amount_received_minor, succeeded_at=now,
            failure_code=None, failure_message=None,
        )  # fmt: skip
        assert moved is not None  # under the row lock the state cannot have moved
        return await _succeeded(session, gateway, moved, before=before, now=now)
    target = intent.status
    if target == "requires_payment" or before == target:
        return result
    allowed = {"failed": _OPEN, "canceled": _OPEN, "processing": ("requires_payment", "failed")}
    moved = await repo.move_payment(
        session, payment.id, from_states=allowed[target], to_state=target,
        failure_code=intent.failure_code, failure_message=intent.failure_message,
    )  # fmt: skip
    if moved is not None:
        result.after = target
        if target == "failed":
            await _event(session, "payment.failed", moved)
    return result


async def _succeeded(
    session: AsyncSession, gateway: str, moved: Payment, *, before: str, now: datetime
) -> Applied:
    """What follows a payment's move to `succeeded` (`before` → succeeded), in the same
    transaction: its outbox event, the ledger's payment transaction, the booking's
    confirmation — or, when it cannot be confirmed, a full refund recorded."""
    from booking import service as booking_service

    result = Applied(moved.id, before, "succeeded")
    await _event(session, "payment.succeeded", moved)
    parts = _split(moved)
    await repo.post(
        session, kind="payment", key=f"payment:{moved.id}", currency=moved.currency,
        lines=ledger.payment_lines(gateway=gateway, provider_id=moved.provider_id, parts=parts),
        booking_id=moved.booking_id, payment_id=moved.id,
    )  # fmt: skip
    confirmed = await booking_service.confirm(session, booking_id=moved.booking_id, now=now)
    result.booking_outcome = confirmed.outcome
    if not confirmed.confirmed:
        refund = await _record_refund(
            session, moved, amount=moved.captured_minor - moved.refunded_minor,
            reason=f"booking_{confirmed.outcome}",
        )  # fmt: skip
        if refund is not None:
            result.refund_ids.append(refund.id)
    return result


async def _event(session: AsyncSession, event_type: str, payment: Payment) -> None:
    """The outbox event of a payment state change (keys only; notifications read it)."""
    await outbox.emit(
        session, aggregate_type="payment", aggregate_id=str(payment.id), event_type=event_type,
        payload={"payment_id": str(payment.id), "booking_id": str(payment.booking_id)},
    )  # fmt: skip


def _split(payment: Payment) -> ledger.Split:
    return ledger.split(
        price_minor=payment.price_minor,
        service_fee_minor=payment.service_fee_minor,
        bps=get_settings().platform_fee_bps,
    )


# --- refunds ---------------------------------------------------------------------------


async def _record_refund(
    session: AsyncSession, payment: Payment, *, amount: int, reason: str
) -> Refund | None:
    """A pending refund row of `amount` (call under the payment's row lock); None for 0."""
    if amount <= 0:
        return None
    seq = await repo.next_refund_seq(session, payment.id)
    try:
        async with session.begin_nested():
            return await repo.insert_refund(
                session, payment_id=payment.id, booking_id=payment.booking_id, seq=seq,
                amount_minor=amount, currency=payment.currency, reason=reason,
            )  # fmt: skip
    except IntegrityError as exc:
        if "payments_refunds_within_capture" in str(exc.orig):
            raise RefundTooLarge(
                f"Refunding {amount} would exceed what was captured on this payment."
            ) from exc
        raise


async def request_refund(
    session: AsyncSession,
    provider: PaymentProvider,
    *,
    booking_id: uuid.UUID,
    amount_minor: int,
    reason: str,
) -> tuple[Payment | None, Refund | None]:
    """Record a refund of `amount_minor` of the booking's payment, capped at what is left
    of the capture (a refund never exceeds it) and rounded down to what the gateway can
    move (three-decimal currencies: whole 10s). Returns the payment (row-locked; None when
    the booking has none) and the refund (None when nothing was captured or left)."""
    payment = await repo.get_payment_by_booking(session, booking_id, lock=True)
    if payment is None or payment.status != "succeeded":
        return payment, None
    left = payment.captured_minor - payment.refunded_minor
    amount = provider.representable(min(amount_minor, left), payment.currency)
    refund = await _record_refund(session, payment, amount=amount, reason=reason)
    return payment, refund


async def lock_for_cancellation(
    session: AsyncSession,
    *,
    booking_ids: Sequence[uuid.UUID] = (),
    slot_id: uuid.UUID | None = None,
) -> None:
    """A cancellation's first lock: the payments of the bookings it may cancel (of
    `booking_ids`, or of the live bookings of `slot_id`), taken before the booking
    service locks the slot and the bookings — the order of the webhook's confirmation
    (payment, slot, booking), so a cancellation racing a late success waits for it, or
    makes it wait, and never deadlocks with it. Call in the cancellation's transaction,
    then `record_cancellation` for each booking canceled."""
    await repo.lock_payments(session, booking_ids=booking_ids, slot_id=slot_id)


@dataclass(frozen=True, slots=True)
class GatewayWork:
    """What the gateway still has to do once a cancellation committed: send the pending
    refund `refund_id` recorded with it, or cancel the unpaid intent `intent_ref` (so it
    can no longer be paid). `payments.jobs.after_cancellations` does it after the answer;
    `payments.jobs.sweep` does what a dead process left."""

    booking_id: uuid.UUID
    refund_id: uuid.UUID | None = None
    intent_ref: str | None = None


async def record_cancellation(
    session: AsyncSession,
    provider: PaymentProvider,
    *,
    booking_id: uuid.UUID,
    refund_due_minor: int,
) -> GatewayWork | None:
    """In the cancellation's transaction (after `lock_for_cancellation`): record the
    pending refund of `refund_due_minor` (minor units; the policy's share, capped at what
    is left of the capture, key `re:{booking_id}:{seq}`), so the obligation commits with
    the cancellation and reserves its amount; for a booking whose payment is still open,
    name its intent to cancel. None when the gateway has nothing to do (no payment,
    nothing due, or already settled)."""
    payment, refund = await request_refund(
        session, provider, booking_id=booking_id, amount_minor=refund_due_minor,
        reason="booking_canceled",
    )  # fmt: skip
    if refund is not None:
        return GatewayWork(booking_id, refund_id=refund.id)
    if payment is not None and payment.status in _OPEN:
        return GatewayWork(booking_id, intent_ref=payment.gateway_ref)
    return None


async def refundable_minor(
    session: AsyncSession, *, booking_id: uuid.UUID, lock: bool = False
) -> int | None:
    """What is left to refund of the booking's card payment, in minor units of its
    currency: captured - refunded (pending refunds included, they are reserved). None when
    the booking has no succeeded card payment (unpaid, free, or paid with credits).
    `lock` takes the payment's row lock (hold it until `record_refund`)."""
    payment = await repo.get_payment_by_booking(session, booking_id, lock=lock)
    if payment is None or payment.status != "succeeded":
        return None
    return payment.captured_minor - payment.refunded_minor


async def record_refund(
    session: AsyncSession, *, booking_id: uuid.UUID, amount_minor: int, reason: str
) -> Refund:
    """Record a pending refund of exactly `amount_minor` (> 0, minor units) of the
    booking's succeeded payment, to be sent to the gateway after commit by
    `payments.jobs.execute_refund` (key `re:{booking_id}:{seq}`). Unlike `request_refund`
    nothing is capped: raises `RefundTooLarge` (409 `refund_exceeds_capture`) when the
    amount exceeds what is left of the capture (the database CHECK is the backstop) and
    `ValueError` when the booking has no succeeded payment or the amount is not positive."""
    payment = await repo.get_payment_by_booking(session, booking_id, lock=True)
    if payment is None or payment.status != "succeeded":
        raise ValueError(f"booking {booking_id} has no succeeded payment")
    if amount_minor <= 0:
        raise ValueError("a refund's amount must be positive")
    if amount_minor > payment.captured_minor - payment.refunded_minor:
        raise RefundTooLarge(
            f"Refunding {amount_minor} would exceed what was captured on this payment."
        )
    refund = await _record_refund(session, payment, amount=amount_minor, reason=reason)
    assert refund is not None
    return refund


async def apply_refund(
    session: AsyncSession, *, refund_id: uuid.UUID, gateway_refund: GatewayRefund, now: datetime
) -> str | None:
    """Move a local refund to the gateway's state (CAS under its row lock): on success the
    ledger's refund transaction is posted, and a canceled booking whose refunds are all
    done becomes `refunded`. Returns the new status, or None when nothing changed."""
    from booking import service as booking_service

    refund = await repo.get_refund(session, refund_id, lock=True)
    if refund is None:
        return None
    if refund.gateway_ref is None:
        await repo.set_refund_ref(session, refund.id, gateway_refund.ref)
    target = gateway_refund.status
    if target == refund.status or target == "pending" or refund.status != "pending":
        return None
    moved = await repo.move_refund(
        session, refund.id, from_states=("pending",), to_state=target,
        failure_reason=gateway_refund.failure_reason,
    )  # fmt: skip
    if moved is None or target != "succeeded":
        return None if moved is None else target
    await outbox.emit(
        session, aggregate_type="refund", aggregate_id=str(moved.id), event_type="refund.succeeded",
        payload={"refund_id": str(moved.id), "booking_id": str(moved.booking_id)},
    )  # fmt: skip
    payment = await repo.get_payment(session, moved.payment_id)
    assert payment is not None
    before = await repo.succeeded_refunds_total(session, payment.id, excluding=moved.id)
    await repo.post(
        session, kind="refund", key=f"refund:{moved.id}", currency=moved.currency,
        lines=ledger.refund_lines(
            gateway=payment.gateway, provider_id=payment.provider_id, parts=_split(payment),
            refunded_before=before, amount=moved.amount_minor,
        ),
        booking_id=moved.booking_id, payment_id=payment.id, refund_id=moved.id,
    )  # fmt: skip
    if moved.reason == "booking_canceled" and not await repo.pending_refund_ids(
        session, payment.id
    ):
        await booking_service.mark_refunded(session, booking_id=moved.booking_id, now=now)
    return target


async def adopt_gateway_refund(
    session: AsyncSession, *, gateway: str, gateway_refund: GatewayRefund, now: datetime
) -> uuid.UUID | None:
    """A refund the gateway has and we do not (made in its dashboard, or our row lost its
    reference): match it by the `refund_id` in its metadata, else record it (`external`),
    then apply its state. Returns the local refund id (None for an unknown payment)."""
    existing = await repo.get_refund_by_ref(session, gateway_refund.ref)
    if existing is None and "refund_id" in gateway_refund.metadata:
        existing = await repo.get_refund(session, uuid.UUID(gateway_refund.metadata["refund_id"]))
    if existing is None:
        payment = await repo.get_payment_by_ref(
            session, gateway, gateway_refund.payment_ref, lock=True
        )
        if payment is None:
            return None
        existing = await _record_refund(
            session, payment, amount=gateway_refund.amount_minor, reason="external"
        )
        if existing is None:
            return None
    await apply_refund(session, refund_id=existing.id, gateway_refund=gateway_refund, now=now)
    return existing.id


# --- the ledger, for other domains (credits) -------------------------------------------


async def post_ledger(
    session: AsyncSession,
    *,
    kind: str,
    key: str,
    currency: str,
    lines: list[ledger.Line],
    booking_id: uuid.UUID | None = None,
    payment_id: uuid.UUID | None = None,
    refund_id: uuid.UUID | None = None,
) -> uuid.UUID | None:
    """Post one balanced ledger transaction of `kind` once by `key` (a replay posts
    nothing: None). `lines` are signed minor units of `currency` summing to zero (checked
    at commit by the database); every line carries the booking, payment and refund ids
    given. Returns the transaction id. Nothing is posted for no lines."""
    if not lines:
        return None
    return await repo.post(
        session, kind=kind, key=key, currency=currency, lines=lines, booking_id=booking_id,
        payment_id=payment_id, refund_id=refund_id,
    )  # fmt: skip
