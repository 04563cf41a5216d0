"""Pydantic schemas of the credits domain.

Units: credits are whole lessons; money integer minor units of an ISO 4217 currency
(upper case); times RFC 3339, UTC.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from core.money import MINOR_UNIT_EXPONENT

PlanKind = Literal["plan", "pack"]
ServiceType = Literal["online", "in_person", "group"]
TransactionType = Literal["MONTHLY_ALLOCATION", "PURCHASE", "USAGE", "REFUND", "EXPIRATION"]
SubscriptionStatus = Literal[
    "incomplete", "active", "past_due", "unpaid", "canceled", "incomplete_expired"
]


def _known_currency(code: str) -> str:
    if code not in MINOR_UNIT_EXPONENT:
        raise ValueError(f"{code} is not an ISO 4217 currency")
    return code


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("NUL characters are not allowed")
    return text


CurrencyCode = Annotated[
    str,
    Field(pattern=r"^[A-Z]{3}$", description="ISO 4217, upper case"),
    AfterValidator(_known_currency),
]

_PLAN_ID = "5b0c7a8e-1f2d-4c3b-9a8e-7d6c5b4a3f21"


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PriceIn(_Input):
    """A price: `amount_minor` minor units of `currency`."""

    currency: CurrencyCode
    amount_minor: int = Field(gt=0, le=10_000_000_00)


class PriceOut(BaseModel):
    """A plan's price in one currency (minor units)."""

    model_config = ConfigDict(from_attributes=True)

    currency: str
    amount_minor: int


class PlanCreate(_Input):
    """A plan (monthly, `credits` granted each paid month; 0 for access only) or a pack
    (bought once, `credits` > 0), with at least one price."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"code": "HYBRIDE", "kind": "plan", "name": "Hybride", "credits": 4,
                 "prices": [{"currency": "EUR", "amount_minor": 9900}]},
            ]
        },
    )  # fmt: skip

    code: str = Field(pattern=r"^[A-Z][A-Z0-9_]{1,39}$")
    kind: PlanKind
    name: Annotated[str, AfterValidator(_no_nul)] = Field(min_length=1, max_length=120)
    description: Annotated[str, AfterValidator(_no_nul)] | None = Field(
        default=None, max_length=1000
    )
    credits: int = Field(ge=0, le=1000)
    validity_months: int = Field(default=12, ge=1, le=60, description="Life of granted credits")
    active: bool = True
    prices: list[PriceIn] = Field(min_length=1, max_length=20)

    @model_validator(mode="after")
    def _pack_grants(self) -> PlanCreate:
        if self.kind == "pack" and self.credits < 1:
            raise ValueError("a pack grants at least one credit")
        if len({p.currency for p in self.prices}) != len(self.prices):
            raise ValueError("one price per currency")
        return self


class PlanPatch(_Input):
    """Change a plan: any field given; `prices` replaces the amounts of the currencies it
    names and adds new ones (a price already used by a subscription keeps its Stripe Price
    until the amount changes, then a new Stripe Price is made)."""

    name: Annotated[str, AfterValidator(_no_nul)] | None = Field(
        default=None, min_length=1, max_length=120
    )
    description: Annotated[str, AfterValidator(_no_nul)] | None = Field(
        default=None, max_length=1000
    )
    credits: int | None = Field(default=None, ge=0, le=1000)
    validity_months: int | None = Field(default=None, ge=1, le=60)
    active: bool | None = None
    prices: list[PriceIn] | None = Field(default=None, min_length=1, max_length=20)


class PlanOut(BaseModel):
    """A plan or pack of the catalogue."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"id": _PLAN_ID, "code": "HYBRIDE", "kind": "plan", "name": "Hybride",
                 "description": "4 lesson credits a month", "credits": 4,
                 "billing_interval": "month", "validity_months": 12, "active": True,
                 "prices": [{"currency": "EUR", "amount_minor": 9900}]},
            ]
        }
    )  # fmt: skip

    id: uuid.UUID
    code: str
    kind: PlanKind
    name: str
    description: str | None
    credits: int
    billing_interval: Literal["month"] | None
    validity_months: int
    active: bool
    prices: list[PriceOut]


