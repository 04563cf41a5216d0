"""The FastAPI application factory."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import health
from api.errors import install_error_handlers
from api.middleware import RequestContextMiddleware
from api.pages import install_pages
from api.routers import (
    admin,
    admin_backoffice,
    auth,
    bookings,
    credits,
    kyc,
    live,
    notifications,
    payments,
    profiles,
    reindex,
    reviews,
    sessions,
)
from api.routers import search as search_router
from core.bootstrap import close_search_service, open_search_service
from core.db import dispose_engines
from core.logging import configure_logging
from core.redis import close_redis
from payments.stripe_adapter import close_clients as close_stripe_clients

API_PREFIX = "/api/v1"


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the search service (its engines, `core.bootstrap`) before the first request
    and keep it on `app.state.search_service`; close it, the Stripe SDK's aiohttp
    sessions, the database engines and Redis at shutdown."""
    app.state.search_service = await open_search_service()
    # What is alive now (modules, pydantic schemas, routes, the engines) lives as long as
    # the app: `gc.freeze` moves it out of the collector's reach (the CPython docs' advice
    # for long-lived servers), so a full collection walks only what requests allocate and
    # does not stall the request it interrupts. Garbage is collected first so none of it
    # is frozen; shutdown unfreezes, for a process that runs apps one after another.
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        service, app.state.search_service = app.state.search_service, None
        await close_search_service(service)
        await live.close_hubs()
        await close_stripe_clients()
        await dispose_engines()
        await close_redis()


def create_app() -> FastAPI:
    """Build the app: routers, problem+json error handlers, request-context middleware.

    OpenAPI is served at `/openapi.json`, Swagger UI at `/docs`; the web pages at `/`
    (tutor map search) and `/coaches`, their assets under `/static/` (`api/pages.py`).
    """
    configure_logging()
    app = FastAPI(
        title="EduConnect API",
        version="0.1.0",
        summary="Tutor and coach search, booking, payments and video sessions.",
        lifespan=_lifespan,
        # Observability is structlog + Prometheus (`/metrics`). FastAPI's native
        # OpenTelemetry would ask the global providers on every request whether one was
        # set; nothing here sets one.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    # the search routes' fast path runs inside the request context (id, log, metrics)
    app.add_middleware(search_router.SearchFastPath, prefix=API_PREFIX)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router)
    app.include_router(search_router.router, prefix=API_PREFIX)
    routers = (
        auth, profiles, bookings, payments, credits, sessions, reviews, kyc, admin, admin_backoffice,
        reindex, notifications, live,
    )  # fmt: skip
    for router in (r.router for r in routers):
        app.include_router(router, prefix=API_PREFIX)
    install_pages(app)
    return app
