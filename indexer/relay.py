"""The outbox relay (`educonnect indexer run`): outbox -> sinks, in commit order.

One loop per process. For each partition of its consumer it takes the partition's
checkpoint row lock (`FOR UPDATE NOWAIT`; a partition busy in another relay is skipped),
reads the next batch of events from finished transactions (see `indexer.repository`),
hands it to the sink *inside the same transaction*, advances the checkpoint and commits.
Only then does it invalidate the search cache in Redis (`on_changes`: the generations of
what the batch changed, `search.cache`), so a cached page is never staler than one batch
and never refers to an uncommitted document.

Failure model: at-least-once. A relay killed mid-batch (even `kill -9`) rolls back with
its connection, the checkpoint stays where it was and the next relay re-applies the batch;
sinks are idempotent (version-guarded upserts), so a replay changes nothing.

Several relays may run at once: they share the partitions through the checkpoint row
locks — each batch is applied by exactly one of them, and all events of one aggregate
belong to one partition, so they are applied in commit order (`INDEXER_PARTITIONS`
processes can work in parallel; extra ones stand by and take over within one poll
interval when a relay dies). Wake-ups come from `LISTEN outbox` (a trigger NOTIFYs on
insert); a polling fallback (`INDEXER_POLL_INTERVAL_S`) covers lost notifications.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Protocol

import psycopg

from core.logging import get_logger
from indexer import metrics
from indexer import repository as repo
from indexer.repository import OutboxEvent

log = get_logger(__name__)

# Events of these aggregate types change a provider's search document.
PROVIDER_AGGREGATES = frozenset({"provider"})
# Events of these aggregate types change the search document of the provider named by
# their payload's `provider_id` (a booking fills or frees seats of the provider's slot:
# a full slot leaves its availability).
PROVIDER_PAYLOAD_AGGREGATES = frozenset({"booking"})


@dataclass(frozen=True, slots=True)
class Changes:
    """What a batch changed in the search documents (what the search cache invalidates):
    `documents`, a document added, removed or changed in a field other than its
    availability; `availability`, a document's availability (a slot filled or freed)."""

    documents: bool
    availability: bool


EVERYTHING = Changes(documents=True, availability=True)
NOTHING = Changes(documents=False, availability=False)


def changes_of_events(events: Sequence[OutboxEvent]) -> Changes:
    """What `events` can change in the search documents, from their aggregate types: a
    provider event anything; a booking event only its provider's availability (a booking
    reaches a document through its slot's free seats only: `search_document_source`
    leaves full slots out); other events nothing."""
    types = {e.aggregate_type for e in events}
    if types & PROVIDER_AGGREGATES:
        return EVERYTHING
    if types & PROVIDER_PAYLOAD_AGGREGATES and provider_ids(events):
        return Changes(documents=False, availability=True)
    return NOTHING


class Sink(Protocol):
    """Where a consumer's events go. `apply` runs inside the relay's transaction on `conn`
    and must be idempotent: the same events may be applied again after a crash. It
    returns what the batch changed in the search documents, or None when it cannot tell
    (taken as everything)."""

    name: str

    def apply(
        self, conn: psycopg.Connection[Any], events: Sequence[OutboxEvent]
    ) -> Changes | None: ...


class PostgresSink:
    """Keeps `tutor_documents`/`coach_documents` current: rebuilds each distinct provider
    of the batch from the source tables (`indexer.projection.rebuild_documents`), with the
    version guard, in the relay's transaction. Reports what the events can change
    (`changes_of_events`)."""

    name = "postgres"

    def apply(self, conn: psycopg.Connection[Any], events: Sequence[OutboxEvent]) -> Changes:
        from indexer.projection import rebuild_documents

        ids = provider_ids(events)
        if not ids:
            return NOTHING
        rebuild_documents(conn, ids)
        return changes_of_events(events)


