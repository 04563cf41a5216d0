"""Idempotency-Key (IETF httpapi draft) on POST /api/v1/availability and on a route that
requires it: replay, 409 in flight, 422 on another payload, 400, concurrency, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import APIRouter

from api.idempotency import IdempotentRoute, idempotent
from core import idempotency
from core.idempotency import IdempotencyKeyInvalid, fingerprint, parse_key
from profiles import service
from tests.conftest import bearer, create_provider, create_user

BASE = (datetime.now(UTC) + timedelta(days=3)).replace(hour=14, minute=0, second=0, microsecond=0)
SLOT = {"starts_at": BASE.isoformat(), "ends_at": (BASE + timedelta(hours=1)).isoformat()}
URL = "/api/v1/availability"


def _with_key(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


def _slots(db: psycopg.Connection) -> int:
    row = db.execute("SELECT count(*) FROM availability_slots").fetchone()
    return int(row[0]) if row else -1


def _events(db: psycopg.Connection) -> int:
    row = db.execute("SELECT count(*) FROM outbox").fetchone()
    return int(row[0]) if row else -1


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ('"abc-123"', "abc-123"),
        ('"with \\"quote\\""', 'with "quote"'),
        ("bare-token", "bare-token"),
        ('"a b"', "a b"),
        ('"' + "k" * 255 + '"', "k" * 255),
    ],
)
def test_parse_key_accepts_structured_strings(raw: str, key: str) -> None:
    assert parse_key(raw) == key


@pytest.mark.parametrize(
    "raw",
    [
        '""',
        '"unterminated',
        '"bad \\x escape"',
        '"' + "k" * 256 + '"',
        "two words",
        '"x" trailing',
        "caf\u00e9",
    ],
)
def test_parse_key_rejects_malformed_keys(raw: str) -> None:
    with pytest.raises(IdempotencyKeyInvalid):
        parse_key(raw)


def test_fingerprint_covers_method_target_and_body() -> None:
    fp = fingerprint("POST", "/a", b"{}")
    assert fp == fingerprint("post", "/a", b"{}")
    assert len({fp, fingerprint("PUT", "/a", b"{}"), fingerprint("POST", "/b", b"{}"),
                fingerprint("POST", "/a", b"{ }")}) == 4  # fmt: skip


async def test_retry_replays_the_stored_response(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    uid = create_provider(db)
    h = _with_key(bearer(uid, "tutor"), '"slot-1"')
    first = await api.post(URL, headers=h, json=SLOT)
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    again = await api.post(URL, headers=h, json=SLOT)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == "application/json"
    assert again.content == first.content
    assert (_slots(db), _events(db)) == (1, 1)
    row = db.execute(
        "SELECT principal, key, state, status, expires_at - created_at FROM idempotency_keys"
    ).fetchone()
    assert row == (f"user:{uid}", "slot-1", "completed", 201, timedelta(hours=24))


async def test_errors_are_replayed_too(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    uid = create_provider(db)
    plain = bearer(uid, "tutor")
    assert (await api.post(URL, headers=plain, json=SLOT)).status_code == 201
    h = _with_key(plain, '"dup"')
    first = await api.post(URL, headers=h, json=SLOT)
    assert (first.status_code, first.json()["code"]) == (409, "slot_overlap")
    # the conflicting slot goes away, but the key still answers what it answered
    slot_id = db.execute("SELECT id FROM availability_slots").fetchone()[0]  # type: ignore[index]
    assert (await api.delete(f"{URL}/{slot_id}", headers=plain)).status_code == 204
    again = await api.post(URL, headers=h, json=SLOT)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json() == first.json()
    # validation errors as well
    bad = _with_key(plain, '"bad-body"')
    r1 = await api.post(URL, headers=bad, json={**SLOT, "capacity": 0})
    r2 = await api.post(URL, headers=bad, json={**SLOT, "capacity": 0})
    assert (r1.status_code, r2.status_code) == (422, 422)
    assert r2.json() == r1.json()
    assert r2.headers["idempotent-replayed"] == "true"


async def test_same_key_other_payload_is_422(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    uid = create_provider(db)
    h = _with_key(bearer(uid, "tutor"), '"k"')
    assert (await api.post(URL, headers=h, json=SLOT)).status_code == 201
    r = await api.post(URL, headers=h, json={**SLOT, "capacity": 2})
    assert r.status_code == 422
    assert r.json()["code"] == "idempotency_key_mismatch"
    assert (_slots(db), _events(db)) == (1, 1)


async def test_keys_are_per_user(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    a, b = create_provider(db), create_provider(db)
    for uid in (a, b):
        r = await api.post(URL, headers=_with_key(bearer(uid, "tutor"), '"same"'), json=SLOT)
        assert r.status_code == 201
        assert "idempotent-replayed" not in r.headers
    assert _slots(db) == 2


async def test_malformed_key_is_400(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    uid = create_provider(db)
    r = await api.post(URL, headers=_with_key(bearer(uid, "tutor"), '"' + "x" * 256 + '"'),
                       json=SLOT)  # fmt: skip
    assert (r.status_code, r.json()["code"]) == (400, "idempotency_key_invalid")
    assert _slots(db) == 0


async def test_duplicate_in_flight_is_409(
    api: httpx.AsyncClient, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = create_provider(db)
    h = _with_key(bearer(uid, "tutor"), '"in-flight"')
    original = service.create_slots
    running, release = asyncio.Event(), asyncio.Event()

    async def held(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        running.set()
        await release.wait()
        return result

    monkeypatch.setattr(service, "create_slots", held)
    first = asyncio.create_task(api.post(URL, headers=h, json=SLOT))
    await asyncio.wait_for(running.wait(), 10)
    dup = await api.post(URL, headers=h, json=SLOT)
    assert (dup.status_code, dup.json()["code"]) == (409, "idempotency_key_in_use")
    other_body = await api.post(URL, headers=h, json={**SLOT, "capacity": 3})
    assert (other_body.status_code, other_body.json()["code"]) == (422, "idempotency_key_mismatch")
    release.set()
    assert (await first).status_code == 201
    replay = await api.post(URL, headers=h, json=SLOT)
    assert (replay.status_code, replay.headers["idempotent-replayed"]) == (201, "true")
    assert (_slots(db), _events(db)) == (1, 1)


async def test_concurrent_duplicates_run_once(
    api: httpx.AsyncClient, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six identical requests claim the key at once: exactly one runs, five get 409.

    A barrier makes the race real: no claim starts before all six requests are at it, and
    the winner's work waits until the five others have been refused, so requests that ran
    one after another would time out here instead of passing as replays."""
    uid = create_provider(db)
    h = _with_key(bearer(uid, "tutor"), '"burst"')
    n = 6
    at_claim = asyncio.Barrier(n)
    entered = refused = 0
    all_refused = asyncio.Event()
    claim, create_slots = idempotency.claim, service.create_slots

    async def racing_claim(*args: Any, **kwargs: Any) -> Any:
        nonlocal entered, refused
        entered += 1
        if entered > n:  # the retry after the race
            return await claim(*args, **kwargs)
        await asyncio.wait_for(at_claim.wait(), 10)
        try:
            return await claim(*args, **kwargs)
        except idempotency.IdempotencyKeyInUse:
            refused += 1
            if refused == n - 1:
                all_refused.set()
            raise

    async def held(*args: Any, **kwargs: Any) -> Any:
        await asyncio.wait_for(all_refused.wait(), 10)
        return await create_slots(*args, **kwargs)

    monkeypatch.setattr(idempotency, "claim", racing_claim)
    monkeypatch.setattr(service, "create_slots", held)
    results = await asyncio.gather(*(api.post(URL, headers=h, json=SLOT) for _ in range(n)))
    assert sorted(r.status_code for r in results) == [201] + [409] * (n - 1)
    assert [r.json()["code"] for r in results if r.status_code == 409] == [
        "idempotency_key_in_use"
    ] * (n - 1)
    assert refused == n - 1
    [created] = [r for r in results if r.status_code == 201]
    assert "idempotent-replayed" not in created.headers
    assert (_slots(db), _events(db)) == (1, 1)
    # the stored response is what a later retry gets
    replay = await api.post(URL, headers=h, json=SLOT)
    assert (replay.status_code, replay.headers["idempotent-replayed"]) == (201, "true")
    assert replay.content == created.content


