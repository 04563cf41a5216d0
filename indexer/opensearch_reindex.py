"""Full OpenSearch reindex with no downtime: a new versioned index per family, loaded from
a consistent PostgreSQL snapshot, caught up from the outbox, then an atomic alias swap.

`reindex()` (service function; the CLI is `educonnect reindex --engine opensearch`, the
admin Celery task of issue 6 will call it too):

1. install the index templates (`infra/opensearch/`, idempotent `PUT _index_template`);
2. open a REPEATABLE READ transaction: the first statement takes the *mark*,
   `pg_snapshot_xmin(pg_current_snapshot())` — every transaction below it is finished and
   visible in the snapshot; transactions from the mark on may not be;
3. create `tutors_v{N+1}` / `coaches_v{N+1}` with `number_of_replicas: 0` and
   `refresh_interval: -1` (the mark stored in the mapping's `_meta`), and bulk-load every
   searchable provider of the snapshot into them (`version_type: external`);
4. replay the outbox from the mark (events of transactions `>= mark` that are finished)
   into the new indices — idempotent: external versions make repeats harmless;
5. restore the serving settings (`OPENSEARCH_REPLICAS`, template refresh interval) and
   refresh;
6. swap both aliases in one `POST _aliases` (remove + add per family: atomic);
7. replay again from the mark: events the streaming sink wrote to the *old* index between
   step 4 and the swap reach the new one (the sink writes to the new one after the swap).

The previous indices are kept: `rollback()` swaps the aliases back to the highest older
version and replays into it the events since the newer index's mark (the old index missed
what was written after the swap). Delete old indices by hand once satisfied.

While it runs, a checkpoint row of consumer `opensearch-reindex` sits at the mark, so the
relay's outbox pruning keeps every event the replay needs (`educonnect indexer status`
shows it); it is removed at the end.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError

from core.logging import get_logger
from indexer.opensearch_documents import actions, fetch_rows, iter_searchable, row_actions
from indexer.opensearch_sink import write
from indexer.relay import provider_of
from search.engines.opensearch.index import (
    FAMILIES,
    LOAD_SETTINGS,
    alias_name,
    index_name,
    index_template,
    index_version,
    live_settings,
    template_name,
)

log = get_logger(__name__)

REINDEX_CONSUMER = "opensearch-reindex"
MARK_META = "reindex_mark_txid"


class ReindexError(Exception):
    """The reindex (or rollback) cannot proceed; nothing was swapped."""


@dataclass
class ReindexResult:
    """What a reindex or rollback did."""

    swapped: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # alias: (old, new)
    documents: int = 0
    replayed: int = 0
    mark: int = 0
    seconds: float = 0.0


def install_templates(client: OpenSearch, prefix: str = "") -> None:
    """Create or update the index templates of every family."""
    for family in FAMILIES:
        client.indices.put_index_template(
            name=template_name(family, prefix), body=index_template(family, prefix)
        )


def alias_target(client: OpenSearch, alias: str) -> str | None:
    """The index `alias` points at, None when the alias does not exist."""
    try:
        resp = client.indices.get_alias(name=alias)
    except NotFoundError:
        return None
    names = sorted(resp)
    if len(names) != 1:
        raise ReindexError(f"alias {alias!r} points at {names}; expected one index")
    return str(names[0])


def versions(client: OpenSearch, family: str, prefix: str = "") -> list[int]:
    """Existing version numbers of `family`'s indices, ascending."""
    try:
        resp = client.indices.get(index=f"{prefix}{family}_v*", allow_no_indices=True)
    except NotFoundError:
        return []
    found = [index_version(name) for name in resp]
    return sorted(v for v in found if v is not None)


def bootstrap(client: OpenSearch, *, prefix: str = "", replicas: int = 1) -> dict[str, str]:
    """Make sure each family has templates, an index and its alias (an empty `_v1` when
    none exists), so the streaming sink can write. Returns alias → index."""
    install_templates(client, prefix)
    out: dict[str, str] = {}
    for family in FAMILIES:
        alias = alias_name(family, prefix)
        target = alias_target(client, alias)
        if target is None:
            v = (versions(client, family, prefix) or [0])[-1] + 1
            target = index_name(family, v, prefix)
            client.indices.create(
                index=target,
                body={"settings": live_settings(family, replicas), "aliases": {alias: {}}},
            )
        out[alias] = target
    return out


