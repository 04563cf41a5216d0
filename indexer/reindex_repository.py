"""SQL of the full reindex: the `reindex_runs` bookkeeping (lock, lease, progress), the
catalog reads that copy a live document table's shape onto a shadow table, the batched
snapshot load, the outbox replay and the swap DDL.

Every function takes a psycopg connection and runs in the caller's transaction (or in
autocommit when the caller has none); none commits by itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from indexer.projection import KIND_FILTER
from indexer.repository import OutboxEvent
from search.engines.postgres.block_watch import CHANNEL as BLOCK_CHANNEL
from search.engines.postgres.block_watch import FAMILIES as BLOCK_FAMILIES

ACTIVE_STATES = ("queued", "running")
TERMINAL_STATES = ("succeeded", "failed", "canceled")

# The document tables a reindex rebuilds, and which providers go where. The kind filters
# come from `indexer.projection` (the one definition of a document is the view
# `search_document_source`; these only split it between the two tables).
TUTOR_TABLE = "tutor_documents"
COACH_TABLE = "coach_documents"
# Each documents table has a narrow facet table derived from it (migration 0005) and the
# facet blocks derived from those (migration 0008); a reindex rebuilds and swaps all three,
# in the relay's lock order: documents, facet rows, blocks.
COMPANIONS = {
    TUTOR_TABLE: ("tutor_facets", "tutor_facet_blocks"),
    COACH_TABLE: ("coach_facets", "coach_facet_blocks"),
}
# Tutors are inserted in Z-order (geohash), like `build_all`, so neighbours share heap pages.
LOAD_ORDER = {
    TUTOR_TABLE: "ST_GeoHash(location::geometry, 8), provider_id",
    COACH_TABLE: "provider_id",
}

_RUN_COLUMNS = (
    "id, engine, kind, state, phase, requested_by, created_at, started_at, loaded_at,"
    " finished_at, lease_until, heartbeat_at, cancel_requested, attempts, worker,"
    " shadow_suffix, mark::text::bigint AS mark, total, done, replayed, phases, error,"
    " now() AS db_now"
)


@dataclass(frozen=True, slots=True)
class ReindexRun:
    """One row of `reindex_runs` (times are UTC; `mark` is the outbox xid8 as an int)."""

    id: uuid.UUID
    engine: str
    kind: str
    state: str
    phase: str
    requested_by: uuid.UUID | None
    created_at: datetime
    started_at: datetime | None
    loaded_at: datetime | None
    finished_at: datetime | None
    lease_until: datetime
    heartbeat_at: datetime | None
    cancel_requested: bool
    attempts: int
    worker: str | None
    shadow_suffix: str | None
    mark: int | None
    total: int
    done: int
    replayed: int
    phases: dict[str, float]
    error: str | None
    db_now: datetime

    @property
    def active(self) -> bool:
        """Queued or running."""
        return self.state in ACTIVE_STATES


def _run(row: dict[str, Any] | None) -> ReindexRun | None:
    return ReindexRun(**row) if row else None


# ----------------------------------------------------------------------- runs


def expire_stale_runs(conn: psycopg.Connection[Any], engine: str) -> list[ReindexRun]:
    """Mark the active runs of `engine` whose lease has expired as failed; returns them.

    A running run's lease is renewed by its worker's heartbeat, so an expired lease means
    the worker died (or lost the database); a queued run's lease is its queue timeout.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "UPDATE reindex_runs SET state = 'failed', finished_at = now(),"
            " error = CASE state WHEN 'queued'"
            "   THEN 'no worker started the task before its queue timeout'"
            "   ELSE 'worker lost: its lease expired at ' || lease_until::text END"
            " WHERE engine = %s AND state IN ('queued', 'running') AND lease_until < now()"
            " RETURNING " + _RUN_COLUMNS,
            (engine,),
        )
        return [ReindexRun(**r) for r in cur.fetchall()]


