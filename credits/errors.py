"""Errors of the credits domain, with stable codes (rendered as problem+json)."""

from __future__ import annotations

from core.errors import Conflict, NotFound, ValidationFailed


class PlanNotFound(NotFound):
    """404 `plan_not_found`: no plan or pack with this id or code (or not on sale)."""

    code = "plan_not_found"
    title = "Plan not found"


class PlanCodeTaken(Conflict):
    """409 `plan_code_taken`: another plan already has this code."""

    code = "plan_code_taken"
    title = "Plan code taken"


class CurrencyNotOffered(ValidationFailed):
    """422 `currency_not_offered`: the plan has no price in this currency."""

    code = "currency_not_offered"
    title = "Currency not offered"


class WrongPlanKind(ValidationFailed):
    """422 `wrong_plan_kind`: a pack was named where a plan is needed, or the reverse."""

    code = "wrong_plan_kind"
    title = "Wrong plan kind"


class InsufficientCredits(Conflict):
    """409 `insufficient_credits`: the wallet holds fewer unexpired credits than the
    booking costs (`needed`, `available`)."""

    code = "insufficient_credits"
    title = "Insufficient credits"


class NoCreditCost(ValidationFailed):
    """422 `no_credit_cost`: no credit cost is configured for this service type and slot
    length (the slot cannot be paid with credits)."""

    code = "no_credit_cost"
    title = "No credit cost"


class SubscriptionNotFound(NotFound):
    """404 `subscription_not_found`: no subscription with this id of the caller."""

    code = "subscription_not_found"
    title = "Subscription not found"


class SubscriptionExists(Conflict):
    """409 `subscription_exists`: the student already has a live subscription."""

    code = "subscription_exists"
    title = "Subscription exists"


class SubscriptionNotCancelable(Conflict):
    """409 `subscription_not_cancelable`: the subscription has already ended."""

    code = "subscription_not_cancelable"
    title = "Subscription not cancelable"
