"""The double-entry lines of credits (pure functions; posted through `payments.service`).

Signs as in `payments.ledger`: positive = credit (what the platform owes or earned),
negative = debit (money it holds). Credits sold are a liability until used or lapsed:

- `credit_sale` (a pack purchase, a paid monthly invoice): the gateway holds the money,
  `credits:liability` owes it back as lessons;
- `subscription_fee` (a plan granting no credits): the money is the platform's at once
  (`platform:subscriptions`);
- `credit_spend` (a booking paid with credits): the liability turns into the provider's
  earning and the platform's commission (`PLATFORM_FEE_BPS` of the credits' value);
- `credit_refund` (a canceled booking's credits given back): the reverse, in proportion;
- `credit_expiry` (credits lapsed unused): the liability becomes platform income
  (`platform:credit_breakage`).

Values are integer minor units; a grant's value is spread over its credits on running
totals (`share`), so the parts of all its spends add up exactly to the grant's value.
"""

from __future__ import annotations

import uuid

from payments.ledger import COMMISSION, Line, cash, commission, provider

LIABILITY = "credits:liability"
BREAKAGE = "platform:credit_breakage"
SUBSCRIPTIONS = "platform:subscriptions"


def share(total_value: int, total_units: int, before: int, units: int) -> int:
    """The value of `units` of `total_units` worth `total_value`, after `before` were
    taken: floor(V·(b+u)/T) - floor(V·b/T) — exact over the whole."""
    if total_units <= 0:
        return 0
    return total_value * (before + units) // total_units - total_value * before // total_units


def sale_lines(*, gateway: str, amount_minor: int, grants_credits: bool) -> list[Line]:
    """Money in for credits (a liability) or for a plan with no credits (income)."""
    target = LIABILITY if grants_credits else SUBSCRIPTIONS
    return [Line(cash(gateway), -amount_minor), Line(target, amount_minor)]


def spend_lines(*, provider_id: uuid.UUID, value_minor: int, bps: int) -> list[Line]:
    """Credits worth `value_minor` used for a lesson of `provider_id`."""
    fee = commission(value_minor, bps)
    return [
        line
        for line in (
            Line(LIABILITY, -value_minor),
            Line(provider(provider_id), value_minor - fee),
            Line(COMMISSION, fee),
        )
        if line.amount_minor
    ]


def refund_lines(
    *,
    provider_id: uuid.UUID,
    spend_value: int,
    spend_credits: int,
    before: int,
    credits: int,
    bps: int,
) -> tuple[int, list[Line]]:
    """`credits` of a spend (`spend_credits` worth `spend_value`, `before` of them already
    given back) returned to the wallet: their value and the reversing lines (commission
    taken back on running totals too)."""
    value = share(spend_value, spend_credits, before, credits)
    fee_total = commission(spend_value, bps)
    fee = share(fee_total, spend_credits, before, credits)
    lines = [
        line
        for line in (
            Line(LIABILITY, value),
            Line(provider(provider_id), -(value - fee)),
            Line(COMMISSION, -fee),
        )
        if line.amount_minor
    ]
    return value, lines


def expiry_lines(*, value_minor: int) -> list[Line]:
    """Credits worth `value_minor` lapsed unused."""
    return [Line(LIABILITY, -value_minor), Line(BREAKAGE, value_minor)] if value_minor else []
