"""Fixed-window counters in Redis, for login throttling.

Each limit is a Redis key incremented with `INCR` and given its window with `EXPIRE … NX`
on first use, so the window starts at the first counted event and the remaining `TTL`
is the `Retry-After` a throttled client receives. Redis being down is reported as
`RateLimitUnavailable`; callers decide whether to fail open (login does, and logs it).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from redis import RedisError


class RateLimitUnavailable(Exception):
    """Redis could not be reached or answered an error."""


@dataclass(frozen=True, slots=True)
class WindowState:
    """A counter's value and the seconds left in its window (0 when no window is open)."""

    count: int
    retry_after_s: int


async def peek(client: aioredis.Redis, key: str) -> WindowState:
    """The current count of `key` and its remaining window, without counting an event."""
    try:
        async with client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.ttl(key)
            raw, ttl = await pipe.execute()
    except (RedisError, OSError) as exc:
        raise RateLimitUnavailable(str(exc)) from exc
    return WindowState(int(raw or 0), max(int(ttl), 0))


async def hit(client: aioredis.Redis, key: str, window_s: int) -> WindowState:
    """Count one event on `key` (a window of `window_s` seconds opens on the first)."""
    try:
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window_s, nx=True)
            pipe.ttl(key)
            count, _, ttl = await pipe.execute()
    except (RedisError, OSError) as exc:
        raise RateLimitUnavailable(str(exc)) from exc
    return WindowState(int(count), max(int(ttl), 0))


async def reset(client: aioredis.Redis, key: str) -> None:
    """Forget `key`'s counter (e.g. after a successful login)."""
    try:
        await client.delete(key)
    except (RedisError, OSError) as exc:
        raise RateLimitUnavailable(str(exc)) from exc
