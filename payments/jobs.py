"""Units of work of the background flows (Celery tasks, the reconcile command, the cancel
hook): each opens its own sessions and commits, and calls the gateway only between
transactions, never while holding a row lock.

- `process_event`: a stored webhook → re-read the object it names from the gateway →
  `service.apply_intent` / `service.apply_refund` → refunds to execute.
- `execute_refund`: a pending refund row → the gateway, with the key
  `re:{booking_id}:{seq}` (a retry never refunds twice) → its state applied.
- `after_cancellations`: after a cancellation committed (and answered), send the refund
  it recorded, or cancel the unpaid intent so it cannot be paid any more.
- `sweep` (beat): what a dead process or a lost task left — unprocessed events, pending
  refunds, open intents of canceled bookings.
- `reconcile`: compare the gateway's intents since a date with our payments; `fix` moves
  them through the same CAS path and adopts orphan intents (`adopt_intent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.db import async_session_factory
from core.logging import get_logger
from core.security import utcnow
from core.settings import get_settings
from payments import repository as repo
from payments import service
from payments.provider import Intent, PaymentProvider, ProviderError

log = get_logger(__name__)
Clock = Callable[[], datetime]
Gate = AbstractAsyncContextManager[object]


async def sync_payment(
    provider: PaymentProvider,
    *,
    ref: str,
    now: Clock = utcnow,
    event_row: int | None = None,
    gate: Gate | None = None,
) -> service.Applied:
    """Re-read the intent `ref`, apply it, commit (with the inbox row `event_row` marked
    processed in the same transaction); then execute any refund it recorded. `gate` (a
    semaphore, say) is held around the transaction only, not the re-read."""
    intent = await provider.get_intent(ref)
    if "credit_purchase_id" in intent.metadata:  # a pack of credits, not a booking
        from credits import jobs as credits_jobs

        await credits_jobs.sync_purchase(provider, intent=intent, now=now)
        if event_row is not None:
            async with async_session_factory()() as session, session.begin():
                await repo.mark_event(session, event_row, processed=True, error=None, retry_s=0)
        return service.Applied(None, None, None)
    async with (
        gate or contextlib.nullcontext(),
        async_session_factory()() as session,
        session.begin(),
    ):
        applied = await service.apply_intent(
            session, gateway=provider.name, intent=intent, now=now()
        )
        if event_row is not None:
            await repo.mark_event(session, event_row, processed=True, error=None, retry_s=0)
    for refund_id in applied.refund_ids:
        await execute_refund(provider, refund_id=refund_id, now=now)
    return applied


async def execute_refund(
    provider: PaymentProvider, *, refund_id: uuid.UUID, now: Clock = utcnow
) -> str | None:
    """Send a pending refund to the gateway (idempotent key `re:{booking_id}:{seq}`) and
    apply the answer. Returns the refund's new status (None: unchanged or not pending).
    Raises `ProviderError` (the caller retries; the row stays pending)."""
    sessions = async_session_factory()
    async with sessions() as session:
        refund = await repo.get_refund(session, refund_id)
        payment = None if refund is None else await repo.get_payment(session, refund.payment_id)
    if refund is None or payment is None or refund.status != "pending":
        return None
    answer = await provider.create_refund(
        payment_ref=payment.gateway_ref,
        amount_minor=refund.amount_minor,
        currency=refund.currency,
        idempotency_key=service.refund_key(refund.booking_id, refund.seq),
        metadata={"booking_id": str(refund.booking_id), "refund_id": str(refund.id)},
    )
    async with sessions() as session, session.begin():
        return await service.apply_refund(
            session, refund_id=refund.id, gateway_refund=answer, now=now()
        )


async def sync_refunds(provider: PaymentProvider, *, payment_ref: str, now: Clock = utcnow) -> int:
    """Re-read every refund of the intent from the gateway and reconcile ours (states,
    refunds we did not know). Returns how many gateway refunds were seen."""
    refunds = await provider.list_refunds(payment_ref)
    async with async_session_factory()() as session, session.begin():
        for gateway_refund in refunds:
            await service.adopt_gateway_refund(
                session, gateway=provider.name, gateway_refund=gateway_refund, now=now()
            )
    return len(refunds)


async def process_event(provider: PaymentProvider, *, row_id: int, now: Clock = utcnow) -> str:
    """Process one stored webhook event by id (idempotent; see `process_claimed`).
    Returns `skipped` for an unknown or already processed event."""
    async with async_session_factory()() as session:
        event = await repo.get_event(session, row_id)
    if event is None or event.processed_at is not None:
        return "skipped"
    claimed = repo.Claimed(event.id, event.object_kind, event.object_ref)
    return await process_claimed(provider, event=claimed, now=now)


async def process_claimed(
    provider: PaymentProvider,
    *,
    event: repo.Claimed,
    now: Clock = utcnow,
    gate: Gate | None = None,
) -> str:
    """Process one stored webhook event: re-read the object it names from the gateway and
    apply it; a payment's state and the event's `processed_at` commit together (`gate`
    held around that transaction, see `sync_payment`). Returns `processed` or `ignored`
    (a type we do not act on). On failure the error and the next attempt's time are
    recorded on the row (a dead letter once attempts run out) and the error re-raised."""
    sessions = async_session_factory()
    try:
        if event.object_kind == "payment" and event.object_ref:
            await sync_payment(
                provider, ref=event.object_ref, now=now, event_row=event.id, gate=gate
            )
            return "processed"
        if event.object_kind == "refund" and event.object_ref:
            await sync_payment(provider, ref=event.object_ref, now=now)
            await sync_refunds(provider, payment_ref=event.object_ref, now=now)
            outcome = "processed"
        elif event.object_kind in ("invoice", "subscription") and event.object_ref:
            from credits import jobs as credits_jobs  # Stripe Billing: credits' subscriptions

            await credits_jobs.sync_billing_object(
                kind=event.object_kind, ref=event.object_ref, now=now
            )
            outcome = "processed"
        else:
            outcome = "ignored"
    except Exception as exc:
        async with sessions() as session, session.begin():
            await repo.mark_event(
                session, event.id, processed=False, error=repr(exc)[:2000],
                retry_s=get_settings().payments_task_retry_s,
            )  # fmt: skip
        raise
    async with sessions() as session, session.begin():
        await repo.mark_event(session, event.id, processed=True, error=None, retry_s=0)
    return outcome


_LINGER_STEP_S = 0.01  # a lingering drain's first poll interval
_LINGER_MAX_STEP_S = 0.05  # and its longest


@dataclass(frozen=True, slots=True)
class Drained:
    """What a drain did: events processed, attempts that failed, and the seconds until
    the next failed event is due again (None: nothing waiting)."""

    processed: int
    failed: int
    retry_in: float | None


async def drain(
    provider: PaymentProvider,
    *,
    batch: int = 100,
    concurrency: int = 32,
    transactions: int = 4,
    lease_s: float = 120.0,
    linger_s: float = 0.0,
    linger_for_s: float = 30.0,
    keepalive: Callable[[], object] | None = None,
    release: Callable[[], object] | None = None,
    now: Clock = utcnow,
) -> Drained:
    """Process every stored webhook event that is due (oldest first; SKIP LOCKED, so
    concurrent drains share the work): up to `concurrency` events in flight, each one
    re-read from the gateway and applied under its row lock on its own. Claims are made as
    slots free up (at most `batch` events a claim): one slow re-read holds its own slot
    only, never the events claimed with it, and the events stored meanwhile are claimed
    while the others are still in flight. `concurrency` is what covers the gateway's
    round trip: 100 events/s at a 300 ms re-read keep 30 in flight. Of those, at most
    `transactions` apply their re-read at once (the rest wait for a turn before they take
    a connection): on the drain's one event loop more open transactions only interleave,
    each held open longer, and beyond the pool's size they open and close connections of
    their own. A failed event is retried with backoff, up to `PAYMENTS_TASK_MAX_RETRIES`
    attempts, then left as a dead letter with its error.

    With `linger_s`, a drain with nothing due and nothing in flight keeps looking for that
    many seconds (polls 10 ms apart, backing off to 50 ms; any event found resets the
    wait): one task serves a steady stream of events instead of one task per event. It
    lingers only during its first `linger_for_s` seconds, so a task under a steady stream
    still ends (a worker's warm shutdown waits for it). `keepalive` is called before each
    claim while the drain may still linger (the task re-arms its "drain running" flag),
    `release` once when it stops lingering, before a last claim: an event stored after
    that claim's snapshot finds the flag gone and queues a drain."""
    max_attempts = get_settings().payments_task_max_retries + 1
    sessions = async_session_factory()
    processed = failed = 0
    running: set[asyncio.Task[bool]] = set()
    gate = asyncio.Semaphore(transactions)

    async def one(event: repo.Claimed) -> bool:
        try:
            await process_claimed(provider, event=event, now=now, gate=gate)
            return True
        except Exception as exc:
            log.warning("webhook_event_failed", row_id=event.id, error=repr(exc))
            return False

    released = False
    waited, step = 0.0, _LINGER_STEP_S
    linger_until = time.monotonic() + linger_for_s
    try:
        while True:
            if keepalive is not None and not released:
                keepalive()
            room = min(batch, concurrency - len(running))
            claimed: list[repo.Claimed] = []
            if room > 0:
                async with sessions() as session, session.begin():
                    claimed = await repo.claim_events(
                        session, limit=room, lease_s=lease_s, max_attempts=max_attempts
                    )
            running.update(asyncio.create_task(one(e)) for e in claimed)
            if claimed:
                waited, step = 0.0, _LINGER_STEP_S
            if running:
                # until one finishes; while slots are free, claim again every `step` too
                full = len(running) >= concurrency
                done, running = await asyncio.wait(
                    running, timeout=None if full else step, return_when=asyncio.FIRST_COMPLETED
                )
                ok = sum(t.result() for t in done)
                processed, failed = processed + ok, failed + len(done) - ok
                if not claimed:
                    step = min(step * 2, _LINGER_MAX_STEP_S)
                continue
            if released:
                break
            if waited < linger_s and time.monotonic() < linger_until:
                delay = min(step, linger_s - waited)
                await asyncio.sleep(delay)
                waited, step = waited + delay, min(step * 2, _LINGER_MAX_STEP_S)
                continue
            released = True
            if release is not None:
                release()
    finally:
        if running:  # a claim failed: the events in flight still finish (or fail) first
            await asyncio.wait(running)
    retry_in = None
    # A drain that failed events, or found none due (a retry drain that came early), looks
    # for the next one due; a drain that processed its events cleanly need not: events
    # failed by earlier drains have their retry drain scheduled already.
    if failed or not processed:
        async with sessions() as session:
            retry_in = await repo.next_retry_in(session, max_attempts=max_attempts)
    return Drained(processed, failed, retry_in)


async def cancel_open_intent(
    provider: PaymentProvider, *, booking_id: uuid.UUID, ref: str, now: Clock = utcnow
) -> None:
    """After a booking's cancellation committed with its payment still open: cancel the
    intent at the gateway (key `cancel:{booking_id}`) so it can no longer be paid, then
    apply the gateway's state — should it have succeeded meanwhile, the re-read refunds it
    in full (the booking is no longer payable). Raises `ProviderError`."""
    try:
        await provider.cancel_intent(ref, idempotency_key=f"cancel:{booking_id}")
    finally:  # canceled, or refused because it succeeded meanwhile: apply what it is
        await sync_payment(provider, ref=ref, now=now)


async def after_cancellations(
    provider: PaymentProvider, works: list[service.GatewayWork], *, now: Clock = utcnow
) -> None:
    """The gateway's part of cancellations that committed (`service.record_cancellation`),
    run after the answer: send each pending refund (`execute_refund`), cancel each open
    intent (`cancel_open_intent`). A gateway failure is logged, never raised: the refund
    stays pending (or the intent open) and `sweep` (beat, `payments.sweep`) finishes the
    work; the cancellation itself stands."""
    for work in works:
        try:
            if work.refund_id is not None:
                await execute_refund(provider, refund_id=work.refund_id, now=now)
            elif work.intent_ref is not None:
                await cancel_open_intent(
                    provider, booking_id=work.booking_id, ref=work.intent_ref, now=now
                )
        except ProviderError as exc:
            log.warning(
                "gateway_after_cancel_deferred", booking_id=str(work.booking_id), error=str(exc)
            )


async def sweep(
    provider: PaymentProvider, *, older_than_s: float = 60.0, limit: int = 500, now: Clock = utcnow
) -> dict[str, int]:
    """Finish what the after-commit and task paths left, `older_than_s` after it was due
    (a process that died between its commit and its gateway call, a lost task message):
    stored webhook events still unprocessed (`sweep_events`), refunds still pending
    (`execute_refund`, same idempotency key: never twice), intents of canceled bookings
    still open (`cancel_open_intent`). Returns how many of each were done; failures are
    logged and left for the next sweep."""
    events = await sweep_events(provider, older_than_s=older_than_s, limit=limit, now=now)
    async with async_session_factory()() as session:
        refund_ids, intents = await repo.stale_cancellations(
            session, older_than=now() - timedelta(seconds=older_than_s), limit=limit
        )
    refunds = canceled = 0
    for refund_id in refund_ids:
        try:
            await execute_refund(provider, refund_id=refund_id, now=now)
            refunds += 1  # sent (its state may come back first by webhook) or found settled
        except ProviderError as exc:
            log.warning("refund_retry_failed", refund_id=str(refund_id), error=str(exc))
    for booking_id, ref in intents:
        try:
            await cancel_open_intent(provider, booking_id=booking_id, ref=ref, now=now)
            canceled += 1
        except ProviderError as exc:
            log.warning("intent_cancel_failed", booking_id=str(booking_id), error=str(exc))
    return {"events": events, "refunds": refunds, "intents": canceled}


@dataclass(frozen=True, slots=True)
class Difference:
    """A gateway intent whose local payment is in another state, or missing. `orphan`: an
    intent with metadata `booking_id` and no local row (a crash between the gateway call
    and the commit); `fixed`: repaired (an orphan adopted and applied)."""

    payment_id: uuid.UUID | None
    ref: str
    local: str | None
    gateway: str
    fixed: bool
    booking_id: uuid.UUID | None = None
    orphan: bool = False


async def adopt_intent(provider: PaymentProvider, *, intent: Intent, now: Clock = utcnow) -> bool:
    """Give an orphan intent (metadata `booking_id`, no local row) its `payments` row —
    payer = who booked, the booking's provider and price, the service fee = the intent's
    amount less the price — then apply its state through the webhook's CAS path
    (`sync_payment`: a succeeded orphan confirms the booking, or refunds in full when the
    booking can no longer be confirmed). False when it cannot be adopted: no such booking,
    another currency or an amount below the price, or the booking already has a payment
    on another intent (that one is reported, never adopted: one live intent a booking)."""
    booking_id = _booking_id(intent)
    if booking_id is None:
        return False
    async with async_session_factory()() as session, session.begin():
        booking = await repo.booking_for_payment(session, booking_id)
        if (
            booking is None
            or booking.currency != intent.currency
            or intent.amount_minor < booking.price_minor
        ):
            return False
        row = await repo.insert_payment(
            session, booking_id=booking_id, payer_id=booking.payer_id,
            provider_id=booking.provider_id, gateway=provider.name, gateway_ref=intent.ref,
            price_minor=booking.price_minor,
            service_fee_minor=intent.amount_minor - booking.price_minor,
            amount_minor=intent.amount_minor, currency=intent.currency,
        )  # fmt: skip
        if row is None:
            other = await repo.get_payment_by_booking(session, booking_id)
            if other is None or other.gateway_ref != intent.ref:
                return False
    log.info("payment_intent_adopted", ref=intent.ref, booking_id=str(booking_id))
    await sync_payment(provider, ref=intent.ref, now=now)
    return True


async def reconcile(
    provider: PaymentProvider, *, since: datetime, fix: bool, now: Clock = utcnow
) -> list[Difference]:
    """List the gateway's intents created since `since` and report every local payment in
    another state, and every intent without a local payment; with `fix`, apply the
    gateway's state through the same CAS path as webhooks and adopt orphans
    (`adopt_intent`). Intents of credit purchases (metadata
    `credit_purchase_id`) belong to credits and are skipped; a canceled intent replaced on
    its booking by a newer one is not a difference. (Work left pending — refunds, events,
    intents of canceled bookings — is `sweep`'s.)"""
    intents = await provider.list_intents(created_since=since)
    sessions = async_session_factory()
    diffs: list[Difference] = []
    for intent in intents:
        if "credit_purchase_id" in intent.metadata:
            continue
        async with sessions() as session:
            payment = await repo.get_payment_by_ref(session, provider.name, intent.ref)
            booking_id = _booking_id(intent)
            superseded = (
                payment is None
                and booking_id is not None
                and intent.status == "canceled"
                and await repo.get_payment_by_booking(session, booking_id) is not None
            )
        if superseded:
            continue
        local = None if payment is None else payment.status
        expected = "requires_payment" if intent.status == "requires_payment" else intent.status
        if local == expected or (local == "failed" and expected == "requires_payment"):
            continue
        fixed = False
        orphan = payment is None and booking_id is not None
        if fix and payment is not None:
            applied = await sync_payment(provider, ref=intent.ref, now=now)
            fixed = applied.after != local
        elif fix and orphan:
            fixed = await adopt_intent(provider, intent=intent, now=now)
        payment_id = None if payment is None else payment.id
        diffs.append(
            Difference(payment_id, intent.ref, local, intent.status, fixed, booking_id, orphan)
        )
    return diffs


def _booking_id(intent: Intent) -> uuid.UUID | None:
    try:
        return uuid.UUID(intent.metadata["booking_id"])
    except (KeyError, ValueError):
        return None


async def sweep_events(
    provider: PaymentProvider, *, older_than_s: float = 60.0, limit: int = 1000, now: Clock = utcnow
) -> int:
    """Process stored webhook events still unprocessed `older_than_s` after receipt (a lost
    task message, a worker down). Returns how many were processed; failures stay recorded."""
    async with async_session_factory()() as session:
        ids = await repo.unprocessed_events(
            session, older_than=now() - timedelta(seconds=older_than_s), limit=limit
        )
    done = 0
    for row_id in ids:
        try:
            await process_event(provider, row_id=row_id, now=now)
            done += 1
        except Exception as exc:
            log.warning("sweep_event_failed", row_id=row_id, error=repr(exc))
    return done
