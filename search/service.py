"""The search service: cache → engine, timing, degradation.

Returns response bodies as JSON bytes (ready to send): `cached` and `took_ms` are spliced
into the stored body, so a hit costs one Redis round trip and no JSON parsing. Redis
unavailable → the engine answers directly (`cached: false`), the failure is logged and
counted (`educonnect_search_degraded_total`), never a 500.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis

from core.logging import get_logger
from search.cache import SearchCache, query_digest
from search.engine import SearchEngine
from search.geo import snap_bbox
from search.metrics import CACHE_LOOKUPS, DEGRADED, ENGINE_LATENCY
from search.schemas import CoachQuery, TutorMapQuery, TutorQuery, normalized

log = get_logger(__name__)


def _finish(body: bytes, *, cached: bool, started: float) -> bytes:
    took = (time.perf_counter() - started) * 1000
    tail = b',"cached":%s,"took_ms":%.3f}' % (b"true" if cached else b"false", took)
    return body[:-1] + tail


class SearchService:
    """Orchestrates one engine and an optional cache (None = cache off)."""

    def __init__(self, engine: SearchEngine, cache: SearchCache | None) -> None:
        self.engine = engine
        self.cache = cache

    async def _run(
        self,
        endpoint: str,
        query: Any,
        compute: Callable[[], Awaitable[dict[str, Any]]],
        target: str | None = None,
    ) -> bytes:
        started = time.perf_counter()

        async def body() -> bytes:
            t = time.perf_counter()
            result = await compute()
            ENGINE_LATENCY.labels(self.engine.name, endpoint).observe(time.perf_counter() - t)
            result.pop("cached", None)
            result.pop("took_ms", None)
            return orjson.dumps(result)

        if self.cache is None:
            return _finish(await body(), cached=False, started=started)
        digest = query_digest(endpoint, normalized(query))
        try:
            data, hit = await self.cache.get_or_compute(digest, body, target_digest=target)
        except redis.RedisError as exc:
            CACHE_LOOKUPS.labels(endpoint, "error").inc()
            DEGRADED.labels(endpoint).inc()
            log.warning("search_cache_unavailable", endpoint=endpoint, error=repr(exc))
            return _finish(await body(), cached=False, started=started)
        CACHE_LOOKUPS.labels(endpoint, "hit" if hit else "miss").inc()
        return _finish(data, cached=hit, started=started)

    async def search_tutors(self, q: TutorQuery, target: str | None = None) -> bytes:
        """The JSON body of `GET /api/v1/search/tutors`. `target`: the raw request target's
        digest, aliased to the cached body for the lean path (`api.search_fastpath`)."""

        async def go() -> dict[str, Any]:
            return (await self.engine.search_tutors(q)).model_dump()

        return await self._run("tutors", q, go, target)

    async def tutor_map(self, q: TutorMapQuery, target: str | None = None) -> bytes:
        """The JSON body of `GET /api/v1/search/tutors/map` (viewport snapped to the grid)."""
        q = q.model_copy(update={"bbox": snap_bbox(q.bbox, q.zoom)})

        async def go() -> dict[str, Any]:
            return (await self.engine.tutor_map(q)).model_dump()

        return await self._run("tutors_map", q, go, target)

    async def search_coaches(self, q: CoachQuery, target: str | None = None) -> bytes:
        """The JSON body of `GET /api/v1/search/coaches`."""

        async def go() -> dict[str, Any]:
            return (await self.engine.search_coaches(q)).model_dump()

        return await self._run("coaches", q, go, target)
