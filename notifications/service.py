"""Business rules of notifications. No HTTP; never commits (the consumer's batch, the task
or the request owns the unit of work).

Pipeline (sync, psycopg, called by `notifications.consumer` and `notifications.tasks`):

- `notify_event(conn, event)`: an outbox event → its recipients (`recipients_of`) → for
  each, one row per enabled channel that has an address, rendered once in the recipient's
  language and time zone. Rows are keyed `evt:{outbox id}:{user}:{channel}[:{device}]`,
  so a replayed batch inserts nothing. Returns the ids to deliver (not in-app rows).
- `send_reminders(conn, now)`: confirmed bookings entering the 24 h / 1 h window,
  claimed once per (booking, window) in `notification_reminders`.
- `deliver(conn, id, channel)`: one send attempt of a row: claim (CAS) and commit, send,
  record the outcome and commit; transient failures are retried after
  `backoff(attempt)`, until `NOTIFICATIONS_MAX_ATTEMPTS`, then dead-lettered; permanent
  ones are dead-lettered at once.

API (async, SQLAlchemy): preferences, the in-app inbox, dead letters, queue statistics.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import uuid
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
from sqlalchemy.ext.asyncio import AsyncSession

from core.logging import get_logger
from core.settings import get_settings
from notifications import catalog
from notifications import repository as repo
from notifications.channels import Channel, Message, PermanentChannelError, TransientChannelError
from notifications.errors import (
    InvalidCursor,
    InvalidPhone,
    InvalidTimeZone,
    NotificationNotFound,
    PushDeviceNotFound,
    TransactionalEmail,
)
from notifications.render import render
from notifications.schemas import (
    ContactIn,
    ContactOut,
    DeadLetterOut,
    DeadLetterPage,
    NotificationOut,
    NotificationPage,
    PreferenceItem,
    Preferences,
    PushDeviceIn,
    PushDeviceOut,
)

log = get_logger(__name__)

# --- who hears about what ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Audience:
    """One recipient of an event: user id, the role they read it in, template data."""

    user_id: uuid.UUID
    role: str
    data: dict[str, Any]


def _booking_audience(
    conn: psycopg.Connection[Any],
    booking_id: str,
    roles: Sequence[str],
    extra: dict[str, Any] | None = None,
    *,
    parents: bool = True,
) -> list[Audience]:
    """The parties of a booking in `roles` (`student`, `provider`); with `parents`, the
    student's parents (`parent_children`) hear what the student hears, in role `parent`,
    each with their own language, zone and preferences."""
    facts = repo.booking_facts(conn, booking_id)
    if facts is None:
        return []
    data = {**facts, **(extra or {})}
    ids = {"student": facts["student_id"], "provider": facts["provider_id"]}
    out = [Audience(ids[r], r, data) for r in roles]
    if parents and "student" in roles:
        out += [Audience(p, "parent", data) for p in repo.parents_of(conn, facts["student_id"])]
    return out


BOOKING_ROLES: dict[str, tuple[str, ...]] = {
    "booking.held": ("student",),
    "booking.confirmed": ("student", "provider"),
    "booking.canceled": ("student", "provider"),
    "booking.expired": ("student",),
}


def recipients_of(
    conn: psycopg.Connection[Any], kind: str, payload: dict[str, Any]
) -> list[Audience]:
    """The recipients of outbox event `kind` with `payload` (keys only), with the facts
    their templates need read from SQL now. [] for kinds nobody hears about, or when the
    referenced row is gone."""
    if kind in BOOKING_ROLES and payload.get("booking_id"):
        return _booking_audience(conn, payload["booking_id"], BOOKING_ROLES[kind])
    if kind in ("payment.succeeded", "payment.failed") and payload.get("payment_id"):
        pay = repo.payment_facts(conn, payload["payment_id"])
        if pay is None:
            return []
        found = _booking_audience(conn, str(pay["booking_id"]), ("student",), pay, parents=False)
        return [Audience(pay["payer_id"], "student", a.data) for a in found]
    if kind == "refund.succeeded" and payload.get("refund_id"):
        ref = repo.refund_facts(conn, payload["refund_id"])
        if ref is None:
            return []
        # the refund goes back to whoever paid (a parent paying for a child included): the
        # payer hears of it, in the student's wording, as of the payment
        found = _booking_audience(conn, str(ref["booking_id"]), ("student",), ref, parents=False)
        return [Audience(ref["payer_id"], "student", a.data) for a in found]
    if kind in ("payout.approved", "payout.paid") and payload.get("payout_id"):
        po = repo.payout_facts(conn, payload["payout_id"])
        return [Audience(po["provider_id"], "provider", po)] if po else []
    if kind == "review.posted" and payload.get("review_id"):
        # the reviews domain emits keys only: the rating and comment are read from the row
        rev = repo.review_facts(conn, payload["review_id"])
        if rev is None:
            return []
        data = {"rating": rev["rating"], "comment": rev["comment"]}
        return [Audience(uuid.UUID(str(rev["provider_id"])), "provider", data)]
    return []


def _enabled(r: repo.Recipient, kind: str, channel: str) -> bool:
    if not catalog.may_disable(kind, channel):
        return True
    return r.prefs.get(channel, catalog.default_enabled(kind, channel))


def _addresses(r: repo.Recipient, channel: str) -> list[tuple[str | None, str]]:
    """(address, dedupe suffix) per destination of `channel`."""
    if channel == "email":
        return [(r.email, "")]
    if channel == "sms":
        return [(r.phone, "")] if r.phone else []
    if channel == "push":
        return [(t, ":" + hashlib.sha256(t.encode()).hexdigest()[:16]) for t in r.push_tokens]
    return [(None, "")]


def notify(
    conn: psycopg.Connection[Any], audience: Audience, kind: str, *, dedupe_base: str
) -> list[uuid.UUID]:
    """Insert the rows of one recipient (rendered once); returns the ids to deliver."""
    r = repo.recipient(conn, audience.user_id, kind)
    if r is None:
        return []
    channels = [c for c in catalog.CHANNELS if _enabled(r, kind, c) and _addresses(r, c)]
    if not channels:
        return []
    data = {**audience.data, "name": r.name, "role": audience.role}
    msg = render(kind, locale=r.locale, tz=r.time_zone, data=data)
    stored = {k: v for k, v in audience.data.items() if k.endswith("_id")}
    stored["short"] = msg.short
    out: list[uuid.UUID] = []
    for channel in channels:
        for address, suffix in _addresses(r, channel):
            in_app = channel == "in_app"
            nid = repo.insert_notification(
                conn, user_id=r.id, kind=kind, channel=channel,
                dedupe_key=f"{dedupe_base}:{r.id}:{channel}{suffix}", address=address,
                locale=r.locale, subject=msg.subject,
                body_text=msg.short if in_app else msg.text,
                body_html=msg.html if channel == "email" else None, data=stored, sent=in_app,
            )  # fmt: skip
            if nid is not None and not in_app:
                out.append(nid)
    return out


def notify_event(
    conn: psycopg.Connection[Any], *, event_id: int, kind: str, payload: dict[str, Any]
) -> list[uuid.UUID]:
    """Rows for outbox event `event_id` (`kind`, `payload`); ids to deliver."""
    if kind not in catalog.KINDS:
        return []
    out: list[uuid.UUID] = []
    for audience in recipients_of(conn, kind, payload):
        out += notify(conn, audience, kind, dedupe_base=f"evt:{event_id}")
    return out


def send_reminders(
    conn: psycopg.Connection[Any], *, now: datetime, limit: int = 500
) -> list[uuid.UUID]:
    """Reminders of confirmed bookings starting within 24 h (but not within 1 h, which
    has its own) and within 1 h; each (booking, window) claimed once. Ids to deliver."""
    out: list[uuid.UUID] = []
    windows = sorted(catalog.REMINDERS.items(), key=lambda kv: kv[1])
    for i, (kind, ahead) in enumerate(windows):
        after = 0 if i == 0 else windows[i - 1][1]
        for booking_id in repo.due_reminders(
            conn, kind, now=now, ahead_s=ahead, after_s=after, limit=limit
        ):
            if not repo.claim_reminder(conn, booking_id, kind):
                continue
            for audience in _booking_audience(conn, str(booking_id), ("student", "provider")):
                out += notify(conn, audience, kind, dedupe_base=f"{kind}:{booking_id}")
    return out


# --- delivery ---------------------------------------------------------------------------


def backoff(
    attempt: int, *, base_s: float, cap_s: float, rand: Callable[[], float] = random.random
) -> float:
    """The delay (s) before retry number `attempt` (1 = after the first failure):
    exponential with "equal jitter" — half of `base_s * 2**(attempt-1)` fixed, half
    random — capped at `cap_s`. Consecutive ranges touch ([b/2, b], [b, 2b], …), so the
    delays never shrink while spreading retries of a burst of failures."""
    full = min(cap_s, base_s * 2 ** (attempt - 1))
    return float(full / 2 + rand() * full / 2)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one delivery attempt did: `sent`, `retry` (after `retry_in_s`), `dead`, or
    `skipped` (not claimable: done, dead, or owned by another attempt)."""

    state: str
    attempts: int = 0
    retry_in_s: float | None = None
    error: str | None = None


