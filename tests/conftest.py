"""Test fixtures: a real PostgreSQL+PostGIS database created and migrated once per run,
real Redis on a dedicated database number, and per-test isolation by truncation.

The test database is `TEST_DATABASE_URL` (default: the `DATABASE_URL` server with the
database `educonnect_test`); it is dropped and re-created at the start of the run and
migrated with Alembic, so the migrations are tested on every run. Redis uses
`TEST_REDIS_URL` (default db 15 of the local server) and is flushed between tests.

Isolation: tests commit for real (the API and concurrency tests need it); after each test
that touched the database every application table is truncated. Tests that need a large
dataset build it in their own module-scoped fixture.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

# `core.settings` only defines the settings here: they are read on the first
# `get_settings()`, after the environment below is set.
from core.settings import libpq_url

_BASE = libpq_url(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/educonnect"))
TEST_DATABASE_URL = libpq_url(
    os.environ.get("TEST_DATABASE_URL", _BASE.rsplit("/", 1)[0] + "/educonnect_test")
)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

# The application reads its settings from the environment: point it at the test services
# before any application module creates an engine.
os.environ["DATABASE_URL"] = TEST_DATABASE_URL
os.environ.pop("DATABASE_READ_URL", None)
os.environ["REDIS_URL"] = TEST_REDIS_URL
os.environ["ENV"] = "test"
os.environ.setdefault("LOG_JSON", "true")

# Tables that are not emptied between tests (migration bookkeeping).
_KEEP = {"alembic_version", "spatial_ref_sys"}


def _admin_url(url: str) -> str:
    return url.rsplit("/", 1)[0] + "/postgres"


def _db_name(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?", 1)[0]


def recreate_database(url: str) -> None:
    """Drop and create the database of `url` (terminating leftover connections)."""
    name = _db_name(url)
    with psycopg.connect(_admin_url(url), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def database_url() -> str:
    """The migrated test database's libpq URL."""
    from core.migrate import upgrade
    from core.settings import get_settings

    get_settings.cache_clear()
    recreate_database(TEST_DATABASE_URL)
    upgrade("head", TEST_DATABASE_URL)
    return TEST_DATABASE_URL


def app_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Every table of the public schema that tests may fill."""
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    ).fetchall()
    return [r[0] for r in rows if r[0] not in _KEEP]


def truncate_all(url: str) -> None:
    """Empty every application table of the database at `url`."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = app_tables(conn)
        if tables:
            conn.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                    sql.SQL(", ").join(map(sql.Identifier, tables))
                )
            )


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit psycopg connection to the test database, emptied after the test."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn
    truncate_all(database_url)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The test Redis URL (a dedicated db number), flushed before and after the test."""
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    yield TEST_REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
async def client(database_url: str, redis_url: str) -> AsyncIterator[Any]:
    """An httpx client on the ASGI app, talking to the real test database and Redis; the
    app's lifespan runs around it, as under a server."""

    from api.app import create_app

    app = create_app()
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as c,
    ):
        yield c
    truncate_all(database_url)


# ---------------------------------------------------------------- search


