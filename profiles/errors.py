"""Errors of the profiles domain (accounts, profiles, availability), with stable codes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.errors import AppError, Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed


class InvalidCredentials(Unauthorized):
    """401 `invalid_credentials`: unknown email or wrong password (never says which)."""

    code = "invalid_credentials"
    title = "Invalid credentials"


class AccountDisabled(Forbidden):
    """403 `account_disabled`: the account was deactivated by an administrator."""

    code = "account_disabled"
    title = "Account disabled"


class RefreshTokenReused(Unauthorized):
    """401 `refresh_token_reused`: a rotated refresh token came back; its family is revoked."""

    code = "refresh_token_reused"
    title = "Refresh token reused"


class TooManyLoginAttempts(AppError):
    """429 `too_many_login_attempts`, with `Retry-After` in seconds."""

    status = 429
    code = "too_many_login_attempts"
    title = "Too many login attempts"


class EmailTaken(Conflict):
    """409 `email_taken`: an account already uses this email address."""

    code = "email_taken"
    title = "Email already registered"


class ProfileNotFound(NotFound):
    """404 `profile_not_found`: no (active) provider profile with this id."""

    code = "profile_not_found"
    title = "Profile not found"


class ProfileRequired(Conflict):
    """409 `profile_required`: the provider must create its profile first (PUT /profiles/me)."""

    code = "profile_required"
    title = "Profile required"


class SlotNotFound(NotFound):
    """404 `slot_not_found`: no open slot with this id."""

    code = "slot_not_found"
    title = "Slot not found"


class SlotOverlap(Conflict):
    """409 `slot_overlap`: the slot overlaps another open slot of the same provider."""

    code = "slot_overlap"
    title = "Slot overlaps"


class SlotHasBookings(Conflict):
    """409 `slot_has_bookings`: the slot holds booked seats; cancel it with its bookings
    (`?cancel_bookings=true`) instead."""

    code = "slot_has_bookings"
    title = "Slot has bookings"


class CapacityBelowBooked(Conflict):
    """409 `capacity_below_booked`: a slot's capacity cannot go below its booked seats
    (`seats_taken` in the body)."""

    code = "capacity_below_booked"
    title = "Capacity below booked seats"


class UserNotFound(NotFound):
    """404 `user_not_found`."""

    code = "user_not_found"
    title = "User not found"


class RoleChangeRefused(Conflict):
    """409 `role_change_refused`: the change would orphan a profile or lock out the actor."""

    code = "role_change_refused"
    title = "Role change refused"


def field_errors(errors: Iterable[tuple[str, str]], *, location: str = "body") -> ValidationFailed:
    """A 422 `validation_error` naming each `(param, message)` like request validation does."""
    items: list[dict[str, Any]] = [
        {"param": param, "in": location, "message": message, "type": "value_error"}
        for param, message in errors
    ]
    names = ", ".join(dict.fromkeys(i["param"] for i in items))
    return ValidationFailed(f"Invalid request parameter(s): {names}", errors=items)
