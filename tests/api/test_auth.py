"""Accounts: registration, OAuth2 password login, refresh rotation with reuse detection,
expiry, logout, deactivation and login rate limiting (real PostgreSQL and Redis)."""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import redis.asyncio as aioredis

from api.deps import get_redis
from core.security import hash_token
from core.settings import get_settings
from tests.conftest import DEFAULT_PASSWORD, bearer, create_user


async def _login(api: httpx.AsyncClient, email: str, password: str = DEFAULT_PASSWORD) -> Any:
    return await api.post("/api/v1/auth/login", data={"username": email, "password": password})


async def test_register_then_login_returns_tokens(api: httpx.AsyncClient) -> None:
    r = await api.post(
        "/api/v1/auth/register",
        json={"email": "Ada@Example.com", "password": DEFAULT_PASSWORD,
              "full_name": "Ada Lovelace", "role": "tutor", "locale": "en"},
    )  # fmt: skip
    assert r.status_code == 201
    body = r.json()
    assert {k: body[k] for k in ("email", "full_name", "role", "locale", "active")} == {
        "email": "Ada@example.com", "full_name": "Ada Lovelace", "role": "tutor",
        "locale": "en", "active": True,
    }  # fmt: skip
    assert "password_hash" not in body

    r = await _login(api, "ada@example.com")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    tokens = r.json()
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    assert tokens["refresh_expires_in"] == 30 * 86400
    claims = jwt.decode(tokens["access_token"], get_settings().secret_key, algorithms=["HS256"])
    assert claims["sub"] == body["id"]
    assert claims["role"] == "tutor"
    assert claims["exp"] - claims["iat"] == 900
    assert set(claims) == {"sub", "role", "exp", "iat", "jti"}

    me = await api.get("/api/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200
    assert me.json()["id"] == body["id"]


async def test_refresh_token_is_stored_hashed(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    uid = create_user(db, email="h@example.com")
    tokens = (await _login(api, "h@example.com")).json()
    rows = db.execute("SELECT user_id, token_hash FROM refresh_tokens").fetchall()
    assert rows == [(uid, hash_token(tokens["refresh_token"]))]


async def test_register_rejects_duplicates_and_bad_fields(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    create_user(db, email="taken@example.com")
    payload = {"email": "TAKEN@example.com", "password": DEFAULT_PASSWORD,
               "full_name": "X", "role": "student"}  # fmt: skip
    r = await api.post("/api/v1/auth/register", json=payload)
    assert r.status_code == 409
    assert r.json()["code"] == "email_taken"

    r = await api.post(
        "/api/v1/auth/register",
        json={"email": "nope", "password": "short", "full_name": "X", "role": "admin"},
    )
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert {e["param"] for e in r.json()["errors"]} == {"email", "password", "role"}


async def test_wrong_password_and_unknown_email_look_the_same(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    create_user(db, email="u@example.com")
    wrong = await _login(api, "u@example.com", "not-the-password")
    unknown = await _login(api, "ghost@example.com")
    for r in (wrong, unknown):
        assert r.status_code == 401
        assert r.json()["code"] == "invalid_credentials"
        assert r.json()["detail"] == "Wrong email or password."


async def test_refresh_rotates_and_reuse_revokes_the_family(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    create_user(db, email="r@example.com")
    first = (await _login(api, "r@example.com")).json()
    other_login = (await _login(api, "r@example.com")).json()  # another family (device)

    r = await api.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 200
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]

    # an attacker replays the rotated token: the whole family dies
    r = await api.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 401
    assert r.json()["code"] == "refresh_token_reused"
    r = await api.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_token"
    revoked = db.execute(
        "SELECT count(*) FILTER (WHERE revoked_at IS NOT NULL), count(*) FROM refresh_tokens"
    ).fetchone()
    assert revoked == (2, 3)

    # the other device's family is untouched
    r = await api.post("/api/v1/auth/refresh", json={"refresh_token": other_login["refresh_token"]})
    assert r.status_code == 200


async def test_expired_refresh_token_is_refused(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    create_user(db, email="e@example.com")
    tokens = (await _login(api, "e@example.com")).json()
    db.execute(
        "UPDATE refresh_tokens SET created_at = now() - interval '31 days',"
        " expires_at = now() - interval '1 day'"
    )
    r = await api.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 401
    assert r.json()["code"] == "token_expired"


async def test_refresh_token_expires_after_30_days_by_the_clock(
    app: Any, api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    from api.deps import get_now

    create_user(db, email="clock@example.com")
    tokens = (await _login(api, "clock@example.com")).json()
    app.dependency_overrides[get_now] = lambda: datetime.now(UTC) + timedelta(days=30, seconds=1)
    r = await api.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 401
    assert r.json()["code"] == "token_expired"
    app.dependency_overrides[get_now] = lambda: datetime.now(UTC) + timedelta(days=29)
    r = await api.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200


async def test_access_token_expiry_and_tampering(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    uid = create_user(db)
    past = datetime.now(UTC) - timedelta(minutes=16)
    r = await api.get("/api/v1/me", headers=bearer(uid, "student", now=past))
    assert r.status_code == 401
    assert r.json()["code"] == "token_expired"
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'

    almost = datetime.now(UTC) - timedelta(minutes=14)
    assert (
        await api.get("/api/v1/me", headers=bearer(uid, "student", now=almost))
    ).status_code == 200

    forged = jwt.encode(
        {"sub": str(uid), "role": "admin", "iat": 0, "exp": 2**40, "jti": "x"},
        "another-secret-key-0123456789abcdef",
        algorithm="HS256",
    )
    r = await api.get("/api/v1/me", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_token"

    r = await api.get("/api/v1/me")
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_token"


async def test_logout_revokes_the_family(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    create_user(db, email="bye@example.com")
    tokens = (await _login(api, "bye@example.com")).json()
    rotated = (
        await api.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    ).json()
    r = await api.post("/api/v1/auth/logout", json={"refresh_token": rotated["refresh_token"]})
    assert r.status_code == 204
    r = await api.post("/api/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_token"
    # logging out twice, or with an unknown token, is harmless
    r = await api.post("/api/v1/auth/logout", json={"refresh_token": "unknown"})
    assert r.status_code == 204


async def test_deactivated_account_cannot_log_in_or_use_tokens(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    uid = create_user(db, email="off@example.com")
    headers = bearer(uid, "student")
    tokens = (await _login(api, "off@example.com")).json()
    db.execute("UPDATE users SET active = false WHERE id = %s", (uid,))
    r = await _login(api, "off@example.com")
    assert r.status_code == 403
    assert r.json()["code"] == "account_disabled"
    assert (await api.get("/api/v1/me", headers=headers)).status_code == 401
    r = await api.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 401


async def test_parent_creates_and_lists_children(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    parent = create_user(db, role="parent")
    student = create_user(db, role="student")
    r = await api.post(
        "/api/v1/me/children",
        headers=bearer(parent, "parent"),
        json={"email": "kid@example.com", "password": DEFAULT_PASSWORD, "full_name": "Kid"},
    )
    assert r.status_code == 201
    assert r.json()["role"] == "student"
    r = await api.get("/api/v1/me/children", headers=bearer(parent, "parent"))
    assert [c["email"] for c in r.json()] == ["kid@example.com"]
    links = db.execute("SELECT parent_id FROM parent_children").fetchall()
    assert links == [(parent,)]
    r = await api.get("/api/v1/me/children", headers=bearer(student, "student"))
    assert r.status_code == 403
    assert r.json()["code"] == "forbidden"


# --- rate limiting --------------------------------------------------------------------


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("LOGIN_MAX_FAILURES_PER_ACCOUNT", "3")
    monkeypatch.setenv("LOGIN_MAX_ATTEMPTS_PER_IP", "6")
    monkeypatch.setenv("LOGIN_RATE_WINDOW_S", "600")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


async def test_failed_logins_per_account_are_throttled(
    small_limits: None, api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    create_user(db, email="brute@example.com")
    codes = [
        (await _login(api, "brute@example.com", "wrong-password")).status_code for _ in range(3)
    ]
    assert codes == [401, 401, 401]
    r = await _login(api, "brute@example.com")  # even the right password waits
    assert r.status_code == 429
    assert r.json()["code"] == "too_many_login_attempts"
    assert 590 <= int(r.headers["retry-after"]) <= 600
    # another account from the same address is not blocked by this account's failures
    create_user(db, email="fine@example.com")
    assert (await _login(api, "fine@example.com")).status_code == 200


async def test_success_resets_the_account_counter(
    small_limits: None, api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    create_user(db, email="typo@example.com")
    for _ in range(2):
        assert (await _login(api, "typo@example.com", "wrong-password")).status_code == 401
    assert (await _login(api, "typo@example.com")).status_code == 200
    for _ in range(2):
        assert (await _login(api, "typo@example.com", "wrong-password")).status_code == 401
    assert (await _login(api, "typo@example.com")).status_code == 200


async def test_attempts_per_ip_are_throttled(
    small_limits: None, api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    emails = [f"ip{i}@example.com" for i in range(7)]
    for e in emails:
        create_user(db, email=e)
    codes = [(await _login(api, e)).status_code for e in emails]
    assert codes == [200, 200, 200, 200, 200, 200, 429]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_login_fails_open_when_redis_is_down(
    small_limits: None, app: Any, api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    dead = aioredis.Redis.from_url(
        f"redis://127.0.0.1:{_closed_port()}/0", socket_connect_timeout=0.2, socket_timeout=0.2
    )
    app.dependency_overrides[get_redis] = lambda: dead
    create_user(db, email="nored@example.com")
    for _ in range(4):
        assert (await _login(api, "nored@example.com", "wrong-password")).status_code == 401
    assert (await _login(api, "nored@example.com")).status_code == 200
    await dead.aclose()


async def test_unknown_user_id_in_a_valid_token(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    r = await api.get("/api/v1/me", headers=bearer(uuid.uuid4(), "student"))
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_token"
