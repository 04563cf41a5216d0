"""The search cache in Redis: normalized query + the engine's index generation → the
response body (JSON bytes), with a TTL.

Key: `search:v1:{engine}:{generation}:{sha256(normalized query)}`. The generation is a
Redis counter per engine (`search:gen:{engine}`) that index writers bump after each batch
(`bump_generation`), so a cached page is never staler than one indexer batch; old keys
simply expire. One round trip per hit: a Lua script reads the generation and the entry
together.

Concurrent misses of one key compute once: in one process the waiters share an asyncio
future; across processes the first takes a short Redis lock (`SET NX PX`) and the others
wait for its value (polling, bounded by the lock's lifetime) before computing themselves.
The computed body and the lock's release go in one pipelined round trip, so a miss costs
3 round trips: lookup, lock, store.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

_PREFIX = "search:v1"
_LOOKUP = """
local g = redis.call('GET', KEYS[1]) or '0'
return {g, redis.call('GET', ARGV[1] .. ':' .. g .. ':' .. ARGV[2])}
"""


def generation_key(engine: str) -> str:
    """The Redis key of `engine`'s index generation counter."""
    return f"search:gen:{engine}"


def query_digest(endpoint: str, normalized_query: dict[str, Any]) -> str:
    """sha256 of the endpoint and the normalized query (keys sorted)."""
    raw = orjson.dumps({"e": endpoint, "q": normalized_query}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()


def bump_generation_sync(client: redis.Redis, engine: str = "postgres") -> int:
    """Bump `engine`'s generation from synchronous code (the indexer); returns the new one."""
    return int(client.incr(generation_key(engine)))


class SearchCache:
    """Cache of search responses for one engine. Redis errors propagate (`redis.RedisError`):
    the service decides to degrade."""

    def __init__(
        self, client: aioredis.Redis, engine: str, *, ttl_s: int = 60, lock_ms: int = 2000
    ) -> None:
        self.client = client
        self.engine = engine
        self.ttl_s = ttl_s
        self.lock_ms = lock_ms
        self._inflight: dict[str, asyncio.Future[bytes]] = {}
        self._lookup = client.register_script(_LOOKUP)

    async def generation(self) -> int:
        """The engine's current index generation (0 before the first bump)."""
        value = await self.client.get(generation_key(self.engine))
        return int(value or 0)

    async def bump_generation(self) -> int:
        """Invalidate every cached answer of this engine; returns the new generation."""
        return int(await self.client.incr(generation_key(self.engine)))

    def _base(self) -> str:
        return f"{_PREFIX}:{self.engine}"

    async def get(self, digest: str) -> tuple[int, bytes | None]:
        """(generation, cached body or None) in one round trip."""
        gen, body = await self._lookup(
            keys=[generation_key(self.engine)], args=[self._base(), digest]
        )
        return int(gen), body

    async def get_or_compute(
        self,
        digest: str,
        compute: Callable[[], Awaitable[bytes]],
    ) -> tuple[bytes, bool]:
        """(body, hit). On a miss `compute()` runs once for all concurrent callers of this
        process (and, through a Redis lock, usually once across processes)."""
        gen, body = await self.get(digest)
        if body is not None:
            return body, True
        key = f"{self._base()}:{gen}:{digest}"
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending), False
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            body = await self._compute_locked(key, compute)
            fut.set_result(body)
            return body, False
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[key]

    async def _compute_locked(self, key: str, compute: Callable[[], Awaitable[bytes]]) -> bytes:
        """Compute under the cross-process lock, then store the body and release the lock
        in one round trip."""
        lock = key + ":lock"
        if not await self.client.set(lock, b"1", nx=True, px=self.lock_ms):
            # Another process computes it: wait for its value, bounded by the lock's life.
            deadline = asyncio.get_running_loop().time() + self.lock_ms / 1000
            while asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.005)
                body = await self.client.get(key)
                if isinstance(body, bytes):
                    return body
                if not await self.client.exists(lock):
                    break
        try:
            body = await compute()
        except BaseException:
            await self.client.delete(lock)
            raise
        pipe = self.client.pipeline(transaction=False)
        pipe.set(key, body, ex=self.ttl_s)
        pipe.delete(lock)
        await pipe.execute()
        return body
