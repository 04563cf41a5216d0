"""Errors of the payments domain, with stable codes (rendered as problem+json)."""

from __future__ import annotations

from core.errors import AppError, Conflict, NotFound, ServiceUnavailable, ValidationFailed


class InvalidSignature(AppError):
    """400 `invalid_signature`: the webhook's signature is missing, wrong or stale."""

    status = 400
    code = "invalid_signature"
    title = "Invalid webhook signature"


class BookingNotPayable(Conflict):
    """409 `booking_not_payable`: the booking is not a pending, unexpired hold."""

    code = "booking_not_payable"
    title = "Booking cannot be paid"


class PaymentConflict(Conflict):
    """409 `payment_conflict`: the gateway holds another request under our key (the
    booking's price changed since its intent was created)."""

    code = "payment_conflict"
    title = "Payment conflict"


class AmountNotSupported(ValidationFailed):
    """422 `amount_not_supported`: the gateway cannot take this amount in this currency
    (three-decimal currencies need multiples of 10)."""

    code = "amount_not_supported"
    title = "Amount not supported"


class GatewayUnavailable(ServiceUnavailable):
    """503 `payment_gateway_unavailable`: the payment gateway did not answer; retry."""

    code = "payment_gateway_unavailable"
    title = "Payment gateway unavailable"


class GatewayRefused(AppError):
    """502 `payment_gateway_error`: the gateway refused the request."""

    status = 502
    code = "payment_gateway_error"
    title = "Payment gateway error"


class PayoutNotFound(NotFound):
    """404 `payout_not_found`."""

    code = "payout_not_found"
    title = "Payout not found"


class InsufficientBalance(Conflict):
    """409 `insufficient_balance`: more than the provider's available balance."""

    code = "insufficient_balance"
    title = "Insufficient balance"


class PayoutStateConflict(Conflict):
    """409 `payout_state_conflict`: the payout is not in a state allowing this step."""

    code = "payout_state_conflict"
    title = "Payout state conflict"


class NoPayoutAccount(Conflict):
    """409 `no_payout_account`: the provider has no Stripe connected account; pay it
    manually with a reference."""

    code = "no_payout_account"
    title = "No payout account"


class RefundTooLarge(Conflict):
    """409 `refund_exceeds_capture`: refunds would exceed what was captured."""

    code = "refund_exceeds_capture"
    title = "Refund exceeds capture"
