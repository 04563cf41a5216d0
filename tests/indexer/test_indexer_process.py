"""The streaming indexer end to end: the relay as a real process (kill -9 mid-batch and
restart), replays, out-of-order versions, deletions, and visibility through the search API.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from core.bootstrap import bump_cache_generation, invalidate_search_cache
from devdata.seed import SeedParams, seed
from indexer.projection import (
    build_all,
    rebuild_documents,
)
from indexer.relay import EVERYTHING, NOTHING, Changes, PostgresSink, Relay, RelayConfig
from loadtests.writes import provider_ids, random_write
from tests.conftest import TEST_REDIS_URL, create_user, wait_for
from tests.indexer.projection_check import assert_equals_from_scratch, drop_expected

START = date(2030, 3, 4)


@pytest.fixture
def market(db: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """A small seeded marketplace with its documents built from scratch."""
    seed(db, SeedParams(tutors=300, coaches=100, students=0, seed=21, start=START))
    with db.transaction():
        build_all(db)
    yield db
    drop_expected(db)


def _relay_process(url: str, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": TEST_REDIS_URL,
        "INDEXER_METRICS_PORT": "0",
        "INDEXER_BATCH_SIZE": "50",
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "indexer", "run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kill_9_mid_batch_then_restart_equals_from_scratch(
    market: psycopg.Connection[Any], database_url: str
) -> None:
    """The relay is killed while a batch is open: held inside it by a row lock the test
    owns on a document of that batch, after earlier batches committed. The batch rolls
    back (the checkpoint stays where it was when the batch started), and a new relay
    applies every event exactly once, to documents equal to a rebuild from scratch."""
    rng = random.Random(5)
    ids = provider_ids(market)
    (held,) = market.execute(
        "SELECT provider_id FROM tutor_documents ORDER BY provider_id LIMIT 1"
    ).fetchone()
    others = [i for i in ids if i != held]
    with psycopg.connect(database_url, autocommit=True) as writer:
        for _ in range(1500):
            random_write(writer, rng, others)
        random_write(writer, rng, [held], allow_destructive=False)  # rewrites its document
        for _ in range(1500):
            random_write(writer, rng, others)
    (total,) = market.execute("SELECT count(*) FROM outbox").fetchone()
    # the held provider's event is the 1501st: batches of 50 before it commit, its own waits
    (position,) = market.execute(
        "SELECT count(*) FROM outbox WHERE id <= (SELECT max(id) FROM outbox"
        " WHERE aggregate_id = %s)",
        (str(held),),
    ).fetchone()
    assert position == 1501
    (version,) = market.execute(
        "SELECT version FROM tutor_documents WHERE provider_id = %s", (held,)
    ).fetchone()

    def checkpoint() -> int:
        (applied,) = market.execute(
            "SELECT coalesce(sum(events), 0) FROM indexer_checkpoints"
        ).fetchone()
        return int(applied)

    locker = psycopg.connect(database_url)  # its transaction stays open until released
    locker.execute("SELECT 1 FROM tutor_documents WHERE provider_id = %s FOR UPDATE", (held,))
    proc = _relay_process(database_url)
    try:
        blocked: list[Any] = []

        def inside_the_held_batch() -> bool:
            blocked[:] = market.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'educonnect-indexer'"
                " AND %s = ANY (pg_blocking_pids(pid))",
                (locker.info.backend_pid,),
            ).fetchall()
            return bool(blocked)

        wait_for(inside_the_held_batch, "the relay to wait inside the held batch")
        at_kill = checkpoint()
        # strictly between the batch's start and end: the batches before it committed,
        # the held event is inside the open one
        assert at_kill == 1500
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        locker.rollback()
        locker.close()
    # the orphaned backend ends once its statement can finish and finds no client
    (pid,) = blocked[0]
    wait_for(
        lambda: (
            not market.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        ),
        "the killed relay's backend to end",
    )
    assert checkpoint() == at_kill < total  # its open batch rolled back
    assert market.execute(
        "SELECT version FROM tutor_documents WHERE provider_id = %s", (held,)
    ).fetchone() == (version,)

    done = _relay_process(database_url, "--once")
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert checkpoint() == total  # every event applied once by the checkpoints' count
    assert_equals_from_scratch(market)


def test_replaying_events_changes_nothing(
    market: psycopg.Connection[Any], database_url: str
) -> None:
    rng = random.Random(9)
    ids = provider_ids(market)
    for _ in range(300):
        random_write(market, rng, ids)
    relay = Relay(psycopg.connect(database_url), PostgresSink(), RelayConfig())
    relay.drain()
    before = market.execute(
        "SELECT provider_id, version, price_minor FROM tutor_documents ORDER BY provider_id"
    ).fetchall()
    # replay: rewind the checkpoint to the start and apply everything again
    market.execute("UPDATE indexer_checkpoints SET txid = '0', outbox_id = 0")
    assert relay.drain() == 300
    after = market.execute(
        "SELECT provider_id, version, price_minor FROM tutor_documents ORDER BY provider_id"
    ).fetchall()
    assert after == before
    assert_equals_from_scratch(market)


def test_older_version_never_overwrites_a_newer_document(market: psycopg.Connection[Any]) -> None:
    pid, version, price = market.execute(
        "SELECT provider_id, version, price_minor FROM tutor_documents ORDER BY provider_id LIMIT 1"
    ).fetchone()
    # the document already carries a newer version than the source (an event from the future)
    market.execute(
        "UPDATE tutor_documents SET version = %s WHERE provider_id = %s", (version + 5, pid)
    )
    market.execute(
        "UPDATE provider_profiles SET hourly_rate_minor = 99999 WHERE user_id = %s", (pid,)
    )
    with market.transaction():
        result = rebuild_documents(market, [pid])
    assert result.upserted == 0
    row = market.execute(
        "SELECT version, price_minor FROM tutor_documents WHERE provider_id = %s", (pid,)
    ).fetchone()
    assert row == (version + 5, price)


def test_deactivated_and_deleted_providers_disappear(
    market: psycopg.Connection[Any], database_url: str
) -> None:
    a, b = market.execute(
        "SELECT provider_id FROM tutor_documents ORDER BY provider_id LIMIT 2"
    ).fetchall()
    with market.transaction():
        market.execute("UPDATE users SET active = false WHERE id = %s", (a[0],))
        market.execute(
            "INSERT INTO outbox (aggregate_type, aggregate_id, event_type)"
            " VALUES ('provider', %s, 'provider.deactivated')",
            (str(a[0]),),
        )
    with market.transaction():
        market.execute("DELETE FROM users WHERE id = %s", (b[0],))
        market.execute(
            "INSERT INTO outbox (aggregate_type, aggregate_id, event_type)"
            " VALUES ('provider', %s, 'provider.deleted')",
            (str(b[0]),),
        )
    Relay(psycopg.connect(database_url), PostgresSink(), RelayConfig()).drain()
    left = market.execute(
        "SELECT count(*) FROM tutor_documents WHERE provider_id IN (%s, %s)", (a[0], b[0])
    ).fetchone()
    assert left == (0,)


async def test_profile_update_becomes_visible_and_invalidates_the_cache(
    market: psycopg.Connection[Any], client: httpx.AsyncClient, database_url: str
) -> None:
    pid, lat, lng = market.execute(
        "SELECT provider_id, lat, lng FROM tutor_documents WHERE in_person ORDER BY provider_id LIMIT 1"
    ).fetchone()
    params = {"lat": lat, "lng": lng, "radius_km": 1, "sort": "distance", "limit": 5}
    first = (await client.get("/api/v1/search/tutors", params=params)).json()
    again = (await client.get("/api/v1/search/tutors", params=params)).json()
    assert again["cached"] is True
    assert first["items"][0]["id"] == str(pid)
    new_price = first["items"][0]["price"]["amount_minor"] + 777

    with market.transaction():
        market.execute(
            "UPDATE provider_profiles SET hourly_rate_minor = %s, version = version + 1"
            " WHERE user_id = %s",
            (new_price, pid),
        )
        market.execute(
            "INSERT INTO outbox (aggregate_type, aggregate_id, event_type)"
            " VALUES ('provider', %s, 'provider.updated')",
            (str(pid),),
        )
    relay = Relay(
        psycopg.connect(database_url),
        PostgresSink(),
        RelayConfig(),
        on_commit=bump_cache_generation,
    )
    assert relay.drain() == 1

    after = (await client.get("/api/v1/search/tutors", params=params)).json()
    assert after["cached"] is False  # the generation bump invalidated the cached page
    assert after["items"][0]["id"] == str(pid)
    assert after["items"][0]["price"]["amount_minor"] == new_price


def _hold_whole_slot(db: psycopg.Connection[Any], slot_id: Any) -> None:
    """A pending hold on every free seat of `slot_id` and its outbox event, as the booking
    service writes them (the seats trigger fills the slot)."""
    student = create_user(db)
    with db.transaction():
        booking = db.execute(
            "INSERT INTO bookings (student_id, booked_by, provider_id, slot_id, seats, starts_at,"
            " ends_at, hold_expires_at, price_minor, currency, cancel_policy)"
            " SELECT %s, %s, provider_id, id, capacity - seats_taken, starts_at, ends_at,"
            " now() + interval '10 minutes', 3000, 'EUR', '{}'::jsonb"
            " FROM availability_slots WHERE id = %s RETURNING id, provider_id",
            (student, student, slot_id),
        ).fetchone()
        assert booking is not None
        db.execute(
            "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
            " VALUES ('booking', %s, 'booking.held', %s)",
            (
                str(booking[0]),
                Jsonb({"booking_id": str(booking[0]), "slot_id": str(slot_id),
                       "provider_id": str(booking[1])}),
            ),
        )  # fmt: skip


async def test_a_full_slot_invalidates_only_availability_searches(
    market: psycopg.Connection[Any], client: httpx.AsyncClient, database_url: str
) -> None:
    """A hold that fills a slot changes the answer of a search filtered on that slot's
    window (once the indexer ran) and leaves a plain distance search's cache entry
    alone; a profile change evicts both."""
    # an in-person tutor's slot that no other open slot of theirs overlaps
    pid, lat, lng, slot_id, starts_at, ends_at = market.execute(
        "SELECT d.provider_id, d.lat, d.lng, s.id, s.starts_at, s.ends_at"
        " FROM tutor_documents d JOIN availability_slots s ON s.provider_id = d.provider_id"
        " WHERE d.in_person AND s.status = 'open' AND s.seats_taken < s.capacity"
        " AND NOT EXISTS (SELECT 1 FROM availability_slots o WHERE o.provider_id = s.provider_id"
        " AND o.id <> s.id AND o.status = 'open'"
        " AND tstzrange(o.starts_at, o.ends_at) && tstzrange(s.starts_at, s.ends_at))"
        " ORDER BY d.provider_id, s.starts_at LIMIT 1"
    ).fetchone()
    plain = {"lat": lat, "lng": lng, "radius_km": 1, "sort": "distance", "limit": 5}
    window = {
        **plain,
        "available_from": starts_at.isoformat(),
        "available_to": ends_at.isoformat(),
    }

    async def search(params: dict[str, Any]) -> dict[str, Any]:
        r = await client.get("/api/v1/search/tutors", params=params)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    before = await search(plain)
    assert before["items"][0]["id"] == str(pid)
    assert str(pid) in {i["id"] for i in (await search(window))["items"]}
    assert (await search(plain))["cached"] is True
    assert (await search(window))["cached"] is True
    relay = Relay(
        psycopg.connect(database_url),
        PostgresSink(),
        RelayConfig(),
        on_changes=functools.partial(invalidate_search_cache, "postgres"),
    )

    _hold_whole_slot(market, slot_id)
    assert relay.drain() == 1

    after = await search(window)
    assert after["cached"] is False
    assert str(pid) not in {i["id"] for i in after["items"]}
    kept = await search(plain)
    assert kept["cached"] is True  # availability is not part of this answer
    assert kept["items"] == before["items"]

    with market.transaction():
        market.execute(
            "UPDATE provider_profiles SET hourly_rate_minor = hourly_rate_minor + 1,"
            " version = version + 1 WHERE user_id = %s",
            (pid,),
        )
        market.execute(
            "INSERT INTO outbox (aggregate_type, aggregate_id, event_type)"
            " VALUES ('provider', %s, 'provider.updated')",
            (str(pid),),
        )
    assert relay.drain() == 1
    assert (await search(plain))["cached"] is False
    assert (await search(window))["cached"] is False


def test_the_sink_reports_what_a_batch_changed(
    market: psycopg.Connection[Any], database_url: str
) -> None:
    """Booking events change availability only (whether or not the slot filled up), a
    provider event anything, a batch without provider or booking events nothing."""
    slot_id, pid = market.execute(
        "SELECT s.id, s.provider_id FROM availability_slots s"
        " JOIN tutor_documents d ON d.provider_id = s.provider_id"
        " WHERE s.status = 'open' AND s.capacity >= 2 AND s.seats_taken = 0 LIMIT 1"
    ).fetchone()
    seen: list[Changes] = []
    relay = Relay(psycopg.connect(database_url), PostgresSink(), RelayConfig(),
                  on_changes=seen.append)  # fmt: skip
    student = create_user(market)
    with market.transaction():
        market.execute(
            "INSERT INTO bookings (student_id, booked_by, provider_id, slot_id, seats, starts_at,"
            " ends_at, hold_expires_at, price_minor, currency, cancel_policy)"
            " SELECT %s, %s, provider_id, id, 1, starts_at, ends_at,"
            " now() + interval '10 minutes', 3000, 'EUR', '{}'::jsonb"
            " FROM availability_slots WHERE id = %s",
            (student, student, slot_id),
        )
        market.execute(
            "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
            " VALUES ('booking', gen_random_uuid()::text, 'booking.held', %s)",
            (Jsonb({"provider_id": str(pid)}),),
        )
    assert relay.drain() == 1
    _hold_whole_slot(market, slot_id)
    assert relay.drain() == 1
    market.execute(
        "INSERT INTO outbox (aggregate_type, aggregate_id, event_type)"
        " VALUES ('provider', %s, 'provider.updated')",
        (str(pid),),
    )
    assert relay.drain() == 1
    market.execute(
        "INSERT INTO outbox (aggregate_type, aggregate_id, event_type)"
        " VALUES ('payment', gen_random_uuid()::text, 'payment.succeeded')"
    )
    assert relay.drain() == 1
    availability = Changes(documents=False, availability=True)
    assert seen == [availability, availability, EVERYTHING, NOTHING]


def test_unknown_aggregate_types_are_skipped_but_checkpointed(
    market: psycopg.Connection[Any], database_url: str
) -> None:
    market.execute(
        "INSERT INTO outbox (aggregate_type, aggregate_id, event_type)"
        " VALUES ('booking', %s, 'booking.created')",
        (str(uuid.uuid4()),),
    )
    relay = Relay(psycopg.connect(database_url), PostgresSink(), RelayConfig())
    assert relay.drain() == 1
    assert relay.drain() == 0


async def test_metrics_expose_indexer_lag(
    market: psycopg.Connection[Any], client: httpx.AsyncClient, database_url: str
) -> None:
    relay = Relay(psycopg.connect(database_url), PostgresSink(), RelayConfig())
    pid = market.execute("SELECT provider_id FROM tutor_documents LIMIT 1").fetchone()[0]
    for _ in range(3):
        market.execute(
            "INSERT INTO outbox (aggregate_type, aggregate_id, event_type)"
            " VALUES ('provider', %s, 'provider.updated')",
            (str(pid),),
        )
    text = (await client.get("/metrics")).text
    assert 'educonnect_indexer_lag_events{consumer="postgres"} 3.0' in text
    relay.drain()
    text = (await client.get("/metrics")).text
    assert 'educonnect_indexer_lag_events{consumer="postgres"} 0.0' in text
    assert 'educonnect_indexer_lag_seconds{consumer="postgres"} 0.0' in text


def test_relay_process_reconnects_when_its_connections_are_lost(
    market: psycopg.Connection[Any], database_url: str
) -> None:
    def emit() -> None:
        pid = market.execute("SELECT provider_id FROM tutor_documents LIMIT 1").fetchone()[0]
        market.execute(
            "INSERT INTO outbox (aggregate_type, aggregate_id, event_type)"
            " VALUES ('provider', %s, 'provider.updated')",
            (str(pid),),
        )

    def applied() -> int:
        row = market.execute("SELECT coalesce(sum(events), 0) FROM indexer_checkpoints").fetchone()
        return int(row[0])

    proc = _relay_process(database_url)
    try:
        emit()
        wait_for(lambda: applied() == 1, "the first event")
        (killed,) = market.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name LIKE 'educonnect-indexer%%'"
            " AND datname = current_database()"  # not the relays of other databases
        ).fetchone()
        assert killed == 2  # the relay's and its LISTEN connection
        emit()
        wait_for(lambda: applied() == 2, "the event after the reconnection")
        assert proc.poll() is None  # still the same process
    finally:
        proc.terminate()
        proc.wait(timeout=30)