class PlanList(BaseModel):
    """Plans and packs, by kind then code."""

    items: list[PlanOut]


class CreditCostRow(_Input):
    """One seat of a `service_type` slot lasting at most `max_minutes` costs `credits`."""

    service_type: ServiceType
    max_minutes: int = Field(ge=1, le=1440)
    credits: int = Field(ge=1, le=100)


class CreditCostTable(_Input):
    """The whole cost table (a PUT replaces it). A slot costs, per seat, the row of its
    type (`group` when its capacity is above 1, else its mode) with the smallest
    `max_minutes` ≥ its length; none matching: it cannot be paid with credits."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"items": [{"service_type": "online", "max_minutes": 60, "credits": 1},
                           {"service_type": "group", "max_minutes": 90, "credits": 1}]}
            ]
        },
    )  # fmt: skip

    items: list[CreditCostRow] = Field(max_length=100)

    @model_validator(mode="after")
    def _unique(self) -> CreditCostTable:
        keys = [(r.service_type, r.max_minutes) for r in self.items]
        if len(set(keys)) != len(keys):
            raise ValueError("one row per (service_type, max_minutes)")
        return self


class PurchaseCreate(_Input):
    """Buy a pack (`plan_code` of kind pack) in `currency`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"plan_code": "PACK_5", "currency": "EUR"}]},
    )

    plan_code: str = Field(pattern=r"^[A-Z][A-Z0-9_]{1,39}$")
    currency: CurrencyCode


class PurchaseOut(BaseModel):
    """A pack purchase and what the client needs to pay it (Stripe.js confirms the
    PaymentIntent with `client_secret`); credits arrive when the payment succeeds."""

    id: uuid.UUID
    plan_code: str
    credits: int
    amount_minor: int
    currency: str
    status: Literal["pending", "succeeded", "failed", "canceled"]
    client_secret: str | None


class NextExpiry(BaseModel):
    """The earliest expiry among unexpired credits and how many expire then."""

    expires_at: datetime
    credits: int


class BalanceOut(BaseModel):
    """The caller's wallet: unexpired credits, and the next expiry (None: no credits)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"balance": 7, "next_expiry": {"expires_at": "2031-03-01T12:00:00Z",
                                               "credits": 3}}
            ]
        }
    )  # fmt: skip

    balance: int
    next_expiry: NextExpiry | None


class TransactionOut(BaseModel):
    """One credit movement: positive `credits` for MONTHLY_ALLOCATION, PURCHASE and
    REFUND (`expires_at` of the grant), negative for USAGE (`booking_id`) and
    EXPIRATION."""

    id: uuid.UUID
    type: TransactionType
    credits: int
    at: datetime
    expires_at: datetime | None
    booking_id: uuid.UUID | None


class TransactionPage(BaseModel):
    """Newest first; pass `next_cursor` as `cursor` for the next page."""

    items: list[TransactionOut]
    next_cursor: str | None


class SubscriptionCreate(_Input):
    """Subscribe to a plan in `currency`, for `student_id` (a parent names its linked
    child; a student omits it), paid with the Stripe PaymentMethod `payment_method`
    (the id Stripe.js returned; `pm_card_visa` in test mode)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"plan_code": "HYBRIDE", "currency": "EUR",
                          "payment_method": "pm_card_visa"}]
        },
    )  # fmt: skip

    plan_code: str = Field(pattern=r"^[A-Z][A-Z0-9_]{1,39}$")
    currency: CurrencyCode
    student_id: uuid.UUID | None = None
    payment_method: str = Field(default="pm_card_visa", pattern=r"^pm_[A-Za-z0-9_]{1,100}$")


class SubscriptionOut(BaseModel):
    """A subscription as its payer sees it (Stripe's status names)."""

    id: uuid.UUID
    plan_code: str
    student_id: uuid.UUID
    owner_id: uuid.UUID
    currency: str
    amount_minor: int
    credits_per_period: int
    status: SubscriptionStatus
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None


class SubscriptionList(BaseModel):
    """The caller's live subscriptions (as payer or as student)."""

    items: list[SubscriptionOut]
