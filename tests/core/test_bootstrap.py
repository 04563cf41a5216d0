"""`core.bootstrap`: the composition root (search service, sinks, cache generation)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import redis

from core.bootstrap import (
    bump_cache_generation,
    close_search_service,
    make_sink,
    open_search_service,
)
from core.settings import get_settings
from search.cache import generation_key


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Environment changes visible to `get_settings()`; restored afterwards."""
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def test_bump_cache_generation_increments_the_engine_counter(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    bump_cache_generation("postgres")
    bump_cache_generation("postgres")
    bump_cache_generation("opensearch")
    assert int(client.get(generation_key("postgres")) or 0) == 2
    assert int(client.get(generation_key("opensearch")) or 0) == 1
    client.close()


def test_bump_cache_generation_tolerates_redis_down(settings_env: pytest.MonkeyPatch) -> None:
    from core.redis import get_sync_redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings_env.setenv("REDIS_URL", f"redis://127.0.0.1:{port}/0")
    get_settings.cache_clear()
    bump_cache_generation("postgres")  # logged, not raised
    get_sync_redis().close()


def test_make_sink_names_the_consumers() -> None:
    assert make_sink("postgres").name == "postgres"
    with pytest.raises(ValueError, match="unknown consumer 'solr'"):
        make_sink("solr")


@pytest.mark.parametrize("cache", [True, False])
async def test_postgres_answers_with_the_cache_as_configured(
    database_url: str, redis_url: str, settings_env: pytest.MonkeyPatch, cache: bool
) -> None:
    settings_env.setenv("SEARCH_CACHE_ENABLED", str(cache).lower())
    get_settings.cache_clear()
    service = await open_search_service()
    try:
        assert service.engine.name == "postgres"
        assert service.fallback is None
        assert (service.cache is not None) is cache
    finally:
        await close_search_service(service)


async def test_opensearch_answers_with_postgres_as_fallback(
    database_url: str, settings_env: pytest.MonkeyPatch
) -> None:
    settings_env.setenv("SEARCH_ENGINE", "opensearch")
    settings_env.setenv("OPENSEARCH_URL", "http://127.0.0.1:9")  # no request is made here
    get_settings.cache_clear()
    service = await open_search_service()
    try:
        assert service.engine.name == "opensearch"
        assert service.fallback is not None
        assert service.fallback.name == "postgres"
        assert service.cache is not None
        assert service.cache.engine == "opensearch"
    finally:
        await close_search_service(service)