def insert_run(
    conn: psycopg.Connection[Any],
    *,
    run_id: uuid.UUID,
    engine: str,
    kind: str,
    requested_by: uuid.UUID | None,
    queue_timeout_s: float,
) -> ReindexRun | None:
    """Insert a queued run; None when another run of `engine` is already active (the
    partial unique index `reindex_runs_one_active` decides, also under races)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "INSERT INTO reindex_runs (id, engine, kind, requested_by, lease_until)"
            " VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s))"
            " ON CONFLICT (engine) WHERE state IN ('queued', 'running') DO NOTHING"
            " RETURNING " + _RUN_COLUMNS,
            (run_id, engine, kind, requested_by, queue_timeout_s),
        )
        return _run(cur.fetchone())


def active_run(conn: psycopg.Connection[Any], engine: str) -> ReindexRun | None:
    """The queued or running run of `engine`, if any."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT " + _RUN_COLUMNS + " FROM reindex_runs"
            " WHERE engine = %s AND state IN ('queued', 'running')",
            (engine,),
        )
        return _run(cur.fetchone())


def get_run(conn: psycopg.Connection[Any], run_id: uuid.UUID) -> ReindexRun | None:
    """The run `run_id`, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT " + _RUN_COLUMNS + " FROM reindex_runs WHERE id = %s", (run_id,))
        return _run(cur.fetchone())


def lock_run(conn: psycopg.Connection[Any], run_id: uuid.UUID) -> ReindexRun | None:
    """The run `run_id`, row-locked for the caller's transaction (the swap's fence)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT " + _RUN_COLUMNS + " FROM reindex_runs WHERE id = %s FOR UPDATE", (run_id,)
        )
        return _run(cur.fetchone())


def claim_run(
    conn: psycopg.Connection[Any],
    run_id: uuid.UUID,
    *,
    worker: str,
    lease_s: float,
    shadow_suffix: str,
) -> ReindexRun | None:
    """Start (or take over) run `run_id`: queued, or running with an expired lease (its
    worker died and the message was delivered again). None when the run is finished,
    canceled, or alive in another worker: the delivery must then do nothing."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "UPDATE reindex_runs SET state = 'running', phase = 'starting', started_at = now(),"
            " loaded_at = NULL, heartbeat_at = now(),"
            " lease_until = now() + make_interval(secs => %(lease)s),"
            " attempts = attempts + 1, worker = %(worker)s, shadow_suffix = %(suffix)s,"
            " done = 0, total = 0, replayed = 0, mark = NULL, error = NULL"
            " WHERE id = %(id)s AND NOT cancel_requested AND (state = 'queued' OR"
            "   (state = 'running' AND lease_until < now()))"
            " RETURNING " + _RUN_COLUMNS,
            {"id": run_id, "lease": lease_s, "worker": worker, "suffix": shadow_suffix},
        )
        return _run(cur.fetchone())


@dataclass(frozen=True, slots=True)
class Beat:
    """What a heartbeat learned: whether the run is still ours, and whether to cancel."""

    alive: bool
    cancel: bool


def heartbeat(
    conn: psycopg.Connection[Any],
    run_id: uuid.UUID,
    *,
    lease_s: float,
    attempt: int,
    progress: dict[str, Any] | None = None,
) -> Beat:
    """Renew the lease of our attempt of `run_id` and record `progress` (any of `phase`,
    `total`, `done`, `replayed`, `mark`, `loaded`). `alive` is False when the run is no
    longer ours (finished, or marked failed after a lease expiry): the caller must stop."""
    sets = [
        "lease_until = now() + make_interval(secs => %(lease)s)",
        "heartbeat_at = now()",
    ]
    params: dict[str, Any] = {"id": run_id, "lease": lease_s, "attempt": attempt}
    for key, value in (progress or {}).items():
        if key == "mark":
            sets.append("mark = %(mark)s::text::xid8")
        elif key == "loaded":
            sets.append("loaded_at = now()")
            continue
        else:
            if key not in ("phase", "total", "done", "replayed"):
                raise ValueError(f"unknown progress field {key!r}")
            sets.append(f"{key} = %({key})s")
        params[key] = value
    row = conn.execute(
        "UPDATE reindex_runs SET " + ", ".join(sets) + " WHERE id = %(id)s"
        " AND state = 'running' AND attempts = %(attempt)s RETURNING cancel_requested",
        params,
    ).fetchone()
    return Beat(alive=row is not None, cancel=bool(row and row[0]))


def finish_run(
    conn: psycopg.Connection[Any],
    run_id: uuid.UUID,
    *,
    attempt: int,
    state: str,
    error: str | None = None,
) -> bool:
    """Move our attempt of `run_id` to a terminal `state`; False if it was not ours."""
    if state not in TERMINAL_STATES:
        raise ValueError(f"not a terminal state: {state!r}")
    cur = conn.execute(
        "UPDATE reindex_runs SET state = %s, phase = %s, finished_at = now(), error = %s"
        " WHERE id = %s AND state = 'running' AND attempts = %s",
        (state, state, error, run_id, attempt),
    )
    return cur.rowcount == 1


def record_phases(
    conn: psycopg.Connection[Any], run_id: uuid.UUID, *, attempt: int, phases: dict[str, float]
) -> None:
    """Store the seconds spent in each phase by our attempt of `run_id` (any state)."""
    conn.execute(
        "UPDATE reindex_runs SET phases = %s WHERE id = %s AND attempts = %s",
        (Jsonb(phases), run_id, attempt),
    )


def request_cancel(conn: psycopg.Connection[Any], run_id: uuid.UUID) -> ReindexRun | None:
    """Flag `run_id` for cancellation. A queued run is canceled at once (its task will do
    nothing); a running one stops at its next check (between batches). Returns the run,
    or None when it does not exist."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "UPDATE reindex_runs SET cancel_requested = true,"
            " state = CASE state WHEN 'queued' THEN 'canceled' ELSE state END,"
            " phase = CASE state WHEN 'queued' THEN 'canceled' ELSE phase END,"
            " finished_at = CASE state WHEN 'queued' THEN now() ELSE finished_at END"
            " WHERE id = %s AND state IN ('queued', 'running')",
            (run_id,),
        )
    return get_run(conn, run_id)


