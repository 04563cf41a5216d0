"""Every SQL statement of the sessions domain.

Functions take the caller's `AsyncSession` and never commit. Bookings, slots and
accounts are read here (one statement per token: the hot path) but written only through
their own domain's service, except `attendees_can_publish` (the slot column migration
0016 added for this domain) and this domain's outbox checkpoint (`indexer_checkpoints`,
consumer `sessions`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from sessions.tokens import BOOKING_ROOM_PREFIX, SLOT_ROOM_PREFIX

CONSUMER = "sessions"
"""This domain's outbox consumer name (its checkpoint row in `indexer_checkpoints`)."""

# The room name of migration 0016's rooms, as `sessions.tokens.room_name` derives it.
_ROOM_SQL = (
    "CASE WHEN s.capacity > 1 THEN :slot_prefix || s.id::text"
    " ELSE :booking_prefix || b.id::text END"
)
_PREFIXES = {"slot_prefix": SLOT_ROOM_PREFIX, "booking_prefix": BOOKING_ROOM_PREFIX}


@dataclass(frozen=True, slots=True)
class BookingView:
    """What a token, the attendance view and the settlement need from one booking: its
    status and times (UTC), its slot's capacity / mode / publishing setting, the display
    names, how many bookings of the slot are confirmed, and whether its room is live."""

    id: uuid.UUID
    status: str
    student_id: uuid.UUID
    provider_id: uuid.UUID
    slot_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    capacity: int
    mode: str
    attendees_can_publish: bool
    student_name: str
    provider_name: str
    slot_confirmed: int
    room: str
    room_live: bool

    @property
    def group(self) -> bool:
        """A group class (DESIGN §3: `capacity > 1`): one room per slot."""
        return self.capacity > 1


_VIEW = text(
    f"""
    SELECT b.id, b.status, b.student_id, b.provider_id, b.slot_id, b.starts_at, b.ends_at,
           s.capacity, s.mode, s.attendees_can_publish,
           su.full_name, coalesce(pp.display_name, pu.full_name),
           CASE WHEN s.capacity > 1 THEN
               (SELECT count(*) FROM bookings c
                WHERE c.slot_id = b.slot_id AND c.status = 'confirmed')
           ELSE (b.status = 'confirmed')::int END,
           {_ROOM_SQL},
           r.name IS NOT NULL AND r.deleted_at IS NULL
    FROM bookings b
    JOIN availability_slots s ON s.id = b.slot_id
    JOIN users su ON su.id = b.student_id
    JOIN users pu ON pu.id = b.provider_id
    LEFT JOIN provider_profiles pp ON pp.user_id = b.provider_id
    LEFT JOIN session_rooms r ON r.name = {_ROOM_SQL}
    WHERE b.id = :id
    """
)


async def booking_view(session: AsyncSession, booking_id: uuid.UUID) -> BookingView | None:
    """The booking with its slot, names and room state (one statement), or None."""
    row = (await session.execute(_VIEW, {"id": booking_id, **_PREFIXES})).one_or_none()
    return None if row is None else BookingView(*row)


async def set_attendees_can_publish(
    session: AsyncSession, *, slot_id: uuid.UUID, provider_id: uuid.UUID, value: bool
) -> bool:
    """Set the group-class publishing setting of the provider's slot; False when the slot
    does not exist or is another provider's."""
    result = await session.execute(
        text(
            "UPDATE availability_slots SET attendees_can_publish = :v"
            " WHERE id = :id AND provider_id = :p RETURNING id"
        ),
        {"v": value, "id": slot_id, "p": provider_id},
    )
    return result.first() is not None


# --- rooms -----------------------------------------------------------------------------


