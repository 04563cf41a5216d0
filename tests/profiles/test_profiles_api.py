"""Provider profiles: RBAC, validation naming the field, version bumps, outbox events,
the public view."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
import pytest

from core import outbox
from tests.conftest import bearer, create_profile, create_provider, create_user

TUTOR_PROFILE: dict[str, Any] = {
    "display_name": "Camille Martin",
    "headline": "Maths and physics, lycée",
    "bio": "Agrégée de mathématiques.",
    "subjects": ["mathematics", "physics"],
    "languages": ["fr", "en"],
    "hourly_rate_minor": 3500,
    "currency": "EUR",
    "online": True,
    "in_person": True,
    "location": {"lat": 48.856613, "lng": 2.352222},
    "city": "Paris",
    "country_code": "FR",
    "service_radius_km": 10,
}


def _outbox(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT aggregate_type, aggregate_id, event_type, payload FROM outbox ORDER BY id"
    ).fetchall()


async def test_put_creates_then_replaces_the_profile(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    uid = create_user(db, role="tutor")
    h = bearer(uid, "tutor")
    assert (await api.get("/api/v1/profiles/me", headers=h)).json()["code"] == "profile_not_found"

    r = await api.put("/api/v1/profiles/me", headers=h, json=TUTOR_PROFILE)
    assert r.status_code == 200
    body = r.json()
    assert body["version"] == 1
    assert body["kind"] == "tutor"
    assert body["location"] == {"lat": 48.856613, "lng": 2.352222}
    assert body["subjects"] == ["mathematics", "physics"]
    assert body["kyc_status"] == "pending"

    r = await api.put(
        "/api/v1/profiles/me", headers=h, json={**TUTOR_PROFILE, "hourly_rate_minor": 4000}
    )
    assert r.json()["version"] == 2
    assert r.json()["hourly_rate_minor"] == 4000
    assert (await api.get("/api/v1/profiles/me", headers=h)).json() == r.json()
    assert _outbox(db) == [
        ("provider", str(uid), "provider.created", {"provider_id": str(uid), "version": 1}),
        ("provider", str(uid), "provider.updated", {"provider_id": str(uid), "version": 2}),
    ]


async def test_patch_changes_only_the_given_fields(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    uid = create_user(db, role="tutor")
    h = bearer(uid, "tutor")
    await api.put("/api/v1/profiles/me", headers=h, json=TUTOR_PROFILE)
    r = await api.patch(
        "/api/v1/profiles/me", headers=h, json={"headline": "New", "in_person": False,
                                                 "location": None}
    )  # fmt: skip
    assert r.status_code == 200
    body = r.json()
    assert (body["headline"], body["in_person"], body["location"], body["version"]) == (
        "New", False, None, 2,
    )  # fmt: skip
    assert body["bio"] == TUTOR_PROFILE["bio"]
    assert [e[2] for e in _outbox(db)] == ["provider.created", "provider.updated"]


async def test_patch_before_put_is_404(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    uid = create_user(db, role="coach")
    r = await api.patch("/api/v1/profiles/me", headers=bearer(uid, "coach"), json={"bio": "x"})
    assert r.status_code == 404
    assert r.json()["code"] == "profile_not_found"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"subjects": ["mathematics", "astrology"]}, "subjects.1"),
        ({"languages": ["fr", "xx"]}, "languages.1"),
        ({"languages": []}, "languages"),
        ({"currency": "EURO"}, "currency"),
        ({"currency": "XYZ"}, "currency"),
        ({"hourly_rate_minor": 0}, "hourly_rate_minor"),
        ({"hourly_rate_minor": 12.5}, "hourly_rate_minor"),
        ({"location": {"lat": 91, "lng": 2}}, "location.lat"),
        ({"location": {"lat": 48, "lng": -181}}, "location.lng"),
        ({"location": None}, "location"),
        ({"subjects": []}, "subjects"),
        ({"expertises": ["public-speaking"]}, "expertises"),
        ({"online": False, "in_person": False}, "online"),
        ({"display_name": ""}, "display_name"),
        ({"colour": "blue"}, "colour"),
    ],
)
async def test_invalid_profile_is_422_naming_the_field(
    api: httpx.AsyncClient, db: psycopg.Connection, change: dict[str, Any], param: str
) -> None:
    uid = create_user(db, role="tutor")
    r = await api.put("/api/v1/profiles/me", headers=bearer(uid, "tutor"),
                      json={**TUTOR_PROFILE, **change})  # fmt: skip
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "validation_error"
    assert [e["param"] for e in body["errors"]] == [param]
    assert db.execute("SELECT count(*) FROM provider_profiles").fetchone() == (0,)
    assert _outbox(db) == []


async def test_invalid_patch_names_the_field_and_writes_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    uid = create_user(db, role="tutor")
    h = bearer(uid, "tutor")
    await api.put("/api/v1/profiles/me", headers=h, json=TUTOR_PROFILE)
    r = await api.patch("/api/v1/profiles/me", headers=h, json={"location": None})
    assert r.status_code == 422
    assert [e["param"] for e in r.json()["errors"]] == ["location"]
    r = await api.patch("/api/v1/profiles/me", headers=h, json={"languages": ["zz"]})
    assert [e["param"] for e in r.json()["errors"]] == ["languages.0"]
    assert db.execute("SELECT version FROM provider_profiles").fetchone() == (1,)
    assert len(_outbox(db)) == 1


async def test_coach_lists_expertises_not_subjects(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    uid = create_user(db, role="mentor")
    h = bearer(uid, "mentor")
    coach = {**TUTOR_PROFILE, "subjects": [], "expertises": ["public-speaking"],
             "in_person": False, "location": None}  # fmt: skip
    r = await api.put("/api/v1/profiles/me", headers=h, json=coach)
    assert r.status_code == 200
    assert (r.json()["kind"], r.json()["expertises"]) == ("mentor", ["public-speaking"])
    r = await api.put("/api/v1/profiles/me", headers=h, json={**coach, "expertises": ["chess"]})
    assert [e["param"] for e in r.json()["errors"]] == ["expertises.0"]
    r = await api.put("/api/v1/profiles/me", headers=h, json={**coach, "subjects": ["physics"]})
    assert [e["param"] for e in r.json()["errors"]] == ["subjects"]


@pytest.mark.parametrize("role", ["student", "parent", "admin"])
async def test_only_providers_have_a_profile(
    api: httpx.AsyncClient, db: psycopg.Connection, role: str
) -> None:
    uid = create_user(db, role=role)
    h = bearer(uid, role)
    for method in ("PUT", "PATCH", "GET"):
        r = await api.request(method, "/api/v1/profiles/me", headers=h, json=TUTOR_PROFILE)
        assert r.status_code == 403
        assert r.json()["code"] == "forbidden"
    assert db.execute("SELECT count(*) FROM provider_profiles").fetchone() == (0,)


async def test_profile_needs_authentication(api: httpx.AsyncClient) -> None:
    r = await api.put("/api/v1/profiles/me", json=TUTOR_PROFILE)
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_token"


async def test_public_view_rounds_the_location_and_hides_inactive(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    uid = create_provider(db, in_person=True, lat=48.856613, lng=2.352222, kyc_status="pending")
    r = await api.get(f"/api/v1/providers/{uid}")
    assert r.status_code == 200
    body = r.json()
    assert body["location"] == {"lat": 48.86, "lng": 2.35}
    assert (body["id"], body["kind"], body["verified"]) == (str(uid), "tutor", False)
    assert "kyc_status" not in body
    assert "version" not in body

    db.execute("UPDATE users SET active = false WHERE id = %s", (uid,))
    assert (await api.get(f"/api/v1/providers/{uid}")).status_code == 404
    r = await api.get(f"/api/v1/providers/{uuid.uuid4()}")
    assert (r.status_code, r.json()["code"]) == (404, "profile_not_found")
    r = await api.get("/api/v1/providers/not-a-uuid")
    assert (r.status_code, r.json()["errors"][0]["param"]) == (422, "provider_id")


async def test_a_failure_after_the_outbox_insert_leaves_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = create_user(db, role="tutor")
    emitted: list[int] = []
    original = outbox.emit

    async def emit_then_fail(*args: Any, **kwargs: Any) -> int:
        emitted.append(await original(*args, **kwargs))
        raise RuntimeError("crash after the outbox insert")

    monkeypatch.setattr(outbox, "emit", emit_then_fail)
    r = await api.put("/api/v1/profiles/me", headers=bearer(uid, "tutor"), json=TUTOR_PROFILE)
    assert r.status_code == 500
    assert r.json()["code"] == "internal_error"
    assert len(emitted) == 1  # the row was written inside the transaction…
    assert _outbox(db) == []  # …and rolled back with it
    assert db.execute("SELECT count(*) FROM provider_profiles").fetchone() == (0,)


async def test_outbox_txid_is_the_write_transaction(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    uid = create_user(db, role="tutor")
    await api.put("/api/v1/profiles/me", headers=bearer(uid, "tutor"), json=TUTOR_PROFILE)
    row = db.execute(
        "SELECT o.txid::text::bigint, p.xmin::text::bigint FROM outbox o, provider_profiles p"
    ).fetchone()
    assert row is not None
    assert row[0] % 2**32 == row[1]  # the profile row and the event share one transaction


async def test_existing_profile_helper(db: psycopg.Connection) -> None:
    uid = create_user(db, role="coach")
    create_profile(db, uid, kind="coach")
    assert db.execute("SELECT kind, expertises FROM provider_profiles").fetchone() == (
        "coach",
        ["public-speaking"],
    )