class EngineThread:
    """A `PostgresEngine` on its own event loop in a thread, callable from sync tests
    (hypothesis does not drive coroutines)."""

    def __init__(self, url: str, *, recheck_s: float = 1.0) -> None:
        """`recheck_s`: see `PostgresEngine.open` (0: check the block directory on every
        query)."""
        import asyncio

        from search.engines.postgres.engine import PostgresEngine

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.engine = self.run(
            PostgresEngine.open(url, min_size=1, max_size=2, recheck_s=recheck_s)
        )

    def run(self, coro: Any) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self) -> None:
        self.run(self.engine.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture
def market(db: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """A small seeded marketplace (300 tutors, 100 coaches) with its documents built from
    scratch; the `*_expected` tables of `tests.indexer.projection_check` dropped afterwards.
    Modules with another marketplace define their own `market`."""
    from datetime import date

    from devdata.seed import SeedParams, seed
    from indexer.projection import build_all
    from tests.indexer.projection_check import drop_expected

    seed(db, SeedParams(tutors=300, coaches=100, students=0, seed=5, start=date(2030, 3, 4)))
    with db.transaction():
        build_all(db)
    yield db
    drop_expected(db)


@pytest.fixture
def engines(database_url: str) -> Iterator[tuple[EngineThread, Any]]:
    """A block engine on its own loop (`EngineThread`), and the SQL pass
    (`PostgresEngine(blocks=False)`) on the same loop, to compare answers. The block
    engine checks its block directory on every query (no block watch): the tests that
    use it write and read at once, and test the check itself (`tests/search/test_block_watch.py`
    tests when a watching engine checks)."""
    from search.engines.postgres.engine import PostgresEngine

    et = EngineThread(database_url, recheck_s=0)
    sql = et.run(PostgresEngine.open(database_url, min_size=1, max_size=1, blocks=False))
    yield et, sql
    et.run(sql.close())
    et.close()


@pytest.fixture(scope="module")
def search_dataset(database_url: str) -> Iterator[str]:
    """A seeded marketplace (2,500 tutors, 500 coaches, slots in March 2030) with its
    search documents built, for the module; emptied afterwards."""
    from datetime import date

    from devdata.seed import SeedParams, seed
    from indexer.projection import build_all

    truncate_all(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        seed(
            conn, SeedParams(tutors=2500, coaches=500, students=20, seed=11, start=date(2030, 3, 4))
        )
        with conn.transaction():
            build_all(conn)
    yield database_url
    truncate_all(database_url)


@pytest.fixture(scope="module")
def engine_thread(search_dataset: str) -> Iterator[EngineThread]:
    """The PostgreSQL engine over `search_dataset`, callable from sync tests."""
    et = EngineThread(search_dataset)
    yield et
    et.close()


# --- browser --------------------------------------------------------------------------

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium (`CHROMIUM_PATH`, default `/usr/bin/chromium`), headless, through
    Playwright, one per test module; a browser is never downloaded. The test skips, saying
    so, only when that executable is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not found: run infra/ensure-browser.sh (as root on Debian)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


BROWSER_TIMEOUT_MS = 15_000  # Playwright's default timeout in the browser tests


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (at the time of the call)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def settings_env(env: dict[str, str]) -> Iterator[None]:
    """Set `env` in this process's environment and re-read the settings; on exit put the
    environment back as it was (a variable that was unset is removed again) and re-read
    them again. For fixtures wider than a test, where `monkeypatch` cannot reach."""
    from core.settings import get_settings

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


def wait_for(predicate: Callable[[], Any], what: str, limit_s: float = 60.0) -> Any:
    """Poll `predicate` every 20 ms until it returns a truthy value, and return it; raise
    `AssertionError` naming `what` after `limit_s` seconds (bounded, never a fixed sleep)."""
    deadline = time.monotonic() + limit_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextlib.contextmanager
def serve_app() -> Iterator[str]:
    """The real app (`create_app()`, the current environment's settings) served by uvicorn
    in a thread on a free port; its base URL once `/healthz` answers 200."""
    import uvicorn

    from api.app import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=1) as c:
        for _ in range(200):
            try:
                if c.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                threading.Event().wait(0.05)
        else:
            pytest.fail("the test server did not start")
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def page_factory(browser: Any, live_server: str) -> Iterator[Any]:
    """New pages (locale, viewport) of the module's `live_server` whose requests may only
    reach it (anything else is aborted); a script error on any page fails the test."""
    contexts: list[Any] = []
    errors: list[str] = []

    def make(locale: str = "fr-FR", width: int = 1400, height: int = 900) -> Any:
        ctx = browser.new_context(
            locale=locale, viewport={"width": width, "height": height}, base_url=live_server
        )
        ctx.set_default_timeout(BROWSER_TIMEOUT_MS)

        def only_local(route: Any) -> None:
            if route.request.url.startswith(live_server):
                route.continue_()
            else:
                route.abort()

        ctx.route("**/*", only_local)
        contexts.append(ctx)
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    assert not errors, errors


# --- accounts: app, client and factories ----------------------------------------------

DEFAULT_PASSWORD = "correct-horse-battery"
_password_hashes: dict[str, str] = {}


def password_hash(password: str = DEFAULT_PASSWORD) -> str:
    """An argon2 hash of `password`, computed once per run (hashing is slow on purpose)."""
    if password not in _password_hashes:
        from core.passwords import hash_password

        _password_hashes[password] = hash_password(password)
    return _password_hashes[password]


@pytest.fixture
async def app(database_url: str, redis_url: str) -> AsyncIterator[Any]:
    """A fresh FastAPI app on the test database and Redis, its lifespan running (as under
    a server); tables emptied afterwards."""
    from api.app import create_app

    application = create_app()
    async with application.router.lifespan_context(application):
        yield application
    application.dependency_overrides.clear()
    truncate_all(database_url)


@pytest.fixture
async def api(app: Any) -> AsyncIterator[Any]:
    """An httpx client on `app` that returns 500 responses instead of raising."""

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def create_user(
    db: psycopg.Connection[Any],
    *,
    role: str = "student",
    email: str | None = None,
    password: str = DEFAULT_PASSWORD,
    full_name: str = "Test User",
    active: bool = True,
) -> Any:
    """Insert an account and return its id (uuid)."""
    import uuid

    email = email or f"{role}-{uuid.uuid4().hex[:10]}@example.com"
    row = db.execute(
        "INSERT INTO users (email, password_hash, full_name, role, active) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (email, password_hash(password), full_name, role, active),
    ).fetchone()
    assert row is not None
    return row[0]


def create_profile(
    db: psycopg.Connection[Any],
    user_id: Any,
    *,
    kind: str = "tutor",
    subjects: list[str] | None = None,
    expertises: list[str] | None = None,
    in_person: bool = False,
    lat: float | None = None,
    lng: float | None = None,
    kyc_status: str = "verified",
) -> None:
    """Insert a provider profile (version 1) for `user_id`; verified by default (only
    verified providers are searchable)."""
    if subjects is None:
        subjects = ["mathematics"] if kind == "tutor" else []
    if expertises is None:
        expertises = [] if kind == "tutor" else ["public-speaking"]
    location = f"SRID=4326;POINT({lng} {lat})" if lat is not None else None
    db.execute(
        "INSERT INTO provider_profiles (user_id, kind, display_name, subjects, expertises,"
        " languages, hourly_rate_minor, currency, in_person, location, kyc_status)"
        " VALUES (%s, %s, 'Provider', %s, %s, '{fr}', 3000, 'EUR', %s, %s::geography, %s)",
        (user_id, kind, subjects, expertises, in_person, location, kyc_status),
    )


def create_provider(db: psycopg.Connection[Any], *, kind: str = "tutor", **profile: Any) -> Any:
    """An account of role `kind` with its profile; returns the user id."""
    uid = create_user(db, role=kind)
    create_profile(db, uid, kind=kind, **profile)
    return uid


def bearer(user_id: Any, role: str, **kwargs: Any) -> dict[str, str]:
    """`Authorization` header with a fresh access token for the user."""
    from core.security import create_access_token

    return {"Authorization": f"Bearer {create_access_token(user_id=user_id, role=role, **kwargs)}"}
