"""Text matches cached per facet block: the query cache of Lucene (`LRUQueryCache`, a
filter's matching documents cached per index segment and valid while that segment is
unchanged), with the facet block's cell as the segment.

Why: the text filter (`q`) is the one filter the facet blocks cannot answer; it needs a
pass over the documents of the radius, whose cost grows with the rows inside it (tens
of thousands in a dense city). Searches repeat their words over the same areas (a map
pan, another sort, another filter, the next page, a neighbouring student): the matches
of one text query in one cell do not change until a document of that cell does, and then the cell's
block takes a new `version` in the same transaction (`indexer.projection.refresh_blocks`).
So the matches of (text query, cell) are kept with the block version they were computed
on; a later search reuses them only when the block it fetched has that very version,
and matches the others. Exact: an entry is never used for a block it was not computed
on (versions come from one sequence, also across reindex generations).

An entry holds the positions of the matching records within the block and, for a
relevance sort, their `ts_rank` (float4, as PostgreSQL computed it). Entries are grouped
per (family, match query, rank query); the least recently used groups go first past
`max_bytes`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import numpy.typing as npt

from search.engines.postgres import _kernels

_ENTRY_OVERHEAD = 200  # bytes per entry besides its arrays (dict slot, tuple, array headers)

# cell -> (block version, positions of the matching records in the block, their ranks)
Entry = tuple[int, npt.NDArray[np.int32], npt.NDArray[np.float32] | None]
GroupKey = tuple[str, str, str | None]


class TextMatchCache:
    """Per-process LRU of text matches per block, bounded by `max_bytes` (the arrays
    plus a fixed overhead per entry). Not thread-safe: one engine, one event loop."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0  # blocks served from the cache
        self.misses = 0  # blocks matched by the database
        self._groups: OrderedDict[GroupKey, dict[int, Entry]] = OrderedDict()
        self._group_bytes: dict[GroupKey, int] = {}

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups.values())

    def gather(
        self,
        key: GroupKey,
        cells: npt.NDArray[np.int64],
        versions: npt.NDArray[np.int64],
        starts: npt.NDArray[np.int64],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32] | None, list[int]]:
        """For blocks b (cell `cells[b]` at version `versions[b]`, first record at
        `starts[b]` of the fetched records; int64 arrays) and the group `key` = (family,
        match query, rank query or None): (positions of the cached matches among the
        fetched records, their ranks when the group has a rank query, indexes b of the
        blocks without a valid entry). The loop over the blocks runs in C
        (`_kernels.text_gather`)."""
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = {}
            self._group_bytes[key] = 0
        else:
            self._groups.move_to_end(key)
        ranked = key[2] is not None
        pos, ranks, missing = _kernels.text_gather(
            group,
            np.ascontiguousarray(cells, dtype=np.int64),
            np.ascontiguousarray(versions, dtype=np.int64),
            np.ascontiguousarray(starts, dtype=np.int64),
            ranked,
        )
        self.hits += len(cells) - len(missing)
        self.misses += len(missing)
        return (
            np.frombuffer(pos, dtype=np.int64),
            None if ranks is None else np.frombuffer(ranks, dtype=np.float32),
            missing,
        )

    def store(
        self,
        key: GroupKey,
        cell: int,
        version: int,
        idx: npt.NDArray[Any],
        ranks: npt.NDArray[Any] | None = None,
    ) -> None:
        """Keep the matches of group `key` in block (cell, version): `idx` the matching
        records' positions in the block, `ranks` their ranks (given exactly when the
        group has a rank query). Replaces the cell's previous entry."""
        if (ranks is None) != (key[2] is None):
            raise ValueError("ranks go with a rank query")
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = {}
            self._group_bytes[key] = 0
        entry: Entry = (
            version,
            idx.astype(np.int32),
            None if ranks is None else ranks.astype(np.float32),
        )
        size = _ENTRY_OVERHEAD + entry[1].nbytes + (0 if entry[2] is None else entry[2].nbytes)
        old = group.get(cell)
        if old is not None:
            size -= _ENTRY_OVERHEAD + old[1].nbytes + (0 if old[2] is None else old[2].nbytes)
        group[cell] = entry
        self._group_bytes[key] += size
        self.bytes += size
        while self.bytes > self.max_bytes and len(self._groups) > 1:
            gone, _ = self._groups.popitem(last=False)
            self.bytes -= self._group_bytes.pop(gone)

    def clear(self) -> None:
        """Drop every entry."""
        self._groups.clear()
        self._group_bytes.clear()
        self.bytes = 0
