"""SQLAlchemy 2 engines and session factories on psycopg 3.

The API uses the async engine (`get_async_engine`, `async_session_factory`); the CLI,
the seed, migrations and background workers use the sync engine (`get_sync_engine`).
Search reads go to `DATABASE_READ_URL` (a streaming replica) when it is set.
Engines are created lazily, once per process and URL, so importing this module never
opens a connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings


@cache
def _async_engine(url: str, pool_size: int, max_overflow: int) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


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
