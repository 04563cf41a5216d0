"""Every error is RFC 9457 problem+json with a stable code, validation errors included."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import Query

from api.app import create_app
from core.errors import Conflict


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
