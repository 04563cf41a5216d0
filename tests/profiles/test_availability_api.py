"""Availability: slot rules, weekly series, overlap rejected by the database (also under
real concurrency), ownership, listing, and one outbox event per committed write."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from profiles import repository
from tests.conftest import bearer, create_provider, create_user

BASE = (datetime.now(UTC) + timedelta(days=7)).replace(hour=9, minute=0, second=0, microsecond=0)


def _slot(start: datetime = BASE, hours: float = 1, **extra: Any) -> dict[str, Any]:
    return {"starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=hours)).isoformat(),
            **extra}  # fmt: skip


def _z(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _counts(db: psycopg.Connection) -> tuple[int, int]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM availability_slots WHERE status = 'open'),"
        " (SELECT count(*) FROM outbox)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def test_create_one_slot(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    uid = create_provider(db)
    r = await api.post("/api/v1/availability", headers=bearer(uid, "tutor"),
                       json=_slot(capacity=4))  # fmt: skip
    assert r.status_code == 201
    [slot] = r.json()["items"]
    assert slot["provider_id"] == str(uid)
    assert (slot["starts_at"], slot["ends_at"]) == (_z(BASE), _z(BASE + timedelta(hours=1)))
    assert (slot["mode"], slot["capacity"], slot["status"]) == ("online", 4, "open")
    assert db.execute("SELECT version FROM provider_profiles").fetchone() == (2,)
    events = db.execute("SELECT aggregate_type, aggregate_id, event_type, payload FROM outbox")
    assert events.fetchall() == [
        ("provider", str(uid), "availability.created",
         {"provider_id": str(uid), "slot_ids": [slot["id"]], "version": 2}),
    ]  # fmt: skip


async def test_weekly_series_is_expanded_in_one_transaction(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    uid = create_provider(db)
    r = await api.post("/api/v1/availability", headers=bearer(uid, "tutor"),
                       json=_slot(repeat_weekly=4))  # fmt: skip
    assert r.status_code == 201
    assert [s["starts_at"] for s in r.json()["items"]] == [
        _z(BASE + timedelta(weeks=k)) for k in range(4)
    ]
    assert _counts(db) == (4, 1)
    assert db.execute("SELECT version FROM provider_profiles").fetchone() == (2,)


async def test_weekly_series_keeps_local_time_across_dst(
    api: httpx.AsyncClient, db: psycopg.Connection, app: Any
) -> None:
    from api.deps import get_now

    app.dependency_overrides[get_now] = lambda: datetime(2030, 3, 1, tzinfo=UTC)
    uid = create_provider(db)
    start = datetime(2030, 3, 25, 17, 0, tzinfo=UTC)  # Monday 18:00 in Paris (CET, UTC+1)
    r = await api.post("/api/v1/availability", headers=bearer(uid, "tutor"),
                       json=_slot(start, repeat_weekly=2, timezone="Europe/Paris"))  # fmt: skip
    assert [s["starts_at"] for s in r.json()["items"]] == [
        "2030-03-25T17:00:00Z",
        "2030-04-01T16:00:00Z",  # still 18:00 in Paris, now CEST (UTC+2)
    ]


async def test_overlap_is_409_and_a_series_is_all_or_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    uid = create_provider(db)
    h = bearer(uid, "tutor")
    week3 = BASE + timedelta(weeks=2, minutes=30)
    assert (await api.post("/api/v1/availability", headers=h, json=_slot(week3))).status_code == 201
    assert _counts(db) == (1, 1)

    r = await api.post("/api/v1/availability", headers=h, json=_slot(repeat_weekly=4))
    assert r.status_code == 409
    assert r.json()["code"] == "slot_overlap"
    assert _counts(db) == (1, 1)  # no slot of the series, no event
    assert db.execute("SELECT version FROM provider_profiles").fetchone() == (2,)

    # touching slots are fine; another provider's slots never conflict
    assert (await api.post("/api/v1/availability", headers=h,
                           json=_slot(week3 + timedelta(hours=1)))).status_code == 201  # fmt: skip
    other = create_provider(db)
    r = await api.post("/api/v1/availability", headers=bearer(other, "tutor"), json=_slot(week3))
    assert r.status_code == 201


@pytest.mark.parametrize(
    ("slot", "param"),
    [
        (_slot(BASE - timedelta(days=8)), "starts_at"),
        (_slot(hours=-1), "ends_at"),
        (_slot(hours=0), "ends_at"),
        (_slot(hours=13), "ends_at"),
        (_slot(capacity=0), "capacity"),
        (_slot(repeat_weekly=0), "repeat_weekly"),
        (_slot(repeat_weekly=53), "repeat_weekly"),
        (_slot(mode="hybrid"), "mode"),
        (_slot(mode="in_person"), "mode"),  # the profile is online only
        (_slot(timezone="Mars/Olympus"), "timezone"),
        ({"starts_at": "2030-01-01T10:00:00", "ends_at": "2030-01-01T11:00:00Z"}, "starts_at"),
    ],
)
async def test_invalid_slot_is_422_naming_the_field(
    api: httpx.AsyncClient, db: psycopg.Connection, slot: dict[str, Any], param: str
) -> None:
    uid = create_provider(db)
    r = await api.post("/api/v1/availability", headers=bearer(uid, "tutor"), json=slot)
    assert r.status_code == 422
    assert [e["param"] for e in r.json()["errors"]] == [param]
    assert _counts(db) == (0, 0)


async def test_slots_need_a_profile_and_a_provider(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    tutor = create_user(db, role="tutor")
    r = await api.post("/api/v1/availability", headers=bearer(tutor, "tutor"), json=_slot())
    assert (r.status_code, r.json()["code"]) == (409, "profile_required")
    for role in ("student", "parent", "admin"):
        uid = create_user(db, role=role)
        r = await api.post("/api/v1/availability", headers=bearer(uid, role), json=_slot())
        assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    assert (await api.post("/api/v1/availability", json=_slot())).status_code == 401
    assert _counts(db) == (0, 0)


async def test_delete_own_slot_only(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    owner, other = create_provider(db), create_provider(db)
    slot_id = (
        await api.post("/api/v1/availability", headers=bearer(owner, "tutor"), json=_slot())
    ).json()["items"][0]["id"]

    r = await api.delete(f"/api/v1/availability/{slot_id}", headers=bearer(other, "tutor"))
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    student = create_user(db)
    r = await api.delete(f"/api/v1/availability/{slot_id}", headers=bearer(student, "student"))
    assert r.status_code == 403
    assert _counts(db) == (1, 1)

    r = await api.delete(f"/api/v1/availability/{slot_id}", headers=bearer(owner, "tutor"))
    assert r.status_code == 204
    assert _counts(db) == (0, 2)
    last = db.execute("SELECT event_type, payload FROM outbox ORDER BY id DESC LIMIT 1").fetchone()
    assert last == ("availability.deleted",
                    {"provider_id": str(owner), "slot_id": slot_id, "version": 3})  # fmt: skip
    r = await api.delete(f"/api/v1/availability/{slot_id}", headers=bearer(owner, "tutor"))
    assert (r.status_code, r.json()["code"]) == (404, "slot_not_found")
    # the freed time can be offered again
    r = await api.post("/api/v1/availability", headers=bearer(owner, "tutor"), json=_slot())
    assert r.status_code == 201


async def test_list_availability_window(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    uid = create_provider(db)
    h = bearer(uid, "tutor")
    await api.post("/api/v1/availability", headers=h, json=_slot(repeat_weekly=3))
    url = f"/api/v1/providers/{uid}/availability"
    r = await api.get(url)
    assert [s["starts_at"] for s in r.json()["items"]] == [
        _z(BASE + timedelta(weeks=k)) for k in range(3)
    ]
    r = await api.get(url, params={"from": _z(BASE + timedelta(minutes=30)),
                                   "to": _z(BASE + timedelta(weeks=1, minutes=1))})  # fmt: skip
    assert [s["starts_at"] for s in r.json()["items"]] == [
        _z(BASE), _z(BASE + timedelta(weeks=1)),
    ]  # fmt: skip
    r = await api.get(url, params={"from": _z(BASE), "to": _z(BASE + timedelta(days=94))})
    assert (r.status_code, r.json()["errors"][0]["param"]) == (422, "to")
    r = await api.get(url, params={"from": "2030-01-01T00:00:00"})
    assert (r.status_code, r.json()["errors"][0]["param"]) == (422, "from")
    r = await api.get(f"/api/v1/providers/{uuid.uuid4()}/availability")
    assert r.status_code == 404


async def test_concurrent_overlapping_requests_one_wins(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    uid = create_provider(db)
    h = bearer(uid, "tutor")
    bodies = [_slot(BASE + timedelta(minutes=15 * i)) for i in range(4)]
    results = await asyncio.gather(
        *(api.post("/api/v1/availability", headers=h, json=b) for b in bodies)
    )
    assert sorted(r.status_code for r in results) == [201, 409, 409, 409]
    assert {r.json()["code"] for r in results if r.status_code == 409} == {"slot_overlap"}
    assert _counts(db) == (1, 1)


async def test_race_is_decided_by_the_exclusion_constraint(
    api: httpx.AsyncClient,
    db: psycopg.Connection,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A inserts and pauses before committing; B inserts an overlapping slot and blocks on
    A's row inside PostgreSQL; A commits; B gets 409 — no application-level check."""
    uid = create_provider(db)
    h = bearer(uid, "tutor")
    original = repository.insert_slots
    a_inserted, release = asyncio.Event(), asyncio.Event()
    calls = 0

    async def gated(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        first = calls == 1
        rows = await original(*args, **kwargs)
        if first:
            a_inserted.set()
            await release.wait()
        return rows

    monkeypatch.setattr(repository, "insert_slots", gated)
    task_a = asyncio.create_task(api.post("/api/v1/availability", headers=h, json=_slot()))
    await asyncio.wait_for(a_inserted.wait(), 10)
    task_b = asyncio.create_task(
        api.post("/api/v1/availability", headers=h, json=_slot(BASE + timedelta(minutes=30)))
    )
    with psycopg.connect(database_url, autocommit=True) as watcher:
        for _ in range(1000):  # wait until B waits on A's lock inside PostgreSQL
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO availability_slots%'"
            ).fetchone()
            if row and row[0] == 1:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("B never blocked on A's uncommitted slot")
    release.set()
    a, b = await asyncio.gather(task_a, task_b)
    assert (a.status_code, b.status_code) == (201, 409)
    assert b.json()["code"] == "slot_overlap"
    assert _counts(db) == (1, 1)