def fail_unpublished(conn: psycopg.Connection[Any], run_id: uuid.UUID, error: str) -> None:
    """Fail a queued run whose task could not be sent to the broker."""
    conn.execute(
        "UPDATE reindex_runs SET state = 'failed', phase = 'failed', finished_at = now(),"
        " error = %s WHERE id = %s AND state = 'queued'",
        (error, run_id),
    )


# ------------------------------------------------------------------ the outbox mark


def outbox_horizon(conn: psycopg.Connection[Any]) -> int:
    """`outbox_horizon()` (migration 0004): every transaction of this database with a
    smaller xid has finished. Returned as an int (xid8)."""
    row = conn.execute("SELECT outbox_horizon()::text::bigint").fetchone()
    assert row is not None
    return int(row[0])


def hold_outbox(conn: psycopg.Connection[Any], consumer: str, mark: int) -> None:
    """Register `consumer` in `indexer_checkpoints` at `mark`, so outbox pruning (which
    keeps everything above the lowest checkpoint) never deletes an event the reindex has
    still to replay."""
    conn.execute(
        "INSERT INTO indexer_checkpoints (consumer, partition, partitions, txid)"
        " VALUES (%s, 0, 1, %s::text::xid8) ON CONFLICT (consumer, partition) DO UPDATE"
        " SET txid = EXCLUDED.txid, outbox_id = 0, events = 0, updated_at = now()",
        (consumer, mark),
    )


def release_other_holds(conn: psycopg.Connection[Any], keep: str) -> None:
    """Remove the outbox holds of earlier reindex runs (they died), except `keep`."""
    conn.execute(
        "DELETE FROM indexer_checkpoints WHERE consumer LIKE 'reindex:%%' AND consumer <> %s",
        (keep,),
    )


