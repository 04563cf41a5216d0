"""SQL of the outbox relay: reading the outbox in commit order, checkpoints, pruning, lag.

Commit order without gaps (DESIGN §5, ANCHORS "Indexing"): outbox rows are read by
`(txid, id)` strictly after the consumer's checkpoint and only from transactions with
`txid < outbox_horizon()` (migration 0004): the smallest xid still running in this
database (or the next xid), i.e. only from transactions that are no longer running. A transaction that took its xid early but commits late keeps the xmin at or
below its xid until it ends, so the relay never moves past it and never skips its rows
(a `bigserial` position would). Reading stops at the first still-running transaction, so
one long write transaction delays indexing but never loses it.

Partitions: an event belongs to partition `abs(hashtext(aggregate_id)) % partitions`, so
all events of one aggregate go through one partition, in order, whatever the number of
relay processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One outbox row: position `(txid, id)`, the aggregate it is about, its insert time."""

    id: int
    txid: int
    aggregate_type: str
    aggregate_id: str
    event_type: str
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The last outbox position a consumer applied in one partition."""

    consumer: str
    partition: int
    partitions: int
    txid: int
    outbox_id: int
    events: int
    updated_at: datetime


def ensure_checkpoints(conn: psycopg.Connection[Any], consumer: str, partitions: int) -> None:
    """Create the consumer's checkpoint rows (position 0) if missing.

    Raises `ValueError` when the consumer exists with another partition count: moving
    events between partitions could reorder an aggregate, so repartitioning needs a drain
    (`educonnect indexer reset`) first.
    """
    rows = conn.execute(
        "SELECT DISTINCT partitions FROM indexer_checkpoints WHERE consumer = %s", (consumer,)
    ).fetchall()
    existing = {r[0] for r in rows}
    if existing and existing != {partitions}:
        raise ValueError(
            f"consumer {consumer!r} runs with {sorted(existing)} partitions, not {partitions}; "
            "drain it and run `educonnect indexer reset --consumer` to repartition"
        )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO indexer_checkpoints (consumer, partition, partitions) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            [(consumer, p, partitions) for p in range(partitions)],
        )


def lock_checkpoint(
    conn: psycopg.Connection[Any], consumer: str, partition: int
) -> Checkpoint | None:
    """Lock and return the checkpoint row for this transaction; None if another relay has it.

    `FOR UPDATE NOWAIT` on the checkpoint row is the ownership rule: one transaction at a
    time applies a partition's batch, so two relays never do the same work twice.
    """
    try:
        row = conn.execute(
            "SELECT consumer, partition, partitions, txid::text::bigint, outbox_id, events,"
            " updated_at FROM indexer_checkpoints WHERE consumer = %s AND partition = %s"
            " FOR UPDATE NOWAIT",
            (consumer, partition),
        ).fetchone()
    except psycopg.errors.LockNotAvailable:
        return None
    return Checkpoint(*row) if row else None


def fetch_batch(conn: psycopg.Connection[Any], cp: Checkpoint, limit: int) -> list[OutboxEvent]:
    """Up to `limit` events after `cp` from finished transactions, in `(txid, id)` order."""
    rows = conn.execute(
        "SELECT id, txid::text::bigint, aggregate_type, aggregate_id, event_type, payload,"
        " created_at FROM outbox"
        " WHERE (txid, id) > (%(txid)s::text::xid8, %(id)s)"
        "   AND txid < (SELECT outbox_horizon())"
        "   AND (%(parts)s = 1 OR abs(hashtext(aggregate_id)) %% %(parts)s = %(part)s)"
        " ORDER BY txid, id LIMIT %(limit)s",
        {
            "txid": cp.txid,
            "id": cp.outbox_id,
            "parts": cp.partitions,
            "part": cp.partition,
            "limit": limit,
        },
        prepare=True,
    ).fetchall()
    return [OutboxEvent(*r) for r in rows]


def advance_checkpoint(
    conn: psycopg.Connection[Any], cp: Checkpoint, last: OutboxEvent, applied: int
) -> None:
    """Move the checkpoint to `last` (in the caller's transaction)."""
    conn.execute(
        "UPDATE indexer_checkpoints SET txid = %s::text::xid8, outbox_id = %s,"
        " events = events + %s, updated_at = now() WHERE consumer = %s AND partition = %s",
        (last.txid, last.id, applied, cp.consumer, cp.partition),
    )


def has_pending(conn: psycopg.Connection[Any], cp: Checkpoint) -> bool:
    """True when committed-or-running events exist after `cp` (held back by a running tx)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE (txid, id) > (%(txid)s::text::xid8, %(id)s)"
        " AND (%(parts)s = 1 OR abs(hashtext(aggregate_id)) %% %(parts)s = %(part)s))",
        {"txid": cp.txid, "id": cp.outbox_id, "parts": cp.partitions, "part": cp.partition},
    ).fetchone()
    return bool(row and row[0])


@dataclass(frozen=True, slots=True)
class Lag:
    """How far a consumer is behind: events not applied and the age of the oldest one."""

    consumer: str
    events: int
    seconds: float
    applied: int


def consumer_lag(conn: psycopg.Connection[Any], consumer: str) -> Lag:
    """Events after every partition checkpoint of `consumer`, and the oldest one's age (s)."""
    row = conn.execute(
        """
        SELECT count(o.id),
               coalesce(extract(epoch FROM clock_timestamp() - min(o.created_at)), 0),
               (SELECT coalesce(sum(events), 0) FROM indexer_checkpoints WHERE consumer = %(c)s)
        FROM indexer_checkpoints c
        JOIN outbox o
          ON (o.txid, o.id) > (c.txid, c.outbox_id)
         AND (c.partitions = 1 OR abs(hashtext(o.aggregate_id)) %% c.partitions = c.partition)
        WHERE c.consumer = %(c)s
        """,
        {"c": consumer},
    ).fetchone()
    assert row is not None
    return Lag(consumer, int(row[0]), float(row[1]), int(row[2]))


def checkpoints(conn: psycopg.Connection[Any]) -> list[Checkpoint]:
    """Every checkpoint row, by consumer and partition."""
    rows = conn.execute(
        "SELECT consumer, partition, partitions, txid::text::bigint, outbox_id, events,"
        " updated_at FROM indexer_checkpoints ORDER BY consumer, partition"
    ).fetchall()
    return [Checkpoint(*r) for r in rows]


def prune_outbox(conn: psycopg.Connection[Any], retention_s: float, limit: int = 10_000) -> int:
    """Delete up to `limit` outbox rows applied by every consumer and older than retention.

    A row is applied everywhere when its txid is below the smallest checkpoint txid of all
    consumers and partitions (each partition's checkpoint covers everything before it).
    With no consumer registered nothing is pruned. Returns the number of rows deleted.
    """
    row = conn.execute(
        """
        WITH horizon AS (SELECT min(txid) AS txid FROM indexer_checkpoints),
        doomed AS (
            SELECT o.id FROM outbox o, horizon h
            WHERE o.txid < h.txid
              AND o.created_at < clock_timestamp() - make_interval(secs => %s)
            ORDER BY o.txid, o.id
            LIMIT %s
        )
        DELETE FROM outbox WHERE id IN (SELECT id FROM doomed)
        """,
        (retention_s, limit),
    )
    return row.rowcount
