"""Idempotency keys (IETF httpapi `Idempotency-Key` draft): storage and state machine.

A key belongs to a principal (the authenticated user) and lives in `idempotency_keys`:

    (absent) --claim--> in_progress --complete--> completed --(expires_at)--> reusable
                            |  lease (`locked_until`) lapsed: a retry may re-claim

* `claim` is one statement, committed on its own (autocommit: one round trip) before the
  work starts, so a concurrent duplicate sees the key in flight (409) instead of running
  twice. `complete` and `release` are one autocommitted statement each as well.
* A completed key replays the stored status, body and headers, errors included.
* The same key with another fingerprint (method, path and body) is a 422.
* Keys are kept `IDEMPOTENCY_TTL_S` (≥ 24 h); after that the key may be used again and
  `prune_expired` deletes the row.

The HTTP glue lives in `api/idempotency.py`; this module never imports FastAPI.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.errors import AppError, Conflict

KEY_MAX_LENGTH = 255


class IdempotencyKeyInvalid(AppError):
    """400 `idempotency_key_invalid`: not a structured-field string of 1-255 characters."""

    status = 400
    code = "idempotency_key_invalid"
    title = "Invalid Idempotency-Key"


class IdempotencyKeyMissing(AppError):
    """400 `idempotency_key_missing`: this operation requires an `Idempotency-Key`."""

    status = 400
    code = "idempotency_key_missing"
    title = "Idempotency-Key required"


class IdempotencyKeyInUse(Conflict):
    """409 `idempotency_key_in_use`: a request with this key is still being processed."""

    code = "idempotency_key_in_use"
    title = "Idempotency-Key in use"


class IdempotencyKeyMismatch(AppError):
    """422 `idempotency_key_mismatch`: the key was used for a different request."""

    status = 422
    code = "idempotency_key_mismatch"
    title = "Idempotency-Key reused with another request"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response kept for replay: status code, raw body bytes and selected headers."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def parse_key(header_value: str) -> str:
    """The key carried by an `Idempotency-Key` header value.

    The draft defines the value as an RFC 8941 sf-string (`"abc"`, with `\\"` and `\\\\`
    escapes, printable ASCII). A bare token of visible ASCII (`abc`) is accepted too, as
    many clients send one. Raises `IdempotencyKeyInvalid` otherwise, or when the key is
    empty or longer than 255 characters.
    """
    value = header_value.strip(" \t")
    if value.startswith('"'):
        chars: list[str] = []
        i, end = 1, len(value)
        closed = False
        while i < end:
            c = value[i]
            if c == "\\":
                if i + 1 >= end or value[i + 1] not in ('"', "\\"):
                    raise IdempotencyKeyInvalid("Bad escape in the Idempotency-Key string.")
                chars.append(value[i + 1])
                i += 2
                continue
            if c == '"':
                closed = i == end - 1
                break
            if not " " <= c <= "~":
                raise IdempotencyKeyInvalid("The Idempotency-Key must be printable ASCII.")
            chars.append(c)
            i += 1
        if not closed:
            raise IdempotencyKeyInvalid("The Idempotency-Key string is not terminated.")
        key = "".join(chars)
    else:
        if any(not "!" <= c <= "~" or c in '\\"' for c in value):
            raise IdempotencyKeyInvalid(
                'The Idempotency-Key must be a structured-field string, e.g. "8e03978e".'
            )
        key = value
    if not 1 <= len(key) <= KEY_MAX_LENGTH:
        raise IdempotencyKeyInvalid(
            f"The Idempotency-Key must have 1 to {KEY_MAX_LENGTH} characters."
        )
    return key


def fingerprint(method: str, target: str, body: bytes) -> str:
    """SHA-256 hex of the request's method, target (path and query) and raw body."""
    h = hashlib.sha256()
    h.update(method.upper().encode())
    h.update(b"\n")
    h.update(target.encode())
    h.update(b"\n")
    h.update(body)
    return h.hexdigest()


