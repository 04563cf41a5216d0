"""The transactional outbox writer.

A write path calls `emit` inside its own transaction, so the event exists exactly when
the write commits: a rolled-back write leaves no row, a committed one exactly one. Events
carry keys only; the indexer rebuilds documents from SQL (DESIGN §5). The `txid` column
defaults to `pg_current_xact_id()`, which the relay uses to read in commit order.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_INSERT = text(
    "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) "
    "VALUES (:aggregate_type, :aggregate_id, :event_type, CAST(:payload AS jsonb)) "
    "RETURNING id"
)


async def emit(
    session: AsyncSession,
    *,
    aggregate_type: str,
    aggregate_id: str,
    event_type: str,
    payload: dict[str, Any] | None = None,
) -> int:
    """Insert one outbox event in `session`'s transaction; return its id.

    `aggregate_type` / `aggregate_id` name what changed (e.g. `provider`, a user id);
    `event_type` what happened (`availability.created`); `payload` holds keys only (ids),
    never a copy of the data. The caller commits (or rolls back) the whole unit of work.
    """
    result = await session.execute(
        _INSERT,
        {
            "aggregate_type": aggregate_type,
            "aggregate_id": aggregate_id,
            "event_type": event_type,
            "payload": orjson.dumps(payload or {}).decode(),
        },
    )
    return int(result.scalar_one())
