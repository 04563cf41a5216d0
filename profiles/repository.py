"""Every SQL statement of the profiles domain (accounts, tokens, profiles, slots).

Functions take the caller's `AsyncSession` and never commit. Integrity errors the
service maps to API errors (duplicate email, overlapping slots) are raised as
SQLAlchemy `IntegrityError` from the statement that caused them (inserts flush at once).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from geoalchemy2 import Geography, Geometry
from sqlalchemy import Row, String, and_, bindparam, cast, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from profiles.models import AvailabilitySlot, ParentChild, ProviderProfile, RefreshToken, User

# --- users ----------------------------------------------------------------------------


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    """The account with `user_id`, or None."""
    return await session.get(User, user_id)


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    """The account with `email` (case-insensitive, citext), or None."""
    return (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()


async def insert_user(
    session: AsyncSession,
    *,
    email: str,
    password_hash: str,
    full_name: str,
    role: str,
    locale: str,
) -> User:
    """Insert an account; raises `IntegrityError` (unique violation) for a taken email."""
    stmt = (
        insert(User)
        .values(
            email=email, password_hash=password_hash, full_name=full_name, role=role, locale=locale
        )
        .returning(User)
    )
    return (await session.execute(stmt)).scalar_one()


async def update_user(session: AsyncSession, user_id: uuid.UUID, **values: Any) -> User:
    """Set `values` on the account (and `updated_at`); returns the updated row."""
    stmt = (
        update(User)
        .where(User.id == user_id)
        .values(**values, updated_at=func.now())
        .returning(User)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one()


async def set_password_hash(session: AsyncSession, user_id: uuid.UUID, password_hash: str) -> None:
    """Replace the stored password hash (rehash on login with stronger parameters)."""
    await session.execute(
        update(User)
        .where(User.id == user_id)
        .values(password_hash=password_hash)
        .execution_options(synchronize_session=False)
    )


async def list_users(
    session: AsyncSession,
    *,
    role: str | None,
    q: str | None,
    after_id: uuid.UUID | None,
    limit: int,
    kyc_status: str | None = None,
) -> Sequence[User]:
    """Accounts ordered by id (keyset paging after `after_id`), filtered by role, by the
    provider profile's `kyc_status`, and by `q`, a case-insensitive substring of the
    email or the full name."""
    stmt = select(User).order_by(User.id).limit(limit)
    if role is not None:
        stmt = stmt.where(User.role == role)
    if kyc_status is not None:
        stmt = stmt.where(
            User.id.in_(
                select(ProviderProfile.user_id).where(ProviderProfile.kyc_status == kyc_status)
            )
        )
    if after_id is not None:
        stmt = stmt.where(User.id > after_id)
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(
            or_(User.email.ilike(pattern, escape="\\"), User.full_name.ilike(pattern, escape="\\"))
        )
    return (await session.execute(stmt)).scalars().all()


async def link_child(session: AsyncSession, *, parent_id: uuid.UUID, child_id: uuid.UUID) -> None:
    """Link a child account to its parent."""
    await session.execute(insert(ParentChild).values(parent_id=parent_id, child_id=child_id))


async def list_children(session: AsyncSession, parent_id: uuid.UUID) -> Sequence[User]:
    """The parent's children, oldest link first."""
    stmt = (
        select(User)
        .join(ParentChild, ParentChild.child_id == User.id)
        .where(ParentChild.parent_id == parent_id)
        .order_by(ParentChild.created_at, User.id)
    )
    return (await session.execute(stmt)).scalars().all()


# --- refresh tokens -------------------------------------------------------------------


async def insert_refresh_token(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    token_hash: str,
    created_at: datetime,
    expires_at: datetime,
) -> None:
    """Store a refresh token's hash in `family_id`."""
    await session.execute(
        insert(RefreshToken).values(
            user_id=user_id,
            family_id=family_id,
            token_hash=token_hash,
            created_at=created_at,
            expires_at=expires_at,
        )
    )