# Claim in one statement: insert the key, or take over an expired key (any state) or an
# abandoned claim of the same request (lease lapsed); `claimed` says which. When neither
# applies the row is returned as it stands (from the statement's snapshot: a row
# committed by a concurrent claimer after it began is not seen, and no row comes back;
# the caller then asks again).
_CLAIM = text(
    "WITH claimed AS ("
    " INSERT INTO idempotency_keys AS k"
    "  (principal, key, fingerprint, state, locked_until, expires_at)"
    " VALUES (:principal, :key, :fp, 'in_progress',"
    "  now() + make_interval(secs => :lock_s), now() + make_interval(secs => :ttl_s))"
    " ON CONFLICT (principal, key) DO UPDATE SET fingerprint = excluded.fingerprint,"
    "  state = 'in_progress', status = NULL, body = NULL, headers = NULL, created_at = now(),"
    "  locked_until = excluded.locked_until, expires_at = excluded.expires_at"
    " WHERE k.expires_at <= now()"
    "  OR (k.state = 'in_progress' AND k.locked_until <= now() AND k.fingerprint = :fp)"
    " RETURNING 1)"
    " SELECT true AS claimed, NULL AS fingerprint, NULL AS state, NULL::int AS status,"
    "  NULL::bytea AS body, NULL::jsonb AS headers FROM claimed"
    " UNION ALL"
    " SELECT false, fingerprint, state, status, body, headers FROM idempotency_keys"
    " WHERE principal = :principal AND key = :key AND NOT EXISTS (SELECT FROM claimed)"
)
_COMPLETE = text(
    "UPDATE idempotency_keys SET state = 'completed', status = :status, body = :body,"
    " headers = CAST(:headers AS jsonb) WHERE principal = :principal AND key = :key"
    " AND fingerprint = :fp AND state = 'in_progress'"
)
_RELEASE = text(
    "DELETE FROM idempotency_keys WHERE principal = :principal AND key = :key"
    " AND fingerprint = :fp AND state = 'in_progress'"
)
_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}


async def _autocommit(
    sessions: async_sessionmaker[AsyncSession],
    stmt: Any,
    params: dict[str, Any],
    *,
    rows: bool = False,
) -> list[Any]:
    """Run one statement committed on its own (no BEGIN/COMMIT round trips); its rows
    when `rows`, else []. It runs on a pooled connection of the factory's engine, without
    an ORM session (nothing here maps to objects)."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine):  # a factory bound otherwise: through a session
        async with sessions() as session:
            await session.connection(execution_options=_AUTOCOMMIT)
            result = await session.execute(stmt, params)
            return list(result.all()) if rows else []
    async with bind.connect() as conn:
        await conn.execution_options(**_AUTOCOMMIT)
        result = await conn.execute(stmt, params)
        return list(result.all()) if rows else []


async def claim(
    sessions: async_sessionmaker[AsyncSession],
    *,
    principal: str,
    key: str,
    fingerprint: str,
    ttl_s: int,
    lock_s: int,
) -> StoredResponse | None:
    """Claim `key` for `principal` in one statement committed on its own.

    Returns None when the caller now owns the key (it must run the request, then call
    `complete`), or the `StoredResponse` to replay. Raises `IdempotencyKeyMismatch` when
    the key was used with another fingerprint and `IdempotencyKeyInUse` while another
    request holding the key has not finished (and its lease of `lock_s` has not lapsed).
    """
    params: dict[str, Any] = {
        "principal": principal, "key": key, "fp": fingerprint, "ttl_s": ttl_s, "lock_s": lock_s,
    }  # fmt: skip
    for _ in range(3):  # a concurrent claim or prune can change the row under our snapshot
        rows = await _autocommit(sessions, _CLAIM, params, rows=True)
        if not rows:
            continue
        row = rows[0]
        if row.claimed:
            return None
        if row.fingerprint != fingerprint:
            raise IdempotencyKeyMismatch(
                "This Idempotency-Key was used for a different request (method, path or body)."
            )
        if row.state == "in_progress":
            raise IdempotencyKeyInUse(
                "A request with this Idempotency-Key is still being processed; retry later."
            )
        return StoredResponse(int(row.status), bytes(row.body or b""), dict(row.headers or {}))
    raise IdempotencyKeyInUse("The Idempotency-Key is changing hands; retry later.")


async def complete(
    sessions: async_sessionmaker[AsyncSession],
    *,
    principal: str,
    key: str,
    fingerprint: str,
    response: StoredResponse,
) -> None:
    """Store `response` for a key claimed with `claim` (one statement, committed)."""
    await _autocommit(
        sessions,
        _COMPLETE,
        {
            "principal": principal,
            "key": key,
            "fp": fingerprint,
            "status": response.status,
            "body": response.body,
            "headers": orjson.dumps(response.headers).decode(),
        },
    )


async def release(
    sessions: async_sessionmaker[AsyncSession], *, principal: str, key: str, fingerprint: str
) -> None:
    """Give up an unfinished claim (nothing was done), so the client may retry at once."""
    await _autocommit(sessions, _RELEASE, {"principal": principal, "key": key, "fp": fingerprint})


async def prune_expired(session: AsyncSession) -> int:
    """Delete keys past their `expires_at`; returns how many. The caller commits."""
    result = await session.execute(text("DELETE FROM idempotency_keys WHERE expires_at <= now()"))
    return int(getattr(result, "rowcount", 0) or 0)
