"""Search availability follows bookings: a full slot leaves tutor search (list and map)
with availability filters after one indexer batch, and comes back when its hold expires
(beat task + indexer) or its booking is canceled."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
import redis

from booking.tasks import run_expiry
from core.db import async_session_factory
from indexer.projection import build_all
from indexer.relay import PostgresSink, Relay, RelayConfig
from tests.booking.helpers import NOW, SLOT_START, confirm, create_slot, key
from tests.conftest import TEST_REDIS_URL, bearer, create_provider, create_user

LAT, LNG = 48.8566, 2.3522  # Paris
WINDOW = {
    "available_from": (SLOT_START - timedelta(minutes=30)).isoformat(),
    "available_to": (SLOT_START + timedelta(hours=2)).isoformat(),
}


@pytest.fixture
def clock(app: Any) -> None:
    from api.deps import get_now

    app.dependency_overrides[get_now] = lambda: NOW


def _drain(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return Relay(conn, PostgresSink(), RelayConfig()).drain()


async def _found(api: httpx.AsyncClient, tutor: Any) -> tuple[bool, bool]:
    """(in the tutor list, on the map) for the availability window. Redis is flushed
    first, so no cached page answers (the relay's generation bump is not under test)."""
    redis.Redis.from_url(TEST_REDIS_URL).flushdb()
    common = {"subject": "mathematics", **WINDOW}
    listed = (await api.get("/api/v1/search/tutors", params={**common, "limit": 100})).json()
    mapped = (
        await api.get(
            "/api/v1/search/tutors/map",
            params={
                **common,
                "bbox": f"{LNG - 0.5},{LAT - 0.5},{LNG + 0.5},{LAT + 0.5}",
                "zoom": 16,
            },
        )
    ).json()
    in_list = any(i["id"] == str(tutor) for i in listed["items"])
    on_map = str(tutor) in str(mapped)
    return in_list, on_map


async def test_full_slot_leaves_search_and_comes_back(
    api: httpx.AsyncClient, db: psycopg.Connection, database_url: str, clock: None
) -> None:
    tutor = create_provider(db, in_person=True, lat=LAT, lng=LNG)
    slot = create_slot(db, tutor, capacity=1)
    with db.transaction():
        build_all(db)
    assert await _found(api, tutor) == (True, True)

    student = create_user(db)
    r = await api.post("/api/v1/bookings", headers={**bearer(student, "student"), **key()},
                       json={"slot_id": str(slot)})  # fmt: skip
    assert r.status_code == 201
    assert await _found(api, tutor) == (True, True)  # not indexed yet
    assert _drain(database_url) == 1
    assert await _found(api, tutor) == (False, False)  # full: no longer available
    anytime = (await api.get("/api/v1/search/tutors", params={"subject": "mathematics"})).json()
    assert str(tutor) in [i["id"] for i in anytime["items"]]  # still listed without a window

    # the hold lapses: the beat task expires it and the indexer brings the slot back
    sessions = async_session_factory()
    assert await run_expiry(sessions, now=NOW + timedelta(minutes=6)) == 1
    assert _drain(database_url) == 1
    assert await _found(api, tutor) == (True, True)

    # booked and paid, then canceled: back again after the cancellation's batch
    r = await api.post("/api/v1/bookings", headers={**bearer(student, "student"), **key()},
                       json={"slot_id": str(slot)})  # fmt: skip
    booking_id = r.json()["id"]
    await confirm(booking_id)
    assert _drain(database_url) == 2
    assert await _found(api, tutor) == (False, False)
    r = await api.post(f"/api/v1/bookings/{booking_id}/cancel", headers=bearer(student, "student"))
    assert r.status_code == 200
    assert _drain(database_url) == 1
    assert await _found(api, tutor) == (True, True)