def provider_of(
    aggregate_type: str, aggregate_id: str, payload: dict[str, Any] | None
) -> str | None:
    """The provider whose search document an event touches (its id as text), or None."""
    if aggregate_type in PROVIDER_AGGREGATES:
        return aggregate_id
    if aggregate_type in PROVIDER_PAYLOAD_AGGREGATES and payload:
        pid = payload.get("provider_id")
        return str(pid) if pid else None
    return None


def provider_ids(events: Sequence[OutboxEvent]) -> list[Any]:
    """Distinct provider ids of `events`, in first-seen order (as UUIDs)."""
    import uuid

    seen: dict[str, None] = {}
    for e in events:
        pid = provider_of(e.aggregate_type, e.aggregate_id, e.payload)
        if pid is not None:
            seen.setdefault(pid, None)
    return [uuid.UUID(x) for x in seen]


@dataclass(frozen=True)
class RelayConfig:
    """Tuning of one relay process (defaults from `core.settings`)."""

    consumer: str = "postgres"
    partitions: int = 1
    batch_size: int = 1000
    poll_interval_s: float = 1.0
    held_back_poll_s: float = 0.01
    retention_s: float = 3600.0
    maintenance_every_s: float = 5.0


@dataclass
class BatchResult:
    """What one pass over the partitions did."""

    events: int = 0
    full: bool = False  # some partition returned a full batch: more is waiting
    held_back: bool = False  # some partition has events behind a still-running transaction


