"""The block directory: which facet blocks exist and in which version, kept in step with
PostgreSQL by asking only for the blocks written since the previous check.

A search process keeps the facet blocks it read (`blocks`), by cell and version.
To use a copy it must know that the block was not re-packed since. Asking PostgreSQL for
the (cell, version) of every block of a query's cells costs one index probe per cell
range and a row per block (~600 at 50 km around Paris). Instead, each process keeps a
directory of every block of a family, (cell, version), and asks for the blocks written
since its previous check, which is usually none:

- Every block records the transaction that last wrote it (`xid`, migration 0010). A check
  answers with the `xmin` of its own snapshot, the horizon: every transaction below it
  had ended when the check ran, so its writes were visible to that check (or it was
  aborted). A block re-packed by a transaction that a check did not see therefore has an
  `xid` at or above that check's horizon, and the next check, `xid >= horizon`, returns
  it (with a few already seen, whose version is unchanged). PostgreSQL's own visibility
  rule (transaction ids below a snapshot's `xmin` are finished) is the whole argument;
  `version` alone would not do, as it is taken at write time, not at commit.
- A cell left without rows keeps an empty block (`n = 0`), so a check sees it go.
- The answer also carries the table's `relfilenode`: a reindex swaps the table for
  another (its rows were written by transactions older than the horizon), and TRUNCATE
  gives it a new file. When it changes, the directory is read again whole.

A check is one scalar subquery (`sync_sql`): the engine adds it to the statement that
reads a query's page, so a query on current copies costs one statement; when the check
shows that a block of the query's cells changed, the engine computes the query again
(`block_path`).

Answer layout (one `bytea`, big-endian): horizon int8, relfilenode int8, then per block
cell int4, version int8, n int4.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from search.engines.postgres.blocks import CellRanges

_HEAD = np.dtype([("horizon", ">i8"), ("filenode", ">i8")])
_ENTRY = np.dtype([("cell", ">i4"), ("version", ">i8"), ("n", ">i4")])
_NO_CELLS = np.empty(0, dtype=np.int64)


def sync_sql(family: str, param: str = "sync_horizon") -> str:
    """A scalar subquery (SQL) answering a check of `family`'s blocks: the layout of the
    module docstring, with the blocks whose `xid` is at least the parameter `param` (a
    transaction id as text; '0' lists every block). NULL when the table was replaced as
    the statement began: the table's name is read when the statement is parsed, and the
    relfilenode of a table dropped since is NULL; ask again."""
    table = f"{family}_facet_blocks"
    return (
        "(SELECT int8send(pg_snapshot_xmin(pg_current_snapshot())::text::bigint)"
        f" || int8send(pg_relation_filenode('{table}')::bigint)"
        " || coalesce((SELECT string_agg(int4send(cell) || int8send(version) || int4send(n),"
        f" ''::bytea) FROM {table} WHERE xid >= %({param})s::text::xid8), ''::bytea))"
    )


class TableReplaced(Exception):
    """The blocks table is another one than the directory was read from (a reindex swap,
    TRUNCATE): read the directory again whole."""


class BlockDirectory:
    """(cell, version) of every non-empty block of one family, sorted by cell, as of the
    last check; `horizon` is the transaction id to ask from next (`sync_sql`). Also the
    copies of blocks this process holds, aligned on `cells` (a query's blocks are a few
    runs of positions, read without hashing a cell id: `_kernels.gather`): `copies`
    (packed records, None for none), `avails` (availability entries, b"" for none),
    `items` (the records' list items, `blocks.block_rows_sql`; b"" for none), the
    version of the copy held (`held`, -1 for none), its record count (`count`) and
    whether it has `others` entries (`has_others`); and `others` (cell ->
    `languages_other` entries, blocks that have some)."""

    def __init__(self) -> None:
        self.filenode: int | None = None  # None: never read
        self.horizon = 0
        self.cells: npt.NDArray[np.int64] = _NO_CELLS
        self.versions: npt.NDArray[np.int64] = _NO_CELLS
        self.others: dict[int, list[str]] = {}
        self.nbytes = 0  # of the copies
        # bumped whenever a version in the directory changes
        self.generation = 0
        self._aligned(0)

    def _aligned(self, n: int) -> None:
        self.held = np.full(n, -1, dtype=np.int64)
        self.count = np.zeros(n, dtype=np.int64)
        self.has_others = np.zeros(n, dtype=bool)
        self.copies: list[bytes | None] = [None] * n
        self.avails: list[bytes] = [b""] * n
        self.items: list[bytes] = [b""] * n

    def hold(
        self,
        cell: int,
        version: int,
        records: bytes,
        n: int,
        others: list[str] | None,
        avail: bytes = b"",
        items: bytes = b"",
    ) -> None:
        """Keep the copy of `cell`'s block read in `version`, unless the directory lists
        the cell no more or in a newer version (a concurrent check ran since the copy was
        read). The directory takes a newer version: the re-packs of one cell are
        serialized by its lock and take their version under it, so for one cell a larger
        version is a later commit."""
        i = int(np.searchsorted(self.cells, cell))
        if i == self.cells.size or self.cells[i] != cell or self.versions[i] > version:
            return
        self._forget(i, cell)
        self.nbytes += len(records) + len(avail) + len(items)
        self.copies[i], self.avails[i], self.items[i] = records, avail, items
        if others:
            self.others[cell] = others
        if self.versions[i] != version:
            self.generation += 1
        self.versions[i] = self.held[i] = version
        self.count[i] = n
        self.has_others[i] = bool(others)

    def _forget(self, i: int, cell: int) -> None:
        """Forget the copy at position `i` (of `cell`)."""
        self.nbytes -= len(self.copies[i] or b"") + len(self.avails[i]) + len(self.items[i])
        self.copies[i], self.avails[i], self.items[i] = None, b"", b""
        self.others.pop(cell, None)
        self.held[i], self.has_others[i] = -1, False

    def items_of(
        self, cells: npt.NDArray[np.int64], versions: npt.NDArray[np.int64]
    ) -> list[bytes] | None:
        """The list items held for each block (`cells[k]` in `versions[k]`), or None
        unless every one of them is held in that version."""
        at = np.searchsorted(self.cells, cells)
        if at.size and int(at.max()) >= self.cells.size:
            return None
        if not (np.array_equal(self.cells[at], cells) and np.array_equal(self.held[at], versions)):
            return None
        return [self.items[i] for i in at.tolist()]

    def held_copies(self) -> dict[int, bytes]:
        """{cell: packed records} of the copies held (for tests and inspection)."""
        return {
            c: b for c, b in zip(self.cells.tolist(), self.copies, strict=True) if b is not None
        }

    def drop_copies(self) -> None:
        """Forget every copy (memory)."""
        self.others.clear()
        self.nbytes = 0
        self._aligned(self.cells.size)

    @property
    def loaded(self) -> bool:
        """Whether the directory was read whole at least once."""
        return self.filenode is not None

    def apply(self, answer: bytes, *, whole: bool) -> npt.NDArray[np.int64]:
        """Apply a check's `answer`; `whole` when it was asked from horizon 0 (it lists
        every block). Returns the cells whose block appeared, changed version or emptied
        (every cell before and after, for a whole answer). Raises `TableReplaced` when a
        partial answer comes from another table."""
        head = np.frombuffer(answer, dtype=_HEAD, count=1)[0]
        entries = np.frombuffer(answer, dtype=_ENTRY, offset=_HEAD.itemsize)
        horizon, filenode = int(head["horizon"]), int(head["filenode"])
        cells = entries["cell"].astype(np.int64)
        versions = entries["version"].astype(np.int64)
        filled = entries["n"] > 0
        if whole:
            before = self.cells
            order = np.argsort(cells[filled], kind="stable")
            self.cells, self.versions = cells[filled][order], versions[filled][order]
            self.filenode, self.horizon = filenode, horizon
            self.generation += 1
            self.drop_copies()
            return np.union1d(before, self.cells)
        if filenode != self.filenode:
            was, self.filenode = self.filenode, None
            raise TableReplaced(f"relfilenode {was} -> {filenode}")
        self.horizon = horizon
        if not cells.size:
            return _NO_CELLS
        at = np.searchsorted(self.cells, cells)
        held = at < self.cells.size
        at_c = np.where(held, at, 0)
        held &= self.cells[at_c] == cells if self.cells.size else False
        same = held & filled & (self.versions[at_c] == versions if self.cells.size else False)
        # a block listed empty that the directory does not hold changes nothing
        changed = ~same & (held | filled)
        if not changed.any():
            return _NO_CELLS
        moved = cells[changed]
        self.generation += 1
        # a new version of a listed block: in place, its copy forgotten
        bumped = changed & held & filled
        for i, cell in zip(at_c[bumped].tolist(), cells[bumped].tolist(), strict=True):
            self._forget(i, cell)
        self.versions[at_c[bumped]] = versions[bumped]
        gone, add = changed & held & ~filled, changed & ~held & filled
        if not (gone.any() or add.any()):
            return moved
        keep = ~np.isin(self.cells, cells[gone], assume_unique=True)
        for i, cell in zip(at_c[gone].tolist(), cells[gone].tolist(), strict=True):
            self._forget(i, cell)
        n_add = int(add.sum())
        order = np.argsort(np.concatenate((self.cells[keep], cells[add])), kind="stable")

        def merged(kept: npt.NDArray[Any], added: npt.NDArray[Any]) -> npt.NDArray[Any]:
            return np.concatenate((kept[keep], added))[order]

        self.cells = merged(self.cells, cells[add])
        self.versions = merged(self.versions, versions[add])
        self.held = merged(self.held, np.full(n_add, -1, dtype=np.int64))
        self.count = merged(self.count, np.zeros(n_add, dtype=np.int64))
        self.has_others = merged(self.has_others, np.zeros(n_add, dtype=bool))
        kept = np.flatnonzero(keep).tolist()
        copies: list[bytes | None] = [self.copies[i] for i in kept] + [None] * n_add
        avails = [self.avails[i] for i in kept] + [b""] * n_add
        items = [self.items[i] for i in kept] + [b""] * n_add
        at = order.tolist()
        self.copies = [copies[i] for i in at]
        self.avails = [avails[i] for i in at]
        self.items = [items[i] for i in at]
        return moved

    def lookup(self, ranges: CellRanges) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """(indexes in `cells`, edge flags) of the blocks in `ranges`, in cell order."""
        first = np.searchsorted(self.cells, ranges.lo, side="left")
        count = np.searchsorted(self.cells, ranges.hi, side="right") - first
        # the ranges are sorted and disjoint: the indexes come out in cell order
        idx = np.arange(int(count.sum())) + np.repeat(first - (np.cumsum(count) - count), count)
        return idx, np.repeat(ranges.edge, count)

    def current(
        self,
        ranges: CellRanges,
        cells: npt.NDArray[np.int64],
        versions: npt.NDArray[np.int64],
        generation: int | None = None,
    ) -> bool:
        """Whether the blocks of `ranges` are exactly `cells` in `versions` (what a query
        computed on) as of the last check; `generation`: the directory's when it listed
        exactly those (None if unknown), which spares the comparison while unchanged."""
        if generation == self.generation:
            return True
        idx, _ = self.lookup(ranges)
        return bool(
            np.array_equal(self.cells[idx], cells) and np.array_equal(self.versions[idx], versions)
        )