def advance_hold(conn: psycopg.Connection[Any], consumer: str, txid: int, outbox_id: int) -> None:
    """Move the reindex's outbox hold to the last replayed position."""
    conn.execute(
        "UPDATE indexer_checkpoints SET txid = %s::text::xid8, outbox_id = %s,"
        " updated_at = now() WHERE consumer = %s",
        (txid, outbox_id, consumer),
    )


def release_outbox(conn: psycopg.Connection[Any], consumer: str) -> None:
    """Remove the reindex's outbox hold."""
    conn.execute("DELETE FROM indexer_checkpoints WHERE consumer = %s", (consumer,))


def fetch_events_since(
    conn: psycopg.Connection[Any], mark: int, after: tuple[int, int], limit: int
) -> list[OutboxEvent]:
    """Up to `limit` outbox events of finished transactions with `txid >= mark` and
    `(txid, id) > after`, in commit order `(txid, id)`."""
    rows = conn.execute(
        "SELECT id, txid::text::bigint, aggregate_type, aggregate_id, event_type, payload,"
        " created_at FROM outbox"
        " WHERE txid >= %(mark)s::text::xid8 AND (txid, id) > (%(tx)s::text::xid8, %(id)s)"
        "   AND txid < (SELECT outbox_horizon())"
        " ORDER BY txid, id LIMIT %(limit)s",
        {"mark": mark, "tx": after[0], "id": after[1], "limit": limit},
    ).fetchall()
    return [OutboxEvent(*r) for r in rows]


# ------------------------------------------------------------- table shapes


@dataclass(frozen=True, slots=True)
class IndexCopy:
    """One index of a live table and its counterpart on the shadow table.

    `constraint` names the constraint the index backs (primary key, unique, exclusion), or
    is None for a plain index; `definition` is the table-independent part (constraint
    definition, or `[UNIQUE] USING method (keys) …`); `create` builds it on the shadow."""

    live_name: str
    shadow_name: str
    constraint: str | None
    definition: str
    statements: tuple[str, ...]
    clustered: bool


@dataclass(frozen=True, slots=True)
class TableShape:
    """What the swap must reproduce of a live table: its columns, indexes, index-backed
    and foreign-key constraints, storage options, grants and triggers (`triggers`:
    (name, definition on the live table, the same on the shadow), created at the swap,
    so the shadow's load and replay fire none)."""

    live: str
    shadow: str
    columns: tuple[tuple[str, str, bool], ...]
    indexes: tuple[IndexCopy, ...]
    foreign_keys: tuple[tuple[str, str], ...] = ()
    reloptions: tuple[str, ...] = ()
    grants: tuple[tuple[str, str], ...] = field(default=())
    triggers: tuple[tuple[str, str, str], ...] = field(default=())

    def signature(self) -> tuple[Any, ...]:
        """What must not change between the copy and the swap."""
        return (
            self.columns,
            tuple((i.live_name, i.constraint, i.definition) for i in self.indexes),
            self.foreign_keys,
            tuple(t[:2] for t in self.triggers),
        )


def _index_tail(create: str) -> str:
    """The part of an index definition after the table name (method, keys, predicate)."""
    return create[create.index(" USING ") :]


def table_columns(conn: psycopg.Connection[Any], table: str) -> tuple[tuple[str, str, bool], ...]:
    """(name, type, not null) of each column of `table`, in order."""
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table,),
    ).fetchall()
    return tuple((str(r[0]), str(r[1]), bool(r[2])) for r in rows)


