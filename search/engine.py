"""The `SearchEngine` protocol every engine implements (`search/postgres.py`,
`search/opensearch.py`).

Both engines return the same ids in the same order and the same facets for the same query
(parity); `name` appears in responses (`engine`) and in cache keys. An engine that cannot
answer because its backend is down or too slow raises `EngineUnavailable`; the service
then answers from its fallback engine (PostgreSQL), marked `degraded`.
"""

from __future__ import annotations

from typing import Protocol

from search.schemas import (
    CoachQuery,
    CoachResults,
    MapResults,
    TutorMapQuery,
    TutorQuery,
    TutorResults,
)


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
