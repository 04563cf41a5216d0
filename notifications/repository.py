"""SQL of notifications (the only module of the domain with SQL).

Two halves, by caller:
- the pipeline (outbox consumers, Celery tasks, the CLI) runs on plain psycopg
  connections, like the indexer's relay it shares: `sync` functions taking a
  `psycopg.Connection` (the caller owns the transaction);
- the API runs on the request's `AsyncSession`: `async` functions.
Facts about bookings, payments, refunds and payouts are read here directly from their
tables: a notification is a read-side projection of those rows, like a search document.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# --- pipeline: recipients and facts ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who gets a notification, and where: addresses of every channel (None/empty when
    the user has none), language and time zone, explicit preferences for the kind."""

    id: uuid.UUID
    name: str
    email: str
    locale: str
    time_zone: str
    phone: str | None
    push_tokens: tuple[str, ...]
    prefs: dict[str, bool]


def recipient(
    conn: psycopg.Connection[Any], user_id: uuid.UUID | str, kind: str
) -> Recipient | None:
    """The active user `user_id` with their contact points and preferences for `kind`."""
    row = conn.execute(
        """
        SELECT u.id, u.full_name, u.email::text, u.locale, u.time_zone, u.phone,
               coalesce((SELECT array_agg(token ORDER BY created_at) FROM push_devices d
                         WHERE d.user_id = u.id), '{}'),
               coalesce((SELECT jsonb_object_agg(channel, enabled) FROM notification_preferences p
                         WHERE p.user_id = u.id AND p.kind = %s), '{}'::jsonb)
        FROM users u WHERE u.id = %s AND u.active
        """,
        (kind, user_id),
    ).fetchone()
    if row is None:
        return None
    return Recipient(row[0], row[1] or "", row[2], row[3] or "en", row[4] or "UTC", row[5],
                     tuple(row[6]), dict(row[7]))  # fmt: skip


def booking_facts(conn: psycopg.Connection[Any], booking_id: str) -> dict[str, Any] | None:
    """A booking with its parties' names: `student_id`, `provider_id`, `student_name`,
    `provider_name`, `starts_at`, `ends_at`, `seats`, `price_minor`, `currency`,
    `hold_expires_at`, `refund_minor` (0 when none is due), `status`."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """
            SELECT b.id AS booking_id, b.student_id, b.provider_id, b.slot_id, b.status,
                   b.starts_at, b.ends_at, b.seats, b.price_minor, b.currency::text AS currency,
                   b.hold_expires_at, coalesce(b.refund_due_minor, 0) AS refund_minor,
                   s.full_name AS student_name,
                   coalesce(p.display_name, pu.full_name) AS provider_name
            FROM bookings b
            JOIN users s ON s.id = b.student_id
            JOIN users pu ON pu.id = b.provider_id
            LEFT JOIN provider_profiles p ON p.user_id = b.provider_id
            WHERE b.id = %s
            """,
            (booking_id,),
        ).fetchone()


def parents_of(conn: psycopg.Connection[Any], student_id: uuid.UUID | str) -> list[uuid.UUID]:
    """The parents linked to `student_id` in `parent_children`, oldest link first."""
    rows = conn.execute(
        "SELECT parent_id FROM parent_children WHERE child_id = %s ORDER BY created_at, parent_id",
        (student_id,),
    ).fetchall()
    return [r[0] for r in rows]


def payment_facts(conn: psycopg.Connection[Any], payment_id: str) -> dict[str, Any] | None:
    """A payment: `payer_id`, `booking_id`, `amount_minor`, `currency`, `failure`."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT payer_id, booking_id, amount_minor, currency::text AS currency,"
            " coalesce(failure_message, failure_code) AS failure FROM payments WHERE id = %s",
            (payment_id,),
        ).fetchone()


def refund_facts(conn: psycopg.Connection[Any], refund_id: str) -> dict[str, Any] | None:
    """A refund: `payer_id` (who paid the payment it returns), `booking_id`,
    `amount_minor`, `currency`."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT p.payer_id, r.booking_id, r.amount_minor, r.currency::text AS currency"
            " FROM refunds r JOIN payments p ON p.id = r.payment_id WHERE r.id = %s",
            (refund_id,),
        ).fetchone()


def payout_facts(conn: psycopg.Connection[Any], payout_id: str) -> dict[str, Any] | None:
    """A payout: `provider_id`, `net_minor`, `gross_minor`, `currency`."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT provider_id, net_minor, gross_minor, currency::text AS currency"
            " FROM payouts WHERE id = %s",
            (payout_id,),
        ).fetchone()


