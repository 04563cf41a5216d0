"""The audit log writer: who did what to which entity, with before/after snapshots."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_INSERT = text(
    "INSERT INTO audit_log (actor, action, entity_type, entity_id, before, after) "
    "VALUES (:actor, :action, :entity_type, :entity_id, "
    "CAST(:before AS jsonb), CAST(:after AS jsonb)) RETURNING id"
)


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


async def record(
    session: AsyncSession,
    *,
    actor: uuid.UUID | None,
    action: str,
    entity_type: str,
    entity_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> int:
    """Insert one audit row in `session`'s transaction (it commits with the change).

    `actor` is the acting user's id (None for the system); `action` a stable verb such as
    `user.role_changed`; `before`/`after` JSON-serialisable snapshots of what changed.
    Returns the row id.
    """
    result = await session.execute(
        _INSERT,
        {
            "actor": actor,
            "action": action,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "before": _json(before),
            "after": _json(after),
        },
    )
    return int(result.scalar_one())