async def upsert_room(
    session: AsyncSession,
    *,
    name: str,
    booking_id: uuid.UUID | None,
    slot_id: uuid.UUID,
    max_participants: int,
    livekit_sid: str,
    opens_at: datetime,
    closes_at: datetime,
) -> None:
    """Record a room LiveKit has created (a deleted one is live again)."""
    await session.execute(
        text(
            "INSERT INTO session_rooms (name, booking_id, slot_id, max_participants,"
            " livekit_sid, opens_at, closes_at)"
            " VALUES (:name, :booking_id, :slot_id, :mp, :sid, :opens_at, :closes_at)"
            " ON CONFLICT (name) DO UPDATE SET livekit_sid = excluded.livekit_sid,"
            " max_participants = excluded.max_participants, opens_at = excluded.opens_at,"
            " closes_at = excluded.closes_at, deleted_at = NULL, close_reason = NULL"
        ),
        {
            "name": name,
            "booking_id": booking_id,
            "slot_id": slot_id,
            "mp": max_participants,
            "sid": livekit_sid,
            "opens_at": opens_at,
            "closes_at": closes_at,
        },
    )


@dataclass(frozen=True, slots=True)
class RoomState:
    """A room row as the clean-up sees it."""

    name: str
    booking_id: uuid.UUID | None
    slot_id: uuid.UUID
    closes_at: datetime
    deleted_at: datetime | None
    attempts: int


async def lock_room(session: AsyncSession, name: str) -> RoomState | None:
    """The room row locked FOR UPDATE (serialises two clean-ups of one room), or None."""
    row = (
        await session.execute(
            text(
                "SELECT name, booking_id, slot_id, closes_at, deleted_at, attempts"
                " FROM session_rooms WHERE name = :name FOR UPDATE"
            ),
            {"name": name},
        )
    ).one_or_none()
    return None if row is None else RoomState(*row)


async def mark_room_deleted(session: AsyncSession, *, name: str, at: datetime, reason: str) -> None:
    """Record the successful DeleteRoom."""
    await session.execute(
        text(
            "UPDATE session_rooms SET deleted_at = :at, close_reason = :reason,"
            " last_error = NULL WHERE name = :name"
        ),
        {"at": at, "reason": reason, "name": name},
    )


async def record_room_failure(session: AsyncSession, *, name: str, error: str) -> int:
    """Count a failed clean-up attempt and keep its error; returns the attempts so far."""
    row = (
        await session.execute(
            text(
                "UPDATE session_rooms SET attempts = attempts + 1, last_error = :e"
                " WHERE name = :name RETURNING attempts"
            ),
            {"e": error[:2000], "name": name},
        )
    ).one_or_none()
    return 0 if row is None else int(row[0])


async def rooms_to_close(
    session: AsyncSession, *, now: datetime, limit: int
) -> list[tuple[str, str]]:
    """Live rooms to delete, as (name, reason): `ended` once the join window closed,
    `canceled` when no booking of the room is confirmed (or settled) any more."""
    rows = await session.execute(
        text(
            """
            SELECT r.name, CASE WHEN r.closes_at <= :now THEN 'ended' ELSE 'canceled' END
            FROM session_rooms r
            WHERE r.deleted_at IS NULL
              AND (r.closes_at <= :now OR NOT EXISTS (
                    SELECT 1 FROM bookings b
                    WHERE b.status IN ('confirmed', 'completed', 'no_show')
                      AND (b.id = r.booking_id
                           OR (r.booking_id IS NULL AND b.slot_id = r.slot_id))))
            ORDER BY r.closes_at
            LIMIT :limit
            """
        ),
        {"now": now, "limit": limit},
    )
    return [(str(r[0]), str(r[1])) for r in rows]


@dataclass(frozen=True, slots=True)
class CanceledSeat:
    """A canceled booking whose room may be live: the room, and for a group class the
    attendee to disconnect (`group` True) while the room stays for the others."""

    booking_id: uuid.UUID
    student_id: uuid.UUID
    room: str
    group: bool


