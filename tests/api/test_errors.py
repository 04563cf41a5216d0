"""Every error is RFC 9457 problem+json with a stable code, validation errors included."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import Query

from api.app import create_app
from core.errors import Conflict
from tests.conftest import bearer, create_user


@pytest.fixture
async def app_client(database_url: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app()

    @app.get("/test/conflict")
    async def _conflict() -> None:
        raise Conflict("slot already taken", code="slot_overlap", slot_id="s1")

    @app.get("/test/validate")
    async def _validate(
        lat: float = Query(ge=-90, le=90), limit: int = Query(ge=1)
    ) -> dict[str, float]:
        return {"lat": lat}

    @app.get("/test/crash")
    async def _crash() -> None:
        raise RuntimeError("boom")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


async def test_app_error_is_problem_json(app_client: httpx.AsyncClient) -> None:
    r = await app_client.get("/test/conflict")
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {
        "type": "https://errors.educonnect.dev/slot_overlap",
        "title": "Conflict",
        "status": 409,
        "detail": "slot already taken",
        "code": "slot_overlap",
        "instance": "/test/conflict",
        "slot_id": "s1",
    }


async def test_validation_error_names_each_parameter(app_client: httpx.AsyncClient) -> None:
    r = await app_client.get("/test/validate", params={"lat": "95"})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "validation_error"
    assert {e["param"] for e in body["errors"]} == {"lat", "limit"}
    assert all(e["in"] == "query" for e in body["errors"])
    assert "lat" in body["detail"]


async def test_unknown_route_is_problem_json(app_client: httpx.AsyncClient) -> None:
    r = await app_client.get("/nope")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "not_found"


async def test_wrong_method_is_problem_json(app_client: httpx.AsyncClient) -> None:
    r = await app_client.post("/healthz")
    assert r.status_code == 405
    assert r.json()["code"] == "method_not_allowed"


async def test_unexpected_exception_is_500_problem_without_internals(
    app_client: httpx.AsyncClient,
) -> None:
    r = await app_client.get("/test/crash")
    assert r.status_code == 500
    body = r.json()
    assert body["code"] == "internal_error"
    assert "boom" not in r.text


# A body that is not JSON, on every route that takes a JSON body: 422 `malformed_json`
# (documented), never FastAPI's bare 400 "There was an error parsing the body".
MALFORMED = [
    pytest.param('"été"'.encode("latin-1"), id="not-utf8"),
    pytest.param(b"\xff\xfe{\x00", id="utf16-not-json"),
    pytest.param(b'{"email": "a@b.c",', id="truncated-json"),
    pytest.param(b"not json at all", id="not-json"),
]


async def test_malformed_body_is_422_problem_on_every_json_route(
    api: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    spec = (await api.get("/openapi.json")).json()
    routes = [
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if "application/json" in op.get("requestBody", {}).get("content", {})
        # webhooks verify a signature over the raw body before parsing it: a malformed
        # body is an unsigned one there (400/401, tested in payments and sessions)
        and "/webhooks/" not in path
    ]
    # the eight routes that answered 400 before, and the idempotent one
    assert {
        ("PUT", "/api/v1/profiles/me"),
        ("PATCH", "/api/v1/profiles/me"),
        ("PATCH", "/api/v1/admin/users/{user_id}"),
        ("POST", "/api/v1/admin/reindex"),
        ("POST", "/api/v1/auth/logout"),
        ("POST", "/api/v1/auth/refresh"),
        ("POST", "/api/v1/auth/register"),
        ("POST", "/api/v1/me/children"),
        ("POST", "/api/v1/availability"),
    } <= set(routes)
    uid = create_user(db, role="admin")
    headers = {**bearer(uid, "admin"), "Content-Type": "application/json"}
    for method, path in routes:
        op = spec["paths"][path][method.lower()]
        assert "422" in op["responses"], (method, path)
        url = path.replace("{user_id}", str(uid)).replace("{slot_id}", str(uid))
        for raw in (p.values[0] for p in MALFORMED):
            # a fresh key: routes that require one (POST /bookings) reach the body
            key = {"Idempotency-Key": f'"{uuid.uuid4()}"'}
            r = await api.request(method, url, content=raw, headers={**headers, **key})
            assert r.status_code == 422, (method, path, raw, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            body = r.json()
            assert body["code"] == "malformed_json", body
            assert body["type"] == "https://errors.educonnect.dev/malformed_json"
            assert body["status"] == 422
            assert body["instance"] == url
            assert [(e["param"], e["in"], e["type"]) for e in body["errors"]] == [
                ("body", "body", "json_invalid")
            ]


@pytest.mark.parametrize("raw", MALFORMED)
async def test_malformed_body_without_credentials_is_422_too(
    api: httpx.AsyncClient, raw: bytes
) -> None:
    """The body is decoded before authentication: the answer does not depend on it."""
    r = await api.post(
        "/api/v1/auth/register", content=raw, headers={"Content-Type": "application/json"}
    )
    assert (r.status_code, r.json()["code"]) == (422, "malformed_json")


async def test_valid_json_of_the_wrong_shape_stays_validation_error(
    api: httpx.AsyncClient,
) -> None:
    r = await api.post("/api/v1/auth/register", json=["not", "an", "object"])
    assert (r.status_code, r.json()["code"]) == (422, "validation_error")


async def test_malformed_form_body_is_422_problem(api: httpx.AsyncClient) -> None:
    """The login form: a multipart body without its boundary is 422 `malformed_form`."""
    r = await api.post(
        "/api/v1/auth/login", content=b"garbage", headers={"Content-Type": "multipart/form-data"}
    )
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert (body["code"], body["status"]) == ("malformed_form", 422)
    assert [(e["param"], e["in"], e["type"]) for e in body["errors"]] == [
        ("body", "body", "form_invalid")
    ]
