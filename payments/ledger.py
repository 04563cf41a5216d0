"""The double-entry rules: which accounts each money movement touches, and by how much.

Pure functions (no SQL): the service posts the lines they return through the repository.
Amounts are signed integer minor units — positive = credit (what the platform owes or
earned), negative = debit (money the platform holds) — so every transaction sums to zero
and a provider's balance is the plain sum of its account (a database trigger refuses an
unbalanced transaction at commit).

Accounts (one currency per line):

- `cash:{gateway}` — money held at the gateway (`cash:stripe`): a payment debits it, a
  refund or a Stripe transfer credits it; `cash:manual` — payouts paid outside the gateway;
- `provider:{user_id}` — what the platform owes the provider (earnings less payouts);
- `platform:commission` (PLATFORM_FEE_BPS of the price), `platform:service_fee`
  (`service_fee`: SERVICE_FEE_BPS of the price plus the currency's SERVICE_FEE_MINOR, added
  to the price), `platform:payout_fee` (PAYOUT_FEE_MINOR);
- `payouts:pending` — payouts requested and not yet paid or rejected.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

COMMISSION = "platform:commission"
SERVICE_FEE = "platform:service_fee"
PAYOUT_FEE = "platform:payout_fee"
PAYOUTS_PENDING = "payouts:pending"
MANUAL_CASH = "cash:manual"


def cash(gateway: str) -> str:
    """The account of money held at `gateway` (`cash:stripe`)."""
    return f"cash:{gateway}"


def provider(user_id: uuid.UUID) -> str:
    """The account of what the platform owes the provider `user_id`."""
    return f"provider:{user_id}"


@dataclass(frozen=True, slots=True)
class Line:
    """One signed ledger line (positive = credit)."""

    account: str
    amount_minor: int


def commission(price_minor: int, bps: int) -> int:
    """The platform's commission on a price: floor(price * bps / 10,000)."""
    return price_minor * bps // 10_000


def service_fee(*, price_minor: int, currency: str, bps: int, fixed: Mapping[str, int]) -> int:
    """The service fee the payer pays on top of `price_minor` (minor units of `currency`):
    floor(price * bps / 10,000) plus the currency's fixed part (`fixed[currency]`, 0 when
    not listed). Both parts are in the currency's own minor units, so a rate scales with
    the price whatever its decimals (0 for XOF, 3 for TND) and the fixed part is set per
    currency. The caller rounds it down to what the gateway can move
    (`PaymentProvider.representable`)."""
    return price_minor * bps // 10_000 + fixed.get(currency, 0)


@dataclass(frozen=True, slots=True)
class Split:
    """How a payment's captured amount is shared: `earning + commission + service_fee =
    amount` (all minor units)."""

    amount: int
    earning: int
    commission: int
    service_fee: int


def split(*, price_minor: int, service_fee_minor: int, bps: int) -> Split:
    """The split of a payment of `price_minor + service_fee_minor`."""
    fee = commission(price_minor, bps)
    return Split(
        amount=price_minor + service_fee_minor,
        earning=price_minor - fee,
        commission=fee,
        service_fee=service_fee_minor,
    )


def _nonzero(lines: list[Line]) -> list[Line]:
    return [line for line in lines if line.amount_minor]


def payment_lines(*, gateway: str, provider_id: uuid.UUID, parts: Split) -> list[Line]:
    """A captured payment: the gateway holds the money; the provider earns its share, the
    platform its commission and the service fee."""
    return _nonzero(
        [
            Line(cash(gateway), -parts.amount),
            Line(provider(provider_id), parts.earning),
            Line(COMMISSION, parts.commission),
            Line(SERVICE_FEE, parts.service_fee),
        ]
    )


def refund_lines(
    *, gateway: str, provider_id: uuid.UUID, parts: Split, refunded_before: int, amount: int
) -> list[Line]:
    """A refund of `amount` after `refunded_before` was already refunded: the money leaves
    the gateway, taken back from the service fee, the commission and the provider in
    proportion. Allocating on the running total makes the parts of all partial refunds add
    up exactly to the payment's parts when everything is refunded."""
    total = refunded_before + amount

    def share(part: int, upto: int) -> int:
        return upto * part // parts.amount

    fee = share(parts.service_fee, total) - share(parts.service_fee, refunded_before)
    comm = share(parts.commission, total) - share(parts.commission, refunded_before)
    earning = amount - fee - comm
    return _nonzero(
        [
            Line(cash(gateway), amount),
            Line(provider(provider_id), -earning),
            Line(COMMISSION, -comm),
            Line(SERVICE_FEE, -fee),
        ]
    )


def payout_request_lines(*, provider_id: uuid.UUID, gross_minor: int) -> list[Line]:
    """A payout requested: the amount leaves the provider's available balance."""
    return [Line(provider(provider_id), -gross_minor), Line(PAYOUTS_PENDING, gross_minor)]


def payout_paid_lines(*, cash_account: str, gross_minor: int, fee_minor: int) -> list[Line]:
    """A payout paid: `net` leaves the cash account, the platform keeps the payout fee."""
    return _nonzero(
        [
            Line(PAYOUTS_PENDING, -gross_minor),
            Line(cash_account, gross_minor - fee_minor),
            Line(PAYOUT_FEE, fee_minor),
        ]
    )


def payout_rejected_lines(*, provider_id: uuid.UUID, gross_minor: int) -> list[Line]:
    """A payout rejected: the amount returns to the provider's balance."""
    return [Line(PAYOUTS_PENDING, -gross_minor), Line(provider(provider_id), gross_minor)]
