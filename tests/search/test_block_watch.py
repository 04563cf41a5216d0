"""The block watch (`search/engines/postgres/block_watch.py`, migration 0013): the facet
blocks tables notify `search_blocks` on every write, a reindex swap notifies too and
keeps the trigger, and a watching engine checks its block directory after a notification,
when `recheck_s` has passed, inside `fresh_reads()` and on every query while it is not
listening; otherwise it answers without a check. Real PostgreSQL and Redis; the watch's
clock is a test clock, moved by hand (no test sleeps)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest

from indexer.projection import build_all, rebuild_documents
from search.engine import fresh_reads
from search.engines.postgres.block_watch import BlockWatch
from search.engines.postgres.engine import PostgresEngine
from search.schemas import CoachQuery, TutorQuery


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _until(watch: BlockWatch, cond: Callable[[], bool], what: str) -> None:
    """Wait (on the watch's own events, at most 20 s) until `cond()` holds."""
    deadline = time.monotonic() + 20
    while not cond():
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {what}"
        assert await watch.changed(left), f"timed out waiting for {what}"


def _price(conn: psycopg.Connection[Any], pid: uuid.UUID, minor: int, *, notify: bool) -> None:
    """Set a tutor's price and re-pack its block; `notify=False` writes with triggers off
    (`session_replication_role = replica`): a write whose notification is lost."""
    if not notify:
        conn.execute("SET session_replication_role = replica")
    try:
        with conn.transaction():
            conn.execute(
                "UPDATE provider_profiles SET hourly_rate_minor = %s, currency = 'EUR'"
                " WHERE user_id = %s",
                (minor, pid),
            )
            rebuild_documents(conn, [pid])
    finally:
        conn.execute("RESET session_replication_role")


@pytest.fixture
async def watched(
    market: psycopg.Connection[Any], database_url: str
) -> AsyncIterator[tuple[PostgresEngine, BlockWatch, Clock]]:
    """An engine whose block watch runs on a test clock (recheck every 1 s of it) and
    listens again 10 ms after its connection drops."""
    clock = Clock()
    engine = await PostgresEngine.open(database_url, min_size=1, max_size=2, recheck_s=0)
    watch = BlockWatch(database_url, recheck_s=1.0, retry_s=0.01, clock=clock)
    engine.watch = watch
    watch.start()
    await _until(watch, lambda: watch.listening, "the watch to listen")
    try:
        yield engine, watch, clock
    finally:
        await engine.close()


def _cheapest(market: psycopg.Connection[Any]) -> tuple[TutorQuery, uuid.UUID]:
    """A price-sorted radius query and a tutor inside it that is not the cheapest."""
    pid, lat, lng = market.execute(
        "SELECT provider_id, ST_Y(geom), ST_X(geom) FROM tutor_facets WHERE cell >= 0"
        " ORDER BY price_minor DESC, provider_id LIMIT 1"
    ).fetchone()
    return TutorQuery(lat=lat, lng=lng, radius_km=100, sort="price", limit=3), pid


def test_writes_to_the_blocks_tables_notify_their_family(
    market: psycopg.Connection[Any], database_url: str
) -> None:
    """Every statement on a blocks table notifies at commit with its family, also one that
    touched no row; a rolled-back write notifies nothing (the next notification is the
    later commit's); a build from scratch (TRUNCATE, INSERT) notifies both families."""
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN search_blocks")
        (pid,) = market.execute("SELECT provider_id FROM tutor_facets LIMIT 1").fetchone()
        _price(market, pid, 4242, notify=True)
        with market.transaction():
            market.execute("DELETE FROM coach_facet_blocks WHERE false")
        rollback = psycopg.Rollback()
        with market.transaction():
            market.execute("UPDATE tutor_facet_blocks SET n = n")
            raise rollback
        market.execute("UPDATE coach_facet_blocks SET n = n WHERE false")
        with market.transaction():
            build_all(market)
        got = [n.payload for n in listener.notifies(timeout=20, stop_after=5)]
        # one per transaction, channel and payload: the build's two families in any order
        assert got[:3] == ["tutor", "coach", "coach"]
        assert sorted(got[3:]) == ["coach", "tutor"]


async def test_a_watching_engine_checks_only_after_a_notification(
    market: psycopg.Connection[Any], watched: tuple[PostgresEngine, BlockWatch, Clock]
) -> None:
    """Once its directory is read, a watching engine answers without checking it (no
    statement for a block page) until a write's notification arrives; the first query
    after it checks, sees the write and is the only one to check."""
    engine, watch, _ = watched
    q, pid = _cheapest(market)
    coaches = CoachQuery(sort="price", limit=3)
    await engine.search_tutors(q)
    await engine.search_coaches(coaches)
    checks = engine.directory_checks
    for _ in range(3):
        assert (await engine.search_tutors(q)).items[0]["id"] != str(pid)
        await engine.search_coaches(coaches)
    assert engine.directory_checks == checks, "nothing written: no check"

    seen = watch.notifications
    _price(market, pid, 1, notify=True)
    await _until(watch, lambda: watch.notifications > seen, "the write's notification")
    assert watch.due("tutor")
    assert not watch.due("coach")
    got = await engine.search_tutors(q)
    assert got.items[0]["id"] == str(pid)
    assert got.items[0]["price"]["amount_minor"] == 1
    await engine.search_coaches(coaches)
    assert engine.directory_checks == checks + 1, "one check, of the tutor directory"
    await engine.search_tutors(q)
    assert engine.directory_checks == checks + 1


async def test_a_lost_notification_is_caught_by_the_recheck_or_fresh_reads(
    market: psycopg.Connection[Any], watched: tuple[PostgresEngine, BlockWatch, Clock]
) -> None:
    """A write whose notification never comes (triggers off) is not seen by a query that
    had no reason to check (the documented staleness), is seen inside `fresh_reads()`,
    and is seen by every query once `recheck_s` has passed since the last check."""
    engine, _, clock = watched
    q, pid = _cheapest(market)
    first = (await engine.search_tutors(q)).items
    _price(market, pid, 1, notify=False)
    assert (await engine.search_tutors(q)).items == first, "no notification, no check"
    with fresh_reads():
        assert (await engine.search_tutors(q)).items[0]["id"] == str(pid)
    # that fresh read updated the directory: a plain query now sees it too
    assert (await engine.search_tutors(q)).items[0]["id"] == str(pid)

    _price(market, pid, 2, notify=False)
    clock.now += 0.5
    assert (await engine.search_tutors(q)).items[0]["price"]["amount_minor"] == 1
    checks = engine.directory_checks
    clock.now += 0.5  # recheck_s since the fresh read's check
    assert (await engine.search_tutors(q)).items[0]["price"]["amount_minor"] == 2
    assert engine.directory_checks == checks + 1


async def test_without_its_listener_an_engine_checks_every_query(
    market: psycopg.Connection[Any],
    database_url: str,
    watched: tuple[PostgresEngine, BlockWatch, Clock],
) -> None:
    """The watch's connection is terminated: the watch notices, and while it does not
    listen every query checks (and sees a write at once). Listening again (a new
    session), the first query checks (what was sent before the LISTEN is lost) and the
    next ones do not; the watch also listens again by itself after `retry_s`."""
    engine, watch, _ = watched
    q, pid = _cheapest(market)
    await engine.search_tutors(q)

    def terminate(backend: int | None) -> None:
        assert backend is not None
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (backend,))

    watch.retry_s = 3600  # stays down until restarted below
    terminate(watch.backend_pid)
    await _until(watch, lambda: not watch.listening, "the watch to notice")
    checks = engine.directory_checks
    await engine.search_tutors(q)
    await engine.search_tutors(q)
    assert engine.directory_checks == checks + 2
    _price(market, pid, 1, notify=False)
    assert (await engine.search_tutors(q)).items[0]["id"] == str(pid)

    await watch.close()
    watch.retry_s = 0.01
    watch.start()
    await _until(watch, lambda: watch.listening, "the watch to listen again")
    checks = engine.directory_checks
    await engine.search_tutors(q)
    assert engine.directory_checks == checks + 1, "listening again: one check first"
    await engine.search_tutors(q)
    assert engine.directory_checks == checks + 1

    backend = watch.backend_pid
    terminate(backend)
    await _until(watch, lambda: watch.listening and watch.backend_pid != backend, "a new session")
    seen = watch.notifications
    _price(market, pid, 2, notify=True)
    await _until(watch, lambda: watch.notifications > seen, "the write's notification")
    assert (await engine.search_tutors(q)).items[0]["price"]["amount_minor"] == 2