def deliver(
    conn: psycopg.Connection[Any],
    notification_id: uuid.UUID | str,
    channel_for: Callable[[str], Channel],
    *,
    max_attempts: int | None = None,
) -> Outcome:
    """One attempt at sending a notification; commits the claim before sending (so two
    workers never both send it) and the outcome after. `conn` must be in autocommit mode
    (each step is its own transaction)."""
    s = get_settings()
    limit = max_attempts or s.notifications_max_attempts
    with conn.transaction():
        claimed = repo.claim(conn, notification_id, lease_s=s.notifications_claim_lease_s)
    if claimed is None:
        return Outcome("skipped")
    msg = Message(
        to=claimed.address, subject=claimed.subject, short=claimed.short,
        text=claimed.body_text, html=claimed.body_html, reference=str(claimed.id),
    )  # fmt: skip
    try:
        ref = channel_for(claimed.channel).send(msg)
    except PermanentChannelError as exc:
        return _failed(conn, claimed, str(exc), dead=True)
    except TransientChannelError as exc:
        return _failed(conn, claimed, str(exc), dead=claimed.attempts >= limit)
    except Exception as exc:  # an adapter bug or misconfiguration: retry, then dead
        log.exception("notification_send_crashed", notification_id=str(claimed.id))
        return _failed(conn, claimed, repr(exc), dead=claimed.attempts >= limit)
    with conn.transaction():
        repo.finish(conn, claimed, state="sent", provider_ref=ref)
    return Outcome("sent", claimed.attempts)


