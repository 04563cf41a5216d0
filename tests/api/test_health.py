"""Liveness, readiness (including a dead PostgreSQL and a dead Redis), metrics, request id."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from api.app import create_app
from core.db import dispose_engines
from core.redis import close_redis
from core.settings import get_settings


async def test_healthz_is_ok(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_readyz_reports_both_dependencies(client: httpx.AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert body["checks"]["postgres"]["ok"] is True
    assert body["checks"]["postgres"]["revision"]  # migrated
    assert body["checks"]["redis"]["ok"] is True


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Settings pointing somewhere else; restored (and caches cleared) afterwards."""
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.mark.parametrize("dependency", ["postgres", "redis"])
async def test_readyz_fails_when_a_dependency_is_down(
    broken: pytest.MonkeyPatch, database_url: str, dependency: str
) -> None:
    port = _closed_port()
    if dependency == "postgres":
        broken.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{port}/nowhere")
    else:
        broken.setenv("REDIS_URL", f"redis://127.0.0.1:{port}/0")
    get_settings.cache_clear()
    app = create_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/readyz")
        live = await c.get("/healthz")
    await dispose_engines()
    await close_redis()
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not_ready"
    assert body["checks"][dependency]["ok"] is False
    other = "redis" if dependency == "postgres" else "postgres"
    assert body["checks"][other]["ok"] is True
    assert live.status_code == 200  # liveness does not depend on anything


async def test_metrics_expose_http_series(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert 'educonnect_http_requests_total{method="GET",route="/healthz",status="200"}' in r.text


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    generated = r.headers["x-request-id"]
    assert generated != "bad id with spaces"
    assert len(generated) == 32


async def test_openapi_and_docs_are_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    assert "/readyz" in r.json()["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_metrics_label_routes_by_full_template(client: httpx.AsyncClient) -> None:
    await client.get("/api/v1/providers/00000000-0000-4000-8000-000000000000")
    text = (await client.get("/metrics")).text
    assert 'route="/api/v1/providers/{provider_id}",status="404"' in text
