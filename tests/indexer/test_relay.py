"""The outbox relay's delivery guarantees, with a recording sink (no projection involved):
commit order by xid8, late-committing transactions, checkpoints, competing relays, pruning.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest

from indexer import repository as repo
from indexer.relay import Relay, RelayConfig
from indexer.repository import OutboxEvent


class RecordingSink:
    """Appends every applied event id to `relay_applied`, in the relay's transaction."""

    name = "recording"

    def apply(self, conn: psycopg.Connection[Any], events: Sequence[OutboxEvent]) -> None:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO relay_applied (event_id, aggregate_id) VALUES (%s, %s)",
                [(e.id, e.aggregate_id) for e in events],
            )


@pytest.fixture
def applied(db: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    db.execute(
        "CREATE TABLE relay_applied (seq bigserial, event_id bigint NOT NULL, aggregate_id text)"
    )
    yield db
    db.execute("DROP TABLE relay_applied")


def _emit(conn: psycopg.Connection[Any], aggregate_id: str | None = None) -> int:
    row = conn.execute(
        "INSERT INTO outbox (aggregate_type, aggregate_id, event_type) "
        "VALUES ('provider', %s, 'provider.updated') RETURNING id",
        (aggregate_id or str(uuid.uuid4()),),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _applied_ids(conn: psycopg.Connection[Any]) -> list[int]:
    return [r[0] for r in conn.execute("SELECT event_id FROM relay_applied ORDER BY seq")]


def _relay(url: str, **cfg: Any) -> Relay:
    return Relay(psycopg.connect(url), RecordingSink(), RelayConfig(consumer="recording", **cfg))


def test_applies_in_commit_order_and_checkpoints(
    applied: psycopg.Connection[Any], database_url: str
) -> None:
    ids = [_emit(applied) for _ in range(5)]
    relay = _relay(database_url, batch_size=2)
    assert relay.drain() == 5
    assert _applied_ids(applied) == ids
    assert relay.drain() == 0  # nothing twice
    (cp,) = repo.checkpoints(applied)
    assert (cp.consumer, cp.outbox_id, cp.events) == ("recording", ids[-1], 5)


def test_late_committing_transaction_is_not_skipped(
    applied: psycopg.Connection[Any], database_url: str
) -> None:
    relay = _relay(database_url)
    with psycopg.connect(database_url) as late:
        late_id = _emit(late)  # takes its xid and outbox id first, commits last
        early_id = _emit(applied)  # autocommit: committed now, with a larger txid
        assert early_id > late_id
        # The early transaction is committed, but the relay must not move past the late one.
        assert relay.drain() == 0
        assert relay.run_once().held_back is True
        late.commit()
    assert relay.drain() == 2
    assert _applied_ids(applied) == [late_id, early_id]


def test_id_order_differs_from_commit_order_without_loss(
    applied: psycopg.Connection[Any], database_url: str
) -> None:
    """The classic bigserial trap: id 1 commits after id 2 was already relayed."""
    relay = _relay(database_url)
    with psycopg.connect(database_url) as first:
        a = _emit(first)
        with psycopg.connect(database_url) as second:
            b = _emit(second)
            second.commit()
        relay.drain()
        first.commit()
    relay.drain()
    assert sorted(_applied_ids(applied)) == [a, b]
    assert len(_applied_ids(applied)) == 2


def test_rolled_back_events_are_never_applied(
    applied: psycopg.Connection[Any], database_url: str
) -> None:
    relay = _relay(database_url)
    with psycopg.connect(database_url) as conn:
        _emit(conn)
        conn.rollback()
    kept = _emit(applied)
    assert relay.drain() == 1
    assert _applied_ids(applied) == [kept]


def test_failed_batch_leaves_checkpoint_and_is_retried(
    applied: psycopg.Connection[Any], database_url: str
) -> None:
    class Flaky(RecordingSink):
        calls = 0

        def apply(self, conn: psycopg.Connection[Any], events: Sequence[OutboxEvent]) -> None:
            super().apply(conn, events)
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("sink down")

    ids = [_emit(applied) for _ in range(3)]
    relay = Relay(psycopg.connect(database_url), Flaky(), RelayConfig(consumer="recording"))
    with pytest.raises(RuntimeError):
        relay.drain()
    assert _applied_ids(applied) == []  # the failed batch rolled back, sink writes included
    assert relay.drain() == 3
    assert _applied_ids(applied) == ids


def test_competing_relays_never_apply_an_event_twice(
    applied: psycopg.Connection[Any], database_url: str
) -> None:
    aggregates = [str(uuid.uuid4()) for _ in range(20)]
    ids = [_emit(applied, aggregates[i % 20]) for i in range(600)]
    relays = [_relay(database_url, batch_size=7, partitions=4) for _ in range(3)]
    errors: list[BaseException] = []

    def work(r: Relay) -> None:
        try:
            for _ in range(400):
                r.run_once()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in relays]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = _applied_ids(applied)
    assert sorted(got) == ids  # each exactly once
    # per aggregate, commit order is kept (ids are in commit order here: autocommit inserts)
    per_agg: dict[str, list[int]] = {}
    for event_id, agg in applied.execute(
        "SELECT event_id, aggregate_id FROM relay_applied ORDER BY seq"
    ):
        per_agg.setdefault(agg, []).append(event_id)
    assert all(v == sorted(v) for v in per_agg.values())


def test_partition_count_change_is_refused(
    applied: psycopg.Connection[Any], database_url: str
) -> None:
    _relay(database_url, partitions=2)
    with pytest.raises(ValueError, match="partitions"):
        _relay(database_url, partitions=3)


def test_prune_keeps_unapplied_and_recent_rows(
    applied: psycopg.Connection[Any], database_url: str
) -> None:
    old = [_emit(applied) for _ in range(3)]
    applied.execute("UPDATE outbox SET created_at = now() - interval '2 hours'")
    relay = _relay(database_url)
    relay.drain()
    recent_applied = _emit(applied)
    relay.drain()
    pending = _emit(applied)
    applied.execute(
        "UPDATE outbox SET created_at = now() - interval '2 hours' WHERE id = %s", (pending,)
    )
    deleted = repo.prune_outbox(applied, retention_s=3600)
    left = [r[0] for r in applied.execute("SELECT id FROM outbox ORDER BY id")]
    assert deleted == 3
    assert left == [recent_applied, pending]
    assert old[0] not in left


def test_lag_counts_pending_events(applied: psycopg.Connection[Any], database_url: str) -> None:
    relay = _relay(database_url)
    for _ in range(4):
        _emit(applied)
    lag = repo.consumer_lag(applied, "recording")
    assert lag.events == 4
    assert lag.seconds >= 0
    relay.drain()
    lag = repo.consumer_lag(applied, "recording")
    assert (lag.events, lag.seconds, lag.applied) == (0, 0.0, 4)


def test_running_transaction_in_another_database_does_not_stall(
    applied: psycopg.Connection[Any], database_url: str
) -> None:
    relay = _relay(database_url)
    other_db = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(other_db) as other:
        other.execute("SELECT pg_current_xact_id()")  # holds an xid, stays open
        event = _emit(applied)
        assert relay.drain() == 1
        other.rollback()
    assert _applied_ids(applied) == [event]