async def canceled_seats(
    session: AsyncSession, booking_ids: Sequence[uuid.UUID]
) -> list[CanceledSeat]:
    """The live rooms of these bookings, for those no longer confirmed."""
    if not booking_ids:
        return []
    rows = await session.execute(
        text(
            f"""
            SELECT b.id, b.student_id, r.name, s.capacity > 1
            FROM bookings b
            JOIN availability_slots s ON s.id = b.slot_id
            JOIN session_rooms r ON r.name = {_ROOM_SQL}
            WHERE b.id = ANY(:ids) AND r.deleted_at IS NULL
              AND b.status NOT IN ('confirmed', 'completed', 'no_show')
            """
        ),
        {"ids": list(booking_ids), **_PREFIXES},
    )
    return [CanceledSeat(r[0], r[1], r[2], bool(r[3])) for r in rows]


# --- the outbox consumer ----------------------------------------------------------------


async def lock_checkpoint(session: AsyncSession) -> tuple[int, int] | None:
    """This consumer's outbox position `(txid, id)`, its row locked NOWAIT (created at
    position 0 the first time); None while another sweep holds it. The checkpoint lives
    in `indexer_checkpoints`, so the relay's pruning waits for this consumer too."""
    await session.execute(
        text(
            "INSERT INTO indexer_checkpoints (consumer, partition, partitions)"
            " VALUES (:c, 0, 1) ON CONFLICT DO NOTHING"
        ),
        {"c": CONSUMER},
    )
    try:
        async with session.begin_nested():  # a refused lock leaves the transaction usable
            row = (
                await session.execute(
                    text(
                        "SELECT txid::text::bigint, outbox_id FROM indexer_checkpoints"
                        " WHERE consumer = :c AND partition = 0 FOR UPDATE NOWAIT"
                    ),
                    {"c": CONSUMER},
                )
            ).one()
    except DBAPIError as exc:
        if isinstance(exc.orig, psycopg.errors.LockNotAvailable):
            return None
        raise
    return int(row[0]), int(row[1])


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One outbox row after the checkpoint."""

    txid: int
    id: int
    event_type: str
    aggregate_id: str
    payload: dict[str, Any]


async def outbox_after(
    session: AsyncSession, position: tuple[int, int], limit: int
) -> list[OutboxEvent]:
    """Up to `limit` outbox events after `position` from finished transactions, in commit
    order (`(txid, id)` below `outbox_horizon()`, as the indexer relay reads them)."""
    rows = await session.execute(
        text(
            "SELECT txid::text::bigint, id, event_type, aggregate_id, payload FROM outbox"
            " WHERE (txid, id) > (CAST(CAST(:txid AS text) AS xid8), :id)"
            "   AND txid < (SELECT outbox_horizon())"
            " ORDER BY txid, id LIMIT :limit"
        ),
        {"txid": position[0], "id": position[1], "limit": limit},
    )
    out = []
    for r in rows:
        payload = r[4] if isinstance(r[4], dict) else orjson.loads(r[4] or "{}")
        out.append(OutboxEvent(int(r[0]), int(r[1]), str(r[2]), str(r[3]), payload))
    return out


async def advance_checkpoint(
    session: AsyncSession, position: tuple[int, int], applied: int
) -> None:
    """Move this consumer's checkpoint to `position`."""
    await session.execute(
        text(
            "UPDATE indexer_checkpoints SET txid = CAST(CAST(:txid AS text) AS xid8),"
            " outbox_id = :id, events = events + :n, updated_at = now()"
            " WHERE consumer = :c AND partition = 0"
        ),
        {"txid": position[0], "id": position[1], "n": applied, "c": CONSUMER},
    )


# --- attendance ---------------------------------------------------------------------------


