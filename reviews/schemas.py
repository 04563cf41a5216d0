"""Pydantic schemas of reviews and session evaluations (the API's shapes)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Stars = Annotated[int, Field(ge=1, le=5, description="Whole stars, 1 (worst) to 5 (best)")]
Comment = Annotated[str, Field(min_length=1, max_length=4000)]
Locale = Literal["fr", "en"]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ReviewIn(_Input):
    """A review of a completed booking by its student or the student's parent."""

    rating: Stars
    comment: Comment | None = None
    locale: Locale = Field(description="Language of the comment (ISO 639-1)")


class ReviewPatch(_Input):
    """An edit within `REVIEW_EDIT_WINDOW_S` (48 h) of posting; absent fields unchanged."""

    rating: Stars | None = None
    comment: Comment | None = None
    locale: Locale | None = None


class ReplyIn(_Input):
    """The provider's one public answer to a review."""

    text: Comment


class HideIn(_Input):
    """A moderator's reason for hiding a review (kept in the review and the audit log)."""

    reason: Annotated[str, Field(min_length=1, max_length=1000)]


class ReviewOut(BaseModel):
    """A review as the public sees it (hidden reviews are listed to no one but admins)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    provider_id: uuid.UUID
    booking_id: uuid.UUID | None = Field(description="Null for a seeded review")
    source: Literal["booking", "seed"]
    rating: int
    comment: str | None
    locale: str
    reply: str | None
    replied_at: datetime | None
    hidden: bool = False
    created_at: datetime
    updated_at: datetime


class RatingSummary(BaseModel):
    """The provider's displayed rating: the plain average of its counted reviews (2
    decimals, null when none) with their count and the histogram `{stars: count}`
    ("1".."5", every key present)."""

    rating_avg: float | None
    rating_count: int
    histogram: dict[str, int]


class ReviewPage(BaseModel):
    """Visible reviews, newest first; pass `next_cursor` as `cursor` for the next page."""

    items: list[ReviewOut]
    next_cursor: str | None
    rating: RatingSummary


# --- session evaluations ----------------------------------------------------------------


class QuizPayload(_Input):
    """A quiz result: `score` out of `max_score` points, the topics it covered."""

    score: Annotated[int, Field(ge=0)]
    max_score: Annotated[int, Field(ge=1, le=10_000)]
    topics: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=50
    )

    @model_validator(mode="after")
    def _score_within_max(self) -> QuizPayload:
        if self.score > self.max_score:
            raise ValueError("score must not exceed max_score")
        return self


class FeedbackPayload(_Input):
    """Written feedback: strengths, points to improve and a summary."""

    summary: Annotated[str, Field(min_length=1, max_length=4000)]
    strengths: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(
        default_factory=list, max_length=20
    )
    improvements: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(
        default_factory=list, max_length=20
    )


class MilestonePayload(_Input):
    """A program milestone: its title, whether it was reached, the next steps."""

    title: Annotated[str, Field(min_length=1, max_length=200)]
    achieved: bool
    next_steps: Annotated[str, Field(max_length=4000)] | None = None


class QuizEvaluation(_Input):
    type: Literal["quiz"]
    payload: QuizPayload


class FeedbackEvaluation(_Input):
    type: Literal["feedback"]
    payload: FeedbackPayload


class MilestoneEvaluation(_Input):
    type: Literal["milestone"]
    payload: MilestonePayload


EvaluationIn = Annotated[
    QuizEvaluation | FeedbackEvaluation | MilestoneEvaluation, Field(discriminator="type")
]


class EvaluationOut(BaseModel):
    """A recorded evaluation (`payload` in the shape of its `type`)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    booking_id: uuid.UUID
    provider_id: uuid.UUID
    student_id: uuid.UUID
    type: Literal["quiz", "feedback", "milestone"]
    payload: QuizPayload | FeedbackPayload | MilestonePayload
    created_at: datetime
