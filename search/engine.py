"""The `SearchEngine` protocol every engine implements (`search/engines/postgres/engine.py`,
`search/engines/opensearch/engine.py`).

Both engines return the same ids in the same order and the same facets for the same query
(parity); `name` appears in responses (`engine`) and in cache keys. An engine that cannot
answer because its backend is down or too slow raises `EngineUnavailable`; the service
then answers from its fallback engine (PostgreSQL), marked `degraded`.

An engine is near-real-time: an answer may miss an index write committed a moment before
the call (PostgreSQL: until the write's notification reaches the process, at most
`SEARCH_BLOCK_RECHECK_S`, `search.engines.postgres.block_watch`; OpenSearch: until the
index refreshes, which the indexer waits for before bumping the cache generation). Inside `fresh_reads()`
an answer reflects every index write committed before the call; the cache computes its
entries there, so an entry stored under a generation reflects the writes that bumped it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

from search.schemas import (
    CoachQuery,
    CoachResults,
    MapResults,
    TutorMapQuery,
    TutorQuery,
    TutorResults,
)

FRESH: ContextVar[bool] = ContextVar("search_fresh_reads", default=False)


@contextmanager
def fresh_reads() -> Iterator[None]:
    """Within this block (this task and the tasks it starts), engine answers reflect every
    index write committed before each call (the module docstring)."""
    token = FRESH.set(True)
    try:
        yield
    finally:
        FRESH.reset(token)


class EngineUnavailable(Exception):
    """The engine's backend is unreachable, timed out or failed (`reason`: `unreachable`,
    `timeout` or `error`). Never a client error: the caller degrades instead."""

    def __init__(self, engine: str, reason: str, detail: str = "") -> None:
        super().__init__(f"{engine} unavailable ({reason}): {detail}")
        self.engine = engine
        self.reason = reason
        self.detail = detail


class SearchEngine(Protocol):
    """A search backend. Methods raise `search.errors.InvalidParameter` for a bad cursor,
    and `EngineUnavailable` (OpenSearch) or the driver's errors (PostgreSQL) when the
    backend is unreachable."""

    name: str

    async def search_tutors(self, q: TutorQuery) -> TutorResults:
        """One page of tutors with facets over the whole filtered set."""
        ...

    async def tutor_map(self, q: TutorMapQuery) -> MapResults:
        """Clusters or points of the tutors inside `q.bbox`."""
        ...

    async def search_coaches(self, q: CoachQuery) -> CoachResults:
        """One page of coaches and mentors with facets over the whole filtered set."""
        ...
