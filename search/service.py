"""The search service: cache → engine (→ fallback engine), timing, degradation.

Returns response bodies as JSON bytes (ready to send): `cached` and `took_ms` are spliced
into the stored body, so a hit costs one Redis round trip and no JSON parsing. Redis
unavailable → the engine answers directly (`cached: false`), the failure is logged and
counted (`educonnect_search_degraded_total`), never a 500.

Engine unavailable (`search.engine.EngineUnavailable`: OpenSearch unreachable, timing out
or failing) → the fallback engine (PostgreSQL) answers, the body says so with
`"engine": "postgres", "degraded": true, "degraded_reason": "opensearch_<reason>"` (the
two fields appear only then, so normal bodies are unchanged), the answer is not cached
under the primary engine's key, and it is logged and counted
(`educonnect_search_fallback_total{endpoint, engine, reason}`). After a failure the
primary is skipped for `retry_after_s` (reason `opensearch_backoff`), so an outage does
not cost a timeout per request. A relevance cursor issued by the primary cannot continue
on the fallback (scores differ): that page restarts from the first one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis
from prometheus_client import Counter, Histogram

from core.logging import get_logger
from search.cache import SearchCache, query_digest
from search.engine import EngineUnavailable, SearchEngine, fresh_reads
from search.errors import InvalidParameter
from search.geo import snap_bbox
from search.metrics import CACHE_LOOKUPS, DEGRADED, ENGINE_LATENCY
from search.schemas import CoachQuery, TutorMapQuery, TutorQuery, body_fields, normalized

log = get_logger(__name__)

FALLBACKS = Counter(
    "educonnect_search_fallback_total",
    "Searches answered by the fallback engine because the configured one failed, by "
    "endpoint, failed engine and reason (unreachable, timeout, error, backoff).",
    ["endpoint", "engine", "reason"],
)


class _Degraded(Exception):
    """Carries a fallback answer out of the cache's compute (so it is not cached)."""

    def __init__(self, body: bytes) -> None:
        super().__init__("degraded answer")
        self.body = body


_CHILDREN: dict[tuple[object, str, str], Any] = {}


def _child(metric: Counter | Histogram, a: str, b: str) -> Any:
    """`metric.labels(a, b)`, kept: the labelled child is looked up under the metric's lock
    otherwise, on every search."""
    child = _CHILDREN.get((metric, a, b))
    if child is None:
        child = _CHILDREN[(metric, a, b)] = metric.labels(a, b)
    return child


def _finish(body: bytes, *, cached: bool, started: float) -> bytes:
    took = (time.perf_counter() - started) * 1000
    tail = b',"cached":%s,"took_ms":%.3f}' % (b"true" if cached else b"false", took)
    return body[:-1] + tail


class SearchService:
    """Orchestrates one engine, an optional cache (None = cache off) and an optional
    fallback engine answering when `engine` raises `EngineUnavailable`."""

    def __init__(
        self,
        engine: SearchEngine,
        cache: SearchCache | None,
        *,
        fallback: SearchEngine | None = None,
        retry_after_s: float = 0.0,
    ) -> None:
        self.engine = engine
        self.cache = cache
        self.fallback = fallback
        self.retry_after_s = retry_after_s
        self._skip_until = 0.0

    async def _answer(
        self, endpoint: str, call: Callable[[SearchEngine], Awaitable[dict[str, Any]]]
    ) -> tuple[dict[str, Any], str | None]:
        """(result, degraded reason or None): the primary engine, or the fallback."""
        reason = "backoff"
        if self.fallback is None or time.monotonic() >= self._skip_until:
            t = time.perf_counter()
            try:
                result = await call(self.engine)
            except EngineUnavailable as exc:
                if self.fallback is None:
                    raise
                reason = exc.reason
                self._skip_until = time.monotonic() + self.retry_after_s
                log.warning(
                    "search_engine_unavailable",
                    endpoint=endpoint,
                    engine=self.engine.name,
                    reason=exc.reason,
                    error=exc.detail,
                )
            else:
                _child(ENGINE_LATENCY, self.engine.name, endpoint).observe(time.perf_counter() - t)
                return result, None
        assert self.fallback is not None
        FALLBACKS.labels(endpoint, self.engine.name, reason).inc()
        t = time.perf_counter()
        result = await call(self.fallback)
        _child(ENGINE_LATENCY, self.fallback.name, endpoint).observe(time.perf_counter() - t)
        return result, f"{self.engine.name}_{reason}"

    async def _run(
        self,
        endpoint: str,
        query: Any,
        compute: Callable[[SearchEngine], Awaitable[dict[str, Any]]],
    ) -> bytes:
        started = time.perf_counter()

        async def answer() -> bytes:
            result, degraded = await self._answer(endpoint, compute)
            if degraded is None:
                return orjson.dumps(result)
            result["degraded"] = True
            result["degraded_reason"] = degraded
            raise _Degraded(orjson.dumps(result))

        async def body() -> bytes:
            # a cache entry is stored under the generation read before this ran: it must
            # reflect every write committed before that generation's bump
            with fresh_reads():
                return await answer()

        async def uncached() -> bytes:
            try:
                return await answer()
            except _Degraded as d:
                return d.body

        if self.cache is None:
            return _finish(await uncached(), cached=False, started=started)
        digest = query_digest(endpoint, normalized(query))
        # only an answer filtered on availability depends on the availability generation
        window = query.available_from is not None or query.available_to is not None
        try:
            data, hit = await self.cache.get_or_compute(digest, body, window=window)
        except _Degraded as d:
            CACHE_LOOKUPS.labels(endpoint, "miss").inc()
            return _finish(d.body, cached=False, started=started)
        except redis.RedisError as exc:
            CACHE_LOOKUPS.labels(endpoint, "error").inc()
            DEGRADED.labels(endpoint).inc()
            log.warning("search_cache_unavailable", endpoint=endpoint, error=repr(exc))
            return _finish(await uncached(), cached=False, started=started)
        _child(CACHE_LOOKUPS, endpoint, "hit" if hit else "miss").inc()
        return _finish(data, cached=hit, started=started)

    async def _listing(self, engine: SearchEngine, q: Any, method: str) -> dict[str, Any]:
        run = getattr(engine, method)
        try:
            return body_fields(await run(q))
        except InvalidParameter as exc:
            if engine is self.engine or exc.param != "cursor" or q.cursor is None:
                raise
        # The fallback cannot read this cursor (a relevance cursor of the primary): the
        # degraded answer restarts from the first page rather than fail.
        return body_fields(await run(q.model_copy(update={"cursor": None})))

    async def search_tutors(self, q: TutorQuery) -> bytes:
        """The JSON body of `GET /api/v1/search/tutors`."""

        async def go(engine: SearchEngine) -> dict[str, Any]:
            return await self._listing(engine, q, "search_tutors")

        return await self._run("tutors", q, go)

    async def tutor_map(self, q: TutorMapQuery) -> bytes:
        """The JSON body of `GET /api/v1/search/tutors/map` (viewport snapped to the grid)."""
        q = q.model_copy(update={"bbox": snap_bbox(q.bbox, q.zoom)})

        async def go(engine: SearchEngine) -> dict[str, Any]:
            return body_fields(await engine.tutor_map(q))

        return await self._run("tutors_map", q, go)

    async def search_coaches(self, q: CoachQuery) -> bytes:
        """The JSON body of `GET /api/v1/search/coaches`."""

        async def go(engine: SearchEngine) -> dict[str, Any]:
            return await self._listing(engine, q, "search_coaches")

        return await self._run("coaches", q, go)
