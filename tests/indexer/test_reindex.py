"""Full reindex end to end: a real Celery worker process (solo pool) on the test Redis and
the test database, the admin API, concurrent searches and writes (outbox + relay), a
worker killed with SIGKILL mid-run, cancellation, the one-run-per-engine lock and RBAC.

Runs are parked deterministically where a test needs them: a reader holding an
`ACCESS SHARE` lock on a live table (a long search, in effect) makes the swap wait, so
the run sits in its `swap` phase, with its shadow tables complete, until the reader ends;
or, where searches must go on meanwhile, the swap gate (`REINDEX_SWAP_GATE`): the worker
waits before its swap while the test holds that advisory lock.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import httpx
import psycopg
import pytest

from core.celery_app import celery_config
from core.settings import Settings
from devdata.seed import SeedParams, seed
from indexer.projection import build_all
from indexer.relay import PostgresSink, Relay, RelayConfig
from tests.conftest import TEST_REDIS_URL, bearer, create_user, wait_for
from tests.indexer.projection_check import assert_equals_from_scratch, drop_expected

START = date(2030, 3, 4)
BASE = "/api/v1/admin/reindex"
LIVE = ("tutor_documents", "coach_documents", "tutor_facets", "coach_facets")


# ------------------------------------------------------------------ fixtures


class Worker:
    """A `celery worker` subprocess (solo pool) on the test database and Redis."""

    def __init__(self, database_url: str, extra_env: dict[str, str] | None = None) -> None:
        self.name = f"reindex-test-{uuid.uuid4().hex[:8]}@localhost"
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="celery-", suffix=".log", delete=False
        )
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": TEST_REDIS_URL,
            "REINDEX_BATCH_SIZE": "50",
            "REINDEX_LEASE_S": "3",
            "REINDEX_LOCK_TIMEOUT_S": "0.2",
            "REINDEX_SWAP_TIMEOUT_S": "120",
            "WORKER_METRICS_PORT": "0",
            "LOG_LEVEL": "INFO",
            **(extra_env or {}),
        }
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "core.celery_app", "worker",
                "--pool=solo", "--without-gossip", "--without-mingle", "-n", self.name,
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        from core.celery_app import app

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited: {self.output()}")
            return bool(app.control.ping(destination=[self.name], timeout=0.5))

        wait_for(ready, "the Celery worker to answer ping", limit_s=120)

    def output(self) -> str:
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()[-4000:]

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.log.close()
        os.unlink(self.log.name)


@pytest.fixture
def start_worker(database_url: str, redis_url: str) -> Iterator[Callable[..., Worker]]:
    """Start Celery workers on demand; every one is stopped after the test (before the
    test Redis is flushed)."""
    workers: list[Worker] = []

    def start(extra_env: dict[str, str] | None = None) -> Worker:
        w = Worker(database_url, extra_env)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()


@pytest.fixture
def market(db: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """A small seeded marketplace with its documents built, and no leftover tables."""
    seed(db, SeedParams(tutors=500, coaches=150, students=0, seed=21, start=START))
    with db.transaction():
        build_all(db)
    yield db
    for t in shadow_tables(db):
        db.execute(f'DROP TABLE IF EXISTS "{t}"')
    drop_expected(db)


async def await_for(predicate: Callable[[], Any], what: str, limit_s: float = 120.0) -> Any:
    """`wait_for` for coroutine predicates, yielding to the event loop between polls."""
    deadline = time.monotonic() + limit_s
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def shadow_tables(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        " AND tablename ~ '^(tutor|coach)_(documents|facets)_rx'"
    ).fetchall()
    return [r[0] for r in rows]


def live_state(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Identity (oid), index names and a digest of every row of the live tables."""
    out: dict[str, Any] = {}
    for t in LIVE:
        oid = conn.execute("SELECT %s::regclass::oid", (t,)).fetchone()
        idx = conn.execute(
            "SELECT array_agg(indexname ORDER BY indexname) FROM pg_indexes WHERE tablename = %s",
            (t,),
        ).fetchone()
        digest = conn.execute(
            f"SELECT count(*), md5(coalesce(string_agg(d::text, '|' ORDER BY provider_id), ''))"
            f" FROM {t} d"
        ).fetchone()
        out[t] = (oid, idx, digest)
    return out


