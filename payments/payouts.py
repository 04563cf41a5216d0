"""Payouts and the finance report (services: no HTTP, never commit).

A provider requests (part of) its available balance — the ledger sum of its account, per
currency; the request moves that amount to `payouts:pending` at once, under the
provider's row lock, so two requests can never together exceed the balance. An admin
approves (then it is paid by a Stripe Transfer to the provider's connected account, or
marked paid manually with a reference) or rejects (the amount returns to the balance).
Every step writes an `audit_log` row. States: pending → approved → paid | rejected
(pending → rejected too).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.exc import NoResultFound
from sqlalchemy.ext.asyncio import AsyncSession

from core import audit, outbox
from core.errors import Forbidden
from core.settings import get_settings
from payments import ledger
from payments import repository as repo
from payments.errors import (
    InsufficientBalance,
    NoPayoutAccount,
    PayoutNotFound,
    PayoutStateConflict,
)
from payments.models import Payout
from payments.schemas import FinanceReport, FinanceRow, PayoutOut, PayoutRequest
from profiles.models import User


def _snapshot(p: Payout) -> dict[str, Any]:
    return {
        "status": p.status, "gross_minor": p.gross_minor, "fee_minor": p.fee_minor,
        "net_minor": p.net_minor, "currency": p.currency, "method": p.method,
        "reference": p.reference, "transfer_ref": p.transfer_ref,
    }  # fmt: skip


async def balances(session: AsyncSession, *, provider_id: uuid.UUID) -> dict[str, int]:
    """The provider's available balance per currency (minor units)."""
    return await repo.account_balances(session, ledger.provider(provider_id))


async def request_payout(
    session: AsyncSession, *, user: User, data: PayoutRequest, profile_currency: str | None
) -> PayoutOut:
    """Request a payout of `data.amount_minor` (default: everything available) in
    `data.currency` (default: `profile_currency`). Fee: `PAYOUT_FEE_MINOR`.
    Raises `InsufficientBalance` (409) above the available balance or when the amount does
    not cover the fee, `Forbidden` (403) without a provider profile."""
    try:
        await repo.lock_provider(session, user.id)
    except NoResultFound:
        raise Forbidden("Only a provider with a profile can request a payout.") from None
    available = await balances(session, provider_id=user.id)
    currency = data.currency or profile_currency or next(iter(available), None)
    if currency is None:
        raise InsufficientBalance("There is no balance to pay out.")
    have = available.get(currency, 0)
    gross = data.amount_minor if data.amount_minor is not None else have
    fee = get_settings().payout_fee_minor
    if gross <= 0 or gross > have:
        raise InsufficientBalance(
            f"Requested {gross} {currency}; the available balance is {have}.",
            available_minor=have,
        )
    if gross <= fee:
        raise InsufficientBalance(f"The payout must exceed the payout fee ({fee} {currency}).")
    payout = await repo.insert_payout(
        session, provider_id=user.id, currency=currency, gross_minor=gross, fee_minor=fee,
        net_minor=gross - fee,
    )  # fmt: skip
    await repo.post(
        session, kind="payout_request", key=f"payout_request:{payout.id}", currency=currency,
        lines=ledger.payout_request_lines(provider_id=user.id, gross_minor=gross),
        payout_id=payout.id,
    )  # fmt: skip
    await audit.record(
        session, actor=user.id, action="payout.requested", entity_type="payout",
        entity_id=str(payout.id), after=_snapshot(payout),
    )  # fmt: skip
    return PayoutOut.model_validate(payout)


async def list_payouts(
    session: AsyncSession, *, provider_id: uuid.UUID | None, status: str | None, limit: int
) -> list[PayoutOut]:
    """Payouts newest first (one provider's, or all), optionally in one status."""
    rows = await repo.list_payouts(session, provider_id=provider_id, status=status, limit=limit)
    return [PayoutOut.model_validate(p) for p in rows]


async def _locked(session: AsyncSession, payout_id: uuid.UUID) -> Payout:
    payout = await repo.get_payout(session, payout_id, lock=True)
    if payout is None:
        raise PayoutNotFound("No payout with this id.")
    return payout


async def approve(
    session: AsyncSession, *, admin: User, payout_id: uuid.UUID, now: datetime
) -> tuple[PayoutOut, str | None]:
    """pending → approved (audited). Returns the payout and the provider's Stripe
    connected account (None: pay it manually). Raises `PayoutNotFound`, 409
    `PayoutStateConflict` when it is not pending."""
    payout = await _locked(session, payout_id)
    before = _snapshot(payout)
    moved = await repo.move_payout(
        session, payout_id, from_states=("pending",), to_state="approved",
        decided_by=admin.id, decided_at=now,
    )  # fmt: skip
    if moved is None:
        raise PayoutStateConflict(
            f"This payout is {payout.status}; only a pending one can be approved."
        )
    await audit.record(
        session, actor=admin.id, action="payout.approved", entity_type="payout",
        entity_id=str(payout_id), before=before, after=_snapshot(moved),
    )  # fmt: skip
    await outbox.emit(
        session, aggregate_type="payout", aggregate_id=str(payout_id), event_type="payout.approved",
        payload={"payout_id": str(payout_id), "provider_id": str(moved.provider_id)},
    )  # fmt: skip
    account = await repo.provider_stripe_account(session, moved.provider_id)
    return PayoutOut.model_validate(moved), account