async def insert_attendance(
    session: AsyncSession,
    *,
    event_id: str,
    event: str,
    room: str,
    identity: str,
    user_id: uuid.UUID | None,
    participant_sid: str,
    occurred_at: datetime,
) -> str:
    """Store one participant event once: returns `stored`, `duplicate` (this event id is
    already stored) or `unknown_room` (not a room of ours: nothing stored)."""
    row = (
        await session.execute(
            text(
                "INSERT INTO attendance (event_id, event, room, identity, user_id,"
                " participant_sid, occurred_at)"
                " SELECT :event_id, :event, :room, :identity, :user_id, :sid, :at"
                " WHERE EXISTS (SELECT 1 FROM session_rooms WHERE name = :room)"
                " ON CONFLICT (event_id) DO NOTHING RETURNING id"
            ),
            {
                "event_id": event_id,
                "event": event,
                "room": room,
                "identity": identity,
                "user_id": user_id,
                "sid": participant_sid,
                "at": occurred_at,
            },
        )
    ).first()
    if row is not None:
        return "stored"
    known = await session.execute(
        text("SELECT 1 FROM session_rooms WHERE name = :room"), {"room": room}
    )
    return "duplicate" if known.first() is not None else "unknown_room"


@dataclass(frozen=True, slots=True)
class AttendanceEvent:
    """A stored participant event."""

    event_id: str
    event: str
    user_id: uuid.UUID | None
    identity: str
    participant_sid: str
    occurred_at: datetime


async def attendance_events(
    session: AsyncSession, *, room: str, user_ids: Sequence[uuid.UUID]
) -> list[AttendanceEvent]:
    """The room's events of these users, in time order (then arrival order)."""
    rows = await session.execute(
        text(
            "SELECT event_id, event, user_id, identity, participant_sid, occurred_at"
            " FROM attendance WHERE room = :room AND user_id = ANY(:ids)"
            " ORDER BY occurred_at, id"
        ),
        {"room": room, "ids": list(user_ids)},
    )
    return [AttendanceEvent(*r) for r in rows]


# --- settlement ---------------------------------------------------------------------------


async def bookings_to_settle(
    session: AsyncSession, *, now: datetime, join_after_s: int, limit: int
) -> list[uuid.UUID]:
    """Confirmed online bookings whose join window has closed and that have no outcome
    yet, locked (SKIP LOCKED: concurrent sweeps share the work, never repeat it)."""
    rows = await session.execute(
        text(
            """
            SELECT b.id FROM bookings b
            JOIN availability_slots s ON s.id = b.slot_id
            WHERE b.status = 'confirmed' AND s.mode = 'online'
              AND b.ends_at + make_interval(secs => :after) <= :now
              AND NOT EXISTS (SELECT 1 FROM session_outcomes o WHERE o.booking_id = b.id)
            ORDER BY b.ends_at, b.id
            LIMIT :limit
            FOR UPDATE OF b SKIP LOCKED
            """
        ),
        {"now": now, "after": join_after_s, "limit": limit},
    )
    return [r[0] for r in rows]


async def insert_outcome(
    session: AsyncSession,
    *,
    booking_id: uuid.UUID,
    outcome: str,
    absent: Sequence[str],
    student_present_s: int,
    provider_present_s: int,
    decided_at: datetime,
) -> bool:
    """Store a booking's outcome once; False when it was already settled."""
    row = (
        await session.execute(
            text(
                "INSERT INTO session_outcomes (booking_id, outcome, absent,"
                " student_present_s, provider_present_s, decided_at)"
                " VALUES (:id, :outcome, :absent, :sp, :pp, :at)"
                " ON CONFLICT (booking_id) DO NOTHING RETURNING booking_id"
            ),
            {
                "id": booking_id,
                "outcome": outcome,
                "absent": list(absent),
                "sp": student_present_s,
                "pp": provider_present_s,
                "at": decided_at,
            },
        )
    ).first()
    return row is not None


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """A stored outcome."""

    outcome: str
    absent: list[str]
    student_present_s: int
    provider_present_s: int
    decided_at: datetime


async def get_outcome(session: AsyncSession, booking_id: uuid.UUID) -> OutcomeRow | None:
    """The booking's settled outcome, or None."""
    row = (
        await session.execute(
            text(
                "SELECT outcome, absent, student_present_s, provider_present_s, decided_at"
                " FROM session_outcomes WHERE booking_id = :id"
            ),
            {"id": booking_id},
        )
    ).one_or_none()
    return None if row is None else OutcomeRow(row[0], list(row[1]), row[2], row[3], row[4])