def describe_table(conn: psycopg.Connection[Any], live: str, shadow: str) -> TableShape:
    """Read `live`'s shape from the catalog and plan its copy onto `shadow`: shadow index
    names are `{shadow}_i{n}` (index names are schema-wide) and become the live names at
    the swap. Raises `LookupError` when `live` does not exist."""
    if conn.execute("SELECT to_regclass(%s)", (live,)).fetchone() in (None, (None,)):
        raise LookupError(f"table {live} does not exist")
    rows = conn.execute(
        """
        SELECT ic.relname, pg_get_indexdef(i.indexrelid), c.conname,
               CASE WHEN c.conname IS NOT NULL THEN pg_get_constraintdef(c.oid) END,
               i.indisunique, i.indisclustered
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        LEFT JOIN pg_constraint c
               ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
              AND c.contype IN ('p', 'u', 'x')
        WHERE i.indrelid = %s::regclass
        ORDER BY ic.relname
        """,
        (live,),
    ).fetchall()
    indexes = []
    for n, (name, indexdef, conname, condef, unique, clustered) in enumerate(rows):
        shadow_name = f"{shadow}_i{n}"
        target = sql.Identifier(shadow).as_string(conn)
        ident = sql.Identifier(shadow_name).as_string(conn)
        # CONCURRENTLY: a plain CREATE INDEX holds an xid for the whole build, which pins
        # the outbox horizon and stalls the streaming relay for that long (measured: the
        # whole GIN build); a concurrent build holds one only for moments.
        head = "CREATE UNIQUE INDEX CONCURRENTLY" if unique else "CREATE INDEX CONCURRENTLY"
        build = f"{head} {ident} ON {target}{_index_tail(indexdef)}"
        if conname:
            definition = str(condef)
            kind = definition.split(" (", 1)[0]
            if kind in ("PRIMARY KEY", "UNIQUE") and "DEFERRABLE" not in definition:
                statements: tuple[str, ...] = (
                    build,
                    f"ALTER TABLE {target} ADD CONSTRAINT {ident} {kind} USING INDEX {ident}",
                )
            else:  # exclusion or deferrable constraints cannot adopt an index
                statements = (f"ALTER TABLE {target} ADD CONSTRAINT {ident} {definition}",)
        else:
            definition = ("UNIQUE" if unique else "") + _index_tail(indexdef)
            statements = (build,)
        indexes.append(
            IndexCopy(name, shadow_name, conname, definition, statements, bool(clustered))
        )
    fks = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %s::regclass AND contype = 'f' ORDER BY conname",
        (live,),
    ).fetchall()
    opts = conn.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (live,))
    reloptions = (opts.fetchone() or (None,))[0] or []
    grants = conn.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END,"
        " a.privilege_type FROM pg_class c, aclexplode(c.relacl) a"
        " LEFT JOIN pg_roles r ON r.oid = a.grantee"
        " WHERE c.oid = %s::regclass AND a.grantee <> c.relowner ORDER BY 1, 2",
        (live,),
    ).fetchall()
    return TableShape(
        live=live,
        shadow=shadow,
        columns=table_columns(conn, live),
        indexes=tuple(indexes),
        foreign_keys=tuple((str(a), str(b)) for a, b in fks),
        reloptions=tuple(str(o) for o in reloptions),
        grants=tuple((str(a), str(b)) for a, b in grants),
        triggers=_triggers(conn, live, shadow),
    )


def _triggers(
    conn: psycopg.Connection[Any], live: str, shadow: str
) -> tuple[tuple[str, str, str], ...]:
    """(name, definition, definition on `shadow`) of `live`'s own triggers: the definition
    names the table schema-qualified (`pg_get_triggerdef`), once, after ` ON `."""
    rows = conn.execute(
        "SELECT t.tgname, pg_get_triggerdef(t.oid), quote_ident(n.nspname),"
        " quote_ident(c.relname) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE t.tgrelid = %s::regclass AND NOT t.tgisinternal ORDER BY t.tgname",
        (live,),
    ).fetchall()
    out = []
    for name, definition, schema, table in rows:
        on = f" ON {schema}.{table} "
        if definition.count(on) != 1:
            raise ValueError(f"cannot copy trigger {name} of {live}: {definition}")
        target = f" ON {schema}.{sql.Identifier(shadow).as_string(conn)} "
        out.append((str(name), str(definition), str(definition).replace(on, target)))
    return tuple(out)


