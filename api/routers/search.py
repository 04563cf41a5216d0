"""Search endpoints: `GET /api/v1/search/tutors`, `/tutors/map`, `/coaches`.

Query parameters are read as strings and validated by the query models of
`search/schemas.py` (one source of rules for HTTP and for direct callers); every bad
value is a 422 problem naming the parameter. Multi-valued filters (`subject`,
`expertise`, `language`, `kind`) accept repeated parameters and comma-separated lists.

The handlers take only the `Request`: the parameters are declared for OpenAPI
(`openapi_extra`, the same entries FastAPI would generate from typed arguments) but not
resolved by FastAPI — resolving 16 optional string parameters cost ~0.15 ms CPU per
request, and the query model reads the query string anyway. In the running app the lean
ASGI path (`api.search_fastpath`) answers these GETs through `answer()` before FastAPI's
routing; the routes describe them in OpenAPI and answer when that path is not installed. The 200 bodies are documented
by `search.schemas.TutorPage` / `CoachPage` / `MapPage` (the service sends JSON bytes, not
re-validated).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ValidationError

from api.errors import problem_responses, validation_problem
from core.redis import get_async_redis
from core.settings import get_settings
from search.cache import SearchCache, target_digest
from search.engine import SearchEngine
from search.engines.postgres.engine import PostgresEngine
from search.schemas import CoachPage, CoachQuery, MapPage, TutorMapQuery, TutorPage, TutorQuery
from search.service import SearchService

M = TypeVar("M", bound=BaseModel)
router = APIRouter(prefix="/search", tags=["search"])
_lock = asyncio.Lock()


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
                url,
                min_size=s.search_pool_min_size,
                max_size=s.search_pool_max_size,
                recheck_s=s.search_block_recheck_s,
            )
            engine: SearchEngine = postgres
            fallback: SearchEngine | None = None
            if s.search_engine == "opensearch":
                from search.engines.opensearch.engine import OpenSearchEngine

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


async def answer(request: Request, endpoint: str) -> bytes:
    """The JSON body for `endpoint` (`tutors`, `tutors_map`, `coaches`): the query model
    first (a bad request never opens the pool), then the service. Raises the errors the
    problem+json handlers render. The routes below and the lean ASGI path
    (`api.search_fastpath`) both answer through here."""
    if endpoint == "tutors":
        tq = _query(request, TutorQuery, ("subject", "language"))
        return await (await get_service(request)).search_tutors(tq, _target(request))
    if endpoint == "tutors_map":
        mq = _query(request, TutorMapQuery, ("subject", "language"), ("bbox", "zoom"))
        return await (await get_service(request)).tutor_map(mq, _target(request))
    cq = _query(request, CoachQuery, ("expertise", "language", "kind"))
    return await (await get_service(request)).search_coaches(cq, _target(request))


def _query(
    request: Request, model: type[M], multi: tuple[str, ...], required: tuple[str, ...] = ()
) -> M:
    """Build `model` from the query string (multi-valued keys as lists); 422 on bad input
    (a missing `required` parameter as FastAPI reports it: `missing`, "Field required")."""
    qp = request.query_params
    missing = [k for k in required if k not in qp]
    if missing:
        raise validation_problem(
            [{"loc": ("query", k), "msg": "Field required", "type": "missing"} for k in missing]
        )
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


def _param(name: str, description: str | None = None, *, kind: str = "opt") -> dict[str, Any]:
    """An OpenAPI query parameter as FastAPI generates it for `Annotated[str | None,
    Query(description=...)]` (`kind="opt"`), `list[str] | None` (`"multi"`) or a required
    `str` (`"required"`)."""
    title = name.replace("_", " ").title()
    if kind == "required":
        schema: dict[str, Any] = {"type": "string", "title": title}
    elif kind == "multi":
        schema = {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]}
        schema["title"] = title
    else:
        schema = {"anyOf": [{"type": "string"}, {"type": "null"}], "title": title}
    out: dict[str, Any] = {"name": name, "in": "query", "required": kind == "required"}
    if description:
        schema["description"] = description
        out["description"] = description
    out["schema"] = schema
    return out


def _parameters(*params: dict[str, Any]) -> dict[str, Any]:
    return {"parameters": list(params)}


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
_SUBJECT = _param("subject", "Subject slugs (repeat or comma-separate; any of them)", kind="multi")
_GEO = (
    _param("lat", "Latitude, degrees (with lng)"),
    _param("lng", "Longitude, degrees (with lat)"),
    _param("radius_km", "0 < r ≤ 500, default 25"),
)
_FILTERS = (
    _param("min_price", _COMMON["min_price"]),
    _param("max_price", _COMMON["max_price"]),
    _param("currency", _COMMON["currency"]),
    _param("min_rating", _COMMON["min_rating"]),
    _param("language", _COMMON["language"], kind="multi"),
    _param("mode", _COMMON["mode"]),
    _param("available_from", _COMMON["available_from"]),
    _param("available_to", _COMMON["available_to"]),
)
_CURSOR = _param("cursor", "`next_cursor` of the previous page")


@router.get(
    "/tutors",
    summary="Search tutors (geo radius, text, filters, facets, keyset paging)",
    responses={200: {"model": TutorPage}, **problem_responses(422, 503)},
    openapi_extra=_parameters(
        _SUBJECT,
        _param("q", _COMMON["q"]),
        *_GEO,
        *_FILTERS,
        _param("sort", "distance | rating | price | relevance"),
        _param("limit", "1-100, default 20"),
        _CURSOR,
    ),
)
async def search_tutors(request: Request) -> Response:
    """Tutors matching every filter, one page, with facets over the whole filtered set.

    Body: `{items, facets, total, next_cursor, engine, cached, took_ms}` (README: Search).
    """
    return _json(await answer(request, "tutors"))


@router.get(
    "/tutors/map",
    summary="Tutors on a map viewport: clusters at low zoom, points from zoom 13",
    responses={200: {"model": MapPage}, **problem_responses(422, 503)},
    openapi_extra=_parameters(
        _param("bbox", "min_lng,min_lat,max_lng,max_lat (degrees)", kind="required"),
        _param("zoom", "Web-map zoom 0-22", kind="required"),
        _SUBJECT,
        _param("q", _COMMON["q"]),
        *_GEO,
        *_FILTERS,
    ),
)
async def tutor_map(request: Request) -> Response:
    """`{mode, clusters, points, total, engine, cached, took_ms}` for the snapped viewport."""
    return _json(await answer(request, "tutors_map"))


@router.get(
    "/coaches",
    summary="Search coaches and mentors (expertise, language, kind, text, facets)",
    responses={200: {"model": CoachPage}, **problem_responses(422, 503)},
    openapi_extra=_parameters(
        _param(
            "expertise", "Expertise slugs (repeat or comma-separate; any of them)", kind="multi"
        ),
        _param("kind", "coach | mentor (repeat or comma-separate)", kind="multi"),
        _param("q", _COMMON["q"]),
        *_FILTERS,
        _param("sort", "rating | price | relevance"),
        _param("limit", "1-100, default 20"),
        _CURSOR,
    ),
)
async def search_coaches(request: Request) -> Response:
    """Coaches and mentors, one page, with facets (`expertises`, `languages`, …)."""
    return _json(await answer(request, "coaches"))