async def test_the_cache_fills_entries_with_fresh_reads(
    market: psycopg.Connection[Any],
    redis_url: str,
    watched: tuple[PostgresEngine, BlockWatch, Clock],
) -> None:
    """A cache entry is stored under the generation read before it was computed, so its
    computation must see every write committed before that generation's bump, notified
    or not: the service computes misses inside `fresh_reads()`. Without the cache, the
    same lost notification leaves the answer as it was."""
    import orjson
    import redis.asyncio as aioredis

    from search.cache import SearchCache
    from search.service import SearchService

    engine, _, _ = watched
    q, pid = _cheapest(market)
    client = aioredis.Redis.from_url(redis_url)
    try:
        cache = SearchCache(client, "postgres")
        cached, uncached = SearchService(engine, cache), SearchService(engine, None)
        first = orjson.loads(await cached.search_tutors(q))["items"]
        assert orjson.loads(await uncached.search_tutors(q))["items"] == first
        _price(market, pid, 1, notify=False)
        await cache.bump_generation()  # as the indexer does after its commit
        assert orjson.loads(await uncached.search_tutors(q))["items"] == first
        body = orjson.loads(await cached.search_tutors(q))
        assert body["cached"] is False
        assert body["items"][0]["id"] == str(pid)
    finally:
        await client.aclose()