def create_shadow(conn: psycopg.Connection[Any], shape: TableShape) -> None:
    """Create `shape.shadow` empty, like the live table but without its indexes and
    index-backed constraints (added after the bulk load, which is much faster); columns,
    defaults, NOT NULL and CHECK constraints, storage and comments are copied."""
    conn.execute(
        sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(shape.shadow)),
    )
    conn.execute(
        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL EXCLUDING INDEXES)").format(
            sql.Identifier(shape.shadow), sql.Identifier(shape.live)
        )
    )
    if shape.reloptions:
        conn.execute(
            sql.SQL("ALTER TABLE {} SET ({})").format(
                sql.Identifier(shape.shadow), sql.SQL(", ".join(shape.reloptions))
            )
        )


def create_scratch_shadow(conn: psycopg.Connection[Any], live: str, shadow: str) -> None:
    """An empty shadow with indexes (a kind not being rebuilt: it only absorbs the
    replay's writes for that kind and is dropped afterwards)."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(shadow)))
    conn.execute(
        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
            sql.Identifier(shadow), sql.Identifier(live)
        )
    )


def set_maintenance_work_mem(conn: psycopg.Connection[Any], value: str) -> None:
    """`maintenance_work_mem` for this session (index builds; GIN builds fit in memory)."""
    conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (value,))


def finish_shadow(conn: psycopg.Connection[Any], shape: TableShape, index: IndexCopy) -> None:
    """Build one index (or index-backed constraint) of the shadow table (autocommit)."""
    for statement in index.statements:
        conn.execute(statement.encode())
    if index.clustered:
        conn.execute(
            sql.SQL("ALTER TABLE {} CLUSTER ON {}").format(
                sql.Identifier(shape.shadow), sql.Identifier(index.shadow_name)
            )
        )


def finish_shadow_extras(conn: psycopg.Connection[Any], shape: TableShape) -> None:
    """Foreign keys (same names) and grants of the live table, on the shadow."""
    for name, definition in shape.foreign_keys:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(
                sql.Identifier(shape.shadow), sql.Identifier(name)
            )
            + sql.SQL(definition)
        )
    for grantee, privilege in shape.grants:
        conn.execute(
            sql.SQL("GRANT {} ON {} TO {}").format(
                sql.SQL(privilege),
                sql.Identifier(shape.shadow),
                sql.SQL(grantee),
            )
        )


def vacuum_analyze(conn: psycopg.Connection[Any], table: str) -> None:
    """`VACUUM (ANALYZE)` (autocommit connection): statistics for the planner and the
    visibility map for index-only scans, before the table goes live."""
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))


def drop_tables(conn: psycopg.Connection[Any], tables: Sequence[str]) -> None:
    """`DROP TABLE IF EXISTS` each of `tables`."""
    for t in tables:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(t)))


def leftover_shadows(conn: psycopg.Connection[Any], keep_suffix: str | None = None) -> list[str]:
    """Shadow tables of earlier runs (`{tutor,coach}_{documents,facets,facet_blocks}_rx…`), except
    `keep_suffix`'s."""
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        " AND tablename ~ '^(tutor|coach)_(documents|facets|facet_blocks)_rx[0-9a-f]{8}$' ORDER BY tablename"
    ).fetchall()
    keep = {f"{TUTOR_TABLE}{keep_suffix}", f"{COACH_TABLE}{keep_suffix}"} if keep_suffix else set()
    return [r[0] for r in rows if r[0] not in keep]


# ------------------------------------------------------------------ snapshot load


def export_snapshot(conn: psycopg.Connection[Any]) -> str:
    """Start a read-only REPEATABLE READ transaction on `conn` (which must not be in
    autocommit) and export its snapshot; the transaction takes no xid, so it never holds
    back the outbox horizon. Keep it open while others import the snapshot."""
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    row = conn.execute("SELECT pg_export_snapshot()").fetchone()
    assert row is not None
    return str(row[0])