def index_names(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    return {
        t: [
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = %s ORDER BY 1", (t,)
            )
        ]
        for t in LIVE
    }


def run_row(conn: psycopg.Connection[Any], task_id: str) -> dict[str, Any]:
    cur = conn.execute(
        "SELECT state, phase, done, total, replayed, error, mark::text::bigint AS mark"
        " FROM reindex_runs WHERE id = %s",
        (task_id,),
    )
    row = cur.fetchone()
    assert row is not None
    return dict(zip([d.name for d in cur.description or []], row, strict=True))


class Reader:
    """A transaction holding `ACCESS SHARE` on a live table (what a long search holds)."""

    def __init__(self, url: str, table: str = "tutor_documents") -> None:
        self.conn = psycopg.connect(url)
        self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


# ---------------------------------------------------------------------- tests


SWAP_GATE = 0x52584741  # the advisory lock key the worker waits on before its swap
PHASES = ["queued", "starting", "snapshot", "indexes", "analyze", "replay", "swap", "succeeded"]


@pytest.fixture
def no_search_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The app's searches skip the Redis cache: each one reads the live tables."""
    from core.settings import get_settings

    monkeypatch.setenv("SEARCH_CACHE_ENABLED", "false")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()  # the next read sees the environment monkeypatch restores


def _providers(conn: psycopg.Connection[Any]) -> list[tuple[uuid.UUID, str]]:
    """(id, role) of every provider with a search document, by id."""
    return conn.execute(
        "SELECT d.provider_id, u.role FROM (SELECT provider_id FROM tutor_documents"
        " UNION ALL SELECT provider_id FROM coach_documents) d"
        " JOIN users u ON u.id = d.provider_id ORDER BY 1"
    ).fetchall()


