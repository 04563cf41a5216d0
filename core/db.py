"""SQLAlchemy 2 engines and session factories on psycopg 3.

The API uses the async engine (`get_async_engine`, `async_session_factory`); the CLI,
the seed, migrations and background workers use the sync engine (`get_sync_engine`).
Search reads go to `DATABASE_READ_URL` (a streaming replica) when it is set.
Engines are created lazily, once per process and URL, so importing this module never
opens a connection.

Liveness: the async engine does not ping a connection on every checkout (a round trip
per checkout, several per request). A connection idle for `PING_IDLE_S` or more is
pinged when checked out (a dead one is replaced before use, e.g. after a PostgreSQL
restart during a quiet spell); a busy one is trusted, and if the server went away
meanwhile, the failing statement is a disconnect error: SQLAlchemy then invalidates the
whole pool, so the following requests reconnect.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings

PING_IDLE_S = 10.0


def _checked_in(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Ping a connection that sat idle `PING_IDLE_S` or more; a dead one makes the pool
    retry with a fresh connection (SQLAlchemy's `DisconnectionError` protocol)."""
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < PING_IDLE_S:
        return
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT 1")
        dbapi_connection.rollback()  # idle again: the checkout may switch to autocommit
    except Exception as error:
        raise exc.DisconnectionError() from error
    finally:
        cursor.close()


@cache
def _async_engine(url: str, pool_size: int, max_overflow: int) -> AsyncEngine:
    engine = create_async_engine(
        url, pool_size=pool_size, max_overflow=max_overflow, pool_recycle=1800
    )
    event.listen(engine.sync_engine.pool, "checkin", _checked_in)
    event.listen(engine.sync_engine.pool, "checkout", _checkout)
    return engine


@cache
def _sync_engine(url: str) -> Engine:
    return create_engine(url, pool_pre_ping=True, pool_recycle=1800)


def get_async_engine(*, read_only: bool = False) -> AsyncEngine:
    """The process's async engine (primary, or the read replica when `read_only`)."""
    s = get_settings()
    url = (s.database_read_url or s.database_url) if read_only else s.database_url
    return _async_engine(url, s.database_pool_size, s.database_max_overflow)


def get_sync_engine() -> Engine:
    """The process's sync engine on the primary database."""
    return _sync_engine(get_settings().database_url)


def async_session_factory(*, read_only: bool = False) -> async_sessionmaker[AsyncSession]:
    """A session factory bound to the async engine; sessions do not expire on commit."""
    return async_sessionmaker(get_async_engine(read_only=read_only), expire_on_commit=False)


def sync_session_factory() -> sessionmaker[Session]:
    """A session factory bound to the sync engine."""
    return sessionmaker(get_sync_engine(), expire_on_commit=False)


@asynccontextmanager
async def async_unit_of_work() -> AsyncIterator[AsyncSession]:
    """Open a session, commit when the block succeeds, roll back when it raises.

    The owner of the unit of work (a request handler, a task) commits; services never do.
    """
    async with async_session_factory()() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def dispose_engines() -> None:
    """Close every pooled connection (application shutdown, tests)."""
    for engine in _cached_async_engines():
        await engine.dispose()
    _async_engine.cache_clear()
    _sync_engine.cache_clear()


def _cached_async_engines() -> list[AsyncEngine]:
    s = get_settings()
    urls = {s.database_url, s.database_read_url or s.database_url}
    return [_async_engine(u, s.database_pool_size, s.database_max_overflow) for u in urls]
