"""Notifications: the delivery rows, their attempts, preferences, contact points.

- `users.time_zone` (IANA name, default `UTC`) and `users.phone` (E.164, for SMS).
- `push_devices`: FCM registration tokens of a user's devices (push goes to each).
- `notifications`: one row per (recipient, channel, occurrence); `dedupe_key` unique so a
  replayed outbox batch or a second beat run inserts nothing. `state` moves
  `queued → sending → sent`, or `sending → failed → sending …` on transient errors, or
  `→ dead` (the dead letter, kept here: Redis has no dead-letter queue). In-app rows are
  born `sent` (the inbox is the channel). `read_at` only for in-app rows.
- `notification_attempts`: one row per send attempt with its error and the retry delay
  chosen (seconds), so backoff is observable.
- `notification_preferences(user_id, kind, channel)`: an explicit choice; absent = the
  default of `notifications.service.DEFAULTS`.
- `notification_reminders(booking_id, kind)`: the claim of a reminder (24 h, 1 h): the
  beat inserts it `ON CONFLICT DO NOTHING` and only the run that inserted it notifies, so
  a reminder goes out once however often (or concurrently) the beat fires.
- Checkpoints of the two outbox consumers start at the current end of the outbox, so a
  deployment does not notify about history.

Revision ID: 0017_notifications
Revises: 0016_sessions
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0017_notifications"
down_revision = "0016_sessions"
branch_labels = None
depends_on = None

CHANNELS = "('email', 'sms', 'push', 'in_app')"


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN IF NOT EXISTS time_zone text NOT NULL DEFAULT 'UTC'")
    op.execute(
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS phone text"
        " CHECK (phone ~ '^\\+[1-9][0-9]{6,14}$')"
    )
    op.execute(
        """
        CREATE TABLE push_devices (
            user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            token       text NOT NULL CHECK (length(token) BETWEEN 1 AND 4096),
            platform    text NOT NULL DEFAULT 'web' CHECK (platform IN ('web', 'android', 'ios')),
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, token)
        )
        """
    )
    op.execute(
        f"""
        CREATE TABLE notifications (
            id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id         uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            kind            text NOT NULL,
            channel         text NOT NULL CHECK (channel IN {CHANNELS}),
            dedupe_key      text NOT NULL UNIQUE,
            address         text,
            locale          text NOT NULL,
            subject         text NOT NULL,
            body_text       text NOT NULL,
            body_html       text,
            data            jsonb NOT NULL DEFAULT '{{}}',
            state           text NOT NULL DEFAULT 'queued'
                            CHECK (state IN ('queued', 'sending', 'sent', 'failed', 'dead')),
            attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            last_error      text,
            provider_ref    text,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            claimed_at      timestamptz,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now(),
            sent_at         timestamptz,
            read_at         timestamptz,
            CHECK ((state = 'sent') = (sent_at IS NOT NULL)),
            CHECK (read_at IS NULL OR channel = 'in_app'),
            CHECK (channel = 'in_app' OR address IS NOT NULL)
        )
        """
    )
    op.execute(
        "CREATE INDEX notifications_inbox_idx ON notifications (user_id, created_at DESC, id DESC)"
        " WHERE channel = 'in_app'"
    )
    op.execute(
        "CREATE INDEX notifications_unread_idx ON notifications (user_id, created_at DESC, id DESC)"
        " WHERE channel = 'in_app' AND read_at IS NULL"
    )
    op.execute(
        "CREATE INDEX notifications_pending_idx ON notifications (next_attempt_at)"
        " WHERE state IN ('queued', 'sending', 'failed')"
    )
    op.execute(
        "CREATE INDEX notifications_dead_idx ON notifications (updated_at) WHERE state = 'dead'"
    )
    op.execute("CREATE INDEX notifications_updated_idx ON notifications (updated_at)")
    op.execute(
        """
        CREATE TABLE notification_attempts (
            notification_id uuid NOT NULL REFERENCES notifications(id) ON DELETE CASCADE,
            attempt         integer NOT NULL CHECK (attempt >= 1),
            at              timestamptz NOT NULL DEFAULT clock_timestamp(),
            outcome         text NOT NULL CHECK (outcome IN ('sent', 'retry', 'dead')),
            error           text,
            retry_in_s      double precision CHECK (retry_in_s >= 0),
            PRIMARY KEY (notification_id, attempt, at)
        )
        """
    )
    op.execute(
        f"""
        CREATE TABLE notification_preferences (
            user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            kind        text NOT NULL,
            channel     text NOT NULL CHECK (channel IN {CHANNELS}),
            enabled     boolean NOT NULL,
            updated_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, kind, channel)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE notification_reminders (
            booking_id  uuid NOT NULL REFERENCES bookings(id) ON DELETE CASCADE,
            kind        text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (booking_id, kind)
        )
        """
    )
    # Both consumers start at the outbox's current end (everything before is history).
    op.execute(
        """
        INSERT INTO indexer_checkpoints (consumer, partition, partitions, txid, outbox_id)
        SELECT c, 0, 1, coalesce(max(o.txid), '0'::xid8), coalesce(max(o.id), 0)
        FROM (VALUES ('notifications'), ('live')) AS v(c) LEFT JOIN outbox o ON true
        GROUP BY c
        ON CONFLICT DO NOTHING
        """
    )


def downgrade() -> None:
    op.execute("DELETE FROM indexer_checkpoints WHERE consumer IN ('notifications', 'live')")
    op.execute("DROP TABLE notification_reminders")
    op.execute("DROP TABLE notification_preferences")
    op.execute("DROP TABLE notification_attempts")
    op.execute("DROP TABLE notifications")
    op.execute("DROP TABLE push_devices")
    op.execute("ALTER TABLE users DROP COLUMN phone")
    op.execute("ALTER TABLE users DROP COLUMN time_zone")