class Relay:
    """Applies outbox events to one sink, in commit order, batch after batch.

    `conn` is a psycopg connection owned by the relay (autocommit off is handled here);
    `on_commit` runs after each committed batch; `on_changes` after each committed batch
    with what it changed in the search documents (`Changes`; everything when the sink
    cannot tell) — the search cache invalidation; `on_batch` receives each committed
    batch and the instant it became visible (benchmarks).
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        sink: Sink,
        config: RelayConfig,
        *,
        on_commit: Callable[[], None] | None = None,
        on_changes: Callable[[Changes], None] | None = None,
        on_batch: Callable[[Sequence[OutboxEvent], datetime], None] | None = None,
    ) -> None:
        self.conn = conn
        self.sink = sink
        self.config = config
        self.on_commit = on_commit
        self.on_changes = on_changes
        self.on_batch = on_batch
        self._last_maintenance = 0.0
        conn.autocommit = True
        repo.ensure_checkpoints(conn, config.consumer, config.partitions)

    def run_once(self) -> BatchResult:
        """One batch per partition this relay can lock. Returns what was done."""
        result = BatchResult()
        for partition in range(self.config.partitions):
            n, held = self._run_partition(partition)
            result.events += n
            result.full |= n >= self.config.batch_size
            result.held_back |= held
        return result

    def _run_partition(self, partition: int) -> tuple[int, bool]:
        consumer = self.config.consumer
        t0 = time.perf_counter()
        try:
            with self.conn.transaction():
                cp = repo.lock_checkpoint(self.conn, consumer, partition)
                if cp is None:  # another relay is applying this partition
                    return 0, False
                events = repo.fetch_batch(self.conn, cp, self.config.batch_size)
                if not events:
                    return 0, repo.has_pending(self.conn, cp)
                changes = self.sink.apply(self.conn, events)
                repo.advance_checkpoint(self.conn, cp, events[-1], len(events))
        except psycopg.OperationalError:
            metrics.ERRORS.labels(consumer).inc()
            raise
        except Exception:
            metrics.ERRORS.labels(consumer).inc()
            log.exception("indexer_batch_failed", consumer=consumer, partition=partition)
            raise
        visible_at = datetime.now(UTC)
        if self.on_commit is not None:
            self.on_commit()
        if self.on_changes is not None:
            self.on_changes(EVERYTHING if changes is None else changes)
        elapsed = time.perf_counter() - t0
        metrics.EVENTS.labels(consumer).inc(len(events))
        metrics.BATCHES.labels(consumer).inc()
        metrics.BATCH_SIZE.labels(consumer).observe(len(events))
        metrics.BATCH_SECONDS.labels(consumer).observe(elapsed)
        fresh = metrics.FRESHNESS.labels(consumer)
        for e in events:
            fresh.observe(max(0.0, (visible_at - e.created_at).total_seconds()))
        if self.on_batch is not None:
            self.on_batch(events, visible_at)
        log.debug("indexer_batch", consumer=consumer, partition=partition, events=len(events))
        return len(events), False

    def maintenance(self, *, force: bool = False) -> None:
        """Every `maintenance_every_s`: refresh the lag gauges and prune the outbox."""
        now = time.monotonic()
        if not force and now - self._last_maintenance < self.config.maintenance_every_s:
            return
        self._last_maintenance = now
        lag = repo.consumer_lag(self.conn, self.config.consumer)
        metrics.LAG_EVENTS.labels(self.config.consumer).set(lag.events)
        metrics.LAG_SECONDS.labels(self.config.consumer).set(lag.seconds)
        pruned = repo.prune_outbox(self.conn, self.config.retention_s)
        if pruned:
            log.info("outbox_pruned", rows=pruned)

    def drain(self, *, max_batches: int = 1_000_000) -> int:
        """Apply everything currently applicable, then return the number of events applied."""
        total = 0
        for _ in range(max_batches):
            r = self.run_once()
            total += r.events
            if not r.full:
                break
        return total


def run_forever(
    relay: Relay, listen_conn: psycopg.Connection[Any], *, stop: Callable[[], bool]
) -> None:
    """Loop until `stop()` is true: drain, then wait for a NOTIFY or the poll interval.

    When events are held back by a running transaction, poll every `held_back_poll_s`
    instead: that transaction's commit may not notify (it may have written no outbox row).
    """
    listen_conn.execute("LISTEN outbox")
    cfg = relay.config
    while not stop():
        r = relay.run_once()
        relay.maintenance()
        if r.full:
            continue
        timeout = cfg.held_back_poll_s if r.held_back else cfg.poll_interval_s
        for _ in listen_conn.notifies(timeout=timeout, stop_after=1):
            pass


def supervise(
    open_relay: Callable[[], tuple[Relay, psycopg.Connection[Any]]],
    *,
    stop: Callable[[], bool],
    max_backoff_s: float = 30.0,
) -> None:
    """Keep a relay running until `stop()`: `open_relay()` returns a fresh relay and its
    LISTEN connection; when the database goes away or a batch keeps failing, the error is
    logged (and counted by the relay), the connections are closed and, after an
    exponential backoff (0.5 s doubling to `max_backoff_s`, reset after a healthy minute),
    new ones are opened. Nothing is lost meanwhile: the checkpoint only moves on commit."""
    backoff = 0.5
    while not stop():
        started = time.monotonic()
        conns: list[psycopg.Connection[Any]] = []
        try:
            relay, listen = open_relay()
            conns = [relay.conn, listen]
            run_forever(relay, listen, stop=stop)
        except Exception as exc:
            log.warning("indexer_restarting", error=repr(exc), retry_in_s=backoff)
        finally:
            for c in conns:
                c.close()
        if stop():
            break
        if time.monotonic() - started > 60:
            backoff = 0.5
        deadline = time.monotonic() + backoff
        while not stop() and time.monotonic() < deadline:
            time.sleep(min(0.1, backoff))
        backoff = min(backoff * 2, max_backoff_s)


class StopFlag:
    """Set by SIGTERM/SIGINT: the relay finishes its batch and exits cleanly."""

    def __init__(self) -> None:
        self.stopped = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, signum: int, frame: FrameType | None) -> None:
        log.info("indexer_stopping", signal=signum)
        self.stopped = True

    def __call__(self) -> bool:
        return self.stopped
