"""Errors of the reviews domain, each with a stable `code` (problem+json, RFC 9457)."""

from __future__ import annotations

from core.errors import Conflict, Forbidden, NotFound


class ReviewNotFound(NotFound):
    """404 `review_not_found`: no review with this id (for this caller)."""

    code = "review_not_found"
    title = "Review not found"


class ProviderNotFound(NotFound):
    """404 `provider_not_found`: no provider profile with this id."""

    code = "provider_not_found"
    title = "Provider not found"


class NotReviewer(Forbidden):
    """403 `not_reviewer`: only the booking's student (or its parent) reviews it; only the
    review's author edits it."""

    code = "not_reviewer"
    title = "Not the reviewer"


class NotProvider(Forbidden):
    """403 `not_provider`: only the booking's (or review's) provider may do this."""

    code = "not_provider"
    title = "Not the provider"


class BookingNotCompleted(Conflict):
    """409 `booking_not_completed`: only a completed booking is reviewed or evaluated."""

    code = "booking_not_completed"
    title = "Booking not completed"


class ReviewWindowClosed(Conflict):
    """409 `review_window_closed`: more than `REVIEW_WINDOW_S` (14 days) after the
    session ended."""

    code = "review_window_closed"
    title = "Review window closed"


class ReviewExists(Conflict):
    """409 `review_exists`: this booking already has its review (edit it with PATCH)."""

    code = "review_exists"
    title = "Review exists"


class ReviewLocked(Conflict):
    """409 `review_locked`: the edit window (`REVIEW_EDIT_WINDOW_S`, 48 h) is over, or the
    review is hidden."""

    code = "review_locked"
    title = "Review locked"


class ReplyExists(Conflict):
    """409 `reply_exists`: the provider already answered this review."""

    code = "reply_exists"
    title = "Reply exists"


class ReviewAlreadyHidden(Conflict):
    """409 `review_already_hidden`: the review is hidden already."""

    code = "review_already_hidden"
    title = "Review already hidden"


class NotCoachingProgram(Conflict):
    """409 `not_coaching_program`: session evaluations belong to coach and mentor
    programs (the provider is a tutor)."""

    code = "not_coaching_program"
    title = "Not a coaching program"