async def lock_refresh_token(session: AsyncSession, token_hash: str) -> RefreshToken | None:
    """The token row with `token_hash`, locked FOR UPDATE (serialises concurrent refreshes)."""
    stmt = select(RefreshToken).where(RefreshToken.token_hash == token_hash).with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def mark_rotated(session: AsyncSession, token_id: uuid.UUID, at: datetime) -> None:
    """Record that the token was exchanged for a successor."""
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token_id)
        .values(rotated_at=at)
        .execution_options(synchronize_session=False)
    )


async def revoke_family(session: AsyncSession, family_id: uuid.UUID, at: datetime) -> int:
    """Revoke every live token of the family; returns how many were revoked."""
    result = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=at)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def revoke_user_tokens(session: AsyncSession, user_id: uuid.UUID, at: datetime) -> int:
    """Revoke every live refresh token of the user (deactivation)."""
    result = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=at)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --- provider profiles ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfileRow:
    """A profile with its location decoded to degrees (None when it has none)."""

    profile: ProviderProfile
    lat: float | None
    lng: float | None


def _point(lat: float, lng: float) -> Any:
    return cast(func.ST_SetSRID(func.ST_MakePoint(lng, lat), 4326), Geography)


def _profile_select() -> Any:
    geom = cast(ProviderProfile.location, Geometry)
    return select(ProviderProfile, func.ST_Y(geom), func.ST_X(geom)).execution_options(
        populate_existing=True
    )


def _profile_row(row: Row[Any] | None) -> ProfileRow | None:
    if row is None:
        return None
    return ProfileRow(row[0], row[1], row[2])


async def get_profile(
    session: AsyncSession, user_id: uuid.UUID, *, active_only: bool = False
) -> ProfileRow | None:
    """The provider profile of `user_id` (None if absent, or if its account is inactive
    and `active_only`)."""
    stmt = _profile_select().where(ProviderProfile.user_id == user_id)
    if active_only:
        stmt = stmt.join(User, User.id == ProviderProfile.user_id).where(User.active.is_(True))
    return _profile_row((await session.execute(stmt)).first())


