"""The lean path for search GETs (plain ASGI, inside the request-context middleware).

Hits: a `GET` on one of the three search endpoints whose exact request target (path + raw
query string) was already answered at the current index generation is served from Redis
as stored bytes: no routing, no query model, no JSON work — one Redis round trip (the
generation and the alias read together) and the `cached`/`took_ms` tail spliced in. The
alias is written by the normal path (`SearchCache.put_raw`) only after the request passed
validation, so a bad request never takes it.

Everything else on those GETs (no alias, cache off, Redis down, service not started yet) is
answered here too, by `api.routers.search.answer` — the very function the FastAPI routes
call — without FastAPI's routing, dependency resolution and exception middleware (~0.1-0.2
ms CPU per request). Errors are rendered by the app's own `problem_for_exception`
(RFC 9457, same codes; an unexpected exception is logged and answered 500
`internal_error`). Other methods and paths (`HEAD`, a trailing slash) go to FastAPI.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import problem_for_exception
from api.routers import search as search_router
from search.cache import target_digest
from search.metrics import CACHE_LOOKUPS

_ENDPOINTS = {
    "/api/v1/search/tutors": "tutors",
    "/api/v1/search/tutors/map": "tutors_map",
    "/api/v1/search/coaches": "coaches",
}


class _Route:
    """What the access log/metrics middleware reads from `scope["route"]`."""

    def __init__(self, path: str) -> None:
        self.path = path


_ROUTES = {path: _Route(path) for path in _ENDPOINTS}


class SearchFastPath:
    """Serves search GETs: hits from their raw-target alias, misses through
    `api.routers.search.answer`; see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = _ENDPOINTS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        app: Any = scope.get("app")
        service = getattr(getattr(app, "state", None), "search_service", None)
        cache = getattr(service, "cache", None)
        body = None
        if cache is not None:
            try:
                body = await cache.get_raw(target_digest(scope["path"], scope["query_string"]))
            except redis.RedisError:
                body = None  # the normal path degrades, logs and counts
        scope["route"] = _ROUTES[scope["path"]]
        if body is None:
            request = Request(scope, receive)
            try:
                out = await search_router.answer(request, endpoint)
            except Exception as exc:
                await problem_for_exception(exc, request)(scope, receive, send)
                return
        else:
            CACHE_LOOKUPS.labels(endpoint, "hit").inc()
            took = (time.perf_counter() - started) * 1000
            out = body[:-1] + b',"cached":true,"took_ms":%.3f}' % took
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(out)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": out})