async def test_reindex_under_searches_and_writes_equals_from_scratch(
    market: psycopg.Connection[Any],
    api: httpx.AsyncClient,
    database_url: str,
    start_worker: Callable[..., Worker],
    no_search_cache: None,
) -> None:
    """A reindex held at its swap (the worker waits on an advisory lock the test holds)
    while uncached searches and profile writes through the API go on: searches answer
    throughout — before, while held, across the swap and after it — and writes made while
    held reach the new tables through the run's own replay (the relay is stopped before the
    swap, so the old tables it had updated are gone)."""
    start_worker({"REINDEX_SWAP_GATE": str(SWAP_GATE)})
    admin = bearer(create_user(market, role="admin"), "admin")
    names_before = index_names(market)
    oid_before = live_state(market)["tutor_documents"][0]
    # a connection whose statement on the live table is prepared server-side before the swap
    prepared = psycopg.connect(database_url, autocommit=True)
    probe = "SELECT count(*), max(indexed_at) FROM tutor_documents"
    for _ in range(3):
        _, first_indexed = prepared.execute(probe, prepare=True).fetchone()

    providers = _providers(market)
    tutors = [p for p in providers if p[1] == "tutor"]
    sentinels = tutors[:5]  # written only while the run is held
    others = [p for p in providers if p not in sentinels]
    gate = psycopg.connect(database_url, autocommit=True)
    gate.execute("SELECT pg_advisory_lock(%s)", (SWAP_GATE,))

    relay_stop = threading.Event()
    relay = Relay(psycopg.connect(database_url), PostgresSink(), RelayConfig(batch_size=50))

    def relay_loop() -> None:
        while not relay_stop.is_set():
            if not relay.run_once().events:
                relay_stop.wait(0.005)

    relay_thread = threading.Thread(target=relay_loop)
    relay_thread.start()

    phase = "queued"  # the run's phase as last polled; searches and writes count by it
    searches: dict[str, dict[int, int]] = {}
    writes: dict[str, int] = {}
    running = True

    async def search_loop() -> None:
        rng = random.Random(3)
        while running:
            if rng.random() < 0.7:
                params = {
                    "lat": 48.85 + rng.uniform(-0.2, 0.2),
                    "lng": 2.35 + rng.uniform(-0.2, 0.2),
                    "radius_km": rng.choice([5, 20, 100]),
                    "sort": rng.choice(["distance", "rating", "price"]),
                }
                r = await api.get("/api/v1/search/tutors", params=params)
            else:
                r = await api.get("/api/v1/search/coaches", params={"sort": "rating"})
            by_status = searches.setdefault(phase, {})
            by_status[r.status_code] = by_status.get(r.status_code, 0) + 1
            await asyncio.sleep(0.005)  # pacing: a steady load, not a CPU-bound spin

    async def write_loop() -> None:
        rng = random.Random(7)
        while running:
            pid, role = rng.choice(others)
            r = await api.patch(
                "/api/v1/profiles/me",
                json={"hourly_rate_minor": rng.randint(1000, 9000)},
                headers=bearer(pid, role),
            )
            assert r.status_code == 200, r.text
            writes[phase] = writes.get(phase, 0) + 1
            # pacing: about 50 writes/s, a rate the run's replay catches up with (unpaced
            # writes grow the outbox faster than any replay on 2 cores drains it)
            await asyncio.sleep(0.02)

    def in_phase(name: str) -> int:
        return sum(searches.get(name, {}).values())

    async def sentinel_hits() -> dict[str, tuple[str, int]]:
        r = await api.get("/api/v1/search/tutors", params={"q": "sentinelle", "limit": 50})
        assert r.status_code == 200, r.text
        return {i["id"]: (i["headline"], i["price"]["amount_minor"]) for i in r.json()["items"]}

    expected = {
        str(pid): (f"Sentinelle du reindex {n}", 7001 + n) for n, (pid, _) in enumerate(sentinels)
    }
    seen: list[str] = []

    async def poll() -> dict[str, Any]:
        nonlocal phase
        body: dict[str, Any] = (await api.get(f"{BASE}/{task_id}", headers=admin)).json()
        phase = body["phase"]
        if not seen or seen[-1] != phase:
            seen.append(phase)
        return body

    tasks = [asyncio.create_task(search_loop()), asyncio.create_task(write_loop())]
    try:
        r = await api.post(BASE, headers=admin, json={"engine": "postgres", "kind": "all"})
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        assert r.headers["location"] == f"{BASE}/{task_id}"
        await await_for(lambda: _is(poll(), "swap"), "the run to wait at its swap", limit_s=300)
        # held: shadows built and replayed, live tables untouched; searches go on
        assert len(shadow_tables(market)) == 4
        for n, (pid, role) in enumerate(sentinels):
            r = await api.patch(
                "/api/v1/profiles/me",
                json={"headline": expected[str(pid)][0], "hourly_rate_minor": 7001 + n},
                headers=bearer(pid, role),
            )
            assert r.status_code == 200, r.text
        # the relay applies them to the live tables, which the swap will replace
        await await_for(
            lambda: _equals(sentinel_hits(), expected), "the sentinel writes in the live tables"
        )
        await await_for(lambda: _true(in_phase("swap") >= 20), "searches while held")
        assert (await poll())["state"] == "running"
        assert live_state(market)["tutor_documents"][0] == oid_before
        relay_stop.set()
        relay_thread.join(timeout=60)
        gate.execute("SELECT pg_advisory_unlock(%s)", (SWAP_GATE,))
        final = await await_for(
            lambda: _finished(poll()), "the reindex to finish after the gate opened"
        )
        await await_for(lambda: _true(in_phase("succeeded") >= 10), "searches after the swap")
        # with the relay stopped, only the run's replay can have put them in the new tables
        await await_for(
            lambda: _equals(sentinel_hits(), expected), "the sentinel writes in the new tables", 30
        )
    finally:
        running = False
        await asyncio.gather(*tasks, return_exceptions=True)
        relay_stop.set()
        relay_thread.join(timeout=60)
        gate.close()
    for t in tasks:
        t.result()  # a failed search or write loop fails the test
    assert final["state"] == "succeeded", final
    assert final["done"] == final["total"] > 0
    assert final["errors"] == []
    assert final["rate"] > 0
    assert live_state(market)["tutor_documents"][0] != oid_before  # the tables were swapped
    # phases seen in their order, the swap among them (it was held there)
    assert "swap" in seen, seen
    assert seen[-1] == "succeeded", seen
    assert seen == sorted(seen, key=PHASES.index), seen
    # searches answered 200 in every phase they ran in, before, during and after the hold
    assert {s for counts in searches.values() for s in counts} == {200}, searches
    assert in_phase("swap") >= 20, searches
    assert in_phase("succeeded") >= 10, searches
    assert sum(in_phase(p) for p in PHASES[:6]) > 0, searches  # before the swap
    assert writes.get("swap", 0) > 0, writes
    assert sum(writes.values()) > writes["swap"], writes
    row = run_row(market, task_id)
    (during,) = market.execute(
        "SELECT count(*) FROM outbox WHERE txid >= %s::text::xid8", (row["mark"],)
    ).fetchone()
    assert during >= len(sentinels)
    assert row["replayed"] > 0

    relay.drain()  # what the relay had not applied yet goes to the new tables
    assert_equals_from_scratch(market)
    assert index_names(market) == names_before  # names stable for the next run
    assert shadow_tables(market) == []
    assert market.execute(
        "SELECT count(*) FROM indexer_checkpoints WHERE consumer LIKE 'reindex:%'"
    ).fetchone() == (0,)
    # the prepared statement was re-planned against the new table, without an error
    _, indexed = prepared.execute(probe, prepare=True).fetchone()
    assert indexed > first_indexed
    prepared.close()
    relay.conn.close()


