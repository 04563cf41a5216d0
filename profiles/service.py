"""Business rules of accounts, provider profiles and availability. No HTTP here.

Every function takes the caller's `AsyncSession` and never commits: the request (or
task) owning the unit of work commits, so a write, its version bump, its outbox event
and its audit rows commit or roll back together. Times are timezone-aware UTC; callers
pass `now` so tests control the clock.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import redis.asyncio as aioredis
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core import audit, outbox, ratelimit
from core.errors import Forbidden
from core.logging import get_logger
from core.passwords import hash_password, needs_rehash, verify_password
from core.security import InvalidToken, TokenExpired, create_access_token, hash_token
from core.security import new_refresh_token as _new_refresh_token
from core.settings import get_settings
from profiles import repository as repo
from profiles.errors import (
    AccountDisabled,
    CapacityBelowBooked,
    EmailTaken,
    InvalidCredentials,
    ProfileNotFound,
    ProfileRequired,
    RoleChangeRefused,
    SlotHasBookings,
    SlotNotFound,
    SlotOverlap,
    TooManyLoginAttempts,
    UserNotFound,
    field_errors,
)
from profiles.models import AvailabilitySlot, User
from profiles.schemas import (
    AdminUserPatch,
    ChildIn,
    Location,
    ProfileIn,
    ProfileOut,
    PublicProviderOut,
    RegisterIn,
    SlotCreate,
    SlotOut,
    UserOut,
    UserPage,
)

log = get_logger(__name__)

PROVIDER_AGGREGATE = "provider"
OVERLAP_CONSTRAINT = "availability_slots_no_overlap"
MAX_AVAILABILITY_WINDOW = timedelta(days=93)
DEFAULT_AVAILABILITY_WINDOW = timedelta(days=28)
# Verified against when the email is unknown, so both failures cost the same time.
_DUMMY_HASH = hash_password("not-a-real-password-0000")


async def _provider_event(
    session: AsyncSession,
    provider_id: uuid.UUID,
    event_type: str,
    *,
    version: int | None,
    **ids: Any,
) -> None:
    """Emit the outbox event `event_type` of the provider: keys only (`provider_id`, the
    `ids` given, the profile's `version` after the change) for the indexer to re-project."""
    await outbox.emit(
        session,
        aggregate_type=PROVIDER_AGGREGATE,
        aggregate_id=str(provider_id),
        event_type=event_type,
        payload={"provider_id": str(provider_id), **ids, "version": version},
    )


def _constraint(exc: IntegrityError) -> str | None:
    orig = exc.orig
    if isinstance(orig, psycopg.Error) and orig.diag is not None:
        return orig.diag.constraint_name
    return None


# --- accounts -------------------------------------------------------------------------


async def _create_account(
    session: AsyncSession, *, email: str, password: str, full_name: str, role: str, locale: str
) -> User:
    if await repo.get_user_by_email(session, email) is not None:
        raise EmailTaken("An account already uses this email address.")
    # argon2 costs ~0.1-1 s of CPU on purpose: off the event loop, or every request of
    # this worker waits behind it (the load test saw search P95 jump to 1.5 s on logins)
    password_hash = await asyncio.to_thread(hash_password, password)
    try:
        return await repo.insert_user(
            session,
            email=email,
            password_hash=password_hash,
            full_name=full_name,
            role=role,
            locale=locale,
        )
    except IntegrityError as exc:  # a concurrent sign-up with the same email won the race
        if _constraint(exc) == "users_email_key":
            raise EmailTaken("An account already uses this email address.") from None
        raise


async def register(session: AsyncSession, *, data: RegisterIn) -> User:
    """Create a self-service account. Raises `EmailTaken` (409)."""
    return await _create_account(
        session,
        email=str(data.email),
        password=data.password,
        full_name=data.full_name,
        role=data.role,
        locale=data.locale,
    )


async def create_child(session: AsyncSession, *, parent: User, data: ChildIn) -> User:
    """Create a student account linked to `parent`. Raises `EmailTaken` (409)."""
    child = await _create_account(
        session,
        email=str(data.email),
        password=data.password,
        full_name=data.full_name,
        role="student",
        locale=data.locale,
    )
    await repo.link_child(session, parent_id=parent.id, child_id=child.id)
    return child


async def list_children(session: AsyncSession, *, parent: User) -> list[UserOut]:
    """The parent's linked child accounts."""
    return [UserOut.model_validate(u) for u in await repo.list_children(session, parent.id)]


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    """A fresh access token and refresh token, with their lifetimes in seconds."""

    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


@dataclass(frozen=True, slots=True)
class ReuseDetected:
    """A rotated refresh token was presented again; its family has been revoked (the
    caller must commit that revocation, then answer 401 `refresh_token_reused`)."""

    family_id: uuid.UUID
    revoked: int


async def _issue(
    session: AsyncSession, *, user: User, family_id: uuid.UUID, now: datetime
) -> IssuedTokens:
    s = get_settings()
    refresh = _new_refresh_token()
    await repo.insert_refresh_token(
        session,
        user_id=user.id,
        family_id=family_id,
        token_hash=hash_token(refresh),
        created_at=now,
        expires_at=now + timedelta(seconds=s.refresh_token_ttl_s),
    )
    return IssuedTokens(
        access_token=create_access_token(user_id=user.id, role=user.role, now=now),
        expires_in=s.access_token_ttl_s,
        refresh_token=refresh,
        refresh_expires_in=s.refresh_token_ttl_s,
    )


def _account_key(email: str) -> str:
    return "login:fail:acct:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()


def _ip_key(ip: str) -> str:
    return "login:ip:" + ip


async def _check_login_limits(redis: aioredis.Redis, *, email: str, ip: str) -> bool:
    """Count this attempt for the IP and refuse when the IP or the account is over its
    limit. Returns False when Redis is unavailable (the login then fails open)."""
    s = get_settings()
    try:
        by_ip = await ratelimit.hit(redis, _ip_key(ip), s.login_rate_window_s)
        if by_ip.count > s.login_max_attempts_per_ip:
            raise TooManyLoginAttempts(
                "Too many login attempts from this address; retry later.",
                headers={"Retry-After": str(max(by_ip.retry_after_s, 1))},
            )
        by_account = await ratelimit.peek(redis, _account_key(email))
        if by_account.count >= s.login_max_failures_per_account:
            raise TooManyLoginAttempts(
                "Too many failed logins for this account; retry later.",
                headers={"Retry-After": str(max(by_account.retry_after_s, 1))},
            )
    except ratelimit.RateLimitUnavailable as exc:
        log.warning("login_rate_limit_unavailable", error=str(exc))
        return False
    return True


async def login(
    session: AsyncSession,
    redis: aioredis.Redis,
    *,
    email: str,
    password: str,
    ip: str,
    now: datetime,
) -> IssuedTokens:
    """Check the password and start a new refresh-token family.

    Throttled per client IP (every attempt counts) and per account (failures count; a
    success resets) in fixed windows of `LOGIN_RATE_WINDOW_S`: over the limit raises
    `TooManyLoginAttempts` (429) with `Retry-After`. Redis down: the limits are skipped
    and a `login_rate_limit_unavailable` warning is logged (fail open: an outage of the
    cache must not lock every user out; argon2's cost still slows guessing).
    Raises `InvalidCredentials` (401) or `AccountDisabled` (403).
    """
    limits_on = await _check_login_limits(redis, email=email, ip=ip)
    user = await repo.get_user_by_email(session, email)
    ok = await asyncio.to_thread(
        verify_password, user.password_hash if user else _DUMMY_HASH, password
    )
    if user is None or not ok:
        if limits_on:
            try:
                await ratelimit.hit(redis, _account_key(email), get_settings().login_rate_window_s)
            except ratelimit.RateLimitUnavailable as exc:
                log.warning("login_rate_limit_unavailable", error=str(exc))
        raise InvalidCredentials("Wrong email or password.")
    if not user.active:
        raise AccountDisabled("This account has been deactivated.")
    if limits_on:
        try:
            await ratelimit.reset(redis, _account_key(email))
        except ratelimit.RateLimitUnavailable as exc:
            log.warning("login_rate_limit_unavailable", error=str(exc))
    if needs_rehash(user.password_hash):
        new_hash = await asyncio.to_thread(hash_password, password)
        await repo.set_password_hash(session, user.id, new_hash)
    return await _issue(session, user=user, family_id=uuid.uuid4(), now=now)


async def refresh(
    session: AsyncSession, *, refresh_token: str, now: datetime
) -> IssuedTokens | ReuseDetected:
    """Rotate `refresh_token`: mark it used and issue a successor in the same family.

    Returns `ReuseDetected` when the token had already been rotated (the family is then
    revoked in `session`; the caller commits and answers 401). Raises `InvalidToken`
    (unknown or revoked token, inactive account) and `TokenExpired`.
    """
    token = await repo.lock_refresh_token(session, hash_token(refresh_token))
    if token is None or token.revoked_at is not None:
        raise InvalidToken("The refresh token is not valid; log in again.")
    if token.rotated_at is not None:
        revoked = await repo.revoke_family(session, token.family_id, now)
        log.warning(
            "refresh_token_reused", family_id=str(token.family_id), user_id=str(token.user_id)
        )
        return ReuseDetected(token.family_id, revoked)
    if token.expires_at <= now:
        raise TokenExpired("The refresh token has expired; log in again.")
    user = await repo.get_user(session, token.user_id)
    if user is None or not user.active:
        raise InvalidToken("The refresh token is not valid; log in again.")
    await repo.mark_rotated(session, token.id, now)
    return await _issue(session, user=user, family_id=token.family_id, now=now)


async def logout(session: AsyncSession, *, refresh_token: str, now: datetime) -> None:
    """Revoke the refresh token's whole family. Unknown tokens are ignored (idempotent).

    Access tokens already issued stay valid until they expire (≤ 15 min)."""
    token = await repo.lock_refresh_token(session, hash_token(refresh_token))
    if token is not None:
        await repo.revoke_family(session, token.family_id, now)


# --- admin ----------------------------------------------------------------------------


def _encode_cursor(user_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(user_id.bytes).decode().rstrip("=")


def _decode_cursor(cursor: str) -> uuid.UUID:
    try:
        return uuid.UUID(bytes=base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise field_errors(
            [("cursor", "not a cursor returned by this API")], location="query"
        ) from None


async def list_users(
    session: AsyncSession,
    *,
    role: str | None,
    q: str | None,
    cursor: str | None,
    limit: int,
    kyc_status: str | None = None,
) -> UserPage:
    """A page of accounts (admin), ordered by id; `cursor` continues a previous page;
    `kyc_status` keeps providers whose profile has that KYC status."""
    after = _decode_cursor(cursor) if cursor else None
    rows = await repo.list_users(
        session, role=role, q=q, after_id=after, limit=limit + 1, kyc_status=kyc_status
    )
    items = [UserOut.model_validate(u) for u in rows[:limit]]
    next_cursor = _encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return UserPage(items=items, next_cursor=next_cursor)


async def admin_update_user(
    session: AsyncSession, *, actor: User, user_id: uuid.UUID, patch: AdminUserPatch, now: datetime
) -> User:
    """Change an account's role and/or active flag, writing one audit row per change.

    Deactivation revokes the account's refresh tokens and, for a provider, bumps its
    profile version and emits `provider.deactivated` (reactivation: `provider.reactivated`)
    so the search indexes drop or restore it. Raises `UserNotFound` (404) and
    `RoleChangeRefused` (409: acting on oneself, or a role that does not match an existing
    provider profile).
    """
    user = await repo.get_user(session, user_id)
    if user is None:
        raise UserNotFound("No account with this id.")
    changes = patch.model_dump(exclude_unset=True, exclude_none=True)
    role = changes.get("role", user.role)
    active = changes.get("active", user.active)
    if role == user.role and active == user.active:
        return user
    if user.id == actor.id:
        raise RoleChangeRefused("An administrator cannot change their own role or status.")
    before = {"role": user.role, "active": user.active}
    profile = await repo.get_profile(session, user.id)
    if role != user.role and profile is not None and role != profile.profile.kind:
        raise RoleChangeRefused(
            f"This account has a {profile.profile.kind} profile; its role cannot become {role}."
        )
    updated = await repo.update_user(session, user.id, role=role, active=active)
    entity = {"entity_type": "user", "entity_id": str(user.id)}
    if role != before["role"]:
        await audit.record(
            session, actor=actor.id, action="user.role_changed",
            before={"role": before["role"]}, after={"role": role}, **entity,
        )  # fmt: skip
    if active != before["active"]:
        await audit.record(
            session, actor=actor.id, action="user.activated" if active else "user.deactivated",
            before={"active": before["active"]}, after={"active": active}, **entity,
        )  # fmt: skip
        if not active:
            await repo.revoke_user_tokens(session, user.id, now)
        if profile is not None:
            version = await repo.bump_version(session, user.id)
            await _provider_event(
                session,
                user.id,
                "provider.reactivated" if active else "provider.deactivated",
                version=version,
            )
    return updated


# --- profiles -------------------------------------------------------------------------


def _location(
    lat: float | None, lng: float | None, *, digits: int | None = None
) -> Location | None:
    if lat is None or lng is None:
        return None
    if digits is not None:
        lat, lng = round(lat, digits), round(lng, digits)
    return Location(lat=lat, lng=lng)


def _provider_fields(row: repo.ProfileRow, *, location_digits: int | None) -> dict[str, Any]:
    """The `ProviderFields` of a profile row, the location rounded to `location_digits`
    decimal degrees (None: exact)."""
    p = row.profile
    return dict(
        kind=p.kind, display_name=p.display_name, headline=p.headline, bio=p.bio,
        subjects=list(p.subjects), expertises=list(p.expertises), languages=list(p.languages),
        hourly_rate_minor=p.hourly_rate_minor, currency=p.currency,
        rating_avg=p.rating_avg, rating_count=p.rating_count, online=p.online,
        in_person=p.in_person, location=_location(row.lat, row.lng, digits=location_digits),
        city=p.city, country_code=p.country_code, service_radius_km=p.service_radius_km,
    )  # fmt: skip


def _profile_out(row: repo.ProfileRow) -> ProfileOut:
    p = row.profile
    return ProfileOut(
        **_provider_fields(row, location_digits=None),
        user_id=p.user_id,
        kyc_status=p.kyc_status,
        version=p.version,
        updated_at=p.updated_at,
    )


def _check_profile_rules(kind: str, data: ProfileIn) -> None:
    errors: list[tuple[str, str]] = []
    if kind == "tutor":
        if not data.subjects:
            errors.append(("subjects", "a tutor lists at least one subject"))
        if data.expertises:
            errors.append(("expertises", "tutors list subjects, not expertises"))
    else:
        if not data.expertises:
            errors.append(("expertises", f"a {kind} lists at least one expertise"))
        if data.subjects:
            errors.append(("subjects", f"a {kind} lists expertises, not subjects"))
    if not (data.online or data.in_person):
        errors.append(("online", "offer online or in-person sessions (or both)"))
    if data.in_person and data.location is None:
        errors.append(("location", "required for in-person sessions"))
    if errors:
        raise field_errors(errors)


async def get_my_profile(session: AsyncSession, *, user: User) -> ProfileOut:
    """The provider's own profile. Raises `ProfileNotFound` (404) before the first PUT."""
    row = await repo.get_profile(session, user.id)
    if row is None:
        raise ProfileNotFound("No profile yet; create it with PUT /api/v1/profiles/me.")
    return _profile_out(row)


async def put_profile(session: AsyncSession, *, user: User, data: ProfileIn) -> ProfileOut:
    """Create or replace the provider's profile; emits `provider.created`/`provider.updated`.

    The profile's `kind` is the account's role. Raises `ValidationFailed` (422) naming
    the field for kind-specific rules (subjects vs expertises, location for in-person).
    """
    _check_profile_rules(user.role, data)
    values = data.model_dump()
    existing = await repo.get_profile(session, user.id)
    if existing is None:
        await repo.insert_profile(session, user_id=user.id, kind=user.role, values=values)
        event, version = "provider.created", 1
    else:
        version = await repo.update_profile(session, user.id, values)
        event = "provider.updated"
    await _provider_event(session, user.id, event, version=version)
    row = await repo.get_profile(session, user.id)
    assert row is not None
    return _profile_out(row)


def _validation_from_pydantic(exc: ValidationError) -> Exception:
    return field_errors(
        (".".join(str(p) for p in e["loc"]) or "body", str(e["msg"])) for e in exc.errors()
    )


async def patch_profile(
    session: AsyncSession, *, user: User, changes: dict[str, Any]
) -> ProfileOut:
    """Apply `changes` (a subset of the profile's fields) and re-validate the whole.

    Raises `ProfileNotFound` (404) before the first PUT and `ValidationFailed` (422).
    Emits `provider.updated`.
    """
    current = await repo.get_profile(session, user.id)
    if current is None:
        raise ProfileNotFound("No profile yet; create it with PUT /api/v1/profiles/me.")
    merged = (
        _profile_out(current).model_dump(include=set(ProfileIn.model_fields), mode="json") | changes
    )
    try:
        data = ProfileIn.model_validate(merged)
    except ValidationError as exc:
        raise _validation_from_pydantic(exc) from None
    _check_profile_rules(current.profile.kind, data)
    values = data.model_dump(include=set(changes))
    version = await repo.update_profile(session, user.id, values)
    await _provider_event(session, user.id, "provider.updated", version=version)
    row = await repo.get_profile(session, user.id)
    assert row is not None
    return _profile_out(row)


async def get_public_provider(
    session: AsyncSession, *, provider_id: uuid.UUID
) -> PublicProviderOut:
    """The public view of an active provider. Raises `ProfileNotFound` (404)."""
    row = await repo.get_profile(session, provider_id, active_only=True)
    if row is None:
        raise ProfileNotFound("No provider with this id.")
    p = row.profile
    return PublicProviderOut(
        **_provider_fields(row, location_digits=2),
        id=p.user_id,
        verified=p.kyc_status == "verified",
    )


# --- availability ---------------------------------------------------------------------


def expand_weekly(data: SlotCreate) -> list[tuple[datetime, datetime]]:
    """The (starts_at, ends_at) pairs of `data`: `repeat_weekly` copies one week apart.

    With `timezone`, copies keep the local wall-clock time of that zone (10:00 stays
    10:00 across a daylight-saving change); without, they are exact 7-day steps.
    """
    duration = data.ends_at - data.starts_at
    if data.timezone is None:
        starts = [data.starts_at + timedelta(weeks=k) for k in range(data.repeat_weekly)]
    else:
        zone = ZoneInfo(data.timezone)
        local = data.starts_at.astimezone(zone).replace(tzinfo=None)
        starts = [
            (local + timedelta(weeks=k)).replace(tzinfo=zone) for k in range(data.repeat_weekly)
        ]
    return [(s, s + duration) for s in starts]


def _slot_out(slot: AvailabilitySlot) -> SlotOut:
    return SlotOut.model_validate(slot)


async def create_slots(
    session: AsyncSession, *, user: User, data: SlotCreate, now: datetime
) -> list[SlotOut]:
    """Add one slot or a weekly series, all or nothing, and emit `availability.created`.

    Raises `ProfileRequired` (409) without a profile, `ValidationFailed` (422) for a
    start in the past or a mode the profile does not offer, and `SlotOverlap` (409) when
    any slot overlaps an open one of the provider (the database exclusion constraint
    decides, so concurrent requests cannot both win).
    """
    profile = await repo.get_profile(session, user.id)
    if profile is None:
        raise ProfileRequired("Create your profile (PUT /api/v1/profiles/me) before adding slots.")
    if data.starts_at < now:
        raise field_errors([("starts_at", "must not be in the past")])
    if data.mode == "in_person" and not profile.profile.in_person:
        raise field_errors([("mode", "the profile does not offer in-person sessions")])
    if data.mode == "online" and not profile.profile.online:
        raise field_errors([("mode", "the profile does not offer online sessions")])
    rows = [
        {"starts_at": s, "ends_at": e, "mode": data.mode, "capacity": data.capacity}
        for s, e in expand_weekly(data)
    ]
    try:
        slots = await repo.insert_slots(session, user.id, rows)
    except IntegrityError as exc:
        if _constraint(exc) == OVERLAP_CONSTRAINT:
            raise SlotOverlap("The slot overlaps another open slot of yours.") from None
        raise
    version = await repo.bump_version(session, user.id)
    await _provider_event(
        session,
        user.id,
        "availability.created",
        version=version,
        slot_ids=[str(s.id) for s in slots],
    )
    return [_slot_out(s) for s in slots]


async def cancel_slot(session: AsyncSession, *, user: User, slot_id: uuid.UUID) -> None:
    """Cancel one of the provider's open slots; emits `availability.deleted`.

    Raises `SlotNotFound` (404) for an unknown or already canceled slot, `Forbidden`
    (403) for another provider's slot and `SlotHasBookings` (409) while bookings hold
    seats of it (`seats_taken` > 0; `booking.service.cancel_slot` cancels them first).
    """
    slot = await repo.get_slot(session, slot_id)
    if slot is None or slot.status == "canceled":
        raise SlotNotFound("No open slot with this id.")
    if slot.provider_id != user.id:
        raise Forbidden("This slot belongs to another provider.")
    if slot.seats_taken > 0:
        raise SlotHasBookings(
            "Bookings hold seats of this slot; cancel it with its bookings"
            " (DELETE …?cancel_bookings=true).",
            seats_taken=slot.seats_taken,
        )
    await repo.cancel_slot(session, slot_id)
    version = await repo.bump_version(session, user.id)
    await _provider_event(
        session, user.id, "availability.deleted", version=version, slot_id=str(slot_id)
    )


async def list_availability(
    session: AsyncSession,
    *,
    provider_id: uuid.UUID,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
) -> list[SlotOut]:
    """Open slots of an active provider overlapping [start, end).

    Defaults: `start` = now, `end` = start + 28 days; the window is at most 93 days.
    Raises `ProfileNotFound` (404) and `ValidationFailed` (422 naming `to`).
    """
    start = start or now
    end = end or start + DEFAULT_AVAILABILITY_WINDOW
    if end <= start:
        raise field_errors([("to", "must be after from")], location="query")
    if end - start > MAX_AVAILABILITY_WINDOW:
        raise field_errors([("to", "the window spans at most 93 days")], location="query")
    if await repo.get_profile(session, provider_id, active_only=True) is None:
        raise ProfileNotFound("No provider with this id.")
    slots: Sequence[AvailabilitySlot] = await repo.list_open_slots(
        session, provider_id, start=start, end=end
    )
    return [_slot_out(s) for s in slots]


# --- what the booking domain asks of profiles -------------------------------------------


async def lock_slot(
    session: AsyncSession, slot_id: uuid.UUID, *, lock: bool = True
) -> AvailabilitySlot | None:
    """The slot, locked `FOR UPDATE` for the rest of the caller's transaction (the row lock
    booking takes before counting capacity), or None. `lock=False` reads it unlocked (the
    race-control run of the booking tests only)."""
    return await repo.get_slot(session, slot_id, lock=lock)


async def lock_slots(session: AsyncSession, slot_ids: Sequence[uuid.UUID]) -> None:
    """Lock several slots `FOR UPDATE`, in id order (no deadlock between such lockers)."""
    await repo.lock_slots(session, slot_ids)


@dataclass(frozen=True, slots=True)
class BookingTerms:
    """What booking needs of a provider: whether it can be booked, its hourly rate (minor
    units of `currency`) and its own cancellation policy (None = the platform's)."""

    bookable: bool
    hourly_rate_minor: int
    currency: str
    cancel_policy: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class SlotTerms:
    """A slot as booking sees it before locking it: its provider, times (UTC), status,
    capacity and `seats_taken` (as read, unlocked), and the provider's `BookingTerms`."""

    slot_id: uuid.UUID
    provider_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    status: str
    capacity: int
    seats_taken: int
    terms: BookingTerms


async def slot_for_booking(
    session: AsyncSession, slot_id: uuid.UUID, *, lock_timeout_ms: int | None = None
) -> SlotTerms | None:
    """The slot and its provider's booking terms in one unlocked read (None: no such
    slot). What may change concurrently (status, seats) is re-read under the lock. With
    `lock_timeout_ms`, the read also sets the transaction's `lock_timeout` for that lock."""
    row = await repo.slot_for_booking(session, slot_id, lock_timeout_ms=lock_timeout_ms)
    if row is None:
        return None
    return SlotTerms(
        slot_id=slot_id, provider_id=row.provider_id, starts_at=row.starts_at,
        ends_at=row.ends_at, status=row.status, capacity=row.capacity,
        seats_taken=row.seats_taken,
        terms=BookingTerms(
            bookable=bool(row.active) and row.kyc_status != "rejected",
            hourly_rate_minor=row.hourly_rate_minor, currency=row.currency,
            cancel_policy=row.cancel_policy,
        ),
    )  # fmt: skip


async def is_parent_of(session: AsyncSession, *, parent_id: uuid.UUID, child_id: uuid.UUID) -> bool:
    """True when `child_id` is a child account linked to the parent `parent_id`."""
    return await repo.is_parent_of(session, parent_id=parent_id, child_id=child_id)


async def child_ids(session: AsyncSession, *, parent_id: uuid.UUID) -> list[uuid.UUID]:
    """Ids of the parent's linked child accounts."""
    return await repo.child_ids(session, parent_id)


async def touch_provider(session: AsyncSession, *, provider_id: uuid.UUID) -> int | None:
    """Bump the provider's `version` (something its search document shows changed, e.g. a
    slot filled up): the indexer's version guards (PostgreSQL upsert, OpenSearch external
    versions) then accept the re-projection. Returns the new version (None: no profile)."""
    return await repo.bump_version(session, provider_id)


async def get_cancel_policy(session: AsyncSession, *, user: User) -> dict[str, Any] | None:
    """The provider's stored cancellation policy (None = the platform's). Raises
    `ProfileRequired` (409) before the profile exists."""
    row = await repo.get_profile(session, user.id)
    if row is None:
        raise ProfileRequired("Create your profile (PUT /api/v1/profiles/me) first.")
    return row.profile.cancel_policy


async def set_cancel_policy(
    session: AsyncSession, *, user: User, policy: dict[str, Any] | None
) -> None:
    """Store the provider's cancellation policy, already validated by the booking domain
    (None: back to the platform's), with an audit row. Raises `ProfileRequired` (409)."""
    before = await get_cancel_policy(session, user=user)
    await repo.set_cancel_policy(session, user.id, policy)
    await audit.record(
        session, actor=user.id, action="provider.cancel_policy_changed",
        entity_type="provider", entity_id=str(user.id),
        before={"cancel_policy": before}, after={"cancel_policy": policy},
    )  # fmt: skip


async def set_slot_capacity(
    session: AsyncSession, *, user: User, slot_id: uuid.UUID, capacity: int
) -> SlotOut:
    """Change the capacity of one of the provider's open slots; emits
    `availability.updated`.

    Raises `SlotNotFound` (404), `Forbidden` (403, another provider's slot) and
    `CapacityBelowBooked` (409) below the seats its bookings hold — decided by the
    database's `CHECK (seats_taken BETWEEN 0 AND capacity)`, so a concurrent booking
    cannot slip under a shrink. Lapsed holds count until swept: call through
    `booking.service.resize_slot`, which sweeps them first.
    """
    slot = await repo.get_slot(session, slot_id)
    if slot is None or slot.status != "open":
        raise SlotNotFound("No open slot with this id.")
    if slot.provider_id != user.id:
        raise Forbidden("This slot belongs to another provider.")
    if capacity < slot.seats_taken:
        raise CapacityBelowBooked(
            f"{slot.seats_taken} seat(s) are booked; the capacity cannot go below that.",
            seats_taken=slot.seats_taken,
        )
    try:
        async with session.begin_nested():
            await repo.set_slot_capacity(session, slot_id, capacity)
    except IntegrityError as exc:
        if _constraint(exc) == "availability_slots_seats_taken":
            raise CapacityBelowBooked(
                "Seats were booked meanwhile; the capacity cannot go below them."
            ) from None
        raise
    version = await repo.bump_version(session, user.id)
    await _provider_event(
        session, user.id, "availability.updated", version=version, slot_id=str(slot_id)
    )
    updated = await repo.get_slot(session, slot_id)
    assert updated is not None
    return _slot_out(updated)


# --- ratings and KYC (driven by reviews/ and admin/) ----------------------------------


@dataclass(frozen=True, slots=True)
class RatingState:
    """A provider's rating after a change: `rating_sum` (integer stars of the counted
    reviews), `rating_count`, `rating_avg` = round(sum / count, 2) (None at 0) and the
    profile's new `version`."""

    rating_sum: int
    rating_count: int
    rating_avg: float | None
    version: int


async def add_rating(
    session: AsyncSession, *, provider_id: uuid.UUID, stars: int, count: int
) -> RatingState | None:
    """Incremental rating update in the caller's transaction (O(1): no recount): add
    `stars` to the sum and `count` to the count (negative to remove a review), derive the
    average, bump `version` (so both search sinks accept the re-projection) and emit
    `provider.rating_changed` (keys only). None when there is no such profile."""
    row = await repo.add_rating(session, provider_id, stars=stars, count=count)
    if row is None:
        return None
    state = RatingState(*row)
    await _provider_event(session, provider_id, "provider.rating_changed", version=state.version)
    return state


async def set_kyc_status(
    session: AsyncSession, *, provider_id: uuid.UUID, status: str
) -> tuple[str, str] | None:
    """Set the provider's `kyc_status` (`pending|verified|rejected`), bump `version` and
    emit `provider.kyc_changed` (only verified providers are searchable: the indexer moves
    the provider into or out of search). Returns (before, after); None without a
    profile."""
    row = await repo.set_kyc_status(session, provider_id, status)
    if row is None:
        return None
    before, after, version = row
    await _provider_event(session, provider_id, "provider.kyc_changed", version=version)
    return before, after


async def get_user(session: AsyncSession, *, user_id: uuid.UUID) -> User | None:
    """The account `user_id`, or None."""
    return await repo.get_user(session, user_id)


async def provider_kind(session: AsyncSession, *, provider_id: uuid.UUID) -> str | None:
    """The provider profile's kind (`tutor|coach|mentor`), or None without a profile."""
    row = await repo.get_profile(session, provider_id)
    return None if row is None else str(row.profile.kind)
