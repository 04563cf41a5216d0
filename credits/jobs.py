"""Units of work of credits outside a request: webhook follow-ups (pack intents, Stripe
Billing invoices and subscriptions), the monthly allocation reconciliation, the nightly
expiry. Each re-reads the gateway's object first (webhooks are at-least-once and
unordered), then applies it in one transaction it commits; all are idempotent.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from core.db import async_session_factory
from core.logging import get_logger
from core.security import utcnow
from credits import service
from credits.billing import Billing, get_billing
from payments.provider import Intent, PaymentProvider

log = get_logger(__name__)
Clock = Callable[[], datetime]


async def sync_purchase(
    provider: PaymentProvider, *, intent: Intent, now: Clock = utcnow
) -> str | None:
    """Apply a pack's intent (already re-read by the caller); credits once on success."""
    async with async_session_factory()() as session, session.begin():
        return await service.apply_purchase(
            session, gateway=provider.name, intent=intent, now=now()
        )


async def sync_invoice(billing: Billing, *, ref: str, now: Clock = utcnow) -> bool:
    """Re-read the invoice and its subscription, apply both (a paid invoice grants its
    month once). Returns True when credits were granted by this call."""
    invoice = await billing.get_invoice(ref)
    if invoice.subscription_ref is None:
        return False
    remote = await billing.get_subscription(invoice.subscription_ref)
    async with async_session_factory()() as session, session.begin():
        grant = await service.apply_invoice(
            session, gateway=billing.name, invoice=invoice, remote=remote, now=now()
        )
    return grant is not None


async def sync_subscription(billing: Billing, *, ref: str) -> None:
    """Re-read the subscription and mirror it (status, period, cancellation)."""
    remote = await billing.get_subscription(ref)
    async with async_session_factory()() as session, session.begin():
        await service.apply_subscription(session, remote=remote)


async def sync_billing_object(
    *, kind: str, ref: str, now: Clock = utcnow, billing: Billing | None = None
) -> None:
    """The webhook dispatch of `payments.jobs.process_event` for Stripe Billing objects:
    `invoice` (`invoice.paid`, `invoice.payment_failed`) or `subscription`
    (`customer.subscription.*`)."""
    gateway = billing or get_billing()
    if kind == "invoice":
        await sync_invoice(gateway, ref=ref, now=now)
    else:
        await sync_subscription(gateway, ref=ref)


async def allocate_monthly(
    billing: Billing | None = None, *, now: Clock = utcnow, limit: int = 500
) -> int:
    """The monthly allocation's safety net (daily beat): every live subscription whose
    recorded period has ended is re-read with its invoices, and each paid invoice is
    applied (grants once per invoice: a missed `invoice.paid` is caught up; nothing is
    granted twice). Returns how many grants it made."""
    gateway = billing or get_billing()
    async with async_session_factory()() as session:
        refs = await service.subscriptions_due(session, now=now(), limit=limit)
    granted = 0
    for ref in refs:
        try:
            remote = await gateway.get_subscription(ref)
            invoices = await gateway.list_invoices(ref)
            async with async_session_factory()() as session, session.begin():
                await service.apply_subscription(session, remote=remote)
                for invoice in reversed(invoices):
                    if invoice.status == "paid":
                        grant = await service.apply_invoice(
                            session, gateway=gateway.name, invoice=invoice, remote=remote,
                            now=now(),
                        )  # fmt: skip
                        granted += grant is not None
        except Exception as exc:  # one subscription's failure never stops the others
            log.warning("credits_allocation_failed", ref=ref, error=repr(exc))
    return granted


async def expire_and_notify(*, now: Clock = utcnow, batch: int = 500) -> tuple[int, int]:
    """The nightly job: expire every lapsed grant (batches of `batch`, each its own
    transaction) and emit the week-ahead `credits.expiring` events. Returns (grants
    expired, notices emitted). Idempotent: a second run at the same time does nothing."""
    at = now()
    expired = notified = 0
    sessions = async_session_factory()
    while True:
        async with sessions() as session, session.begin():
            n = await service.expire_lapsed(session, now=at, limit=batch)
        expired += n
        if n < batch:
            break
    while True:
        async with sessions() as session, session.begin():
            n = await service.notify_expiring(session, now=at, limit=batch)
        notified += n
        if n < batch:
            break
    return expired, notified
