"""Full reindex of the PostgreSQL search tables: shadow tables from a consistent snapshot,
replay of the outbox since the mark, then an atomic swap (DESIGN §5).

A run, step by step (`run_reindex`, executed by the Celery task `indexer.reindex`):

1. **Claim** the `reindex_runs` row (queued → running; a lease renewed by a heartbeat
   thread every `lease/3` s). One active run per engine: a partial unique index on the
   active states; a run whose worker died stops blocking once its lease has expired.
2. **Shapes.** For each table rebuilt, read the live table's shape from the catalog
   (columns, indexes and the constraints they back, foreign keys, storage options,
   grants) and create an empty shadow `…_rx<8 hex of the run id>` `LIKE` it, without
   indexes. Nothing is hard-coded: a migration that changes columns or indexes is picked up.
3. **Mark, then snapshot.** `mark = outbox_horizon()`: every transaction with an xid below
   it has finished, so it is inside any snapshot taken afterwards; events with
   `txid >= mark` may or may not be, and are all replayed (idempotently) later. Then a
   read-only REPEATABLE READ transaction exports its snapshot. The outbox is held from
   the mark on (a checkpoint row `reindex:<engine>:<run>`) so pruning cannot delete events
   still to be replayed.
4. **Load in batches** (`REINDEX_BATCH_SIZE` providers): each batch is a short transaction
   that imports the exported snapshot and inserts its documents (tutors in geohash order).
   Short batches matter: a transaction holding an xid for the whole load would pin the
   outbox horizon and stall the streaming relay for the duration. Progress (done/total)
   and the cancel flag are checked after every batch.
5. **Indexes** are built after the load (one by one, cancel checked between), then
   `VACUUM (ANALYZE)`.
6. **Replay** the events since the mark into the shadow tables with
   `rebuild_documents(..., table_suffix=…)` (version-guarded upserts from the current
   source rows), in `(txid, id)` order, until caught up.
7. **Swap** (after the swap gate, when one is configured: `ReindexConfig.swap_gate`) in
   one short transaction: `ACCESS EXCLUSIVE` on the live tables (with
   `lock_timeout`, retried until `REINDEX_SWAP_TIMEOUT_S`, so a long search never queues
   every other search behind our lock request for long), re-check the fence (the run is
   still ours and not canceled) and that the live shape did not change, replay the last
   events committed since step 6 while holding the locks, rename live → `…_old`, shadow →
   live, indexes/constraints to the live names, drop the old table, mark the run
   succeeded — all in that transaction. Then bump the search cache generation.

Why nothing is lost: an event the streaming relay applied to the old table before the
swap had `txid` below the relay's horizon then, hence below ours at the swap (the
horizon only grows), so the final replay covers it; an event not yet below our horizon at
the swap has not been applied by the relay either and will be, to the new table.
Searches see the old or the new table, never none: renames and the drop happen in one
transaction, and a statement that waited on the lock re-resolves the table name (and a
prepared statement is re-planned after the DDL invalidation).

Cancel: `DELETE /admin/reindex/{id}` sets `cancel_requested`; the run stops at its next
check, drops its shadow tables and leaves the live ones untouched. A worker killed mid-run
leaves the live tables untouched too (the shadow is separate until the swap transaction
commits); leftover shadow tables are dropped by the next run.
"""

from __future__ import annotations

import functools
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from core.errors import AppError, Conflict, NotFound, ServiceUnavailable
from core.logging import get_logger
from indexer import reindex_metrics as metrics
from indexer import reindex_repository as repo
from indexer.projection import (
    COACH_COLUMNS,
    TUTOR_COLUMNS,
    fill_blocks,
    fill_facets,
    rebuild_documents,
)
from indexer.reindex_repository import ReindexRun, TableShape
from indexer.relay import provider_ids

log = get_logger(__name__)

ENGINES = ("postgres", "opensearch")
KINDS = ("all", "tutors", "coaches")
COLUMNS = {repo.TUTOR_TABLE: TUTOR_COLUMNS, repo.COACH_TABLE: COACH_COLUMNS}
REPLAY_BATCH = 1000


