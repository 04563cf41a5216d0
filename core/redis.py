"""Redis clients (async for the API, sync for the CLI and workers).

Clients are created lazily per process. Every caller that can live without Redis (the
search cache, rate limits) catches `redis.RedisError` and degrades; readiness reports it.
"""

from __future__ import annotations

from functools import cache

import redis
import redis.asyncio as aioredis

from core.settings import get_settings

# Short timeouts: a dead Redis must degrade a request, not hang it.
_SOCKET_TIMEOUT_S = 0.5


@cache
def _async_client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        socket_timeout=_SOCKET_TIMEOUT_S,
        socket_connect_timeout=_SOCKET_TIMEOUT_S,
        health_check_interval=30,
    )


@cache
def _sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=_SOCKET_TIMEOUT_S, socket_connect_timeout=_SOCKET_TIMEOUT_S
    )


def get_async_redis() -> aioredis.Redis:
    """The process's async Redis client for `REDIS_URL` (bytes responses)."""
    return _async_client(get_settings().redis_url)


def get_sync_redis() -> redis.Redis:
    """The process's sync Redis client for `REDIS_URL` (bytes responses)."""
    return _sync_client(get_settings().redis_url)


async def close_redis() -> None:
    """Close the async client's connections (application shutdown, tests)."""
    for client in list(_iter_async()):
        await client.aclose()
    _async_client.cache_clear()
    _sync_client.cache_clear()


def _iter_async() -> list[aioredis.Redis]:
    return [_async_client(get_settings().redis_url)] if _async_client.cache_info().currsize else []