def _mark(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").fetchone()
    assert row is not None
    return int(row[0])


def _hold_outbox(conn: psycopg.Connection[Any], mark: int) -> None:
    conn.execute(
        "INSERT INTO indexer_checkpoints (consumer, partition, partitions, txid, outbox_id)"
        " VALUES (%s, 0, 1, %s::text::xid8, 0) ON CONFLICT (consumer, partition) DO UPDATE"
        " SET txid = EXCLUDED.txid, outbox_id = 0, updated_at = now()",
        (REINDEX_CONSUMER, mark),
    )


def _release_outbox(conn: psycopg.Connection[Any]) -> None:
    conn.execute("DELETE FROM indexer_checkpoints WHERE consumer = %s", (REINDEX_CONSUMER,))


def replay(
    conn: psycopg.Connection[Any],
    client: OpenSearch,
    *,
    mark: int,
    targets: dict[str, str],
    batch: int = 1000,
    max_retries: int = 5,
) -> int:
    """Re-apply every finished outbox event of transactions `>= mark` to `targets`
    (family → index), in commit order. Returns the number of events read."""
    position = (mark, 0)  # outbox ids start at 1: "> (mark, 0)" includes the mark's rows
    total = 0
    while True:
        with conn.transaction():
            rows = conn.execute(
                "SELECT txid::text::bigint, id, aggregate_type, aggregate_id, payload FROM outbox"
                " WHERE (txid, id) > (%(t)s::text::xid8, %(i)s)"
                "   AND txid < (SELECT outbox_horizon())"
                " ORDER BY txid, id LIMIT %(n)s",
                {"t": position[0], "i": position[1], "n": batch},
            ).fetchall()
            if not rows:
                return total
            touched = (provider_of(r[2], r[3], r[4]) for r in rows)
            ids = list(dict.fromkeys(uuid.UUID(p) for p in touched if p is not None))
            if ids:
                write(
                    client,
                    actions(ids, fetch_rows(conn, ids), targets=targets),
                    max_retries=max_retries,
                )
        total += len(rows)
        position = (rows[-1][0], rows[-1][1])


def reindex(
    conn: psycopg.Connection[Any],
    client: OpenSearch,
    *,
    prefix: str = "",
    replicas: int = 1,
    batch: int = 2000,
    max_retries: int = 5,
    progress: Callable[[int], None] | None = None,
) -> ReindexResult:
    """Rebuild every family into a new versioned index and swap the aliases (see the
    module docstring). `conn` is an autocommit psycopg connection (transactions are
    opened here); `progress(n)` is called after each bulk chunk with the documents sent.
    Raises `ReindexError` (nothing swapped) or the transport/database error."""
    t0 = time.perf_counter()
    conn.autocommit = True
    install_templates(client, prefix)
    old = {f: alias_target(client, alias_name(f, prefix)) for f in FAMILIES}
    new: dict[str, str] = {}
    for family in FAMILIES:
        v = (versions(client, family, prefix) or [0])[-1] + 1
        new[family] = index_name(family, v, prefix)
    result = ReindexResult()
    with conn.transaction():
        # Keep the outbox from the (lower) mark of now on while we load: pruning stops at
        # the lowest checkpoint of all consumers.
        _hold_outbox(conn, _mark(conn))
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        with conn.transaction():
            mark = _mark(conn)  # first statement: the snapshot is taken here
            result.mark = mark
            for family, index in new.items():
                meta = dict(index_template(family, prefix)["template"]["mappings"]["_meta"])
                meta[MARK_META] = mark
                client.indices.create(
                    index=index, body={"settings": LOAD_SETTINGS, "mappings": {"_meta": meta}}
                )
            chunk: list[Any] = []
            for row in iter_searchable(conn, batch=batch):
                chunk.append(row)
                if len(chunk) >= batch:
                    result.documents += _load(client, chunk, new, max_retries, progress)
                    chunk = []
            if chunk:
                result.documents += _load(client, chunk, new, max_retries, progress)
    except BaseException:
        with conn.transaction():
            _release_outbox(conn)
        raise
    finally:
        conn.isolation_level = None
    try:
        result.replayed += replay(conn, client, mark=mark, targets=new, max_retries=max_retries)
        for family, index in new.items():
            client.indices.put_settings(index=index, body=live_settings(family, replicas))
        client.indices.refresh(index=",".join(new.values()))
        swap = []
        for family, index in new.items():
            alias = alias_name(family, prefix)
            if old[family] is not None:
                swap.append({"remove": {"index": old[family], "alias": alias}})
            swap.append({"add": {"index": index, "alias": alias}})
            result.swapped[alias] = (old[family], index)
        client.indices.update_aliases(body={"actions": swap})
        result.replayed += replay(conn, client, mark=mark, targets=new, max_retries=max_retries)
    finally:
        with conn.transaction():
            _release_outbox(conn)
    result.seconds = time.perf_counter() - t0
    log.info(
        "opensearch_reindexed",
        swapped={k: list(v) for k, v in result.swapped.items()},
        documents=result.documents,
        replayed=result.replayed,
        seconds=round(result.seconds, 2),
    )
    return result


def _load(
    client: OpenSearch,
    rows: list[Any],
    targets: dict[str, str],
    max_retries: int,
    progress: Callable[[int], None] | None,
) -> int:
    outcome = write(client, row_actions(rows, targets=targets), max_retries=max_retries)
    n = outcome.applied + outcome.stale
    if progress is not None:
        progress(n)
    return n


def drop_unaliased_newer(client: OpenSearch, *, prefix: str = "") -> list[str]:
    """Delete the versioned indices newer than the one each alias points at: builds of a
    reindex that was canceled or died before its swap (only one reindex per engine runs at
    a time, and rollback targets are older). Returns the deleted index names."""
    deleted: list[str] = []
    for family in FAMILIES:
        live = alias_target(client, alias_name(family, prefix))
        live_v = int(live.rsplit("_v", 1)[1]) if live and "_v" in live else 0
        for v in versions(client, family, prefix):
            if v > live_v:
                name = index_name(family, v, prefix)
                client.indices.delete(index=name)
                deleted.append(name)
    return deleted


def rollback(
    conn: psycopg.Connection[Any],
    client: OpenSearch,
    *,
    prefix: str = "",
    max_retries: int = 5,
) -> ReindexResult:
    """Point every alias back at its family's previous version (the highest one below
    the live index), in one atomic `_aliases` request, then replay into it the events
    since the live index's mark. Raises `ReindexError` when a family has no older index."""
    t0 = time.perf_counter()
    conn.autocommit = True
    result = ReindexResult()
    swap: list[dict[str, Any]] = []
    targets: dict[str, str] = {}
    marks: list[int] = []
    for family in FAMILIES:
        alias = alias_name(family, prefix)
        live = alias_target(client, alias)
        live_v = index_version(live) if live else None
        if live is None or live_v is None:
            raise ReindexError(f"alias {alias!r} does not point at a versioned index")
        older = [v for v in versions(client, family, prefix) if v < live_v]
        if not older:
            raise ReindexError(f"no index older than {live!r} to roll back to")
        previous = index_name(family, older[-1], prefix)
        mapping = client.indices.get_mapping(index=live)
        meta = mapping[live]["mappings"].get("_meta", {})
        if MARK_META in meta:
            marks.append(int(meta[MARK_META]))
        swap += [
            {"remove": {"index": live, "alias": alias}},
            {"add": {"index": previous, "alias": alias}},
        ]
        targets[family] = previous
        result.swapped[alias] = (live, previous)
    client.indices.update_aliases(body={"actions": swap})
    if marks:
        result.mark = min(marks)
        result.replayed = replay(
            conn, client, mark=result.mark, targets=targets, max_retries=max_retries
        )
    result.seconds = time.perf_counter() - t0
    log.info("opensearch_rolled_back", swapped={k: list(v) for k, v in result.swapped.items()})
    return result