# ------------------------------------------------------------------------ errors


class ReindexRunning(Conflict):
    """409: a reindex of this engine is already queued or running (`task_id` names it)."""

    code = "reindex_running"
    title = "Reindex already running"


class ReindexNotFound(NotFound):
    """404: no reindex run with this task id."""

    code = "reindex_not_found"
    title = "Reindex not found"


class ReindexFinished(Conflict):
    """409: the run already ended; there is nothing to cancel."""

    code = "reindex_finished"
    title = "Reindex already finished"


class ReindexUnavailable(ServiceUnavailable):
    """503: the task could not be queued (broker unreachable)."""

    code = "reindex_unavailable"
    title = "Reindex unavailable"


class UnsupportedEngine(AppError):
    """422: the engine cannot be reindexed (yet)."""

    status = 422
    code = "unsupported_engine"
    title = "Unsupported engine"


class Canceled(Exception):
    """The run was asked to stop."""


class LeaseLost(Exception):
    """The run is no longer ours (its lease expired and it was marked failed)."""


class SchemaChanged(Exception):
    """The live table's columns or indexes changed during the run (a migration)."""


# --------------------------------------------------------------- requesting runs


def create_run(
    conn: psycopg.Connection[Any],
    *,
    engine: str,
    kind: str,
    requested_by: uuid.UUID | None,
    queue_timeout_s: float,
) -> ReindexRun:
    """Record a queued run for `engine`/`kind` in the caller's transaction and return it
    (its id is the Celery task id to send). Active runs whose lease expired are marked
    failed first. Raises `ReindexRunning` (409, with the active run's `task_id`) when
    another run of `engine` is queued or running, `UnsupportedEngine` (422) otherwise
    refused."""
    if engine not in ENGINES:
        raise UnsupportedEngine(
            f"Engine {engine!r} cannot be reindexed; known: {', '.join(ENGINES)}.",
            errors=[{"param": "engine", "in": "body", "message": "unsupported engine"}],
        )
    if kind not in KINDS:
        raise UnsupportedEngine(f"Unknown kind {kind!r}; known: {', '.join(KINDS)}.")
    for stale in repo.expire_stale_runs(conn, engine):
        log.warning("reindex_run_expired", task_id=str(stale.id), error=stale.error)
        metrics.RUNS.labels(engine, "lost").inc()
    run = repo.insert_run(
        conn,
        run_id=uuid.uuid4(),
        engine=engine,
        kind=kind,
        requested_by=requested_by,
        queue_timeout_s=queue_timeout_s,
    )
    if run is not None:
        return run
    active = repo.active_run(conn, engine)
    task_id = str(active.id) if active else None
    raise ReindexRunning(
        f"A reindex of {engine} is already {active.state if active else 'running'}"
        f" (task {task_id}); wait for it or cancel it.",
        task_id=task_id,
    )


def publish_failed(conn: psycopg.Connection[Any], run_id: uuid.UUID, exc: BaseException) -> None:
    """Record that the task of queued run `run_id` could not be sent (caller's txn)."""
    repo.fail_unpublished(conn, run_id, f"could not queue the task: {exc!r}")


def get_run(conn: psycopg.Connection[Any], run_id: uuid.UUID) -> ReindexRun:
    """The run `run_id`; raises `ReindexNotFound` (404)."""
    run = repo.get_run(conn, run_id)
    if run is None:
        raise ReindexNotFound(f"No reindex run {run_id}.")
    return run


def cancel_run(conn: psycopg.Connection[Any], run_id: uuid.UUID) -> ReindexRun:
    """Flag `run_id` for cancellation (a queued run is canceled at once); returns it.
    Raises `ReindexNotFound` (404) or `ReindexFinished` (409) when it already ended."""
    run = repo.request_cancel(conn, run_id)
    if run is None:
        raise ReindexNotFound(f"No reindex run {run_id}.")
    if run.state in repo.TERMINAL_STATES and not (run.state == "canceled"):
        raise ReindexFinished(f"Reindex {run_id} already {run.state}.", state=run.state)
    return run