async def test_expired_key_can_be_used_again(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    uid = create_provider(db)
    h = _with_key(bearer(uid, "tutor"), '"old"')
    assert (await api.post(URL, headers=h, json=SLOT)).status_code == 201
    db.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
    later = {**SLOT, "starts_at": (BASE + timedelta(days=1)).isoformat(),
             "ends_at": (BASE + timedelta(days=1, hours=1)).isoformat()}  # fmt: skip
    r = await api.post(URL, headers=h, json=later)
    assert r.status_code == 201
    assert "idempotent-replayed" not in r.headers
    assert _slots(db) == 2


async def test_abandoned_claim_is_retried_after_its_lease(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    uid = create_provider(db)
    h = _with_key(bearer(uid, "tutor"), '"crashed"')
    body = httpx.Request("POST", "http://t" + URL, json=SLOT).content
    fp = fingerprint("POST", URL, body)
    db.execute(
        "INSERT INTO idempotency_keys (principal, key, fingerprint, state, locked_until,"
        " expires_at) VALUES (%s, 'crashed', %s, 'in_progress', now() + interval '1 minute',"
        " now() + interval '1 day')",
        (f"user:{uid}", fp),
    )
    r = await api.post(URL, headers=h, json=SLOT)
    assert (r.status_code, r.json()["code"]) == (409, "idempotency_key_in_use")
    db.execute("UPDATE idempotency_keys SET locked_until = now() - interval '1 second'")
    r = await api.post(URL, headers=h, json=SLOT)
    assert r.status_code == 201
    assert _slots(db) == 1


async def test_no_key_no_idempotency(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    uid = create_provider(db)
    r = await api.post(URL, headers=bearer(uid, "tutor"), json=SLOT)
    assert r.status_code == 201
    assert db.execute("SELECT count(*) FROM idempotency_keys").fetchone() == (0,)


async def test_unauthenticated_requests_claim_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    r = await api.post(URL, headers={"Idempotency-Key": '"anon"'}, json=SLOT)
    assert r.status_code == 401
    assert db.execute("SELECT count(*) FROM idempotency_keys").fetchone() == (0,)


async def test_openapi_documents_the_header_and_policy(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    op = spec["paths"]["/api/v1/availability"]["post"]
    [param] = [p for p in op["parameters"] if p["name"] == "Idempotency-Key"]
    assert param["in"] == "header"
    assert param["required"] is False
    assert "24 hours" in param["description"]
    assert {"400", "409", "422"} <= set(op["responses"])


# --- a route that requires the key ----------------------------------------------------


@pytest.fixture
async def required_api(app: Any, db: psycopg.Connection) -> AsyncIterator[httpx.AsyncClient]:
    router = APIRouter(route_class=IdempotentRoute)

    @router.post("/test/pay", status_code=201)
    @idempotent(required=True)
    async def pay(payload: dict[str, int]) -> dict[str, int]:
        return payload

    app.include_router(router)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


async def test_required_key_missing_is_400(
    required_api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    uid = create_user(db)
    r = await required_api.post("/test/pay", headers=bearer(uid, "student"), json={"a": 1})
    assert (r.status_code, r.json()["code"]) == (400, "idempotency_key_missing")
    h = _with_key(bearer(uid, "student"), '"p1"')
    r = await required_api.post("/test/pay", headers=h, json={"a": 1})
    assert (r.status_code, r.json()) == (201, {"a": 1})