def review_facts(conn: psycopg.Connection[Any], review_id: str) -> dict[str, Any] | None:
    """A review: `provider_id`, `booking_id`, `rating` (1 to 5 stars), `comment` (None when
    absent or the review was hidden by moderation). None when the review is gone."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT provider_id, booking_id, rating,"
            " CASE WHEN hidden_at IS NULL THEN comment END AS comment"
            " FROM reviews WHERE id = %s",
            (review_id,),
        ).fetchone()


def claim_reminder(conn: psycopg.Connection[Any], booking_id: uuid.UUID, kind: str) -> bool:
    """Claim reminder `kind` of a booking; False when an earlier run already did."""
    row = conn.execute(
        "INSERT INTO notification_reminders (booking_id, kind) VALUES (%s, %s)"
        " ON CONFLICT DO NOTHING RETURNING booking_id",
        (booking_id, kind),
    ).fetchone()
    return row is not None


def due_reminders(
    conn: psycopg.Connection[Any],
    kind: str,
    *,
    now: datetime,
    ahead_s: int,
    after_s: int,
    limit: int,
) -> list[uuid.UUID]:
    """Confirmed bookings starting in (now + after_s, now + ahead_s] without reminder
    `kind` yet, soonest first."""
    rows = conn.execute(
        """
        SELECT b.id FROM bookings b
        WHERE b.status = 'confirmed'
          AND b.starts_at > %(now)s + make_interval(secs => %(after)s)
          AND b.starts_at <= %(now)s + make_interval(secs => %(ahead)s)
          AND NOT EXISTS (SELECT 1 FROM notification_reminders r
                          WHERE r.booking_id = b.id AND r.kind = %(kind)s)
        ORDER BY b.starts_at LIMIT %(limit)s
        """,
        {"now": now, "after": after_s, "ahead": ahead_s, "kind": kind, "limit": limit},
    ).fetchall()
    return [r[0] for r in rows]


# --- pipeline: notification rows ------------------------------------------------------

_NOTIFICATION_COLUMNS = (
    "id, user_id, kind, channel, address, locale, subject, body_text, body_html, data, state,"
    " attempts, last_error, provider_ref, next_attempt_at, created_at, updated_at, sent_at,"
    " read_at"
)


def insert_notification(
    conn: psycopg.Connection[Any],
    *,
    user_id: uuid.UUID,
    kind: str,
    channel: str,
    dedupe_key: str,
    address: str | None,
    locale: str,
    subject: str,
    body_text: str,
    body_html: str | None,
    data: dict[str, Any],
    sent: bool,
) -> uuid.UUID | None:
    """Insert one notification (`sent` for in-app rows, else `queued`); None when a row
    with `dedupe_key` exists already (a replayed event, a second beat)."""
    row = conn.execute(
        """
        INSERT INTO notifications (user_id, kind, channel, dedupe_key, address, locale, subject,
                                   body_text, body_html, data, state, sent_at, created_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s,
                CASE WHEN %s THEN clock_timestamp() END, clock_timestamp())
        ON CONFLICT (dedupe_key) DO NOTHING RETURNING id
        """,
        (user_id, kind, channel, dedupe_key, address, locale, subject, body_text, body_html,
         orjson.dumps(data, default=str).decode(), "sent" if sent else "queued", sent),
    ).fetchone()  # fmt: skip
    return row[0] if row else None


@dataclass(frozen=True, slots=True)
class Claimed:
    """A notification claimed for one send attempt (`attempts` counts this one)."""

    id: uuid.UUID
    channel: str
    address: str
    subject: str
    body_text: str
    body_html: str | None
    short: str
    attempts: int


def claim(
    conn: psycopg.Connection[Any], notification_id: uuid.UUID | str, *, lease_s: float
) -> Claimed | None:
    """Compare-and-swap the row to `sending` for one attempt: from `queued`, from
    `failed` once its `next_attempt_at` is due, or from a `sending` whose claim is older
    than `lease_s` (its worker died). None when another attempt owns it, it is sent or
    dead, or a retry is not due yet — the caller then does nothing."""
    row = conn.execute(
        """
        UPDATE notifications SET state = 'sending', attempts = attempts + 1,
               claimed_at = clock_timestamp(), updated_at = clock_timestamp()
        WHERE id = %s AND (
              state = 'queued'
           OR (state = 'failed' AND next_attempt_at <= clock_timestamp() + interval '0.5 s')
           OR (state = 'sending' AND claimed_at < clock_timestamp() - make_interval(secs => %s)))
        RETURNING id, channel, address, subject, body_text, body_html,
                  coalesce(data->>'short', subject), attempts
        """,
        (notification_id, lease_s),
    ).fetchone()
    return Claimed(*row) if row else None


def finish(
    conn: psycopg.Connection[Any],
    claimed: Claimed,
    *,
    state: str,
    error: str | None = None,
    provider_ref: str | None = None,
    retry_in_s: float | None = None,
) -> bool:
    """Record the outcome of the attempt `claimed` (CAS on `sending` and the attempt
    number): `sent`, `failed` (retry after `retry_in_s`) or `dead`; and its attempt row.
    False when the row moved meanwhile (a lease expired and another attempt took it)."""
    row = conn.execute(
        """
        UPDATE notifications SET state = %(state)s, last_error = coalesce(%(error)s, last_error),
               provider_ref = coalesce(%(ref)s, provider_ref), updated_at = clock_timestamp(),
               sent_at = CASE WHEN %(state)s = 'sent' THEN clock_timestamp() END,
               next_attempt_at = clock_timestamp() + make_interval(secs => coalesce(%(retry)s, 0))
        WHERE id = %(id)s AND state = 'sending' AND attempts = %(attempt)s
        RETURNING id
        """,
        {"state": state, "error": error, "ref": provider_ref, "retry": retry_in_s,
         "id": claimed.id, "attempt": claimed.attempts},
    ).fetchone()  # fmt: skip
    conn.execute(
        "INSERT INTO notification_attempts (notification_id, attempt, outcome, error, retry_in_s)"
        " VALUES (%s, %s, %s, %s, %s)",
        (claimed.id, claimed.attempts, {"failed": "retry"}.get(state, state), error, retry_in_s),
    )
    return row is not None


def requeue_dead(
    conn: psycopg.Connection[Any],
    *,
    ids: Sequence[uuid.UUID] | None = None,
    kind: str | None = None,
    limit: int = 1000,
) -> list[uuid.UUID]:
    """Move dead letters back to `queued` (attempts reset): those in `ids`, else up to
    `limit` of `kind` (or of every kind), oldest first. Returns the ids moved."""
    rows = conn.execute(
        """
        UPDATE notifications SET state = 'queued', attempts = 0, next_attempt_at = now(),
               updated_at = now()
        WHERE id IN (SELECT id FROM notifications
                     WHERE state = 'dead'
                       AND (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
                       AND (%(kind)s::text IS NULL OR kind = %(kind)s)
                     ORDER BY updated_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
        RETURNING id
        """,
        {"ids": list(ids) if ids is not None else None, "kind": kind, "limit": limit},
    ).fetchall()
    return [r[0] for r in rows]


def stale(
    conn: psycopg.Connection[Any], *, grace_s: float, lease_s: float, limit: int = 1000
) -> list[uuid.UUID]:
    """Rows whose send task may be lost: `queued`/`failed` overdue by `grace_s`, or
    `sending` claimed longer than `lease_s` ago."""
    rows = conn.execute(
        """
        SELECT id FROM notifications
        WHERE (state IN ('queued', 'failed')
               AND next_attempt_at < clock_timestamp() - make_interval(secs => %(grace)s))
           OR (state = 'sending' AND claimed_at < clock_timestamp() - make_interval(secs => %(lease)s))
        ORDER BY next_attempt_at LIMIT %(limit)s
        """,
        {"grace": grace_s, "lease": lease_s, "limit": limit},
    ).fetchall()
    return [r[0] for r in rows]


# --- live updates ---------------------------------------------------------------------


def slot_seats(conn: psycopg.Connection[Any], slot_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per slot id (text): `provider_id`, `capacity`, `status`, `starts_at` and
    `seats_left` now — capacity minus confirmed seats and live holds (lapsed holds not
    yet swept are free, as in `booking.service.list_availability`)."""
    if not slot_ids:
        return {}
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            SELECT s.id::text AS slot_id, s.provider_id::text AS provider_id, s.capacity,
                   s.status, s.starts_at,
                   greatest(0, s.capacity - s.seats_taken + coalesce((
                       SELECT sum(b.seats) FROM bookings b
                       WHERE b.slot_id = s.id AND b.status = 'pending'
                         AND b.hold_expires_at <= now()), 0))::int AS seats_left
            FROM availability_slots s WHERE s.id = ANY(%s::uuid[])
            """,
            (list(slot_ids),),
        ).fetchall()
    return {r["slot_id"]: r for r in rows}


# --- API (async) ----------------------------------------------------------------------


async def inbox(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    unread: bool | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """In-app notifications of a user, newest first, after the keyset `before`."""
    rows = await session.execute(
        text(
            "SELECT id, kind, subject, body_text, data, created_at, read_at FROM notifications"
            " WHERE user_id = :u AND channel = 'in_app'"
            "   AND (CAST(:unread AS boolean) IS NULL OR (read_at IS NULL) = :unread)"
            "   AND (CAST(:bt AS timestamptz) IS NULL OR (created_at, id) < (:bt, CAST(:bi AS uuid)))"
            " ORDER BY created_at DESC, id DESC LIMIT :limit"
        ),
        {"u": user_id, "unread": unread, "bt": before[0] if before else None,
         "bi": before[1] if before else None, "limit": limit},
    )  # fmt: skip
    return [dict(r._mapping) for r in rows]


async def mark_read(
    session: AsyncSession, user_id: uuid.UUID, notification_id: uuid.UUID, *, now: datetime
) -> dict[str, Any] | None:
    """Set `read_at` (kept when already read) of the user's in-app notification."""
    row = await session.execute(
        text(
            "UPDATE notifications SET read_at = coalesce(read_at, :now), updated_at = now()"
            " WHERE id = :id AND user_id = :u AND channel = 'in_app'"
            " RETURNING id, kind, subject, body_text, data, created_at, read_at"
        ),
        {"id": notification_id, "u": user_id, "now": now},
    )
    r = row.first()
    return dict(r._mapping) if r else None


async def preferences(session: AsyncSession, user_id: uuid.UUID) -> dict[tuple[str, str], bool]:
    """The user's explicit choices, {(kind, channel): enabled}."""
    rows = await session.execute(
        text("SELECT kind, channel, enabled FROM notification_preferences WHERE user_id = :u"),
        {"u": user_id},
    )
    return {(r[0], r[1]): bool(r[2]) for r in rows}


async def set_preferences(
    session: AsyncSession, user_id: uuid.UUID, items: Sequence[tuple[str, str, bool]]
) -> None:
    """Upsert choices (kind, channel, enabled)."""
    for kind, channel, enabled in items:
        await session.execute(
            text(
                "INSERT INTO notification_preferences (user_id, kind, channel, enabled)"
                " VALUES (:u, :k, :c, :e) ON CONFLICT (user_id, kind, channel)"
                " DO UPDATE SET enabled = EXCLUDED.enabled, updated_at = now()"
            ),
            {"u": user_id, "k": kind, "c": channel, "e": enabled},
        )


async def contact(session: AsyncSession, user_id: uuid.UUID) -> dict[str, Any]:
    """`{phone, time_zone}` of the (existing) user."""
    r = (
        await session.execute(
            text("SELECT phone, time_zone FROM users WHERE id = :u"), {"u": user_id}
        )
    ).one()
    return dict(r._mapping)


async def set_contact(
    session: AsyncSession, user_id: uuid.UUID, *, phone: str | None, time_zone: str
) -> None:
    """Replace the user's phone (E.164 or None) and time zone (IANA name)."""
    await session.execute(
        text("UPDATE users SET phone = :p, time_zone = :tz WHERE id = :u"),
        {"u": user_id, "p": phone, "tz": time_zone},
    )


async def push_devices(session: AsyncSession, user_id: uuid.UUID) -> list[dict[str, Any]]:
    """The user's push devices `{token, platform, created_at}`, oldest first."""
    rows = await session.execute(
        text(
            "SELECT token, platform, created_at FROM push_devices WHERE user_id = :u"
            " ORDER BY created_at, token"
        ),
        {"u": user_id},
    )
    return [dict(r._mapping) for r in rows]


async def add_push_device(
    session: AsyncSession, user_id: uuid.UUID, *, token: str, platform: str
) -> tuple[dict[str, Any], bool]:
    """Register `token` for the user (its platform updated when already there); the token
    leaves any other user first (a device signed in to another account). Returns the row
    and whether it is new for this user."""
    await session.execute(
        text("DELETE FROM push_devices WHERE token = :t AND user_id <> :u"),
        {"u": user_id, "t": token},
    )
    r = (
        await session.execute(
            text(
                "INSERT INTO push_devices (user_id, token, platform) VALUES (:u, :t, :p)"
                " ON CONFLICT (user_id, token) DO UPDATE SET platform = EXCLUDED.platform"
                " RETURNING token, platform, created_at, (xmax = 0) AS inserted"
            ),
            {"u": user_id, "t": token, "p": platform},
        )
    ).one()
    row = dict(r._mapping)
    inserted = bool(row.pop("inserted"))
    return row, inserted


async def remove_push_device(session: AsyncSession, user_id: uuid.UUID, token: str) -> bool:
    """Unregister `token` for the user; whether it was registered."""
    r = await session.execute(
        text("DELETE FROM push_devices WHERE user_id = :u AND token = :t RETURNING 1"),
        {"u": user_id, "t": token},
    )
    return r.first() is not None


async def dead_letters(
    session: AsyncSession, *, before: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[dict[str, Any]]:
    """Dead notifications, most recently dead first, after the keyset `before`."""
    rows = await session.execute(
        text(
            "SELECT id, user_id, kind, channel, address, attempts, last_error, created_at,"
            " updated_at FROM notifications WHERE state = 'dead'"
            "   AND (CAST(:bt AS timestamptz) IS NULL OR (updated_at, id) < (:bt, CAST(:bi AS uuid)))"
            " ORDER BY updated_at DESC, id DESC LIMIT :limit"
        ),
        {"bt": before[0] if before else None, "bi": before[1] if before else None, "limit": limit},
    )
    return [dict(r._mapping) for r in rows]


async def requeue_dead_async(
    session: AsyncSession, ids: Sequence[uuid.UUID] | None
) -> list[uuid.UUID]:
    """`requeue_dead` on the request's session (ids, or every dead letter up to 1,000)."""
    rows = await session.execute(
        text(
            "UPDATE notifications SET state = 'queued', attempts = 0, next_attempt_at = now(),"
            " updated_at = now() WHERE id IN (SELECT id FROM notifications WHERE state = 'dead'"
            " AND (CAST(:ids AS uuid[]) IS NULL OR id = ANY(CAST(:ids AS uuid[])))"
            " ORDER BY updated_at LIMIT 1000 FOR UPDATE SKIP LOCKED) RETURNING id"
        ),
        {"ids": list(ids) if ids is not None else None},
    )
    return [r[0] for r in rows]


async def state_counts(session: AsyncSession, *, since: datetime) -> dict[str, int]:
    """Notifications per state updated since `since`, and every dead letter (`dead_total`)."""
    rows = await session.execute(
        text(
            "SELECT state, count(*) FROM notifications WHERE updated_at >= :since GROUP BY state"
            " UNION ALL SELECT 'dead_total', count(*) FROM notifications WHERE state = 'dead'"
        ),
        {"since": since},
    )
    return {r[0]: int(r[1]) for r in rows}


async def slot_provider(session: AsyncSession, slot_id: uuid.UUID) -> uuid.UUID | None:
    """The provider of slot `slot_id`, or None."""
    row = await session.execute(
        text("SELECT provider_id FROM availability_slots WHERE id = :id"), {"id": slot_id}
    )
    return row.scalar_one_or_none()


async def provider_exists(session: AsyncSession, provider_id: uuid.UUID) -> bool:
    """True for an active provider profile."""
    row = await session.execute(
        text(
            "SELECT 1 FROM provider_profiles p JOIN users u ON u.id = p.user_id"
            " WHERE p.user_id = :id AND u.active"
        ),
        {"id": provider_id},
    )
    return row.first() is not None
