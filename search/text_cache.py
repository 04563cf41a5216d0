"""Text matches cached per facet block: the query cache of Lucene (`LRUQueryCache`, a
filter's matching documents cached per index segment and valid while that segment is
unchanged), with the facet block's cell as the segment.

Why: the text filter (`q`) is the one filter the facet blocks cannot answer; it needs a
pass over the documents of the radius, ~1.1 µs per row here (25 km around Paris: ~20k
rows, 20-40 ms). Searches repeat their words over the same areas (a map pan, another
sort, another filter, the next page, a neighbouring student): the matches of one word in
one cell do not change until a document of that cell does, and then the cell's block
takes a new `version` in the same transaction (`indexer.projection.refresh_blocks`).
So the matches of (words, cell) are kept with the block version they were computed
for; a later search reuses them only when the block it fetched has that very version,
and computes the others. Exact: a cached entry is never used for a block it was not
computed on (versions come from one sequence, also across reindex generations).

An entry holds the positions of the matching records within the block (uint16 is not
enough for a dense cell: int32) and, for a relevance sort, their `ts_rank` (float4, as
PostgreSQL computes it). Least recently used entries go first past `max_bytes`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

_ENTRY_OVERHEAD = 256  # bytes per entry besides its arrays (dict slot, tuple, array headers)
_EMPTY_IDX: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)
_EMPTY_IDX.setflags(write=False)


@dataclass(frozen=True, slots=True)
class TextMatches:
    """The matches of one text query in one block version: `idx` (positions of the
    matching records in the block, ascending) and `ranks` (their `ts_rank` under
    `rank_query`, float32, aligned with `idx`; None when not computed)."""

    version: int
    idx: npt.NDArray[np.int32]
    rank_query: str | None
    ranks: npt.NDArray[np.float32] | None

    @property
    def nbytes(self) -> int:
        """Memory held, counted against the cache's budget (bytes)."""
        return _ENTRY_OVERHEAD + self.idx.nbytes + (0 if self.ranks is None else self.ranks.nbytes)


class TextMatchCache:
    """Per-process LRU of `TextMatches` keyed by (family, match query, cell), bounded by
    `max_bytes` (bytes of arrays plus a fixed overhead per entry). Not thread-safe: one
    engine, one event loop."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, str, int], TextMatches] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self, family: str, match: str, cell: int, version: int, rank_query: str | None
    ) -> TextMatches | None:
        """The entry of (family, match, cell) when it was computed on block `version`
        and, if `rank_query` is given, holds the ranks under that query; else None."""
        key = (family, match, cell)
        e = self._entries.get(key)
        if (
            e is None
            or e.version != version
            or (rank_query is not None and e.rank_query != rank_query)
        ):
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return e

    def put(
        self,
        family: str,
        match: str,
        cell: int,
        version: int,
        idx: npt.NDArray[Any],
        rank_query: str | None = None,
        ranks: npt.NDArray[Any] | None = None,
    ) -> None:
        """Store the matches of (family, match) in block (cell, version): `idx` the
        matching records' positions in the block, `ranks` their ranks under
        `rank_query` (both or neither). Replaces the cell's previous entry."""
        if (ranks is None) != (rank_query is None):
            raise ValueError("ranks and rank_query go together")
        key = (family, match, cell)
        entry = TextMatches(
            version,
            idx.astype(np.int32) if idx.size else _EMPTY_IDX,
            rank_query,
            None if ranks is None else ranks.astype(np.float32),
        )
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes
        self._entries[key] = entry
        self.bytes += entry.nbytes
        while self.bytes > self.max_bytes and self._entries:
            _, gone = self._entries.popitem(last=False)
            self.bytes -= gone.nbytes

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()
        self.bytes = 0