def _failed(
    conn: psycopg.Connection[Any], claimed: repo.Claimed, error: str, *, dead: bool
) -> Outcome:
    s = get_settings()
    error = error[:2000]
    with conn.transaction():
        if dead:
            repo.finish(conn, claimed, state="dead", error=error)
            log.warning("notification_dead", notification_id=str(claimed.id), error=error)
            return Outcome("dead", claimed.attempts, error=error)
        delay = backoff(
            claimed.attempts, base_s=s.notifications_retry_base_s, cap_s=s.notifications_retry_max_s
        )
        repo.finish(conn, claimed, state="failed", error=error, retry_in_s=delay)
    return Outcome("retry", claimed.attempts, retry_in_s=delay, error=error)


def stale(conn: psycopg.Connection[Any]) -> list[uuid.UUID]:
    """Rows whose delivery task may be lost (overdue by a minute or the stale-sweep period,
    or claimed longer than the lease): the sweep enqueues them again."""
    s = get_settings()
    return repo.stale(
        conn,
        grace_s=max(60.0, s.notifications_stale_sweep_s),
        lease_s=s.notifications_claim_lease_s,
    )


def requeue_dead(
    conn: psycopg.Connection[Any],
    *,
    ids: Sequence[uuid.UUID] | None = None,
    kind: str | None = None,
) -> list[uuid.UUID]:
    """Dead letters back to `queued` (the caller commits, then enqueues them)."""
    return repo.requeue_dead(conn, ids=ids, kind=kind)


# --- API: preferences -------------------------------------------------------------------


async def get_preferences(session: AsyncSession, *, user_id: uuid.UUID) -> Preferences:
    """Every (kind, channel) with its effective setting and whether it may be changed."""
    chosen = await repo.preferences(session, user_id)
    items = [
        PreferenceItem(
            kind=k,
            channel=c,
            enabled=True
            if not catalog.may_disable(k, c)
            else chosen.get((k, c), catalog.default_enabled(k, c)),
            locked=not catalog.may_disable(k, c),
        )
        for k in catalog.KINDS
        for c in catalog.CHANNELS
    ]
    return Preferences(items=items)


async def set_preferences(
    session: AsyncSession, *, user_id: uuid.UUID, items: Sequence[PreferenceItem]
) -> Preferences:
    """Store choices; raises `TransactionalEmail` (422) when one turns off the email of
    a transactional kind (nothing stored then)."""
    locked = [
        f"{i.kind}/{i.channel}"
        for i in items
        if not i.enabled and not catalog.may_disable(i.kind, i.channel)
    ]
    if locked:
        raise TransactionalEmail(
            "Transactional emails cannot be turned off: " + ", ".join(locked) + ".", items=locked
        )
    await repo.set_preferences(session, user_id, [(i.kind, i.channel, i.enabled) for i in items])
    return await get_preferences(session, user_id=user_id)


# --- API: contact points ----------------------------------------------------------------

# E.164: `+`, a country code not starting with 0, at most 15 digits (the users.phone CHECK)
E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def valid_time_zone(name: str) -> bool:
    """Whether `name` is a time zone of the IANA database on this machine (`Europe/Paris`,
    `UTC`)."""
    return name in zoneinfo.available_timezones()


