"""A stream of realistic provider writes, each one transaction with its outbox row.

Used by the indexer benchmark (`make bench-indexer`) and the relay's crash tests. Each
write does what the profile service does for the same change (update the source rows,
bump `provider_profiles.version`, insert one keys-only outbox row) in one transaction,
with plain SQL so a writer process can sustain hundreds of writes per second.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

_EMIT = (
    "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) "
    "VALUES ('provider', %s, %s, '{}'::jsonb)"
)
_BUMP = "UPDATE provider_profiles SET version = version + 1, updated_at = now() WHERE user_id = %s"


def provider_ids(conn: psycopg.Connection[Any]) -> list[uuid.UUID]:
    """Every provider id, sorted (a deterministic population to draw from)."""
    return [r[0] for r in conn.execute("SELECT user_id FROM provider_profiles ORDER BY user_id")]


def random_write(
    conn: psycopg.Connection[Any],
    rng: random.Random,
    ids: list[uuid.UUID],
    *,
    allow_destructive: bool = True,
) -> str:
    """Apply one random write in its own transaction on `conn`; returns its event type.

    Mix: 45 % rate change, 15 % rating change, 10 % languages, 20 % a new slot, 5 % a
    slot removed, and when `allow_destructive`: 2 % deactivate/reactivate, 2 % tutor↔coach
    switch, 1 % provider deleted (removed from `ids`).
    """
    pid = rng.choice(ids)
    roll = rng.random()
    with conn.transaction():
        if roll < 0.45:
            conn.execute(
                "UPDATE provider_profiles SET hourly_rate_minor = greatest(100,"
                " hourly_rate_minor + %s) WHERE user_id = %s",
                (rng.randint(-500, 500), pid),
            )
            event = "provider.updated"
        elif roll < 0.60:
            avg = round(rng.uniform(1, 5), 2)
            conn.execute(
                "UPDATE provider_profiles SET rating_avg = %s, rating_count = rating_count + 1"
                " WHERE user_id = %s",
                (avg, pid),
            )
            event = "provider.rated"
        elif roll < 0.70:
            langs = sorted(rng.sample(["fr", "en", "es", "de", "ar", "it"], rng.randint(1, 3)))
            conn.execute(
                "UPDATE provider_profiles SET languages = %s WHERE user_id = %s", (langs, pid)
            )
            event = "provider.updated"
        elif roll < 0.90:
            start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(
                days=rng.randint(30, 400), hours=rng.randint(0, 23)
            )
            conn.execute(
                "INSERT INTO availability_slots (provider_id, starts_at, ends_at, mode, capacity)"
                " SELECT %s, %s, %s, CASE WHEN online THEN 'online' ELSE 'in_person' END, 1"
                " FROM provider_profiles WHERE user_id = %s"
                " ON CONFLICT DO NOTHING",
                (pid, start, start + timedelta(minutes=30), pid),
            )
            event = "availability.created"
        elif roll < 0.95 or not allow_destructive:
            conn.execute(
                "DELETE FROM availability_slots WHERE id = (SELECT id FROM availability_slots"
                " WHERE provider_id = %s ORDER BY starts_at LIMIT 1)",
                (pid,),
            )
            event = "availability.deleted"
        elif roll < 0.97:
            conn.execute("UPDATE users SET active = NOT active WHERE id = %s", (pid,))
            event = "provider.deactivated"
        elif roll < 0.99:
            conn.execute(
                "UPDATE provider_profiles SET kind = CASE WHEN kind = 'tutor' THEN 'coach' ELSE"
                " 'tutor' END, subjects = CASE WHEN kind = 'tutor' THEN '{}'::text[] ELSE"
                " ARRAY['mathematics'] END, expertises = CASE WHEN kind = 'tutor' THEN"
                " ARRAY['leadership'] ELSE '{}'::text[] END WHERE user_id = %s",
                (pid,),
            )
            event = "provider.updated"
        else:
            conn.execute("DELETE FROM users WHERE id = %s", (pid,))
            ids.remove(pid)
            conn.execute(_EMIT, (str(pid), "provider.deleted"))
            return "provider.deleted"
        conn.execute(_BUMP, (pid,))
        conn.execute(_EMIT, (str(pid), event))
    return event
