"""Video sessions: the per-slot publishing setting of group classes, the LiveKit rooms we
created, attendance from LiveKit webhooks (once per event id) and each lesson's outcome.

Revision ID: 0016_sessions
Revises: 0015_payments
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0016_sessions"
down_revision = "0015_payments"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Group classes: may attendees publish audio/video (a workshop) or only watch and chat
    # (a lecture)? Providers and 1:1 students always publish.
    op.execute(
        "ALTER TABLE availability_slots "
        "ADD COLUMN attendees_can_publish boolean NOT NULL DEFAULT false"
    )
    # One row per LiveKit room we created (on the first token): a 1:1 room per booking,
    # a group room per slot. `deleted_at` makes the clean-up idempotent: it is set, under
    # the row lock, after DeleteRoom succeeded, so a second run deletes nothing.
    op.execute(
        """
        CREATE TABLE session_rooms (
            name             text PRIMARY KEY,
            booking_id       uuid REFERENCES bookings (id) ON DELETE CASCADE,
            slot_id          uuid NOT NULL REFERENCES availability_slots (id) ON DELETE CASCADE,
            max_participants integer NOT NULL CHECK (max_participants >= 2),
            livekit_sid      text NOT NULL DEFAULT '',
            opens_at         timestamptz NOT NULL,
            closes_at        timestamptz NOT NULL,
            created_at       timestamptz NOT NULL DEFAULT now(),
            deleted_at       timestamptz,
            close_reason     text CHECK (close_reason IN ('ended', 'canceled')),
            attempts         integer NOT NULL DEFAULT 0,
            last_error       text,
            CHECK (opens_at < closes_at)
        )
        """
    )
    op.execute(
        "CREATE INDEX session_rooms_open_idx ON session_rooms (closes_at) WHERE deleted_at IS NULL"
    )
    op.execute("CREATE INDEX session_rooms_slot_idx ON session_rooms (slot_id)")
    # participant_joined / participant_left webhooks, stored once per LiveKit event id
    # (LiveKit delivers at least once). `occurred_at` is the event's own time.
    op.execute(
        """
        CREATE TABLE attendance (
            id              bigserial PRIMARY KEY,
            event_id        text NOT NULL UNIQUE,
            event           text NOT NULL CHECK (event IN ('participant_joined',
                                'participant_left', 'participant_connection_aborted')),
            room            text NOT NULL REFERENCES session_rooms (name) ON DELETE CASCADE,
            identity        text NOT NULL,
            user_id         uuid,
            participant_sid text NOT NULL DEFAULT '',
            occurred_at     timestamptz NOT NULL,
            received_at     timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX attendance_room_idx ON attendance (room, user_id, occurred_at)")
    # The settled outcome of a lesson (one per booking): what reviews and payouts read.
    op.execute(
        """
        CREATE TABLE session_outcomes (
            booking_id         uuid PRIMARY KEY REFERENCES bookings (id) ON DELETE CASCADE,
            outcome            text NOT NULL CHECK (outcome IN ('completed', 'no_show')),
            absent             text[] NOT NULL DEFAULT '{}'
                               CHECK (absent <@ ARRAY['student', 'provider']::text[]),
            student_present_s  integer NOT NULL DEFAULT 0,
            provider_present_s integer NOT NULL DEFAULT 0,
            decided_at         timestamptz NOT NULL,
            CHECK ((outcome = 'completed') = (cardinality(absent) = 0))
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS session_outcomes")
    op.execute("DROP TABLE IF EXISTS attendance")
    op.execute("DROP TABLE IF EXISTS session_rooms")
    op.execute("DELETE FROM indexer_checkpoints WHERE consumer = 'sessions'")
    op.execute("ALTER TABLE availability_slots DROP COLUMN IF EXISTS attendees_can_publish")