async def _is(body: Any, phase: str) -> bool:
    return bool((await body)["phase"] == phase)


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def _true(value: bool) -> bool:
    return value


async def _finished(body: Any) -> dict[str, Any] | None:
    b: dict[str, Any] = await body
    return b if b["state"] not in ("queued", "running") else None


async def test_worker_killed_mid_run_leaves_live_tables_and_a_retry_completes(
    market: psycopg.Connection[Any],
    api: httpx.AsyncClient,
    database_url: str,
    start_worker: Callable[[], Worker],
) -> None:
    worker = start_worker()
    admin = bearer(create_user(market, role="admin"), "admin")
    before = live_state(market)
    reader = Reader(database_url)  # parks the run at the swap, shadows fully built
    try:
        r = await api.post(BASE, headers=admin, json={})
        assert r.status_code == 202
        task_id = r.json()["task_id"]
        wait_for(lambda: run_row(market, task_id)["phase"] == "swap", "the swap phase", limit_s=120)
        assert len(shadow_tables(market)) == 4  # documents and facets, tutors and coaches
        worker.kill()
    finally:
        reader.release()
    assert live_state(market) == before  # same tables, same rows, same indexes
    r = await api.get("/api/v1/search/tutors", params={"lat": 48.85, "lng": 2.35})
    assert r.status_code == 200

    # Until its lease expires the dead run still holds the engine…
    r = await api.post(BASE, headers=admin, json={})
    assert (r.status_code, r.json()["code"], r.json()["task_id"]) == (
        409,
        "reindex_running",
        task_id,
    )
    assert r.headers["content-type"] == "application/problem+json"
    # …then a retried reindex is accepted and completes on a new worker.
    start_worker()

    async def accepted() -> httpx.Response | None:
        resp = await api.post(BASE, headers=admin, json={})
        return resp if resp.status_code == 202 else None

    retry = (await await_for(accepted, "the dead run's lease to expire", 60)).json()["task_id"]
    dead = run_row(market, task_id)
    assert dead["state"] == "failed"
    assert "worker lost" in dead["error"]
    wait_for(lambda: run_row(market, retry)["state"] == "succeeded", "the retried reindex")
    assert shadow_tables(market) == []  # the dead run's shadows were dropped
    assert market.execute(
        "SELECT count(*) FROM indexer_checkpoints WHERE consumer LIKE 'reindex:%'"
    ).fetchone() == (0,)
    assert_equals_from_scratch(market)