def _profile_values(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if "location" in out:
        loc = out["location"]
        out["location"] = None if loc is None else _point(loc["lat"], loc["lng"])
    return out


async def insert_profile(
    session: AsyncSession, *, user_id: uuid.UUID, kind: str, values: dict[str, Any]
) -> None:
    """Create the profile of `user_id` (version 1) from validated `values`."""
    await session.execute(
        insert(ProviderProfile).values(user_id=user_id, kind=kind, **_profile_values(values))
    )


async def update_profile(session: AsyncSession, user_id: uuid.UUID, values: dict[str, Any]) -> int:
    """Replace the given fields, bump `version`; returns the new version."""
    stmt = (
        update(ProviderProfile)
        .where(ProviderProfile.user_id == user_id)
        .values(
            **_profile_values(values),
            version=ProviderProfile.version + 1,
            updated_at=func.now(),
        )
        .returning(ProviderProfile.version)
        .execution_options(synchronize_session=False)
    )
    return int((await session.execute(stmt)).scalar_one())


_BUMP_VERSION = text(
    "UPDATE provider_profiles SET version = version + 1, updated_at = now()"
    " WHERE user_id = :user_id RETURNING version"
)


async def bump_version(session: AsyncSession, user_id: uuid.UUID) -> int | None:
    """`version = version + 1` on the profile (a child row changed); the new version, or
    None when the user has no profile. One statement built once (it runs on every hold
    that fills a slot)."""
    value = (await session.execute(_BUMP_VERSION, {"user_id": user_id})).scalar_one_or_none()
    return None if value is None else int(value)


# --- availability ---------------------------------------------------------------------


async def insert_slots(
    session: AsyncSession, provider_id: uuid.UUID, slots: Sequence[dict[str, Any]]
) -> Sequence[AvailabilitySlot]:
    """Insert all `slots` ({starts_at, ends_at, mode, capacity}) in one statement.

    Raises `IntegrityError` (exclusion violation `availability_slots_no_overlap`) when
    one overlaps another open slot of the provider; then none is inserted.
    """
    stmt = (
        insert(AvailabilitySlot)
        .values([{"provider_id": provider_id, **s} for s in slots])
        .returning(AvailabilitySlot)
    )
    rows = (await session.execute(stmt)).scalars().all()
    return sorted(rows, key=lambda s: s.starts_at)


_GET_SLOT = (
    select(AvailabilitySlot)
    .where(AvailabilitySlot.id == bindparam("slot_id"))
    .execution_options(populate_existing=True)
)
_GET_SLOT_LOCKED = _GET_SLOT.with_for_update()


async def get_slot(
    session: AsyncSession, slot_id: uuid.UUID, *, lock: bool = True
) -> AvailabilitySlot | None:
    """The slot with `slot_id` (locked FOR UPDATE unless `lock` is false), or None.

    Always re-read from the database (`populate_existing`): `seats_taken` is written by a
    trigger, so a copy already in the session may be stale."""
    stmt = _GET_SLOT_LOCKED if lock else _GET_SLOT
    return (await session.execute(stmt, {"slot_id": slot_id})).scalar_one_or_none()


async def lock_slots(session: AsyncSession, slot_ids: Sequence[uuid.UUID]) -> None:
    """Lock the slots FOR UPDATE in id order (a fixed order: concurrent lockers of several
    slots cannot deadlock each other)."""
    if slot_ids:
        await session.execute(
            select(AvailabilitySlot.id)
            .where(AvailabilitySlot.id.in_(sorted(set(slot_ids))))
            .order_by(AvailabilitySlot.id)
            .with_for_update()
        )


_SLOT_FOR_BOOKING = (
    select(
        AvailabilitySlot.provider_id,
        AvailabilitySlot.starts_at,
        AvailabilitySlot.ends_at,
        AvailabilitySlot.status,
        AvailabilitySlot.capacity,
        AvailabilitySlot.seats_taken,
        ProviderProfile.hourly_rate_minor,
        ProviderProfile.currency,
        ProviderProfile.kyc_status,
        ProviderProfile.cancel_policy,
        User.active,
    )
    .join(ProviderProfile, ProviderProfile.user_id == AvailabilitySlot.provider_id)
    .join(User, User.id == AvailabilitySlot.provider_id)
    .where(AvailabilitySlot.id == bindparam("slot_id"))
)
_SLOT_FOR_BOOKING_LOCK_TIMEOUT = _SLOT_FOR_BOOKING.add_columns(
    func.set_config("lock_timeout", bindparam("lock_timeout", type_=String), True)
)


async def slot_for_booking(
    session: AsyncSession, slot_id: uuid.UUID, *, lock_timeout_ms: int | None = None
) -> Row[Any] | None:
    """One unlocked read of what a booking needs: the slot (provider, times, status,
    capacity, seats_taken) with its provider's rate, currency, KYC status, cancellation
    policy and account state; None when the slot does not exist. With `lock_timeout_ms`,
    the same statement sets `lock_timeout` for the rest of the transaction (the slot lock
    the booking takes next), sparing a round trip. Both statements are built once."""
    if lock_timeout_ms is None:
        return (await session.execute(_SLOT_FOR_BOOKING, {"slot_id": slot_id})).first()
    params = {"slot_id": slot_id, "lock_timeout": f"{int(lock_timeout_ms)}ms"}
    return (await session.execute(_SLOT_FOR_BOOKING_LOCK_TIMEOUT, params)).first()


async def set_slot_capacity(session: AsyncSession, slot_id: uuid.UUID, capacity: int) -> None:
    """Set the slot's capacity; raises `IntegrityError` (check violation
    `availability_slots_seats_taken`) below its seats taken."""
    await session.execute(
        update(AvailabilitySlot)
        .where(AvailabilitySlot.id == slot_id)
        .values(capacity=capacity)
        .execution_options(synchronize_session=False)
    )


async def is_parent_of(session: AsyncSession, *, parent_id: uuid.UUID, child_id: uuid.UUID) -> bool:
    """True when `child_id` is linked to `parent_id` in `parent_children`."""
    stmt = select(ParentChild.child_id).where(
        ParentChild.parent_id == parent_id, ParentChild.child_id == child_id
    )
    return (await session.execute(stmt)).first() is not None


async def child_ids(session: AsyncSession, parent_id: uuid.UUID) -> list[uuid.UUID]:
    """Ids of the parent's linked children."""
    stmt = select(ParentChild.child_id).where(ParentChild.parent_id == parent_id)
    return list((await session.execute(stmt)).scalars().all())


async def set_cancel_policy(
    session: AsyncSession, user_id: uuid.UUID, policy: dict[str, Any] | None
) -> None:
    """Store the provider's cancellation policy (None: back to the platform's)."""
    await session.execute(
        update(ProviderProfile)
        .where(ProviderProfile.user_id == user_id)
        .values(cancel_policy=policy, updated_at=func.now())
        .execution_options(synchronize_session=False)
    )


async def cancel_slot(session: AsyncSession, slot_id: uuid.UUID) -> None:
    """Mark the slot `canceled` (kept for history; it no longer blocks overlaps)."""
    await session.execute(
        update(AvailabilitySlot)
        .where(AvailabilitySlot.id == slot_id)
        .values(status="canceled")
        .execution_options(synchronize_session=False)
    )


async def list_open_slots(
    session: AsyncSession, provider_id: uuid.UUID, *, start: datetime, end: datetime
) -> Sequence[AvailabilitySlot]:
    """Open slots of the provider overlapping [start, end), in start order."""
    stmt = (
        select(AvailabilitySlot)
        .where(
            and_(
                AvailabilitySlot.provider_id == provider_id,
                AvailabilitySlot.status == "open",
                AvailabilitySlot.starts_at < end,
                AvailabilitySlot.ends_at > start,
            )
        )
        .order_by(AvailabilitySlot.starts_at, AvailabilitySlot.id)
    )
    return (await session.execute(stmt)).scalars().all()


async def add_rating(
    session: AsyncSession, user_id: uuid.UUID, *, stars: int, count: int
) -> tuple[int, int, float | None, int] | None:
    """Add `stars` to `rating_sum` and `count` to `rating_count` (negative to remove) and
    derive `rating_avg` = round(sum / count, 2) (null at count 0) in ONE UPDATE, which
    also bumps `version`. Returns (rating_sum, rating_count, rating_avg, version), or None
    when the user has no profile."""
    row = (
        await session.execute(
            text(
                "UPDATE provider_profiles SET rating_sum = rating_sum + :stars,"
                " rating_count = rating_count + :count,"
                " rating_avg = CASE WHEN rating_count + :count > 0 THEN"
                " round((rating_sum + :stars)::numeric / (rating_count + :count), 2) END,"
                " version = version + 1, updated_at = now()"
                " WHERE user_id = :id"
                " RETURNING rating_sum, rating_count, rating_avg::float8, version"
            ),
            {"id": user_id, "stars": stars, "count": count},
        )
    ).one_or_none()
    return None if row is None else (int(row[0]), int(row[1]), row[2], int(row[3]))


async def set_kyc_status(
    session: AsyncSession, user_id: uuid.UUID, status: str
) -> tuple[str, str, int] | None:
    """Set the profile's `kyc_status` (bumping `version`); (before, after, version), or
    None without a profile. Locks the row (the before value is the one replaced)."""
    row = (
        await session.execute(
            text(
                "UPDATE provider_profiles p SET kyc_status = :status, version = p.version + 1,"
                " updated_at = now() FROM (SELECT user_id, kyc_status FROM provider_profiles"
                " WHERE user_id = :id FOR UPDATE) old WHERE p.user_id = old.user_id"
                " RETURNING old.kyc_status, p.kyc_status, p.version"
            ),
            {"id": user_id, "status": status},
        )
    ).one_or_none()
    return None if row is None else (str(row[0]), str(row[1]), int(row[2]))
