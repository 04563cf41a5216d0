"""Search endpoints: `GET /api/v1/search/tutors`, `/tutors/map`, `/coaches`.

Query parameters are read as strings and validated by the query models of
`search/schemas.py` (one source of rules for HTTP and for direct callers); every bad
value is a 422 problem naming the parameter. Multi-valued filters (`subject`,
`expertise`, `language`, `kind`) accept repeated parameters and comma-separated lists.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ValidationError

from api.errors import problem_responses, validation_problem
from core.redis import get_async_redis
from core.settings import get_settings
from search.cache import SearchCache, target_digest
from search.engine import SearchEngine
from search.postgres import PostgresEngine
from search.schemas import CoachQuery, TutorMapQuery, TutorQuery
from search.service import SearchService

M = TypeVar("M", bound=BaseModel)
router = APIRouter(prefix="/search", tags=["search"])
_lock = asyncio.Lock()

Multi = Annotated[list[str] | None, Query()]
Opt = Annotated[str | None, Query()]


async def get_service(request: Request) -> SearchService:
    """The app's search service, created on first use (its pool opens then).

    `SEARCH_ENGINE=opensearch`: OpenSearch answers, PostgreSQL is the fallback (and its
    pool opens too); the cache is keyed by the answering engine's name."""
    service: SearchService | None = getattr(request.app.state, "search_service", None)
    if service is not None:
        return service
    async with _lock:
        service = getattr(request.app.state, "search_service", None)
        if service is None:
            s = get_settings()
            url = (s.database_read_url or s.database_url).replace(
                "postgresql+psycopg://", "postgresql://", 1
            )
            postgres = await PostgresEngine.open(
                url, min_size=s.search_pool_min_size, max_size=s.search_pool_max_size
            )
            engine: SearchEngine = postgres
            fallback: SearchEngine | None = None
            if s.search_engine == "opensearch":
                from search.opensearch import OpenSearchEngine

                engine = OpenSearchEngine.open(
                    s.opensearch_url,
                    prefix=s.opensearch_index_prefix,
                    timeout_s=s.opensearch_timeout_s,
                )
                fallback = postgres  # OpenSearch down or slow: answer from PostgreSQL
            cache = (
                SearchCache(get_async_redis(), engine.name, ttl_s=s.search_cache_ttl_s)
                if s.search_cache_enabled
                else None
            )
            service = SearchService(
                engine, cache, fallback=fallback, retry_after_s=s.opensearch_retry_after_s
            )
            request.app.state.search_service = service
    return service


async def close_service(app: Any) -> None:
    """Close the search engines' pool / HTTP session (application shutdown)."""
    service: SearchService | None = getattr(app.state, "search_service", None)
    if service is not None:
        for engine in (service.engine, service.fallback):
            close = getattr(engine, "close", None)
            if close is not None:
                await close()
    app.state.search_service = None


def _target(request: Request) -> str:
    return target_digest(request.scope["path"], request.scope["query_string"])


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


def _query(request: Request, model: type[M], multi: tuple[str, ...]) -> M:
    """Build `model` from the query string (multi-valued keys as lists); 422 on bad input."""
    qp = request.query_params
    params: dict[str, Any] = {k: qp.get(k) for k in qp if k not in multi}
    for k in multi:
        if k in qp:
            params[k] = qp.getlist(k)
    try:
        return model(**params)
    except ValidationError as exc:
        raise validation_problem(
            [{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]
        ) from None


_COMMON = {
    "q": "Full text (accents and case folded, the last word is a prefix)",
    "language": "ISO 639-1 codes (repeat or comma-separate; any of them)",
    "min_price": "Minimum hourly price, minor units of the provider's currency",
    "max_price": "Maximum hourly price, minor units of the provider's currency",
    "currency": "ISO 4217: only providers pricing in this currency",
    "min_rating": "Minimum average rating (1-5); unrated providers are excluded",
    "mode": "online | in_person",
    "available_from": "RFC 3339: an open slot overlapping [available_from, available_to)",
    "available_to": "RFC 3339 end of the availability window",
}


@router.get(
    "/tutors",
    summary="Search tutors (geo radius, text, filters, facets, keyset paging)",
    responses=problem_responses(422, 503),
)
async def search_tutors(
    request: Request,
    subject: Multi = None,
    q: Annotated[str | None, Query(description=_COMMON["q"])] = None,
    lat: Annotated[str | None, Query(description="Latitude, degrees (with lng)")] = None,
    lng: Annotated[str | None, Query(description="Longitude, degrees (with lat)")] = None,
    radius_km: Annotated[str | None, Query(description="0 < r ≤ 500, default 25")] = None,
    min_price: Opt = None,
    max_price: Opt = None,
    currency: Opt = None,
    min_rating: Opt = None,
    language: Multi = None,
    mode: Opt = None,
    available_from: Opt = None,
    available_to: Opt = None,
    sort: Annotated[str | None, Query(description="distance | rating | price | relevance")] = None,
    limit: Annotated[str | None, Query(description="1-100, default 20")] = None,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> Response:
    """Tutors matching every filter, one page, with facets over the whole filtered set.

    Body: `{items, facets, total, next_cursor, engine, cached, took_ms}` (README: Search).
    """
    query = _query(request, TutorQuery, ("subject", "language"))
    service = await get_service(request)
    return _json(await service.search_tutors(query, _target(request)))


@router.get(
    "/tutors/map",
    summary="Tutors on a map viewport: clusters at low zoom, points from zoom 13",
    responses=problem_responses(422, 503),
)
async def tutor_map(
    request: Request,
    bbox: Annotated[str, Query(description="min_lng,min_lat,max_lng,max_lat (degrees)")],
    zoom: Annotated[str, Query(description="Web-map zoom 0-22")],
    subject: Multi = None,
    q: Opt = None,
    lat: Opt = None,
    lng: Opt = None,
    radius_km: Opt = None,
    min_price: Opt = None,
    max_price: Opt = None,
    currency: Opt = None,
    min_rating: Opt = None,
    language: Multi = None,
    mode: Opt = None,
    available_from: Opt = None,
    available_to: Opt = None,
) -> Response:
    """`{mode, clusters, points, total, engine, cached, took_ms}` for the snapped viewport."""
    query = _query(request, TutorMapQuery, ("subject", "language"))
    service = await get_service(request)
    return _json(await service.tutor_map(query, _target(request)))


@router.get(
    "/coaches",
    summary="Search coaches and mentors (expertise, language, kind, text, facets)",
    responses=problem_responses(422, 503),
)
async def search_coaches(
    request: Request,
    expertise: Multi = None,
    kind: Multi = None,
    q: Opt = None,
    min_price: Opt = None,
    max_price: Opt = None,
    currency: Opt = None,
    min_rating: Opt = None,
    language: Multi = None,
    mode: Opt = None,
    available_from: Opt = None,
    available_to: Opt = None,
    sort: Annotated[str | None, Query(description="rating | price | relevance")] = None,
    limit: Opt = None,
    cursor: Opt = None,
) -> Response:
    """Coaches and mentors, one page, with facets (`expertises`, `languages`, …)."""
    query = _query(request, CoachQuery, ("expertise", "language", "kind"))
    service = await get_service(request)
    return _json(await service.search_coaches(query, _target(request)))
