"""Liveness (`/healthz`), readiness (`/readyz`) and Prometheus metrics (`/metrics`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.responses import OrjsonResponse
from core.db import get_async_engine
from core.logging import get_logger
from core.redis import get_async_redis
from core.settings import get_settings

router = APIRouter(tags=["operations"])
log = get_logger(__name__)


@router.get("/healthz", summary="Liveness: the process is up")
async def healthz() -> dict[str, str]:
    """Always 200 while the process serves HTTP; checks no dependency."""
    return {"status": "ok"}


async def _check_postgres() -> dict[str, Any]:
    t = time.perf_counter()
    async with get_async_engine().connect() as conn:
        revision = (
            await conn.execute(text("SELECT version_num FROM alembic_version"))
        ).scalar_one_or_none()
    return {"ok": True, "revision": revision, "ms": round((time.perf_counter() - t) * 1000, 2)}


async def _check_redis() -> dict[str, Any]:
    t = time.perf_counter()
    await get_async_redis().ping()
    return {"ok": True, "ms": round((time.perf_counter() - t) * 1000, 2)}


async def _guard(name: str, check: Any, limit_s: float) -> dict[str, Any]:
    try:
        async with asyncio.timeout(limit_s):
            return dict(await check())
    except Exception as exc:  # readiness reports any failure as "not ready"
        log.warning("readiness_check_failed", dependency=name, error=repr(exc))
        return {"ok": False, "error": type(exc).__name__}


@router.get(
    "/readyz",
    summary="Readiness: PostgreSQL and Redis answer",
    responses={503: {"description": "A dependency is down; the body says which"}},
)
async def readyz() -> Response:
    """200 when PostgreSQL (migrated) and Redis answer within `READINESS_TIMEOUT_S`, else 503.

    Body: `{"status": "ready"|"not_ready", "checks": {"postgres": {...}, "redis": {...}}}`.
    """
    timeout = get_settings().readiness_timeout_s
    pg, rd = await asyncio.gather(
        _guard("postgres", _check_postgres, timeout), _guard("redis", _check_redis, timeout)
    )
    ok = pg["ok"] and rd["ok"]
    return OrjsonResponse(
        {"status": "ready" if ok else "not_ready", "checks": {"postgres": pg, "redis": rd}},
        status_code=200 if ok else 503,
    )


def _refresh_indexer_lag() -> None:
    """Set the indexer lag gauges from the database (the relay runs in its own process;
    its freshness histogram is on its own `/metrics`, port `INDEXER_METRICS_PORT`)."""
    from indexer.status import refresh_lag_metrics

    s = get_settings()
    with psycopg.connect(
        s.libpq_database_url, connect_timeout=max(1, int(s.readiness_timeout_s))
    ) as conn:
        refresh_lag_metrics(conn)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    """The process's metrics in the Prometheus text exposition format, with the indexer's
    lag (`educonnect_indexer_lag_events`, `educonnect_indexer_lag_seconds`) computed from
    the database at scrape time (omitted, and logged, when the database is down)."""
    try:
        await asyncio.to_thread(_refresh_indexer_lag)
    except Exception as exc:  # metrics must answer even when the database does not
        log.warning("indexer_lag_unavailable", error=repr(exc))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