async def test_cancel_drops_the_shadow_and_leaves_live_tables(
    market: psycopg.Connection[Any],
    api: httpx.AsyncClient,
    database_url: str,
    start_worker: Callable[[], Worker],
) -> None:
    start_worker()
    admin = bearer(create_user(market, role="admin"), "admin")
    before = live_state(market)
    reader = Reader(database_url, "coach_documents")
    try:
        task_id = (await api.post(BASE, headers=admin, json={})).json()["task_id"]
        wait_for(lambda: run_row(market, task_id)["phase"] == "swap", "the swap phase", limit_s=120)
        r = await api.delete(f"{BASE}/{task_id}", headers=admin)
        assert r.status_code == 202
        assert r.json()["cancel_requested"] is True
        wait_for(lambda: run_row(market, task_id)["state"] == "canceled", "the cancel")
    finally:
        reader.release()
    assert shadow_tables(market) == []
    assert live_state(market) == before
    r = await api.delete(f"{BASE}/{task_id}", headers=admin)
    assert r.status_code == 202  # canceling a canceled run is idempotent
    # the engine is free again
    r = await api.post(BASE, headers=admin, json={"kind": "coaches"})
    assert r.status_code == 202
    wait_for(lambda: run_row(market, r.json()["task_id"])["state"] == "succeeded", "a reindex")
    assert_equals_from_scratch(market)


async def test_a_run_waiting_at_the_swap_gate_can_be_canceled(
    market: psycopg.Connection[Any],
    api: httpx.AsyncClient,
    database_url: str,
    start_worker: Callable[..., Worker],
) -> None:
    start_worker({"REINDEX_SWAP_GATE": str(SWAP_GATE)})
    admin = bearer(create_user(market, role="admin"), "admin")
    before = live_state(market)
    gate = psycopg.connect(database_url, autocommit=True)
    try:
        gate.execute("SELECT pg_advisory_lock(%s)", (SWAP_GATE,))
        task_id = (await api.post(BASE, headers=admin, json={})).json()["task_id"]
        wait_for(lambda: run_row(market, task_id)["phase"] == "swap", "the swap phase", limit_s=120)
        await asyncio.sleep(4)  # held longer than its lease (REINDEX_LEASE_S=3): renewed
        assert run_row(market, task_id)["state"] == "running"
        assert len(shadow_tables(market)) == 4
        r = await api.delete(f"{BASE}/{task_id}", headers=admin)
        assert r.status_code == 202
        # the gate is still held: the wait itself ends on the cancel
        wait_for(lambda: run_row(market, task_id)["state"] == "canceled", "the cancel")
    finally:
        gate.close()
    assert shadow_tables(market) == []
    assert live_state(market) == before


