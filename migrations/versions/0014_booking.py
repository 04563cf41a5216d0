"""Bookings: holds and bookings of slots and seats, with database backstops.

- `bookings`: one row per hold/booking of `seats` seats of an `availability_slots` row,
  its status (`pending | confirmed | canceled | refunded | expired | completed |
  no_show`, CHECKed), `hold_expires_at`, the price in minor units and the cancellation
  policy in force when it was made (a jsonb snapshot).
- `availability_slots.seats_taken`: the seats held by the slot's *seat-holding* bookings
  (pending, confirmed, completed, no_show), kept exact by the row trigger
  `bookings_seats_taken` whoever writes `bookings`, and bounded by
  `CHECK (seats_taken BETWEEN 0 AND capacity)`. The service counts capacity itself under
  the slot's row lock (pretix's way: count, don't trust a counter); the CHECK is the
  backstop that makes an oversell impossible even when that code is wrong or bypassed
  (the trigger's UPDATE of the slot row serialises concurrent inserts, and the one that
  would exceed the capacity fails with a check violation). A lapsed pending hold still
  counts in `seats_taken` until it is swept to `expired` (by the next booking of the slot,
  inside its transaction, or by the beat task); the service's own count ignores it at once.
- `availability_slots_canceled_empty`: a canceled slot holds no seat (its bookings are
  canceled first).
- `bookings_no_student_overlap`: one student never holds two seat-holding bookings whose
  times overlap (exclusion constraint over `(student_id, tstzrange)`; Cal.com's unique key
  on exact (start, end) misses overlaps).
- `provider_profiles.cancel_policy`: the provider's own policy (null = the platform's),
  validated by `booking.schemas.CancelPolicy`.
- `search_document_source.availability` leaves out full slots (`seats_taken >=
  capacity`), so a fully booked slot stops matching `available_from`/`available_to` and the
  map once the indexer re-projects the provider (booking events name it).

Revision ID: 0014_booking
Revises: 0013_block_notify
Create Date: 2026-12-05
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0014_booking"
down_revision = "0013_block_notify"
branch_labels = None
depends_on = None

SEAT_HOLDING = "('pending', 'confirmed', 'completed', 'no_show')"
_OPEN_SLOTS = "s.status = 'open' AND s.ends_at > now()"
_OPEN_FREE_SLOTS = "s.status = 'open' AND s.seats_taken < s.capacity AND s.ends_at > now()"


def _view_0009() -> str:
    path = Path(__file__).with_name("0009_text_key.py")
    spec = importlib.util.spec_from_file_location("_educonnect_0009_text_key", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.source_view())


def source_view() -> str:
    """The 0009 view whose availability keeps only slots with a free seat."""
    view = _view_0009()
    assert view.count(_OPEN_SLOTS) == 1
    return view.replace(_OPEN_SLOTS, _OPEN_FREE_SLOTS)


def upgrade() -> None:
    op.execute(
        "ALTER TABLE availability_slots"
        " ADD COLUMN seats_taken integer NOT NULL DEFAULT 0,"
        " ADD CONSTRAINT availability_slots_seats_taken"
        " CHECK (seats_taken BETWEEN 0 AND capacity),"
        " ADD CONSTRAINT availability_slots_canceled_empty"
        " CHECK (status <> 'canceled' OR seats_taken = 0)"
    )
    op.execute(
        "ALTER TABLE provider_profiles ADD COLUMN cancel_policy jsonb"
        " CHECK (cancel_policy IS NULL OR jsonb_typeof(cancel_policy) = 'object')"
    )
    op.execute(
        f"""
        CREATE TABLE bookings (
            id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            student_id        uuid NOT NULL REFERENCES users(id),
            booked_by         uuid NOT NULL REFERENCES users(id),
            provider_id       uuid NOT NULL REFERENCES provider_profiles(user_id),
            slot_id           uuid NOT NULL REFERENCES availability_slots(id),
            seats             integer NOT NULL CHECK (seats >= 1),
            starts_at         timestamptz NOT NULL,
            ends_at           timestamptz NOT NULL,
            status            text NOT NULL DEFAULT 'pending' CHECK (status IN (
                                  'pending', 'confirmed', 'canceled', 'refunded', 'expired',
                                  'completed', 'no_show')),
            hold_expires_at   timestamptz NOT NULL,
            price_minor       bigint NOT NULL CHECK (price_minor >= 0),
            currency          char(3) NOT NULL,
            cancel_policy     jsonb NOT NULL,
            expired_reason    text CHECK (expired_reason IN ('hold_lapsed', 'seats_gone')),
            canceled_at       timestamptz,
            canceled_by       uuid REFERENCES users(id),
            canceled_by_role  text CHECK (canceled_by_role IN (
                                  'student', 'provider', 'admin', 'system')),
            cancel_reason     text,
            refund_due_minor  bigint CHECK (refund_due_minor BETWEEN 0 AND price_minor),
            confirmed_at      timestamptz,
            created_at        timestamptz NOT NULL DEFAULT now(),
            updated_at        timestamptz NOT NULL DEFAULT now(),
            CHECK (ends_at > starts_at),
            CHECK ((status IN ('canceled', 'refunded')) = (refund_due_minor IS NOT NULL)),
            CONSTRAINT bookings_no_student_overlap EXCLUDE USING gist (
                student_id WITH =, tstzrange(starts_at, ends_at) WITH &&
            ) WHERE (status IN {SEAT_HOLDING})
        )
        """
    )
    op.execute(
        f"CREATE INDEX bookings_slot_idx ON bookings (slot_id) WHERE status IN {SEAT_HOLDING}"
    )
    op.execute(
        "CREATE INDEX bookings_pending_expiry_idx ON bookings (hold_expires_at)"
        " WHERE status = 'pending'"
    )
    op.execute("CREATE INDEX bookings_student_idx ON bookings (student_id, starts_at, id)")
    op.execute("CREATE INDEX bookings_provider_idx ON bookings (provider_id, starts_at, id)")
    op.execute(
        f"""
        CREATE FUNCTION bookings_seats_taken() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            old_held integer := 0;
            new_held integer := 0;
        BEGIN
            IF TG_OP <> 'INSERT' AND OLD.status IN {SEAT_HOLDING} THEN
                old_held := OLD.seats;
            END IF;
            IF TG_OP <> 'DELETE' AND NEW.status IN {SEAT_HOLDING} THEN
                new_held := NEW.seats;
            END IF;
            IF TG_OP = 'UPDATE' AND OLD.slot_id <> NEW.slot_id THEN
                UPDATE availability_slots SET seats_taken = seats_taken - old_held
                 WHERE id = OLD.slot_id AND old_held <> 0;
                UPDATE availability_slots SET seats_taken = seats_taken + new_held
                 WHERE id = NEW.slot_id AND new_held <> 0;
            ELSIF new_held <> old_held THEN
                UPDATE availability_slots SET seats_taken = seats_taken + new_held - old_held
                 WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.slot_id ELSE NEW.slot_id END;
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER bookings_seats_taken"
        " AFTER INSERT OR DELETE OR UPDATE OF status, seats, slot_id ON bookings"
        " FOR EACH ROW EXECUTE FUNCTION bookings_seats_taken()"
    )
    op.execute(source_view())


def downgrade() -> None:
    op.execute(_view_0009())
    op.execute("DROP TABLE IF EXISTS bookings")
    op.execute("DROP FUNCTION IF EXISTS bookings_seats_taken()")
    op.execute("ALTER TABLE provider_profiles DROP COLUMN IF EXISTS cancel_policy")
    op.execute(
        "ALTER TABLE availability_slots DROP CONSTRAINT IF EXISTS availability_slots_canceled_empty,"
        " DROP CONSTRAINT IF EXISTS availability_slots_seats_taken,"
        " DROP COLUMN IF EXISTS seats_taken"
    )
