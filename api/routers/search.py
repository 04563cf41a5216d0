"""Search endpoints: `GET /api/v1/search/tutors`, `/tutors/map`, `/coaches`.

One parser: the query models of `search/schemas.py` (`TutorQuery`, `TutorMapQuery`,
`CoachQuery`) read the query string and hold every rule, for HTTP and for direct callers
alike; every bad value — malformed, out of range, or empty (`?lat=`) — is a 422
problem+json naming the parameter. Multi-valued filters (`subject`, `expertise`,
`language`, `kind`) accept repeated parameters and comma-separated lists.

So the handlers take the `Request` and build the model from its query string; the
parameters are declared for OpenAPI only (`openapi_extra`, the entries FastAPI would
generate from typed arguments), not resolved by FastAPI a first time. Where a value is
narrower than a string, its schema comes from the model's own constants (`MAX_ZOOM`,
`BBOX_PATTERN`, which a test checks against the parser). The 200 bodies are documented
by `search.schemas.TutorPage` / `CoachPage` / `MapPage` (the service sends JSON bytes, not
re-validated). The service itself is opened by the app's lifespan
(`api.app`, `core.bootstrap.open_search_service`).
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import problem_for_exception, problem_responses, validation_problem
from core.errors import AppError
from search.schemas import (
    BBOX_EXAMPLE,
    BBOX_PATTERN,
    MAX_ZOOM,
    CoachPage,
    CoachQuery,
    MapPage,
    TutorMapQuery,
    TutorPage,
    TutorQuery,
)
from search.service import SearchService

M = TypeVar("M", bound=BaseModel)
router = APIRouter(prefix="/search", tags=["search"])


def get_service(request: Request) -> SearchService:
    """The app's search service (`app.state.search_service`, opened by the lifespan).
    Read by the handlers themselves (a FastAPI dependency would be resolved on every
    search). Raises RuntimeError (a 500) when the app runs without its lifespan."""
    service: SearchService | None = getattr(request.app.state, "search_service", None)
    if service is None:
        raise RuntimeError("the search service is not open: run the app with its lifespan")
    return service


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


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


def _param(
    name: str,
    description: str | None = None,
    *,
    kind: str = "opt",
    value: dict[str, Any] | None = None,
    example: Any = None,
) -> dict[str, Any]:
    """An OpenAPI query parameter as FastAPI generates it for `Annotated[str | None,
    Query(description=...)]` (`kind="opt"`), `list[str] | None` (`"multi"`) or a required
    `str` (`"required"`). `value`: the schema of a given value when it is not any string
    (a type with bounds, a pattern), from the rules of the query model that parses it;
    `example`: the parameter's example value (schemathesis and Swagger UI use it)."""
    title = name.replace("_", " ").title()
    one = value or {"type": "string"}
    if kind == "required":
        schema: dict[str, Any] = {**one, "title": title}
    elif kind == "multi":
        schema = {"anyOf": [{"type": "array", "items": one}, {"type": "null"}]}
        schema["title"] = title
    else:
        schema = {"anyOf": [one, {"type": "null"}], "title": title}
    out: dict[str, Any] = {"name": name, "in": "query", "required": kind == "required"}
    if description:
        schema["description"] = description
        out["description"] = description
    out["schema"] = schema
    if example is not None:
        out["example"] = example
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
    q = _query(request, TutorQuery, ("subject", "language"))
    return _json(await get_service(request).search_tutors(q))


@router.get(
    "/tutors/map",
    summary="Tutors on a map viewport: clusters at low zoom, points from zoom 13",
    responses={200: {"model": MapPage}, **problem_responses(422, 503)},
    openapi_extra=_parameters(
        _param(
            "bbox",
            "min_lng,min_lat,max_lng,max_lat (degrees; min ≤ max)",
            kind="required",
            value={"type": "string", "pattern": BBOX_PATTERN},
            example=BBOX_EXAMPLE,
        ),
        _param(
            "zoom",
            f"Web-map zoom 0-{MAX_ZOOM}",
            kind="required",
            value={"type": "integer", "minimum": 0, "maximum": MAX_ZOOM},
            example=12,
        ),
        _SUBJECT,
        _param("q", _COMMON["q"]),
        *_GEO,
        *_FILTERS,
    ),
)
async def tutor_map(request: Request) -> Response:
    """`{mode, clusters, points, total, engine, cached, took_ms}` for the snapped viewport."""
    q = _query(request, TutorMapQuery, ("subject", "language"), ("bbox", "zoom"))
    return _json(await get_service(request).tutor_map(q))


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
    q = _query(request, CoachQuery, ("expertise", "language", "kind"))
    return _json(await get_service(request).search_coaches(q))


class SearchFastPath:
    """Pure ASGI: serves `GET` of the three search routes above without FastAPI's routing
    and dependency resolution, which cost about as much CPU as the query model itself on
    every search.

    It calls the routes' own handlers (so the same query models parse the query string:
    there is no second parser), with the route in `scope["route"]` (the access log and
    the metrics name its template), and renders their errors with the app's handler
    (`api.errors.problem_for_exception`: `AppError`s, 422 included, and HTTP errors);
    any other exception propagates, as from a route, to `RequestContextMiddleware` (a
    500). Anything else — another path or method, a trailing slash, a `root_path` —
    goes on to the app unchanged. The OpenAPI document is the routes' own.
    """

    def __init__(self, app: ASGIApp, prefix: str = "") -> None:
        self.app = app
        self.routes = {
            prefix + r.path: r
            for r in router.routes
            if isinstance(r, APIRoute) and "GET" in (r.methods or ())
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = (
            self.routes.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path")
            else None
        )
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        request = Request(scope, receive)
        try:
            response: Response = await route.endpoint(request)
        except (AppError, StarletteHTTPException) as exc:
            response = problem_for_exception(exc, request)
        await response(scope, receive, send)