async def test_one_reindex_per_engine_and_cancel_while_queued(
    db: psycopg.Connection[Any], api: httpx.AsyncClient
) -> None:
    # no worker: the run stays queued
    admin = bearer(create_user(db, role="admin"), "admin")
    first = await api.post(BASE, headers=admin, json={"engine": "postgres", "kind": "tutors"})
    assert first.status_code == 202
    task_id = first.json()["task_id"]
    second = await api.post(BASE, headers=admin)
    assert second.status_code == 409
    assert second.headers["content-type"] == "application/problem+json"
    assert (second.json()["code"], second.json()["task_id"]) == ("reindex_running", task_id)

    status = (await api.get(f"{BASE}/{task_id}", headers=admin)).json()
    assert (status["state"], status["done"], status["total"], status["rate"]) == (
        "queued",
        0,
        0,
        None,
    )
    r = await api.delete(f"{BASE}/{task_id}", headers=admin)
    assert (r.status_code, r.json()["state"]) == (202, "canceled")
    assert (await api.post(BASE, headers=admin)).status_code == 202

    r = await api.get(f"{BASE}/{uuid.uuid4()}", headers=admin)
    assert (r.status_code, r.json()["code"]) == (404, "reindex_not_found")
    r = await api.post(BASE, headers=admin, json={"engine": "elastic"})
    assert r.status_code == 422


@pytest.mark.parametrize("role", ["student", "parent", "tutor", "coach", "mentor"])
async def test_reindex_is_for_admins(
    db: psycopg.Connection[Any], api: httpx.AsyncClient, role: str
) -> None:
    h = bearer(create_user(db, role=role), role)
    some = uuid.uuid4()
    for method, url in (("POST", BASE), ("GET", f"{BASE}/{some}"), ("DELETE", f"{BASE}/{some}")):
        r = await api.request(method, url, headers=h)
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "forbidden"
    assert (await api.post(BASE)).status_code == 401
    assert db.execute("SELECT count(*) FROM reindex_runs").fetchone() == (0,)


def test_celery_configuration_is_deliberate() -> None:
    s = Settings(_env_file=None, redis_url="redis://example:6379/3")  # type: ignore[call-arg]
    c = celery_config(s)
    assert c["broker_url"] == c["result_backend"] == "redis://example:6379/3"
    assert (c["task_serializer"], c["result_serializer"], c["accept_content"]) == (
        "json",
        "json",
        ["json"],
    )
    assert c["task_acks_late"] is True
    assert c["task_reject_on_worker_lost"] is False
    vt = c["broker_transport_options"]["visibility_timeout"]
    assert vt == c["result_backend_transport_options"]["visibility_timeout"]
    assert c["task_soft_time_limit"] < c["task_time_limit"] < vt
    with pytest.raises(ValueError, match="visibility"):
        Settings(_env_file=None, celery_task_time_limit_s=8000)  # type: ignore[call-arg]


async def test_opensearch_reindex_runs_in_the_worker_and_swaps_the_aliases(
    market: psycopg.Connection[Any],
    api: httpx.AsyncClient,
    start_worker: Callable[..., Worker],
) -> None:
    """`engine=opensearch` goes through the same run row, worker and progress; the cluster
    is the HTTP stand-in (tests/search/opensearch_standin.py), which keeps indices and aliases."""
    from tests.search.opensearch_standin import StandIn

    standin = StandIn()
    try:
        start_worker({"OPENSEARCH_URL": standin.url, "OPENSEARCH_REPLICAS": "0"})
        admin = bearer(create_user(market, role="admin"), "admin")
        r = await api.post(BASE, headers=admin, json={"engine": "opensearch"})
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        wait_for(lambda: run_row(market, task_id)["state"] != "queued"
                 and run_row(market, task_id)["state"] != "running", "the run to end")  # fmt: skip
        row = run_row(market, task_id)
        assert row["state"] == "succeeded", row["error"]
        (searchable,) = market.execute(
            "SELECT count(*) FROM search_document_source WHERE searchable"
        ).fetchone()
        assert row["done"] == searchable
        assert standin.state.aliases == {"tutors": "tutors_v1", "coaches": "coaches_v1"}
        indexed = sum(
            1
            for rec in standin.requests
            if rec.path.endswith("/_bulk")
            for line in rec.body.splitlines()
            if line.startswith(b'{"index"')
        )
        assert indexed == searchable
        status = (await api.get(f"{BASE}/{task_id}", headers=admin)).json()
        assert status["state"] == "succeeded"
    finally:
        standin.close()