@dataclass(frozen=True, slots=True)
class Progress:
    """A run's progress as the API reports it.

    `rate` is documents loaded per second since the run started (None before the first
    batch); `eta_s` the seconds left to load the remaining documents at that rate (None
    once loaded or when unknown); `elapsed_s` wall seconds since start (to the end once
    finished)."""

    elapsed_s: float | None
    rate: float | None
    eta_s: float | None


def progress(run: ReindexRun) -> Progress:
    """Rate and ETA of `run` from its row (database clock)."""
    if run.started_at is None:
        return Progress(None, None, None)
    end: datetime = run.finished_at or run.db_now
    elapsed = max((end - run.started_at).total_seconds(), 0.0)
    load_end = run.loaded_at or end
    load_s = max((load_end - run.started_at).total_seconds(), 1e-6)
    rate = run.done / load_s if run.done else None
    eta = None
    if run.state == "running" and run.loaded_at is None and rate:
        eta = max(run.total - run.done, 0) / rate
    return Progress(round(elapsed, 3), round(rate, 1) if rate else None, eta)


# ------------------------------------------------------------------- running


@dataclass(frozen=True, slots=True)
class ReindexConfig:
    """Tuning of one run (defaults from `core.settings`).

    `swap_gate`: an advisory lock key (`pg_advisory_lock(bigint)`); when set, the run
    enters its `swap` phase, then waits while another session holds that lock, before
    taking the live tables' locks. The lease stays renewed and cancellation is honoured
    while it waits. None (the default): no wait."""

    batch_size: int = 5000
    lease_s: float = 60.0
    lock_timeout_s: float = 2.0
    swap_timeout_s: float = 120.0
    parallelism: int = 2
    maintenance_work_mem: str = "256MB"
    swap_gate: int | None = None


