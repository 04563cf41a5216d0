"""The composition root: what each process builds from the settings.

One place for the objects that tie the domains to the configured backends:

- `open_search_service` / `close_search_service`: the search engines, the cache and the
  service over them (the API opens them in its lifespan and keeps them on `app.state`).
- `make_sink`: the indexer sink of a consumer (`postgres` or `opensearch`), for the
  outbox relay (`educonnect indexer run`).
- `bump_cache_generation`: invalidate an engine's cached search answers, after a reindex
  swaps its tables or aliases; `invalidate_search_cache`: invalidate what a committed
  relay batch changed (`search.cache`: the document or the availability generation).

Domain modules are imported inside the functions: `core` stays importable from every
package (no import cycle), and a process loads only the backends it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.logging import get_logger
from core.settings import Settings, get_settings

if TYPE_CHECKING:
    from indexer.relay import Changes, Sink
    from search.engine import SearchEngine
    from search.service import SearchService

log = get_logger(__name__)

CONSUMERS: tuple[str, ...] = ("postgres", "opensearch")


async def open_search_service(settings: Settings | None = None) -> SearchService:
    """The search service of `SEARCH_ENGINE` with its engines open.

    `postgres`: the PostgreSQL engine on `DATABASE_READ_URL` (else `DATABASE_URL`), its
    pool open. `opensearch`: OpenSearch answers and PostgreSQL is the fallback (its pool
    opens too). The Redis cache (`SEARCH_CACHE_ENABLED`) is keyed by the answering
    engine's name. Raises the driver's error when PostgreSQL cannot be reached within
    the pool's open timeout.
    """
    from core.redis import get_async_redis
    from search.cache import SearchCache
    from search.engines.postgres.engine import PostgresEngine
    from search.service import SearchService

    s = settings or get_settings()
    postgres = await PostgresEngine.open(
        s.libpq_search_url,
        min_size=s.search_pool_min_size,
        max_size=s.search_pool_max_size,
        recheck_s=s.search_block_recheck_s,
    )
    engine: SearchEngine = postgres
    fallback: SearchEngine | None = None
    if s.search_engine == "opensearch":
        from search.engines.opensearch.engine import OpenSearchEngine

        engine = OpenSearchEngine.open(
            s.opensearch_url, prefix=s.opensearch_index_prefix, timeout_s=s.opensearch_timeout_s
        )
        fallback = postgres  # OpenSearch down or slow: answer from PostgreSQL
    cache = (
        SearchCache(get_async_redis(), engine.name, ttl_s=s.search_cache_ttl_s)
        if s.search_cache_enabled
        else None
    )
    return SearchService(engine, cache, fallback=fallback, retry_after_s=s.opensearch_retry_after_s)


async def close_search_service(service: SearchService) -> None:
    """Close the service's engines (the PostgreSQL pool, the OpenSearch HTTP session)."""
    for engine in (service.engine, service.fallback):
        close = getattr(engine, "close", None)
        if close is not None:
            await close()


def make_sink(consumer: str) -> Sink:
    """The indexer sink of `consumer`: `postgres` (the search tables) or `opensearch`
    (bulk writes to the `tutors`/`coaches` aliases, created with empty `_v1` indices when
    missing). Raises ValueError for another name."""
    if consumer == "postgres":
        from indexer.relay import PostgresSink

        return PostgresSink()
    if consumer == "opensearch":
        from indexer.opensearch_reindex import bootstrap
        from indexer.opensearch_sink import OpenSearchSink, client_from_settings

        s = get_settings()
        client = client_from_settings()
        bootstrap(client, prefix=s.opensearch_index_prefix, replicas=s.opensearch_replicas)
        return OpenSearchSink(
            client,
            prefix=s.opensearch_index_prefix,
            max_retries=s.opensearch_bulk_max_retries,
            request_timeout=s.opensearch_bulk_timeout_s,
        )
    raise ValueError(f"unknown consumer {consumer!r} (known: {', '.join(CONSUMERS)})")


def bump_cache_generation(engine: str = "postgres") -> None:
    """Invalidate `engine`'s cached search answers (bump its generation in Redis).

    Redis down is logged and tolerated: the cache then serves nothing new (its reads fail
    too), and its TTL bounds any staleness once Redis is back.
    """
    from core.redis import get_sync_redis
    from search.cache import bump_generation_sync

    try:
        bump_generation_sync(get_sync_redis(), engine)
    except Exception as exc:
        log.warning("cache_generation_bump_failed", engine=engine, error=repr(exc))


def invalidate_search_cache(engine: str, changes: Changes) -> None:
    """Invalidate the cached answers of `engine` that a committed indexer batch made stale
    (the relay's `on_changes`): all of them when a document changed beyond its
    availability (the document generation), only those of queries with an availability
    window when only availability changed (the availability generation), none when the
    batch changed no document. Redis down is logged and tolerated, as in
    `bump_cache_generation`."""
    if not (changes.documents or changes.availability):
        return
    from core.redis import get_sync_redis
    from search.cache import bump_generation_sync

    try:
        bump_generation_sync(get_sync_redis(), engine, availability_only=not changes.documents)
    except Exception as exc:
        log.warning("cache_generation_bump_failed", engine=engine, error=repr(exc))