def document_ids(conn: psycopg.Connection[Any], table: str) -> list[uuid.UUID]:
    """Ids of the searchable providers that belong in `table`, in load order (in the
    caller's snapshot)."""
    rows = conn.execute(
        "SELECT provider_id FROM search_document_source WHERE searchable AND "
        + KIND_FILTER[table]
        + " ORDER BY "
        + LOAD_ORDER[table]
    ).fetchall()
    return [r[0] for r in rows]


def load_batch(
    conn: psycopg.Connection[Any],
    snapshot: str,
    table: str,
    shadow: str,
    columns: Sequence[str],
    ids: Sequence[uuid.UUID],
) -> int:
    """Insert the documents of `ids` into `shadow` as of the exported `snapshot`, in a
    short transaction of its own (committed here: the one place that commits, because
    the snapshot import must be the first statement of its transaction). Returns rows."""
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        cur = conn.execute(
            sql.SQL(
                "INSERT INTO {shadow} ({cols}) SELECT {cols} FROM search_document_source"
                " WHERE provider_id = ANY(%(ids)s) AND searchable AND "
                + KIND_FILTER[table]
                + " ORDER BY "
                + LOAD_ORDER[table]
            ).format(shadow=sql.Identifier(shadow), cols=cols),
            {"ids": list(ids)},
        )
        return max(cur.rowcount, 0)


# ------------------------------------------------------------------------ swap


def lock_live(conn: psycopg.Connection[Any], tables: Sequence[str], timeout_s: float) -> None:
    """`ACCESS EXCLUSIVE` on `tables` (in this order, the relay's order) for the caller's
    transaction, waiting at most `timeout_s` (raises `psycopg.errors.LockNotAvailable`)."""
    conn.execute(
        sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(timeout_s * 1000)}ms"))
    )
    conn.execute(
        sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
            sql.SQL(", ").join(map(sql.Identifier, tables))
        )
    )
    conn.execute("SET LOCAL lock_timeout = 0")


def swap_table(conn: psycopg.Connection[Any], shape: TableShape) -> None:
    """In the caller's transaction (live table locked): give the shadow the live table's
    triggers, move the live table aside under a temporary name, rename the shadow to the
    live name and its indexes/constraints to the live ones (so the next run finds the
    same names), then drop the old table."""
    old = f"{shape.shadow}_old"
    ident = sql.Identifier
    for _name, _live_definition, shadow_definition in shape.triggers:
        conn.execute(shadow_definition.encode())
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(ident(shape.live), ident(old)))
    for idx in shape.indexes:
        # free the live names: the old table's index names move aside
        conn.execute(
            sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                ident(idx.live_name), ident(idx.shadow_name + "_old")
            )
        )
    conn.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(ident(shape.shadow), ident(shape.live))
    )
    for idx in shape.indexes:
        if idx.constraint:
            conn.execute(
                sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                    ident(shape.live), ident(idx.shadow_name), ident(idx.constraint)
                )
            )
            if idx.constraint != idx.live_name:
                conn.execute(
                    sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                        ident(idx.constraint), ident(idx.live_name)
                    )
                )
        else:
            conn.execute(
                sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    ident(idx.shadow_name), ident(idx.live_name)
                )
            )
    conn.execute(sql.SQL("DROP TABLE {}").format(ident(old)))


def notify_blocks_swapped(conn: psycopg.Connection[Any], tables: Sequence[str]) -> None:
    """In the swap's transaction: notify the search processes' block watches of every
    facet blocks table among `tables` (a rename fires no trigger;
    `search.engines.postgres.block_watch`)."""
    for family in BLOCK_FAMILIES:
        if f"{family}_facet_blocks" in tables:
            conn.execute("SELECT pg_notify(%s, %s)", (BLOCK_CHANNEL, family))


def index_names(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """Names of `table`'s indexes, sorted."""
    rows = conn.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        " AND tablename = %s ORDER BY indexname",
        (table,),
    ).fetchall()
    return [r[0] for r in rows]
