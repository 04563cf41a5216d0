"""Administration: listing accounts with filters and cursors, audited role changes and
deactivation (tokens revoked, provider leaves search through the outbox)."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from tests.conftest import DEFAULT_PASSWORD, bearer, create_provider, create_user


def _audit(db: psycopg.Connection) -> list[tuple[object, ...]]:
    return db.execute(
        "SELECT actor, action, entity_type, entity_id, before, after FROM audit_log ORDER BY id"
    ).fetchall()


async def test_list_users_filters_and_pages(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    admin = create_user(db, role="admin", email="root@example.com")
    students = {create_user(db, role="student", email=f"s{i}@example.com") for i in range(5)}
    create_user(db, role="tutor", email="t@example.com", full_name="Zoé Tutor")
    h = bearer(admin, "admin")

    seen: list[str] = []
    cursor = None
    for _ in range(4):
        params = {"role": "student", "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/api/v1/admin/users", headers=h, params=params)).json()
        seen += [u["id"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(str(s) for s in students)  # stable order, no gaps, no repeats

    r = await api.get("/api/v1/admin/users", headers=h, params={"q": "zoé"})
    assert [u["email"] for u in r.json()["items"]] == ["t@example.com"]
    r = await api.get("/api/v1/admin/users", headers=h, params={"q": "%"})
    assert r.json()["items"] == []
    r = await api.get("/api/v1/admin/users", headers=h, params={"cursor": "!!"})
    assert (r.status_code, r.json()["errors"][0]["param"]) == (422, "cursor")
    r = await api.get("/api/v1/admin/users", headers=h, params={"role": "wizard"})
    assert (r.status_code, r.json()["errors"][0]["param"]) == (422, "role")


@pytest.mark.parametrize("role", ["student", "parent", "tutor", "coach", "mentor"])
async def test_admin_routes_are_for_admins(
    api: httpx.AsyncClient, db: psycopg.Connection, role: str
) -> None:
    uid = create_user(db, role=role)
    target = create_user(db)
    h = bearer(uid, role)
    r = await api.get("/api/v1/admin/users", headers=h)
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    r = await api.patch(f"/api/v1/admin/users/{target}", headers=h, json={"role": "admin"})
    assert r.status_code == 403
    assert _audit(db) == []


async def test_role_change_is_audited(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    admin = create_user(db, role="admin")
    uid = create_user(db, role="student")
    r = await api.patch(f"/api/v1/admin/users/{uid}", headers=bearer(admin, "admin"),
                        json={"role": "tutor"})  # fmt: skip
    assert (r.status_code, r.json()["role"]) == (200, "tutor")
    assert _audit(db) == [
        (admin, "user.role_changed", "user", str(uid), {"role": "student"}, {"role": "tutor"})
    ]
    # no change, no audit row
    await api.patch(f"/api/v1/admin/users/{uid}", headers=bearer(admin, "admin"),
                    json={"role": "tutor"})  # fmt: skip
    assert len(_audit(db)) == 1


async def test_role_change_refused_for_a_provider_with_a_profile_or_for_oneself(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    admin = create_user(db, role="admin")
    tutor = create_provider(db)
    h = bearer(admin, "admin")
    r = await api.patch(f"/api/v1/admin/users/{tutor}", headers=h, json={"role": "coach"})
    assert (r.status_code, r.json()["code"]) == (409, "role_change_refused")
    r = await api.patch(f"/api/v1/admin/users/{admin}", headers=h, json={"active": False})
    assert (r.status_code, r.json()["code"]) == (409, "role_change_refused")
    assert _audit(db) == []


async def test_deactivating_a_provider(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    admin = create_user(db, role="admin")
    tutor = create_provider(db)
    db.execute("UPDATE users SET email = 'gone@example.com' WHERE id = %s", (tutor,))
    tokens = (
        await api.post("/api/v1/auth/login",
                       data={"username": "gone@example.com", "password": DEFAULT_PASSWORD})
    ).json()  # fmt: skip
    h = bearer(admin, "admin")
    r = await api.patch(f"/api/v1/admin/users/{tutor}", headers=h, json={"active": False})
    assert (r.status_code, r.json()["active"]) == (200, False)
    assert _audit(db) == [
        (admin, "user.deactivated", "user", str(tutor), {"active": True}, {"active": False})
    ]
    assert db.execute("SELECT event_type, payload FROM outbox").fetchall() == [
        ("provider.deactivated", {"provider_id": str(tutor), "version": 2})
    ]
    r = await api.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 401
    assert (await api.get(f"/api/v1/providers/{tutor}")).status_code == 404

    r = await api.patch(f"/api/v1/admin/users/{tutor}", headers=h, json={"active": True})
    assert r.status_code == 200
    assert [a[1] for a in _audit(db)] == ["user.deactivated", "user.activated"]
    assert db.execute("SELECT event_type FROM outbox ORDER BY id").fetchall() == [
        ("provider.deactivated",), ("provider.reactivated",),
    ]  # fmt: skip
    assert (await api.get(f"/api/v1/providers/{tutor}")).status_code == 200


async def test_unknown_user_is_404(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    admin = create_user(db, role="admin")
    r = await api.patch(
        "/api/v1/admin/users/00000000-0000-0000-0000-000000000000",
        headers=bearer(admin, "admin"),
        json={"active": False},
    )
    assert (r.status_code, r.json()["code"]) == (404, "user_not_found")