async def reject(
    session: AsyncSession, *, admin: User, payout_id: uuid.UUID, reason: str, now: datetime
) -> PayoutOut:
    """pending or approved (not yet paid) → rejected: the amount returns to the provider's
    balance (ledger) (audited). Raises `PayoutNotFound`, `PayoutStateConflict`."""
    payout = await _locked(session, payout_id)
    before = _snapshot(payout)
    moved = await repo.move_payout(
        session, payout_id, from_states=("pending", "approved"), to_state="rejected",
        decided_by=admin.id, decided_at=now, reject_reason=reason,
    )  # fmt: skip
    if moved is None:
        raise PayoutStateConflict(f"This payout is {payout.status}; it can no longer be rejected.")
    await repo.post(
        session, kind="payout_rejected", key=f"payout_rejected:{payout_id}",
        currency=moved.currency,
        lines=ledger.payout_rejected_lines(provider_id=moved.provider_id, gross_minor=moved.gross_minor),
        payout_id=payout_id,
    )  # fmt: skip
    await audit.record(
        session, actor=admin.id, action="payout.rejected", entity_type="payout",
        entity_id=str(payout_id), before=before, after=_snapshot(moved),
    )  # fmt: skip
    return PayoutOut.model_validate(moved)


async def mark_paid(
    session: AsyncSession,
    *,
    actor: User,
    payout_id: uuid.UUID,
    method: str,
    reference: str | None,
    transfer_ref: str | None,
    gateway: str,
    now: datetime,
) -> PayoutOut:
    """approved → paid, by a Stripe Transfer (`transfer_ref`) or manually (`reference`);
    the ledger's payout transaction (net leaves the cash account, the fee stays)
    (audited). Raises `PayoutNotFound`, `PayoutStateConflict`."""
    payout = await _locked(session, payout_id)
    before = _snapshot(payout)
    moved = await repo.move_payout(
        session, payout_id, from_states=("approved",), to_state="paid", method=method,
        reference=reference, transfer_ref=transfer_ref, paid_at=now,
    )  # fmt: skip
    if moved is None:
        raise PayoutStateConflict(
            f"This payout is {payout.status}; only an approved one can be paid."
        )
    cash = ledger.cash(gateway) if method == "stripe_transfer" else ledger.MANUAL_CASH
    await repo.post(
        session, kind="payout_paid", key=f"payout_paid:{payout_id}", currency=moved.currency,
        lines=ledger.payout_paid_lines(
            cash_account=cash, gross_minor=moved.gross_minor, fee_minor=moved.fee_minor
        ),
        payout_id=payout_id,
    )  # fmt: skip
    await audit.record(
        session, actor=actor.id, action="payout.paid", entity_type="payout",
        entity_id=str(payout_id), before=before, after=_snapshot(moved),
    )  # fmt: skip
    await outbox.emit(
        session, aggregate_type="payout", aggregate_id=str(payout_id), event_type="payout.paid",
        payload={"payout_id": str(payout_id), "provider_id": str(moved.provider_id)},
    )  # fmt: skip
    return PayoutOut.model_validate(moved)


async def get_with_account(
    session: AsyncSession, *, payout_id: uuid.UUID
) -> tuple[PayoutOut, str | None]:
    """The payout and its provider's Stripe connected account. Raises `PayoutNotFound`."""
    payout = await repo.get_payout(session, payout_id)
    if payout is None:
        raise PayoutNotFound("No payout with this id.")
    account = await repo.provider_stripe_account(session, payout.provider_id)
    return PayoutOut.model_validate(payout), account


def require_account(account: str | None) -> str:
    """The connected account, or 409 `no_payout_account`."""
    if account is None:
        raise NoPayoutAccount(
            "The provider has no Stripe connected account: approve with a `reference`."
        )
    return account


async def finance_report(
    session: AsyncSession, *, from_: datetime, to: datetime, currency: str | None
) -> FinanceReport:
    """Gross, refunds, commission, service fees, provider earnings, payouts paid, credits
    sold, spent, refunded and expired, subscription fees (in `[from_, to)`), payouts
    pending and credits outstanding (the liability, at `to`), per currency, all from the
    ledger."""
    rows, balances = await repo.finance_rows(session, from_=from_, to=to, currency=currency)
    pending = {c: v for c, v in balances.items() if not c.startswith("credits:")}
    outstanding = {c[8:]: v for c, v in balances.items() if c.startswith("credits:")}
    by_currency: dict[str, FinanceRow] = {}
    for r in rows:
        cur = str(r["currency"]).strip()
        by_currency[cur] = FinanceRow(
            credits_sold_minor=int(r["credits_sold"]),
            credits_spent_minor=int(r["credits_spent"]),
            credits_refunded_minor=int(r["credits_refunded"]),
            credits_expired_minor=int(r["credits_expired"]),
            credits_outstanding_minor=outstanding.get(cur, 0),
            subscription_fees_minor=int(r["subscription_fees"]),
            currency=cur,
            gross_minor=int(r["gross"]),
            refunds_minor=int(r["refunds"]),
            commission_minor=int(r["commission"]),
            service_fees_minor=int(r["service_fees"]),
            provider_earnings_minor=int(r["provider_earnings"]),
            payouts_paid_minor=int(r["payouts_paid"]),
            payout_fees_minor=int(r["payout_fees"]),
            payouts_pending_minor=pending.get(cur, 0),
        )
    for cur in sorted(set(pending) | set(outstanding)):
        if cur not in by_currency and (pending.get(cur) or outstanding.get(cur)):
            by_currency[cur] = FinanceRow(
                currency=cur, gross_minor=0, refunds_minor=0, commission_minor=0,
                service_fees_minor=0, provider_earnings_minor=0, payouts_paid_minor=0,
                payout_fees_minor=0, payouts_pending_minor=pending.get(cur, 0),
                credits_outstanding_minor=outstanding.get(cur, 0),
            )  # fmt: skip
    return FinanceReport(
        from_=from_, to=to, currencies=[by_currency[c] for c in sorted(by_currency)]
    )
