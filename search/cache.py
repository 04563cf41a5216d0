"""The search cache in Redis: normalized query + the engine's index generations → the
response body (JSON bytes), with a TTL.

Two generations per engine, Redis counters that index writers bump after a batch that
changed something (`bump_generation`), so a cached page is never staler than one indexer
batch; old keys simply expire:

- the document generation (`search:gen:{engine}`): every answer depends on it; bumped
  when a batch changed a search document in anything but its availability (a profile, a
  price, a rating, a document added or removed), and by a reindex swap;
- the availability generation (`search:gen:{engine}:availability`): only answers of
  queries with an availability window (`available_from`/`available_to`) depend on it;
  bumped when a batch changed only documents' availability (a booking filling or freeing
  a slot). No other field of a body depends on availability, so such a batch leaves every
  other cached answer valid.

Key: `search:v1:{engine}:{generation}:{sha256(normalized query)}`, the generation being
`{documents}` or `{documents}.{availability}`. One round trip per hit: a Lua script reads
the generations and the entry together.

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
if KEYS[2] then g = g .. '.' .. (redis.call('GET', KEYS[2]) or '0') end
return {g, redis.call('GET', ARGV[1] .. ':' .. g .. ':' .. ARGV[2])}
"""


def generation_key(engine: str) -> str:
    """The Redis key of `engine`'s document generation counter (every answer's)."""
    return f"search:gen:{engine}"


def availability_generation_key(engine: str) -> str:
    """The Redis key of `engine`'s availability generation counter (the answers of
    queries with an availability window)."""
    return f"search:gen:{engine}:availability"


def query_digest(endpoint: str, normalized_query: dict[str, Any]) -> str:
    """sha256 of the endpoint and the normalized query (keys sorted)."""
    raw = orjson.dumps({"e": endpoint, "q": normalized_query}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()


def bump_generation_sync(
    client: redis.Redis, engine: str = "postgres", *, availability_only: bool = False
) -> int:
    """Bump `engine`'s document generation (every cached answer goes) or, with
    `availability_only`, its availability generation (only the answers of queries with an
    availability window go), from synchronous code (the indexer); returns the new value."""
    key = availability_generation_key(engine) if availability_only else generation_key(engine)
    return int(client.incr(key))


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

        self._keys = [generation_key(engine)]
        self._window_keys = [generation_key(engine), availability_generation_key(engine)]

    async def generation(self) -> int:
        """The engine's current document generation (0 before the first bump)."""
        value = await self.client.get(generation_key(self.engine))
        return int(value or 0)

    async def bump_generation(self, *, availability_only: bool = False) -> int:
        """Invalidate every cached answer of this engine or, with `availability_only`,
        those of queries with an availability window; returns the new generation."""
        key = (
            availability_generation_key(self.engine)
            if availability_only
            else generation_key(self.engine)
        )
        return int(await self.client.incr(key))

    def _base(self) -> str:
        return f"{_PREFIX}:{self.engine}"

    async def get(self, digest: str, *, window: bool = False) -> tuple[str, bytes | None]:
        """(generation, cached body or None) in one round trip. `window`: the query has an
        availability window, so its entry depends on the availability generation too
        (the generation reads `{documents}.{availability}`)."""
        gen, body = await self._lookup(
            keys=self._window_keys if window else self._keys, args=[self._base(), digest]
        )
        return gen.decode() if isinstance(gen, bytes) else str(gen), body

    async def get_or_compute(
        self,
        digest: str,
        compute: Callable[[], Awaitable[bytes]],
        *,
        window: bool = False,
    ) -> tuple[bytes, bool]:
        """(body, hit). On a miss `compute()` runs once for all concurrent callers of this
        process (and, through a Redis lock, usually once across processes). `window`: as
        in `get`."""
        gen, body = await self.get(digest, window=window)
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