class _Control:
    """The run's lease and flags: a heartbeat thread renews the lease every `lease/3` s
    on its own connection; the run reports progress through `beat()`, which raises
    `Canceled` or `LeaseLost` when it must stop."""

    def __init__(self, url: str, run_id: uuid.UUID, attempt: int, lease_s: float) -> None:
        self.conn = psycopg.connect(
            url, autocommit=True, application_name="educonnect-reindex-control"
        )
        self.run_id = run_id
        self.attempt = attempt
        self.lease_s = lease_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.cancel = False
        self.lost = False
        self._thread = threading.Thread(target=self._loop, name="reindex-heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self._beat(None)
            except psycopg.Error as exc:  # the next beat retries; the lease is the bound
                log.warning("reindex_heartbeat_failed", error=repr(exc))

    def _beat(self, fields: dict[str, Any] | None) -> None:
        with self._lock:
            b = repo.heartbeat(
                self.conn, self.run_id, lease_s=self.lease_s, attempt=self.attempt, progress=fields
            )
        self.cancel |= b.cancel
        self.lost |= not b.alive

    def beat(self, **fields: Any) -> None:
        """Record progress fields and renew the lease; raise if we must stop."""
        self._beat(fields)
        self.check()

    def check(self) -> None:
        """Raise `LeaseLost` / `Canceled` from the flags the last heartbeat saw."""
        if self.lost:
            raise LeaseLost(str(self.run_id))
        if self.cancel:
            raise Canceled(str(self.run_id))

    def finish(self, state: str, error: str | None = None) -> bool:
        """Move the run to `state` (if it is still ours)."""
        with self._lock:
            return repo.finish_run(
                self.conn, self.run_id, attempt=self.attempt, state=state, error=error
            )

    def record_phases(self, phases: dict[str, float]) -> None:
        """Store the phase timings on the run row (whatever its state)."""
        with self._lock:
            repo.record_phases(self.conn, self.run_id, attempt=self.attempt, phases=phases)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.conn.close()


def _chunks(ids: Sequence[uuid.UUID], size: int) -> Iterator[Sequence[uuid.UUID]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def tables_for(kind: str) -> tuple[str, ...]:
    """The live tables a reindex of `kind` rebuilds (in lock order)."""
    return {
        "all": (repo.TUTOR_TABLE, repo.COACH_TABLE),
        "tutors": (repo.TUTOR_TABLE,),
        "coaches": (repo.COACH_TABLE,),
    }[kind]


def shadow_suffix(run_id: uuid.UUID) -> str:
    """The shadow tables' suffix of run `run_id` (`_rx` + 8 hex digits)."""
    return "_rx" + run_id.hex[:8]


def run_reindex(
    run_id: uuid.UUID,
    *,
    url: str,
    config: ReindexConfig,
    worker: str | None = None,
    on_swapped: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Execute run `run_id` (see the module docstring) against the database at `url`
    (libpq URL). Owns its connections and commits its own steps.

    Returns a summary `{task_id, state, documents, replayed, seconds, documents_per_s}`;
    `state` is `succeeded`, `canceled`, `skipped` (the run is finished, canceled or alive
    in another worker: a redelivered message) or `lost` (our lease expired meanwhile).
    `on_swapped(engine)` runs after the swap committed (the cache generation bump).
    Raises on failure after marking the run failed and dropping its shadow tables.
    """
    worker = worker or f"{socket.gethostname()}:{threading.get_native_id()}"
    suffix = shadow_suffix(run_id)
    with psycopg.connect(url, autocommit=True, application_name="educonnect-reindex") as work:
        run = repo.claim_run(
            work, run_id, worker=worker, lease_s=config.lease_s, shadow_suffix=suffix
        )
    if run is None:
        log.info("reindex_skipped", task_id=str(run_id), reason="not queued or still alive")
        return {"task_id": str(run_id), "state": "skipped"}
    engine, kind = run.engine, run.kind
    bound = log.bind(task_id=str(run_id), engine=engine, kind=kind, attempt=run.attempts)
    bound.info("reindex_started", worker=worker)
    control = _Control(url, run_id, run.attempts, config.lease_s)
    t0 = time.perf_counter()
    runner: _Runner | _OpenSearchRunner = (
        _OpenSearchRunner(url, control, bound)
        if engine == "opensearch"
        else _Runner(url, run, suffix, config, control, bound)
    )
    outcome = "failed"
    try:
        runner.run()
        outcome = "succeeded"
    except Canceled:
        outcome = "canceled"
        runner.cleanup()
        control.finish("canceled")
    except LeaseLost:
        outcome = "lost"
        runner.cleanup()
    except BaseException as exc:
        runner.cleanup()
        control.finish("failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        seconds = time.perf_counter() - t0
        metrics.RUNS.labels(engine, "failed").inc()
        metrics.DURATION.labels(engine, "failed").observe(seconds)
        bound.exception("reindex_failed", seconds=round(seconds, 3))
        raise
    finally:
        try:
            control.record_phases(runner.phases)
        except psycopg.Error as exc:
            bound.warning("reindex_phases_not_recorded", error=repr(exc))
        control.close()
        runner.close()
    seconds = time.perf_counter() - t0
    metrics.RUNS.labels(engine, outcome).inc()
    metrics.DURATION.labels(engine, outcome).observe(seconds)
    rate = runner.done / seconds if seconds > 0 else 0.0
    if outcome == "succeeded":
        metrics.DOCUMENTS.labels(engine).set(runner.done)
        metrics.DOCUMENTS_PER_SECOND.labels(engine).set(rate)
        if on_swapped is not None:
            on_swapped(engine)
    bound.info(
        "reindex_finished",
        outcome=outcome,
        seconds=round(seconds, 3),
        documents=runner.done,
        documents_per_s=round(rate, 1),
        replayed=runner.replayed,
        phases={k: round(v, 3) for k, v in runner.phases.items()},
    )
    return {
        "task_id": str(run_id),
        "state": outcome,
        "documents": runner.done,
        "replayed": runner.replayed,
        "seconds": round(seconds, 3),
        "documents_per_s": round(rate, 1),
    }


class _OpenSearchRunner:
    """A run of the OpenSearch engine, with the same run row, lease, progress and cancel
    as the PostgreSQL one: `indexer.opensearch_reindex.reindex` builds the next versioned
    indices from a REPEATABLE READ snapshot (replicas 0, refresh off), replays the outbox
    from the mark, restores the settings, refreshes and swaps the aliases in one request;
    the previous indices stay for `educonnect reindex --engine opensearch --rollback`.
    Canceled or failed before the swap: the new indices are deleted, the aliases (and so
    the live search) never moved."""

    def __init__(self, url: str, control: _Control, log: Any) -> None:
        self.control = control
        self.log = log
        self.done = 0
        self.replayed = 0
        self.phases: dict[str, float] = {}
        self.work = psycopg.connect(
            url, autocommit=True, application_name="educonnect-reindex", prepare_threshold=None
        )
        self.client: Any = None

    def run(self) -> None:
        from core.settings import get_settings
        from indexer.opensearch_reindex import reindex as opensearch_reindex
        from indexer.opensearch_sink import client_from_settings

        s = get_settings()
        self.client = client_from_settings()
        row = self.work.execute(
            "SELECT count(*) FROM search_document_source WHERE searchable"
        ).fetchone()
        self.control.beat(phase="snapshot", total=int(row[0]) if row else 0)

        def progress(n: int) -> None:
            self.done += n
            self.control.beat(done=self.done)  # raises Canceled / LeaseLost

        t = time.perf_counter()
        result = opensearch_reindex(
            self.work,
            self.client,
            prefix=s.opensearch_index_prefix,
            replicas=s.opensearch_replicas,
            max_retries=s.opensearch_bulk_max_retries,
            progress=progress,
        )
        self.replayed = result.replayed
        self.phases["opensearch"] = round(time.perf_counter() - t, 3)
        if not self.control.finish("succeeded"):
            raise LeaseLost(str(self.control.run_id))

    def cleanup(self) -> None:
        """Delete indices built by this run that no alias points at (live untouched)."""
        if self.client is None:
            return
        from core.settings import get_settings
        from indexer.opensearch_reindex import drop_unaliased_newer

        try:
            drop_unaliased_newer(self.client, prefix=get_settings().opensearch_index_prefix)
        except Exception as exc:  # the next run deletes leftovers too
            self.log.warning("reindex_cleanup_failed", error=repr(exc))

    def close(self) -> None:
        self.work.close()


def _build_indexes(
    conn: psycopg.Connection[Any],
    *,
    shape: TableShape,
    work_mem: str,
    check: Callable[[], None],
) -> None:
    repo.set_maintenance_work_mem(conn, work_mem)
    # largest first is unknowable cheaply; the catalog order is stable
    for index in shape.indexes:
        repo.finish_shadow(conn, shape, index)
        check()


def _vacuum(conn: psycopg.Connection[Any], *, table: str) -> None:
    repo.vacuum_analyze(conn, table)


def _load_batch(
    conn: psycopg.Connection[Any],
    *,
    snapshot: str,
    table: str,
    shadow: str,
    ids: Sequence[uuid.UUID],
) -> int:
    return repo.load_batch(conn, snapshot, table, shadow, COLUMNS[table], ids)


class _Runner:
    """The steps of one run; `done`/`replayed` count documents loaded / events replayed."""

    def __init__(
        self,
        url: str,
        run: ReindexRun,
        suffix: str,
        config: ReindexConfig,
        control: _Control,
        log: Any,
    ) -> None:
        self.url = url
        self.run_row = run
        self.engine = run.engine
        self.suffix = suffix
        self.config = config
        self.control = control
        self.log = log
        self.tables = tables_for(run.kind)
        # Rebuilt and swapped: the documents tables, their facet rows and facet blocks.
        self.live = self.tables + tuple(c for t in self.tables for c in repo.COMPANIONS[t])
        # Written by the replay but not swapped (the other kind's pair, for `kind` != all).
        self.scratch = tuple(
            name
            for t in (repo.TUTOR_TABLE, repo.COACH_TABLE)
            if t not in self.tables
            for name in (t, *repo.COMPANIONS[t])
        )
        self.hold = f"reindex:{run.engine}:{suffix[3:]}"
        self.done = 0
        self.replayed = 0
        self.position = (0, 0)
        self.mark = 0
        self.phases: dict[str, float] = {}
        self.work = psycopg.connect(
            url, autocommit=True, application_name="educonnect-reindex", prepare_threshold=None
        )
        self.shapes: dict[str, TableShape] = {}

    def close(self) -> None:
        self.work.close()

    def _phase(self, name: str, started: float) -> None:
        took = time.perf_counter() - started
        self.phases[name] = round(took, 3)
        metrics.PHASE_SECONDS.labels(self.engine, name).observe(took)
        self.log.info("reindex_phase", phase=name, seconds=round(took, 3))

    def run(self) -> None:
        c = self.control
        w = self.work
        t = time.perf_counter()
        # Shadows of runs that died are dropped: we hold the engine's only active slot.
        repo.drop_tables(w, repo.leftover_shadows(w))
        repo.release_other_holds(w, self.hold)
        for table in self.live:
            self.shapes[table] = repo.describe_table(w, table, table + self.suffix)
            repo.create_shadow(w, self.shapes[table])
        for table in self.scratch:
            repo.create_scratch_shadow(w, table, table + self.suffix)
        # The mark before the snapshot: below it every transaction is inside the snapshot.
        self.mark = repo.outbox_horizon(w)
        repo.hold_outbox(w, self.hold, self.mark)
        c.beat(phase="snapshot", mark=self.mark)
        self._load()
        for table in self.tables:  # facet rows derive from the loaded documents, blocks
            family = table.split("_")[0]  # from the facet rows
            fill_facets(w, family=family, table_suffix=self.suffix)
            fill_blocks(w, family=family, table_suffix=self.suffix)
        self._phase("snapshot", t)

        t = time.perf_counter()
        c.beat(phase="indexes", loaded=True)
        # One job per table: concurrent builds on one table would wait for each other
        # (each takes SHARE UPDATE EXCLUSIVE); tables build in parallel.
        self._parallel(
            [
                functools.partial(
                    _build_indexes,
                    shape=self.shapes[table],
                    work_mem=self.config.maintenance_work_mem,
                    check=c.beat,
                )
                for table in self.live
            ],
            on_done=lambda _: c.beat(),
        )
        for table in self.live:
            repo.finish_shadow_extras(w, self.shapes[table])
        self._phase("indexes", t)

        t = time.perf_counter()
        c.beat(phase="analyze")
        self._parallel(
            [functools.partial(_vacuum, table=self.shapes[table].shadow) for table in self.live],
            on_done=lambda _: c.beat(),
        )
        self._phase("analyze", t)

        t = time.perf_counter()
        c.beat(phase="replay")
        while self._replay_batch():
            c.beat(replayed=self.replayed)
        self._phase("replay", t)

        t = time.perf_counter()
        c.beat(phase="swap", replayed=self.replayed)
        self._pass_gate()
        self._swap()
        self._phase("swap", t)

    def _pass_gate(self) -> None:
        """Wait while another session holds the advisory lock `config.swap_gate` (polled
        every 50 ms with a shared try-lock, released at once); `Canceled` / `LeaseLost`
        end the wait (the heartbeat thread keeps the lease and reads the cancel flag)."""
        key = self.config.swap_gate
        if key is None:
            return
        while not repo.try_gate(self.work, key):
            self.control.check()
            time.sleep(0.05)

    def _parallel(
        self,
        jobs: Sequence[Callable[[psycopg.Connection[Any]], Any]],
        *,
        on_done: Callable[[Any], None],
    ) -> None:
        """Run `jobs` (started in order) on `config.parallelism` connections of their own,
        calling `on_done(result)` in this thread after each; the cancel and lease checks
        in `on_done` stop the jobs not started yet (running ones finish first)."""
        n = max(1, min(self.config.parallelism, len(jobs)))
        conns: queue.SimpleQueue[psycopg.Connection[Any]] = queue.SimpleQueue()
        opened = [
            psycopg.connect(
                self.url,
                autocommit=True,
                application_name="educonnect-reindex-worker",
                prepare_threshold=None,
            )
            for _ in range(n)
        ]
        for conn in opened:
            conns.put(conn)

        def call(job: Callable[[psycopg.Connection[Any]], Any]) -> Any:
            conn = conns.get()
            try:
                return job(conn)
            finally:
                conns.put(conn)

        pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="reindex")
        try:
            for future in as_completed([pool.submit(call, job) for job in jobs]):
                on_done(future.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            for conn in opened:
                conn.close()

    def _load(self) -> None:
        holder = psycopg.connect(self.url, application_name="educonnect-reindex-snapshot")
        try:
            snapshot = repo.export_snapshot(holder)
            ids = {table: repo.document_ids(holder, table) for table in self.tables}
            self.control.beat(total=sum(len(v) for v in ids.values()))
            jobs = [
                functools.partial(
                    _load_batch,
                    snapshot=snapshot,
                    table=table,
                    shadow=self.shapes[table].shadow,
                    ids=chunk,
                )
                for table in self.tables
                for chunk in _chunks(ids[table], self.config.batch_size)
            ]

            def loaded(rows: int) -> None:
                self.done += rows
                self.control.beat(done=self.done)

            self._parallel(jobs, on_done=loaded)
        finally:
            holder.close()

    def _replay_batch(self) -> bool:
        """Replay up to `REPLAY_BATCH` events since the position; False when caught up.
        Runs in its own transaction, or in the caller's (the swap) when there is one."""
        w = self.work
        events = repo.fetch_events_since(w, self.mark, self.position, REPLAY_BATCH)
        if not events:
            return False
        with w.transaction():
            ids = provider_ids(events)
            if ids:
                rebuild_documents(w, ids, table_suffix=self.suffix)
            last = events[-1]
            repo.advance_hold(w, self.hold, last.txid, last.id)
        self.position = (last.txid, last.id)
        self.replayed += len(events)
        metrics.REPLAYED.labels(self.engine).inc(len(events))
        return len(events) == REPLAY_BATCH

    def _swap(self) -> None:
        w = self.work
        deadline = time.monotonic() + self.config.swap_timeout_s
        attempts = 0
        while True:
            attempts += 1
            try:
                with w.transaction():
                    repo.lock_live(w, self.live, self.config.lock_timeout_s)
                    row = repo.lock_run(w, self.run_row.id)
                    if (
                        row is None
                        or row.state != "running"
                        or row.attempts != self.control.attempt
                    ):
                        raise LeaseLost(str(self.run_row.id))
                    if row.cancel_requested:
                        raise Canceled(str(self.run_row.id))
                    # The last events, committed since the replay, while writers to the
                    # live tables (the relay) wait for us.
                    while self._replay_batch():
                        pass
                    for table in self.live:
                        now = repo.describe_table(w, table, table + self.suffix)
                        if now.signature() != self.shapes[table].signature():
                            raise SchemaChanged(
                                f"{table} changed during the reindex (a migration?); retry"
                            )
                    for table in self.live:
                        repo.swap_table(w, self.shapes[table])
                    repo.notify_blocks_swapped(w, self.live)
                    repo.drop_tables(w, [t + self.suffix for t in self.scratch])
                    repo.release_outbox(w, self.hold)
                    if not repo.finish_run(
                        w, self.run_row.id, attempt=self.control.attempt, state="succeeded"
                    ):
                        raise LeaseLost(str(self.run_row.id))
                self.log.info("reindex_swapped", lock_attempts=attempts, replayed=self.replayed)
                return
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
                self.log.info("reindex_swap_retry", attempt=attempts, reason=type(exc).__name__)
                self.control.beat(replayed=self.replayed)
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"could not lock {', '.join(self.live)} within "
                        f"{self.config.swap_timeout_s} s (long-running queries?)"
                    ) from exc

    def cleanup(self) -> None:
        """Drop this run's shadow tables and its outbox hold (live tables untouched)."""
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                repo.drop_tables(
                    conn,
                    [
                        name + self.suffix
                        for t in (repo.TUTOR_TABLE, repo.COACH_TABLE)
                        for name in (t, *repo.COMPANIONS[t])
                    ],
                )
                repo.release_outbox(conn, self.hold)
        except psycopg.Error as exc:  # the next run drops leftovers
            self.log.warning("reindex_cleanup_failed", error=repr(exc))
