"""SEARCH_ENGINE=opensearch with OpenSearch down or slow: every search endpoint answers
from PostgreSQL, marked degraded, counted in /metrics, never a 500."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.search.opensearch_standin import StandIn

ENDPOINTS = [
    "/api/v1/search/tutors?lat=48.8566&lng=2.3522&radius_km=30&limit=5",
    "/api/v1/search/tutors?subject=mathematics&language=fr&sort=price&limit=5",
    "/api/v1/search/tutors?q=math&sort=relevance&limit=5",
    "/api/v1/search/tutors/map?bbox=2.0,48.6,2.7,49.1&zoom=9",
    "/api/v1/search/tutors/map?bbox=2.33,48.85,2.36,48.87&zoom=14",
    "/api/v1/search/coaches?limit=5",
    "/api/v1/search/coaches?kind=mentor&sort=price&limit=5",
]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed once the socket is: connection refused


async def _app_client(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    from api.app import create_app
    from core.settings import get_settings

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    app = create_app()
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                yield c
    finally:
        get_settings.cache_clear()


@pytest.fixture
async def down(
    search_dataset: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    env = {
        "SEARCH_ENGINE": "opensearch",
        "OPENSEARCH_URL": f"http://127.0.0.1:{_closed_port()}",
        "OPENSEARCH_RETRY_AFTER_S": "0",
    }
    async for c in _app_client(monkeypatch, env):
        yield c


def _strip(body: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in body.items()
        if k not in {"engine", "cached", "took_ms", "degraded", "degraded_reason"}
    }


async def test_every_endpoint_answers_from_postgres_when_opensearch_is_unreachable(
    down: httpx.AsyncClient,
) -> None:
    for url in ENDPOINTS:
        r = await down.get(url)
        assert r.status_code == 200, (url, r.text)
        body = r.json()
        assert body["engine"] == "postgres", url
        assert body["degraded"] is True
        assert body["degraded_reason"] == "opensearch_unreachable"
        assert body["cached"] is False
    metrics = (await down.get("/metrics")).text
    assert (
        'educonnect_search_fallback_total{endpoint="tutors",engine="opensearch",reason="unreachable"}'
        in metrics
    )


async def test_degraded_answers_equal_postgres_answers_and_are_not_cached(
    search_dataset: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    degraded: dict[str, Any] = {}
    env = {
        "SEARCH_ENGINE": "opensearch",
        "OPENSEARCH_URL": f"http://127.0.0.1:{_closed_port()}",
        "OPENSEARCH_RETRY_AFTER_S": "0",
    }
    async for c in _app_client(monkeypatch, env):
        for url in ENDPOINTS:
            degraded[url] = (await c.get(url)).json()
            again = (await c.get(url)).json()
            assert again["cached"] is False  # never stored under the opensearch cache key
            assert again["degraded"] is True
    async for c in _app_client(monkeypatch, {"SEARCH_ENGINE": "postgres"}):
        for url in ENDPOINTS:
            normal = (await c.get(url)).json()
            assert "degraded" not in normal
            assert normal["engine"] == "postgres"
            assert _strip(degraded[url]) == _strip(normal), url


async def test_cursor_pages_continue_on_the_fallback(down: httpx.AsyncClient) -> None:
    url = "/api/v1/search/tutors?lat=48.8566&lng=2.3522&sort=rating&limit=3"
    first = (await down.get(url)).json()
    second = (await down.get(url + "&cursor=" + first["next_cursor"])).json()
    assert second["degraded"] is True
    ids = [i["id"] for i in first["items"] + second["items"]]
    assert len(set(ids)) == 6


@pytest.fixture
def slow_standin() -> Iterator[StandIn]:
    s = StandIn()
    s.state.search_delay_s = 1.5
    yield s
    s.close()


async def test_a_slow_opensearch_times_out_into_postgres_then_backs_off(
    search_dataset: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    slow_standin: StandIn,
) -> None:
    env = {
        "SEARCH_ENGINE": "opensearch",
        "OPENSEARCH_URL": slow_standin.url,
        "OPENSEARCH_TIMEOUT_S": "0.3",
        "OPENSEARCH_RETRY_AFTER_S": "60",
        "SEARCH_CACHE_ENABLED": "false",
    }
    async for c in _app_client(monkeypatch, env):
        r = await c.get(ENDPOINTS[0])
        assert r.status_code == 200
        assert r.json()["degraded_reason"] == "opensearch_timeout"
        sent = len(slow_standin.requests)
        r = await c.get(ENDPOINTS[5])
        assert r.json()["degraded_reason"] == "opensearch_backoff"
        assert len(slow_standin.requests) == sent  # not tried again during the back-off


async def test_an_opensearch_error_status_falls_back_too(
    search_dataset: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = StandIn()
    s.state.fail_search = 503
    env = {
        "SEARCH_ENGINE": "opensearch",
        "OPENSEARCH_URL": s.url,
        "OPENSEARCH_RETRY_AFTER_S": "0",
    }
    try:
        async for c in _app_client(monkeypatch, env):
            r = await c.get(ENDPOINTS[1])
            assert r.status_code == 200
            assert r.json()["degraded_reason"] == "opensearch_error"
    finally:
        s.close()


async def test_a_healthy_opensearch_answers_and_is_cached(
    search_dataset: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = StandIn()
    env = {"SEARCH_ENGINE": "opensearch", "OPENSEARCH_URL": s.url}
    try:
        async for c in _app_client(monkeypatch, env):
            first = (await c.get(ENDPOINTS[0])).json()
            second = (await c.get(ENDPOINTS[0])).json()
            assert first["engine"] == second["engine"] == "opensearch"
            assert "degraded" not in first
            assert (first["cached"], second["cached"]) == (False, True)
    finally:
        s.close()