async def test_a_reindex_swap_notifies_and_keeps_the_trigger(
    market: psycopg.Connection[Any],
    database_url: str,
    watched: tuple[PostgresEngine, BlockWatch, Clock],
) -> None:
    """A reindex renames new tables into place (no trigger fires): the swap notifies
    both families, so a watching engine checks and answers from the new tables, and the
    new blocks tables carry the notify trigger (a later write notifies)."""
    from indexer import reindex_repository as repo
    from indexer.reindex import ReindexConfig, run_reindex

    engine, watch, _ = watched
    q, pid = _cheapest(market)
    await engine.search_tutors(q)
    # a source change the document tables do not follow (no rebuild): the reindex does
    market.execute("UPDATE provider_profiles SET hourly_rate_minor = 1 WHERE user_id = %s", (pid,))
    run_id = uuid.uuid4()
    assert repo.insert_run(
        market, run_id=run_id, engine="postgres", kind="all", requested_by=None,
        queue_timeout_s=60,
    ) is not None  # fmt: skip
    seen = watch.notifications
    summary = await asyncio.to_thread(
        run_reindex, run_id, url=database_url, config=ReindexConfig(batch_size=100)
    )
    assert summary["state"] == "succeeded"
    await _until(
        watch, lambda: watch.due("tutor") and watch.due("coach"), "the swap's notification"
    )
    assert watch.notifications > seen
    assert (await engine.search_tutors(q)).items[0]["id"] == str(pid)
    triggers = market.execute(
        "SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname = 'search_blocks_notify'"
        " ORDER BY 1"
    ).fetchall()
    assert triggers == [("coach_facet_blocks",), ("tutor_facet_blocks",)]
    seen = watch.notifications
    _price(market, pid, 2, notify=True)
    await _until(watch, lambda: watch.notifications > seen, "a write's notification")
    assert (await engine.search_tutors(q)).items[0]["price"]["amount_minor"] == 2
