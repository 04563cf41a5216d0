"""The `SearchEngine` protocol every engine implements (PostgreSQL now, OpenSearch later).

Both engines return the same ids in the same order and the same facets for the same query
(parity); `name` appears in responses (`engine`) and in cache keys.
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


class SearchEngine(Protocol):
    """A search backend. Methods raise `search.errors.InvalidParameter` for a bad cursor
    and the driver's errors when the backend is unreachable."""

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
