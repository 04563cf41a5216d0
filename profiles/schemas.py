"""Pydantic schemas of the profiles domain: requests, responses and field types.

Units: money in integer minor units of an ISO 4217 currency; times RFC 3339 with a
timezone (stored UTC); coordinates WGS84 degrees; distances in km.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationInfo,
    field_validator,
)

from core.languages import is_language
from core.money import is_currency
from profiles.catalogue import is_expertise, is_subject

MAX_SLOT_DURATION = timedelta(hours=12)
MAX_REPEAT_WEEKS = 52


def _subject(slug: str) -> str:
    if not is_subject(slug):
        raise ValueError(f"unknown subject {slug!r} (see the catalogue)")
    return slug


def _expertise(slug: str) -> str:
    if not is_expertise(slug):
        raise ValueError(f"unknown expertise {slug!r} (see the catalogue)")
    return slug


def _language(code: str) -> str:
    if not is_language(code):
        raise ValueError(f"{code!r} is not an ISO 639-1 language code")
    return code


def _currency(code: str) -> str:
    if not is_currency(code):
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    return code


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


SubjectSlug = Annotated[str, AfterValidator(_subject)]
ExpertiseSlug = Annotated[str, AfterValidator(_expertise)]
LanguageCode = Annotated[str, AfterValidator(_language)]
CurrencyCode = Annotated[str, AfterValidator(_currency)]
Role = Literal["student", "parent", "tutor", "coach", "mentor", "admin"]
SelfServiceRole = Literal["student", "parent", "tutor", "coach", "mentor"]
Locale = Literal["fr", "en"]
Password = Annotated[str, Field(min_length=10, max_length=128)]
FullName = Annotated[str, Field(min_length=1, max_length=120)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# --- accounts -------------------------------------------------------------------------


class RegisterIn(_Input):
    """Self-service sign-up. `admin` cannot be chosen; an admin grants it."""

    email: EmailStr
    password: Password
    full_name: FullName
    role: SelfServiceRole
    locale: Locale = "fr"


class ChildIn(_Input):
    """A child (student) account created by its parent."""

    email: EmailStr
    password: Password
    full_name: FullName
    locale: Locale = "fr"


class UserOut(BaseModel):
    """An account as its owner and admins see it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    full_name: str
    role: Role
    locale: Locale
    active: bool
    created_at: datetime


class UserPage(BaseModel):
    """A page of accounts; pass `next_cursor` as `cursor` for the next one (null at the end)."""

    items: list[UserOut]
    next_cursor: str | None


class TokenOut(BaseModel):
    """OAuth2 token response (RFC 6749 §5.1) plus the refresh token's lifetime."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int = Field(description="Access token lifetime in seconds")
    refresh_token: str
    refresh_expires_in: int = Field(description="Refresh token lifetime in seconds")


class RefreshIn(_Input):
    """A refresh token to rotate (`/auth/refresh`) or whose family to revoke (`/auth/logout`)."""

    refresh_token: str = Field(min_length=1, max_length=200)


class AdminUserPatch(_Input):
    """What an admin may change on an account: its role, whether it is active."""

    role: Role | None = None
    active: bool | None = None


# --- profiles -------------------------------------------------------------------------


class Location(_Input):
    """A WGS84 point in degrees."""

    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lng: float = Field(ge=-180, le=180, allow_inf_nan=False)


class ProfileIn(_Input):
    """The whole provider profile (PUT). Kind-specific rules are checked by the service:
    tutors list `subjects`, coaches and mentors `expertises`; `in_person` needs a
    `location`; at least one of `online`/`in_person`."""

    display_name: str = Field(min_length=1, max_length=120)
    headline: str = Field(default="", max_length=200)
    bio: str = Field(default="", max_length=5000)
    subjects: Annotated[list[SubjectSlug], AfterValidator(_unique)] = Field(
        default_factory=list, max_length=20
    )
    expertises: Annotated[list[ExpertiseSlug], AfterValidator(_unique)] = Field(
        default_factory=list, max_length=20
    )
    languages: Annotated[list[LanguageCode], AfterValidator(_unique)] = Field(
        min_length=1, max_length=20
    )
    hourly_rate_minor: int = Field(gt=0, le=100_000_000, description="Minor units of `currency`")
    currency: CurrencyCode
    online: bool = True
    in_person: bool = False
    location: Location | None = None
    city: str | None = Field(default=None, max_length=120)
    country_code: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    service_radius_km: int | None = Field(default=None, ge=0, le=500)


class ProfilePatch(_Input):
    """Any subset of `ProfileIn`'s fields (PATCH); `null` clears an optional field."""

    display_name: str | None = Field(default=None, min_length=1, max_length=120)
    headline: str | None = Field(default=None, max_length=200)
    bio: str | None = Field(default=None, max_length=5000)
    subjects: list[str] | None = None
    expertises: list[str] | None = None
    languages: list[str] | None = None
    hourly_rate_minor: int | None = None
    currency: str | None = None
    online: bool | None = None
    in_person: bool | None = None
    location: Location | None = None
    city: str | None = None
    country_code: str | None = None
    service_radius_km: int | None = None