async def get_contact(session: AsyncSession, *, user_id: uuid.UUID) -> ContactOut:
    """The user's phone, time zone and push devices."""
    row = await repo.contact(session, user_id)
    devices = await repo.push_devices(session, user_id)
    return ContactOut(
        phone=row["phone"],
        time_zone=row["time_zone"],
        push_devices=[PushDeviceOut(**d) for d in devices],
    )


async def set_contact(session: AsyncSession, *, user_id: uuid.UUID, data: ContactIn) -> ContactOut:
    """Replace phone and time zone. Raises `InvalidPhone` (422 `invalid_phone`) for a
    phone that is not E.164, `InvalidTimeZone` (422 `invalid_time_zone`) for a name the
    IANA database does not have; nothing is changed then."""
    if data.phone is not None and not E164.fullmatch(data.phone):
        raise InvalidPhone(
            "The phone number must be E.164: +, the country code and the number, no spaces"
            " (e.g. +33612345678)."
        )
    if not valid_time_zone(data.time_zone):
        raise InvalidTimeZone("The time zone must be an IANA name such as Europe/Paris.")
    await repo.set_contact(session, user_id, phone=data.phone, time_zone=data.time_zone)
    return await get_contact(session, user_id=user_id)


async def register_push_device(
    session: AsyncSession, *, user_id: uuid.UUID, data: PushDeviceIn
) -> tuple[PushDeviceOut, bool]:
    """Register an FCM token for the user (moved from another user who had it); returns
    the device and whether it is new for the user (a second registration only updates
    its platform)."""
    row, created = await repo.add_push_device(
        session, user_id, token=data.token, platform=data.platform
    )
    return PushDeviceOut(**row), created


async def unregister_push_device(session: AsyncSession, *, user_id: uuid.UUID, token: str) -> None:
    """Stop sending push to `token`. Raises `PushDeviceNotFound` (404
    `push_device_not_found`) when the user has no such device."""
    if not await repo.remove_push_device(session, user_id, token):
        raise PushDeviceNotFound("No push device with that token.")


# --- API: inbox and dead letters ----------------------------------------------------------


def encode_cursor(at: datetime, id_: uuid.UUID) -> str:
    """An opaque keyset cursor (base64url of `[iso time, id]`)."""
    return base64.urlsafe_b64encode(orjson.dumps([at.isoformat(), str(id_)])).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """The keyset of `cursor`; raises `InvalidCursor` (400) when it is not ours."""
    if not cursor:
        return None
    try:
        at, id_ = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed, uuid.UUID(id_)
    except (ValueError, TypeError) as exc:
        raise InvalidCursor("The cursor is malformed; use next_cursor as given.") from exc


async def inbox(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    unread: bool | None,
    cursor: str | None,
    limit: int,
) -> NotificationPage:
    """The user's in-app notifications, newest first (`limit` per page)."""
    rows = await repo.inbox(
        session, user_id, unread=unread, before=decode_cursor(cursor), limit=limit + 1
    )
    items = [NotificationOut.from_row(r) for r in rows[:limit]]
    nxt = (
        encode_cursor(rows[limit - 1]["created_at"], rows[limit - 1]["id"])
        if len(rows) > limit
        else None
    )
    return NotificationPage(items=items, next_cursor=nxt)


async def mark_read(
    session: AsyncSession, *, user_id: uuid.UUID, notification_id: uuid.UUID, now: datetime
) -> NotificationOut:
    """Mark one of the user's in-app notifications read (idempotent). Raises
    `NotificationNotFound` (404) for another user's or an unknown id."""
    row = await repo.mark_read(session, user_id, notification_id, now=now)
    if row is None:
        raise NotificationNotFound("No notification with this id in your inbox.")
    return NotificationOut.from_row(row)


async def dead_letters(session: AsyncSession, *, cursor: str | None, limit: int) -> DeadLetterPage:
    """Dead notifications, most recent first."""
    rows = await repo.dead_letters(session, before=decode_cursor(cursor), limit=limit + 1)
    items = [DeadLetterOut.model_validate(r) for r in rows[:limit]]
    nxt = (
        encode_cursor(rows[limit - 1]["updated_at"], rows[limit - 1]["id"])
        if len(rows) > limit
        else None
    )
    return DeadLetterPage(items=items, next_cursor=nxt)


async def requeue(session: AsyncSession, *, ids: Sequence[uuid.UUID] | None) -> list[uuid.UUID]:
    """Move dead letters (`ids`, or all, up to 1,000) back to `queued`; the caller commits
    and then enqueues their delivery."""
    return await repo.requeue_dead_async(session, ids)


async def state_counts(session: AsyncSession, *, now: datetime) -> dict[str, int]:
    """Notifications per state over the last hour, and `dead_total`."""
    return await repo.state_counts(session, since=now - timedelta(hours=1))
