"""A lost database connection answers 503 `database_unavailable` (problem+json with
Retry-After), never 500, and the pool reconnects for the following requests."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import psycopg

from tests.conftest import bearer, create_user


def _terminate_api_backends(db: psycopg.Connection[Any]) -> int:
    """Kill every other server connection to the test database (the API's pool); returns
    how many were terminated."""
    row = db.execute(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND backend_type = 'client backend'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) >= 1
    body = r.json()
    assert body["code"] == "database_unavailable"
    assert body["status"] == 503


async def test_killed_connections_answer_503_then_reconnect(
    api: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    headers = bearer(create_user(db), "student")
    # several pooled connections in use at once, so more than one is left dead
    warm = await asyncio.gather(*(api.get("/api/v1/bookings", headers=headers) for _ in range(4)))
    assert [r.status_code for r in warm] == [200] * 4
    assert _terminate_api_backends(db) >= 1

    statuses = []
    for _ in range(6):
        r = await api.get("/api/v1/bookings", headers=headers)
        assert r.status_code in (200, 503), r.text
        if r.status_code == 503:
            _assert_unavailable(r)
        statuses.append(r.status_code)
    # control: the dead connection was used (the outage was seen), then the pool recovered
    assert statuses[0] == 503
    assert statuses[-1] == 200


async def test_idempotent_hold_during_outage_is_503_and_not_replayed(
    api: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    headers = bearer(create_user(db), "student")
    assert (await api.get("/api/v1/bookings", headers=headers)).status_code == 200
    assert _terminate_api_backends(db) >= 1

    hold = {
        **headers,
        "Idempotency-Key": f'"{uuid.uuid4()}"',
    }
    body = {"slot_id": str(uuid.uuid4()), "seats": 1}
    first = await api.post("/api/v1/bookings", headers=hold, json=body)
    _assert_unavailable(first)
    # the retry runs the request (the outage's answer was not stored): the slot is unknown
    retry = await api.post("/api/v1/bookings", headers=hold, json=body)
    assert retry.status_code == 404, retry.text
    assert retry.json()["code"] == "slot_not_found"
    assert "idempotent-replayed" not in retry.headers
