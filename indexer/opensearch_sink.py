"""The OpenSearch sink of the outbox relay: consumer `opensearch`
(`educonnect indexer run --consumer opensearch`).

It is a second consumer with its own checkpoints (`indexer_checkpoints`), so a slow or
unreachable cluster only delays this consumer: the `postgres` consumer goes on. For each
batch it rebuilds the touched providers from `search_document_source` (the same rows as
the PostgreSQL sink, `indexer/opensearch_documents.py`) inside the relay's transaction
and writes them with the bulk helper:

- `index` with `version_type: external` (document version = `provider_profiles.version`):
  a replay or an out-of-order older write comes back 409, counted as success;
- unversioned `delete` for removed/inactive/rejected/re-kinded providers: 404 is success;
- items rejected with 429 are retried by the helper with exponential backoff (1 s, 2 s,
  4 s … at most 30 s, `OPENSEARCH_BULK_MAX_RETRIES` times);
- any other failure (item error, transport error, 429 after the retries) raises
  `BulkWriteError` / the transport error: the relay rolls back, the checkpoint stays, and
  the batch is applied again on the next pass (at-least-once + idempotent writes).

Writes target the aliases with `require_alias=true`, so a missing alias fails loudly
instead of auto-creating an index with a dynamic mapping; `refresh=wait_for` returns once
the batch is searchable, so the cache generation bumped after the commit never lets a
cached page miss this batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from opensearchpy import OpenSearch, helpers

from core.logging import get_logger
from indexer.opensearch_documents import actions, fetch_rows
from indexer.relay import NOTHING, Changes, changes_of_events, provider_ids
from indexer.repository import OutboxEvent

log = get_logger(__name__)

INITIAL_BACKOFF_S = 1
MAX_BACKOFF_S = 30


class BulkWriteError(Exception):
    """Some bulk items failed for a reason other than a stale version or a missing
    document. `errors` lists them as the bulk API reported them (`{op: item}`)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} bulk item(s) failed: {errors[:3]!r}")
        self.errors = errors


@dataclass
class BulkOutcome:
    """What a bulk write did: items applied, stale (409) and missing (delete 404)."""

    applied: int = 0
    stale: int = 0
    missing: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


def write(
    client: OpenSearch,
    items: Iterable[dict[str, Any]],
    *,
    max_retries: int = 5,
    require_alias: bool = False,
    refresh: str | bool = False,
    chunk_size: int = 500,
    request_timeout: float = 30.0,
    initial_backoff: float = INITIAL_BACKOFF_S,
) -> BulkOutcome:
    """Send `items` (bulk helper actions) and classify the results. Raises
    `BulkWriteError` when an item fails otherwise than 409 / delete-404, and transport
    errors as they come (after the helper's 429 retries)."""
    out = BulkOutcome()
    params: dict[str, Any] = {"request_timeout": request_timeout}
    if require_alias:
        params["require_alias"] = "true"
    if refresh:
        params["refresh"] = refresh if isinstance(refresh, str) else "true"
    for ok, item in helpers.streaming_bulk(
        client,
        items,
        chunk_size=chunk_size,
        max_retries=max_retries,
        initial_backoff=initial_backoff,  # type: ignore[arg-type]
        max_backoff=MAX_BACKOFF_S,
        raise_on_error=False,
        raise_on_exception=True,
        **params,
    ):
        if ok:
            out.applied += 1
            continue
        op, info = next(iter(item.items()))
        status = info.get("status")
        if status == 409:
            out.stale += 1
        elif op == "delete" and status == 404:
            out.missing += 1
        else:
            out.errors.append(item)
    if out.errors:
        raise BulkWriteError(out.errors)
    return out


class OpenSearchSink:
    """`indexer.relay.Sink` writing to OpenSearch (see the module docstring)."""

    name = "opensearch"

    def __init__(
        self,
        client: OpenSearch,
        *,
        prefix: str = "",
        max_retries: int = 5,
        request_timeout: float = 30.0,
        refresh: str | bool = "wait_for",
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.max_retries = max_retries
        self.request_timeout = request_timeout
        self.refresh = refresh

    def apply(self, conn: psycopg.Connection[Any], events: Sequence[OutboxEvent]) -> Changes:
        """Rebuild the batch's providers and bulk-write them (idempotent; raises on any
        failure so the relay retries the batch). Returns what the events can change
        (`changes_of_events`)."""
        ids = provider_ids(events)
        if not ids:
            return NOTHING
        rows = fetch_rows(conn, ids)
        outcome = write(
            self.client,
            actions(ids, rows, prefix=self.prefix),
            max_retries=self.max_retries,
            require_alias=True,
            refresh=self.refresh,
            request_timeout=self.request_timeout,
        )
        log.debug(
            "opensearch_batch",
            providers=len(ids),
            applied=outcome.applied,
            stale=outcome.stale,
            missing=outcome.missing,
        )
        return changes_of_events(events)


def client_from_settings(*, bulk: bool = True) -> OpenSearch:
    """A synchronous client on `OPENSEARCH_URL` (timeout: the bulk or the search one)."""
    from core.settings import get_settings

    s = get_settings()
    return OpenSearch(
        hosts=[s.opensearch_url],
        timeout=s.opensearch_bulk_timeout_s if bulk else s.opensearch_timeout_s,
        max_retries=2,
        retry_on_timeout=True,
    )