class ProviderFields(BaseModel):
    """What a provider's own view and its public view both show."""

    kind: Literal["tutor", "coach", "mentor"]
    display_name: str
    headline: str
    bio: str
    subjects: list[str]
    expertises: list[str]
    languages: list[str]
    hourly_rate_minor: int
    currency: str
    rating_avg: float | None
    rating_count: int
    online: bool
    in_person: bool
    location: Location | None
    city: str | None
    country_code: str | None
    service_radius_km: int | None


class ProfileOut(ProviderFields):
    """The provider's own view of its profile."""

    user_id: uuid.UUID
    kyc_status: str
    version: int
    updated_at: datetime


class PublicProviderOut(ProviderFields):
    """What anyone sees of a provider; the location is rounded to 0.01° (about 1 km)."""

    id: uuid.UUID
    verified: bool


# --- availability ---------------------------------------------------------------------


class SlotCreate(_Input):
    """One slot, or `repeat_weekly` = N weekly copies of it (N slots, all or nothing)."""

    starts_at: AwareDatetime
    ends_at: AwareDatetime
    mode: Literal["online", "in_person"] = "online"
    capacity: int = Field(default=1, ge=1, le=500, description="Seats; > 1 is a group class")
    repeat_weekly: int = Field(
        default=1, ge=1, le=MAX_REPEAT_WEEKS, description="Number of weekly occurrences"
    )
    timezone: str | None = Field(
        default=None,
        description="IANA zone (e.g. Europe/Paris) whose wall clock the weekly copies keep "
        "across daylight-saving changes; default: exact 7-day steps",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @field_validator("ends_at")
    @classmethod
    def _after_start(cls, ends_at: datetime, info: ValidationInfo) -> datetime:
        starts_at = info.data.get("starts_at")
        if starts_at is not None:
            if ends_at <= starts_at:
                raise ValueError("must be after starts_at")
            if ends_at - starts_at > MAX_SLOT_DURATION:
                raise ValueError("a slot lasts at most 12 hours")
        return ends_at


class SlotOut(BaseModel):
    """A slot; times are UTC."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    provider_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    mode: Literal["online", "in_person"]
    capacity: int
    status: Literal["open", "closed", "canceled"]
    seats_left: int = Field(
        description="Seats still bookable: capacity minus the seats of confirmed bookings "
        "and of holds that have not expired"
    )


class SlotCapacityIn(_Input):
    """A new capacity for a slot: never below the seats its bookings hold (409)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"capacity": 8}]})

    capacity: int = Field(ge=1, le=500, description="Seats; > 1 is a group class")


class SlotList(BaseModel):
    """Slots in start order."""

    items: list[SlotOut]
