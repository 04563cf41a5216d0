"""Every SQL statement of the credits domain. Functions take the caller's `AsyncSession`
and never commit. Wallet rows are locked `FOR UPDATE` in expiry order (one order for every
writer, so concurrent spends queue instead of deadlocking)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, literal, null, select, text, tuple_, union_all, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from credits.models import (
    CreditCost,
    CreditGrant,
    CreditPlan,
    CreditPlanPrice,
    CreditPurchase,
    CreditSpend,
    CreditSubscription,
)

# --- catalogue -------------------------------------------------------------------------


async def list_plans(session: AsyncSession, *, active_only: bool = False) -> Sequence[CreditPlan]:
    """Plans and packs by kind, then code."""
    stmt = select(CreditPlan).order_by(CreditPlan.kind.desc(), CreditPlan.code)
    if active_only:
        stmt = stmt.where(CreditPlan.active)
    return (await session.execute(stmt)).scalars().all()


async def get_plan(
    session: AsyncSession, *, plan_id: uuid.UUID | None = None, code: str | None = None,
    lock: bool = False,
) -> CreditPlan | None:  # fmt: skip
    """The plan by id or code (row-locked when `lock`), or None."""
    stmt = select(CreditPlan)
    stmt = stmt.where(CreditPlan.id == plan_id) if plan_id else stmt.where(CreditPlan.code == code)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def insert_plan(session: AsyncSession, **values: Any) -> CreditPlan | None:
    """Insert a plan; None when the code is taken."""
    stmt = insert(CreditPlan).values(**values).on_conflict_do_nothing().returning(CreditPlan)
    return (await session.execute(stmt)).scalar_one_or_none()


async def update_plan(session: AsyncSession, plan_id: uuid.UUID, **values: Any) -> CreditPlan:
    """Update a plan's fields."""
    stmt = (
        update(CreditPlan)
        .where(CreditPlan.id == plan_id)
        .values(updated_at=func.now(), **values)
        .returning(CreditPlan)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one()


async def prices_of(
    session: AsyncSession, plan_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[CreditPlanPrice]]:
    """The prices of the plans, by plan, by currency."""
    stmt = (
        select(CreditPlanPrice)
        .where(CreditPlanPrice.plan_id.in_(list(plan_ids)))
        .order_by(CreditPlanPrice.currency)
    )
    out: dict[uuid.UUID, list[CreditPlanPrice]] = {}
    for p in (await session.execute(stmt)).scalars().all():
        out.setdefault(p.plan_id, []).append(p)
    return out


async def upsert_price(
    session: AsyncSession, *, plan_id: uuid.UUID, currency: str, amount_minor: int
) -> None:
    """Set a plan's price in a currency; a changed amount forgets its Stripe Price."""
    stmt = insert(CreditPlanPrice).values(
        plan_id=plan_id, currency=currency, amount_minor=amount_minor
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[CreditPlanPrice.plan_id, CreditPlanPrice.currency],
        set_={
            "amount_minor": stmt.excluded.amount_minor,
            "stripe_price_ref": text(
                "CASE WHEN credit_plan_prices.amount_minor = excluded.amount_minor"
                " THEN credit_plan_prices.stripe_price_ref END"
            ),
        },
    )
    await session.execute(stmt)


async def set_product_ref(session: AsyncSession, plan_id: uuid.UUID, ref: str) -> None:
    """Record the plan's Stripe Product."""
    await session.execute(
        update(CreditPlan).where(CreditPlan.id == plan_id).values(stripe_product_ref=ref)
    )


async def set_price_ref(session: AsyncSession, plan_id: uuid.UUID, currency: str, ref: str) -> None:
    """Record the Stripe Price of a plan's price."""
    await session.execute(
        update(CreditPlanPrice)
        .where(CreditPlanPrice.plan_id == plan_id, CreditPlanPrice.currency == currency)
        .values(stripe_price_ref=ref)
    )


async def list_costs(session: AsyncSession) -> Sequence[CreditCost]:
    """The cost table by type and length."""
    stmt = select(CreditCost).order_by(CreditCost.service_type, CreditCost.max_minutes)
    return (await session.execute(stmt)).scalars().all()


async def replace_costs(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Replace the whole cost table."""
    await session.execute(delete(CreditCost))
    if rows:
        await session.execute(insert(CreditCost), rows)


async def cost_for(session: AsyncSession, *, service_type: str, minutes: int) -> int | None:
    """Credits per seat of a `service_type` slot of `minutes` (None: no row covers it)."""
    stmt = (
        select(CreditCost.credits)
        .where(CreditCost.service_type == service_type, CreditCost.max_minutes >= minutes)
        .order_by(CreditCost.max_minutes)
        .limit(1)
    )
    value = (await session.execute(stmt)).scalar_one_or_none()
    return None if value is None else int(value)


# --- customers -------------------------------------------------------------------------

_GET_CUSTOMER = text("SELECT customer_ref FROM billing_customers WHERE user_id = :u")
_PUT_CUSTOMER = text(
    "INSERT INTO billing_customers (user_id, gateway, customer_ref) VALUES (:u, :g, :r)"
    " ON CONFLICT (user_id) DO NOTHING"
)


async def customer_ref(session: AsyncSession, user_id: uuid.UUID) -> str | None:
    """The user's gateway customer, or None."""
    value = (await session.execute(_GET_CUSTOMER, {"u": user_id})).scalar_one_or_none()
    return None if value is None else str(value)


async def save_customer(session: AsyncSession, user_id: uuid.UUID, gateway: str, ref: str) -> None:
    """Remember the user's gateway customer (first writer wins: same key, same customer)."""
    await session.execute(_PUT_CUSTOMER, {"u": user_id, "g": gateway, "r": ref})


# --- purchases -------------------------------------------------------------------------


async def insert_purchase(session: AsyncSession, **values: Any) -> CreditPurchase:
    """Insert a pack purchase (pending)."""
    stmt = insert(CreditPurchase).values(**values).returning(CreditPurchase)
    return (await session.execute(stmt)).scalar_one()


async def get_purchase(
    session: AsyncSession, purchase_id: uuid.UUID, *, lock: bool = False
) -> CreditPurchase | None:
    """The purchase (row-locked when `lock`), or None."""
    stmt = select(CreditPurchase).where(CreditPurchase.id == purchase_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def update_purchase(
    session: AsyncSession, purchase_id: uuid.UUID, **values: Any
) -> CreditPurchase:
    """Update a purchase's fields (call under its row lock)."""
    stmt = (
        update(CreditPurchase)
        .where(CreditPurchase.id == purchase_id)
        .values(updated_at=func.now(), **values)
        .returning(CreditPurchase)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one()


# --- subscriptions ---------------------------------------------------------------------

LIVE = ("incomplete", "active", "past_due", "unpaid")


async def insert_subscription(session: AsyncSession, **values: Any) -> CreditSubscription:
    """Insert a subscription row (raises `IntegrityError` on a second live one)."""
    stmt = insert(CreditSubscription).values(**values).returning(CreditSubscription)
    return (await session.execute(stmt)).scalar_one()


async def get_subscription(
    session: AsyncSession, *, sub_id: uuid.UUID | None = None, ref: str | None = None,
    lock: bool = False,
) -> CreditSubscription | None:  # fmt: skip
    """The subscription by id or gateway ref (row-locked when `lock`), or None."""
    stmt = select(CreditSubscription)
    if sub_id is not None:
        stmt = stmt.where(CreditSubscription.id == sub_id)
    else:
        stmt = stmt.where(CreditSubscription.gateway_ref == ref)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def update_subscription(
    session: AsyncSession, sub_id: uuid.UUID, **values: Any
) -> CreditSubscription:
    """Update a subscription's fields (call under its row lock)."""
    stmt = (
        update(CreditSubscription)
        .where(CreditSubscription.id == sub_id)
        .values(updated_at=func.now(), **values)
        .returning(CreditSubscription)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one()


async def live_subscriptions(
    session: AsyncSession, user_id: uuid.UUID
) -> Sequence[CreditSubscription]:
    """Live subscriptions the user pays for or benefits from, newest first."""
    stmt = (
        select(CreditSubscription)
        .where(
            (CreditSubscription.owner_id == user_id) | (CreditSubscription.student_id == user_id),
            CreditSubscription.status.in_(LIVE),
        )
        .order_by(CreditSubscription.created_at.desc())
    )
    return (await session.execute(stmt)).scalars().all()


async def subscriptions_due(session: AsyncSession, *, now: datetime, limit: int) -> list[str]:
    """Gateway refs of live subscriptions whose recorded period has ended by `now` (their
    renewal's events may have been missed)."""
    stmt = (
        select(CreditSubscription.gateway_ref)
        .where(
            CreditSubscription.status.in_(LIVE),
            CreditSubscription.gateway_ref.is_not(None),
            CreditSubscription.current_period_end <= now,
        )
        .order_by(CreditSubscription.current_period_end)
        .limit(limit)
    )
    return [str(r) for r in (await session.execute(stmt)).scalars().all()]


async def plan_codes(
    session: AsyncSession, plan_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, CreditPlan]:
    """Plans by id."""
    stmt = select(CreditPlan).where(CreditPlan.id.in_(list(plan_ids)))
    return {p.id: p for p in (await session.execute(stmt)).scalars().all()}


# --- grants and spends -----------------------------------------------------------------


async def insert_grant(session: AsyncSession, **values: Any) -> CreditGrant | None:
    """Insert a grant unless its `source_key` was granted before (then None)."""
    stmt = (
        insert(CreditGrant)
        .values(remaining=values["credits"], **values)
        .on_conflict_do_nothing(index_elements=[CreditGrant.source_key])
        .returning(CreditGrant)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def wallet_grants(
    session: AsyncSession, owner_id: uuid.UUID, *, now: datetime, lock: bool = True
) -> Sequence[CreditGrant]:
    """The wallet's unexpired grants with credits left, earliest expiry first, row-locked
    `FOR UPDATE` in that order when `lock` (the spend path)."""
    stmt = (
        select(CreditGrant)
        .where(
            CreditGrant.owner_id == owner_id,
            CreditGrant.remaining > 0,
            CreditGrant.expires_at > now,
        )
        .order_by(CreditGrant.expires_at, CreditGrant.id)
        .execution_options(populate_existing=True)
    )
    if lock:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalars().all()


async def take(session: AsyncSession, grant_id: uuid.UUID, credits: int) -> None:
    """`remaining -= credits` (the CHECK refuses a negative balance)."""
    await session.execute(
        update(CreditGrant)
        .where(CreditGrant.id == grant_id)
        .values(remaining=CreditGrant.remaining - credits)
        .execution_options(synchronize_session=False)
    )


async def set_remaining(session: AsyncSession, grant_id: uuid.UUID, remaining: int) -> None:
    """`remaining = value` computed by the caller (only the race-control test's unlocked
    path uses it: a lost update without the row lock)."""
    await session.execute(
        update(CreditGrant)
        .where(CreditGrant.id == grant_id)
        .values(remaining=remaining)
        .execution_options(synchronize_session=False)
    )


async def insert_spend(session: AsyncSession, **values: Any) -> CreditSpend:
    """Insert a spend row."""
    stmt = insert(CreditSpend).values(**values).returning(CreditSpend)
    return (await session.execute(stmt)).scalar_one()


async def booking_spends(
    session: AsyncSession, booking_id: uuid.UUID, *, lock: bool = False
) -> list[tuple[CreditSpend, CreditGrant]]:
    """The booking's usage spends with their grants, latest expiry first (row-locked)."""
    stmt = (
        select(CreditSpend, CreditGrant)
        .join(CreditGrant, CreditGrant.id == CreditSpend.grant_id)
        .where(CreditSpend.booking_id == booking_id, CreditSpend.type == "USAGE")
        .order_by(CreditGrant.expires_at.desc(), CreditGrant.id.desc())
        .execution_options(populate_existing=True)
    )
    if lock:
        stmt = stmt.with_for_update(of=CreditSpend)
    return [(s, g) for s, g in (await session.execute(stmt)).all()]


async def add_refunded(session: AsyncSession, spend_id: uuid.UUID, credits: int) -> None:
    """Count `credits` of a usage as given back."""
    await session.execute(
        update(CreditSpend)
        .where(CreditSpend.id == spend_id)
        .values(refunded=CreditSpend.refunded + credits)
        .execution_options(synchronize_session=False)
    )


async def balance(
    session: AsyncSession, owner_id: uuid.UUID, *, now: datetime
) -> tuple[int, datetime | None, int]:
    """(unexpired credits, the earliest expiry, credits expiring then)."""
    grants = await wallet_grants(session, owner_id, now=now, lock=False)
    total = sum(g.remaining for g in grants)
    if not grants:
        return 0, None, 0
    first = grants[0].expires_at
    return total, first, sum(g.remaining for g in grants if g.expires_at == first)


async def lapsed_grants(
    session: AsyncSession, *, now: datetime, limit: int
) -> Sequence[CreditGrant]:
    """Grants expired at `now` with credits left, row-locked, skipping those a concurrent
    job (or a spend) holds."""
    stmt = (
        select(CreditGrant)
        .where(CreditGrant.remaining > 0, CreditGrant.expires_at <= now)
        .order_by(CreditGrant.expires_at, CreditGrant.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalars().all()


async def expiring_unnotified(
    session: AsyncSession, *, now: datetime, until: datetime, limit: int
) -> Sequence[CreditGrant]:
    """Grants with credits left expiring in `(now, until]` whose owner was not told yet."""
    stmt = (
        select(CreditGrant)
        .where(
            CreditGrant.remaining > 0,
            CreditGrant.expires_at > now,
            CreditGrant.expires_at <= until,
            CreditGrant.expiry_notified_at.is_(None),
        )
        .order_by(CreditGrant.expires_at, CreditGrant.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalars().all()


async def mark_notified(session: AsyncSession, grant_ids: list[uuid.UUID], now: datetime) -> None:
    """Remember that the owners of these grants were told of the expiry."""
    if grant_ids:
        await session.execute(
            update(CreditGrant)
            .where(CreditGrant.id.in_(grant_ids))
            .values(expiry_notified_at=now)
            .execution_options(synchronize_session=False)
        )


async def history(
    session: AsyncSession,
    owner_id: uuid.UUID,
    *,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Any]:
    """The wallet's movements (grants: +credits; spends: -credits), newest first, keyset
    after `(at, id)`. Rows: id, type, credits, at, expires_at, booking_id."""
    grants = select(
        CreditGrant.id.label("id"), CreditGrant.type.label("type"),
        CreditGrant.credits.label("credits"), CreditGrant.granted_at.label("at"),
        CreditGrant.expires_at.label("expires_at"), CreditGrant.booking_id.label("booking_id"),
    ).where(CreditGrant.owner_id == owner_id)  # fmt: skip
    spends = select(
        CreditSpend.id, CreditSpend.type, (-CreditSpend.credits).label("credits"),
        CreditSpend.created_at, null().label("expires_at"), CreditSpend.booking_id,
    ).where(CreditSpend.owner_id == owner_id)  # fmt: skip
    u = union_all(grants, spends).subquery()
    stmt = select(u).order_by(u.c.at.desc(), u.c.id.desc()).limit(limit)
    if after is not None:
        stmt = stmt.where(tuple_(u.c.at, u.c.id) < tuple_(literal(after[0]), literal(after[1])))
    return list((await session.execute(stmt)).all())
