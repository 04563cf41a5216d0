"""The block path of the PostgreSQL engine: the facet pass, the page and the map computed
on the facet blocks (`blocks`) this process holds.

The blocks are listed by the process's block directory (`block_sync`) and the page is
picked on their records too: its items joined from the blocks' rendered items
(`BlockPage`), its WGS84 distances computed in C as PostGIS computes them
(`Blocks.st_distance`). The directory is checked when the process's block watch says a
check is due (`block_watch`: after a write's notification, at least every second, on
every query inside `fresh_reads()` or while not listening), and the check rides on one
light statement: a list query on current copies runs no statement at all, and one whose
blocks changed meanwhile is computed again (`PostgresEngine` runs the attempts).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import psycopg

from search import cursor as cursors
from search.engine import FRESH
from search.engines.postgres import _kernels
from search.engines.postgres.block_sync import BlockDirectory, TableReplaced, sync_sql
from search.engines.postgres.block_watch import BlockWatch, Token
from search.engines.postgres.blocks import (
    ALL_CELLS,
    BOX_MARGIN,
    CELL_DEG,
    COLUMN,
    Blocks,
    CellRanges,
    Counts,
    Filters,
    bbox_cover,
    radius_cover,
    window_bounds,
)
from search.engines.postgres.plan import (
    NAME,
    POINT,
    AnyQuery,
    Bits,
    DirectoryCheck,
    Facets,
    PassState,
    QueryPlan,
    Vocabulary,
)
from search.engines.postgres.text_cache import TextMatchCache
from search.schemas import CoachQuery, TutorMapQuery, TutorQuery, TutorResults

# Packed facet blocks kept per process and family; over it, start over (a 250k-provider
# marketplace's tutor blocks hold about 120 MB of records, availability entries and
# list items).
_BLOCK_CACHE_BYTES = 256 * 1024 * 1024
# Matching the documents of a few cells costs about this many rows of a documents pass
# over the box (a cell's rows come through the GiST index or by id, dearer per row than
# a sequential pass over the box): the blocks missing from the text match cache are
# matched on their own while they hold fewer records than the fetched blocks / this.
_MISS_COST = 1.5


def _array(values: Sequence[Any]) -> str:
    """An array literal of uuids or integers (`str` of each): psycopg dumps a list
    element by element, much slower for thousands of values."""
    return "{" + ",".join([str(v) for v in values]) + "}"


def _float_array(values: npt.NDArray[Any]) -> str:
    """A float8[] literal of `values`, exact (`repr` round-trips a float64)."""
    return "{" + ",".join([repr(v) for v in values.astype(float).tolist()]) + "}"


def _filters(q: AnyQuery, plan: QueryPlan) -> Filters:
    """The filters the blocks answer, of `q` and its plan's masks."""
    return Filters(
        min_price=q.min_price,
        max_price=q.max_price,
        currency=q.currency,
        min_rating=q.min_rating,
        mode=q.mode,
        kinds=tuple(getattr(q, "kind", ())),
        cat_mask=plan.cat_mask,
        lang_mask=plan.lang_mask,
        lang_other=plan.lang_other,
        lang_filtered=bool(q.language),
    )


def _in_window(
    blocks: Blocks, q: AnyQuery, keep: npt.NDArray[np.bool_] | None
) -> npt.NDArray[np.bool_]:
    """`keep` (None: every record) narrowed to the records with an open slot overlapping
    `q`'s availability window (the blocks' availability entries, `Blocks.available`)."""
    matched = blocks.available(*window_bounds(q.available_from, q.available_to))
    return matched if keep is None else keep & matched


class BlockPage:
    """A list page picked on the facet blocks (`BlockPath.page`): record indexes in page
    order (up to `limit + 1`), the list items of each one's block (`items`, as held when
    the page was picked), their WGS84 distances in metres (None when the query has no
    point), the sort."""

    __slots__ = ("blocks", "dist", "idx", "items", "sort")

    def __init__(
        self,
        blocks: Blocks,
        idx: list[int],
        items: list[bytes],
        dist: list[float] | None,
        sort: str,
    ) -> None:
        self.blocks, self.idx, self.items, self.dist, self.sort = blocks, idx, items, dist, sort

    def items_json(self, n: int, tutor: bool) -> bytes:
        """The JSON array of the first `n` items, a tutor's with its `distance_km` (km,
        rounded to the metre as the SQL page's item is, null without a point)."""
        if not tutor:
            tails = [b"}"] * min(n, len(self.idx))
        elif self.dist is None:
            tails = [b',"distance_km":null}'] * min(n, len(self.idx))
        else:
            tails = [
                b',"distance_km":' + orjson.dumps(round(d / 1000.0, 3)) + b"}"
                for d in self.dist[:n]
            ]
        return self.blocks.items_json(self.idx[:n], tails, self.items[:n])

    def cursor_key(self, k: int) -> list[Any]:
        """The keyset [sort value, provider id] of the page's record `k`, as the SQL
        page's cursor holds it: rating_sort as numeric text, price_minor, the float4
        rank (its shortest decimal), the distance in metres."""
        i = self.idx[k]
        rec = self.blocks.records[i]
        value: Any
        if self.sort == "rating":
            r = max(int(rec["rank"]), 0)
            value = f"{r // 100}.{r % 100:02d}"
        elif self.sort == "price":
            value = int(rec["price"])
        elif self.sort == "relevance":
            # the float4's shortest decimal text, read as a float (as psycopg reads it)
            assert self.blocks.rank is not None
            value = float(str(np.float32(self.blocks.rank[i])))
        else:
            assert self.dist is not None
            value = self.dist[k]
        return [value, str(uuid.UUID(self.blocks.ids([i])[0]))]


def results(
    q: TutorQuery | CoachQuery,
    fp: str,
    page: BlockPage,
    facets: dict[str, Any],
    total: int,
    *,
    tutor: bool,
) -> TutorResults:
    """The results of a list query paged on the blocks: the items rendered there, the
    next page's cursor unless it is the last (`fp`: the query's fingerprint)."""
    next_cursor = None
    if len(page.idx) > q.limit:
        next_cursor = cursors.encode(q.sort, fp, page.cursor_key(q.limit - 1))
    return TutorResults(
        items_json=page.items_json(q.limit, tutor=tutor),
        facets=facets,
        total=total,
        next_cursor=next_cursor,
        engine=NAME,
    )


def pages(state: PassState, plan: QueryPlan, sort: str) -> bool:
    """Whether the page comes from the blocks (`BlockPath.page`): the facet pass ran
    there, and the sort is rating, price, relevance with a text query (the ranks), or
    distance from a point."""
    if state.blocks is None:
        return False
    if sort == "relevance":
        return state.blocks.rank is not None
    return sort in ("rating", "price") or (sort == "distance" and plan.radius is not None)


class BlockPath:
    """The facet blocks this process holds and the queries answered on them. `watch`:
    says when the block directory must be checked (None: on every query)."""

    def __init__(self, watch: BlockWatch | None) -> None:
        self.watch = watch
        # checks of the block directory run (`sync`, `check`), for tests and tools
        self.directory_checks = 0
        # family -> (cell, version) of every block, and the copies held (`block_sync`)
        self.directory: dict[str, BlockDirectory] = {}
        # family -> every block of it, decoded, as of `Blocks.generation` (coach queries
        # read them all: decoded once per change, not per query)
        self.whole: dict[str, Blocks] = {}
        self.text_cache = TextMatchCache()

    # ------------------------------------------------------------------ the directory

    def _due(self, family: str) -> bool:
        """Whether a query must check `family`'s block directory before it answers."""
        return self.watch is None or FRESH.get() or self.watch.due(family)

    def _token(self, family: str) -> Token | None:
        """The watch's token for a check of `family` that begins now (`BlockWatch.token`)."""
        return self.watch.token(family) if self.watch is not None else None

    def _checked(self, family: str, token: Token | None) -> None:
        self.directory_checks += 1
        if self.watch is not None and token is not None:
            self.watch.checked(family, token)

    async def sync(self, conn: psycopg.AsyncConnection[Any], family: str) -> npt.NDArray[np.int64]:
        """Check `family`'s block directory (`block_sync`), reading it whole the first
        time and when its table was replaced; returns the cells whose block appeared,
        changed or emptied since the previous check."""
        directory = self.directory.setdefault(family, BlockDirectory())
        token = self._token(family)
        while True:
            whole = not directory.loaded
            cur = await conn.cursor(binary=True).execute(
                "SELECT " + sync_sql(family),
                {"sync_horizon": "0" if whole else str(directory.horizon)},
            )
            row = await cur.fetchone()
            assert row is not None  # a scalar subquery: always one row
            if row[0] is None:  # the table was replaced as the statement began: ask again
                continue
            try:
                changed = directory.apply(bytes(row[0]), whole=whole)
            except TableReplaced:
                continue  # read it whole
            self._checked(family, token)
            return changed

    async def check(
        self, conn: psycopg.AsyncConnection[Any], state: PassState, answer: bytes | None
    ) -> None:
        """Apply the directory check that came with a page (`answer`; None when the page
        had no row, then one is run now) and set `state.stale` unless the blocks of the
        query's cells are still those it computed on."""
        owed = state.check
        if owed is None:
            return
        state.check = None
        directory = self.directory[owed.family]
        applied = False
        if answer is not None:
            try:
                directory.apply(answer, whole=False)
                applied = True
                self._checked(owed.family, owed.token)
            except TableReplaced:
                pass
        if not applied:
            await self.sync(conn, owed.family)
        blocks = owed.blocks
        state.stale = not directory.current(
            owed.ranges, blocks.cells, blocks.versions, blocks.generation
        )

    async def _fetch(
        self,
        conn: psycopg.AsyncConnection[Any],
        family: str,
        ranges: CellRanges,
        sync_first: bool = True,
        avail: bool = False,
    ) -> Blocks:
        """The blocks of the cell id ranges (lo, hi, edge), with their availability
        entries when `avail` (`Blocks.available`). Which blocks exist, in which
        version, comes from the block directory (`block_sync`), checked first when
        `sync_first` and a check is due (`_due`; else the caller checks it with its page
        when one is due, and computes again when the blocks of `ranges` are no longer
        those of the returned `Blocks`, whose `cells` and `versions` say which they
        are). The directory holds copies of the blocks read (packed), by version; one
        statement reads the blocks whose copy is missing or older, if any. Each block is
        read whole in one snapshot; one re-packed since the check is used in its newer
        version, one emptied since is empty."""
        directory = self.directory.get(family)
        if directory is None or not directory.loaded or (sync_first and self._due(family)):
            await self.sync(conn, family)
            directory = self.directory[family]
        whole = ranges is ALL_CELLS
        memo = self.whole.get(family) if whole else None
        if (
            memo is not None
            and memo.generation == directory.generation
            and (memo.avail is not None or not avail)
        ):
            return memo.shared()  # every block, none changed since: decoded already
        idx, edge = directory.lookup(ranges)
        cells, versions = directory.cells[idx], directory.versions[idx]
        counts = directory.count[idx]
        missing = directory.held[idx] != versions
        any_missing = bool(missing.any())
        rows: list[bytes] | bytes
        listed: list[bytes] = []  # per block, when some must be read
        listed_avail: list[bytes] = []
        parts: list[bytes] | tuple[bytes, npt.NDArray[np.int64]] | None = None
        if any_missing:
            copies, avails = directory.copies, directory.avails
            at_list, missing_list = idx.tolist(), missing.tolist()
            rows = listed = [
                (b"" if m else copies[i]) or b"" for i, m in zip(at_list, missing_list, strict=True)
            ]
            if avail:  # a missing block's entries come with it below
                parts = listed_avail = [
                    b"" if m else avails[i] for i, m in zip(at_list, missing_list, strict=True)
                ]
        else:  # every copy held: joined in C, by position, in cell order
            pos = np.ascontiguousarray(idx, dtype=np.int64)
            rows = _kernels.gather(directory.copies, pos, None)
            if avail:
                lengths = np.empty(pos.size, dtype=np.int64)
                parts = (_kernels.gather(directory.avails, pos, lengths), lengths)
        others = {
            b: directory.others[int(cells[b])]
            for b in np.flatnonzero(directory.has_others[idx] & ~missing).tolist()
        }
        if any_missing:
            at = np.flatnonzero(missing)
            cur = await conn.cursor(binary=True).execute(
                f"SELECT cell, version, n, rows, others, avail, items FROM {family}_facet_blocks"
                " WHERE cell = ANY (%(cells)s::integer[])",
                {"cells": _array(cells[at].tolist())},
            )
            # the directory may have changed while this statement ran: positions in
            # this query's arrays only, and `hold` finds the cell again
            position = dict(zip(cells[at].tolist(), at.tolist(), strict=True))
            counts[at] = 0  # a block gone (its table replaced since) counts as empty
            for cell, version, n, packed, entries, windows, rendered in await cur.fetchall():
                b = position[cell]
                records = Blocks.check(family, n, bytes(packed))
                listed[b], counts[b], versions[b] = records, n, version
                if entries:
                    others[b] = entries
                if avail:
                    listed_avail[b] = bytes(windows)
                directory.hold(cell, version, records, n, entries, bytes(windows), bytes(rendered))
            if directory.nbytes > _BLOCK_CACHE_BYTES:  # start over rather than track use
                directory.drop_copies()
        blocks = Blocks(family, rows, counts, edge, others, cells, versions, parts)
        if not any_missing:  # read from the directory without a statement in between
            blocks.generation = directory.generation
            if whole:
                self.whole[family] = blocks
                return blocks.shared()
        return blocks

    # ------------------------------------------------------------------ facets

    async def facet_pass(
        self,
        conn: psycopg.AsyncConnection[Any],
        vocabulary: Vocabulary,
        table: str,
        q: TutorQuery | CoachQuery,
        plan: QueryPlan,
        state: PassState,
        selected: tuple[str, ...],
        langs: tuple[str, ...],
    ) -> Facets | None:
        """The facet pass on the facet blocks: the blocks of the cells the radius covers
        (every block without one) in one statement; the records of the cells on its edge
        are tested on the sphere in C, and the few in the thin ring where sphere and
        spheroid disagree by PostGIS (`_ST_DWithin` on the WGS84 spheroid, like the SQL
        pass); the filters and counts run on the records. Sets `state.blocks`,
        `state.hits`, `state.scanned`, and `state.check` when the directory check is
        left to the page. None when the radius box wraps (the SQL pass answers)."""
        family = "tutor" if table.startswith("tutor") else "coach"
        radius = plan.radius
        ranges = ALL_CELLS
        if radius is not None:
            cover = radius_cover(
                radius.lat, radius.lng, radius.radius_in, radius.radius_out, radius.box
            )
            if cover is None:
                return None
            ranges = cover.ranges()
        window = bool(q.available_from or q.available_to)
        blocks = await self._fetch(conn, family, ranges, state.sync_first, window)
        if not state.sync_first and self._due(family):
            state.check = DirectoryCheck(family, ranges, blocks, self._token(family))
        text = None
        if plan.text is not None:
            text = await self._text_matches(
                conn, family, table, blocks, plan, q.sort == "relevance"
            )
        keep = None
        if radius is not None and blocks.edge.any():
            # the spheroid decides the thin ring: Vincenty's distance, and PostGIS (as
            # the SQL pass) within `GEODESIC_MARGIN` of the radius
            keep, ring = blocks.radius_test(
                radius.lat, radius.lng, radius.cos_in, radius.cos_out, radius.radius_m
            )
            await _decide(
                conn, blocks, keep, ring,
                f"_ST_DWithin(ST_SetSRID(ST_MakePoint(x, y), 4326)::geography, {POINT},"
                " %(radius_m)s, true)",
                plan.params,
            )  # fmt: skip
        if text is not None:
            keep = text if keep is None else keep & text
        if window:
            keep = _in_window(blocks, q, keep)
        counts = blocks.count(_filters(q, plan), keep)
        state.scanned = counts.scanned
        state.blocks, state.hits = blocks, counts.hits
        facet = plan.facet
        return await vocabulary.named(
            conn, facet, lambda bits: _arithmetic(bits, counts, facet, selected, langs)
        )

    async def _text_matches(
        self,
        conn: psycopg.AsyncConnection[Any],
        family: str,
        table: str,
        blocks: Blocks,
        plan: QueryPlan,
        ranked: bool,
    ) -> npt.NDArray[np.bool_]:
        """Mask of the `blocks` records whose document matches the text query
        (`plan.text`); with `ranked`, their `ts_rank` goes to `blocks.rank` (NaN
        elsewhere).

        Per block, the matches come from the text match cache (`text_cache`) when it
        holds them for the block's version; the other blocks are matched in one
        statement: on their own when they hold few records (per cell rectangle through
        the GiST index, or by id for the cells without positions), else by one pass over
        the documents of the box holding every fetched cell, which renews every block's
        entry."""
        text = plan.text
        assert text is not None
        p = plan.params
        key = (family, text.match, text.rank if ranked else None)
        pos, pos_rank, missing = self.text_cache.gather(
            key, blocks.cells, blocks.versions, blocks.starts
        )
        n = len(blocks.records)
        found = np.zeros(n, dtype=bool)
        found[pos] = True
        rank = None
        if ranked:
            rank = np.full(n, np.nan)
            rank[pos] = pos_rank
        if missing:
            cells, versions = blocks.cells.tolist(), blocks.versions.tolist()
            starts, counts = blocks.starts.tolist(), blocks.counts.tolist()
            rank_sql = "ts_rank(search_vector, %(tsq)s::tsquery)"
            rank_agg = (
                f"coalesce(string_agg(float4send({rank_sql}), ''::bytea), ''::bytea)"
                if ranked
                else "''::bytea"
            )
            n_missing = sum(counts[b] for b in missing)
            source, args = table, p
            if n_missing * _MISS_COST < n:
                # the documents of the missing cells: by cell rectangle for positioned
                # tutors (GiST, rows stored in spatial order), by id for the others
                # (coaches, tutors without a position: uuid-hashed cells); rectangles
                # overlap by `BOX_MARGIN`, so a document may come twice: DISTINCT ON
                args = dict(p)
                parts = []
                boxed = [b for b in missing if cells[b] >= 0] if family == "tutor" else []
                if boxed:
                    c = np.array([cells[b] for b in boxed], dtype=np.int64)
                    ix, iy = c // COLUMN, c % COLUMN
                    args.update(
                        rx0=_float_array(ix * CELL_DEG - 180.0 - BOX_MARGIN),
                        ry0=_float_array(iy * CELL_DEG - 90.0 - BOX_MARGIN),
                        rx1=_float_array((ix + 1) * CELL_DEG - 180.0 + BOX_MARGIN),
                        ry1=_float_array((iy + 1) * CELL_DEG - 90.0 + BOX_MARGIN),
                    )
                    parts.append(
                        "SELECT d.provider_id, d.search_vector FROM unnest(%(rx0)s::float8[],"
                        " %(ry0)s::float8[], %(rx1)s::float8[], %(ry1)s::float8[]) r(x0, y0, x1, y1)"
                        f" JOIN {table} d ON (d.location::geometry)"
                        " && ST_MakeEnvelope(r.x0, r.y0, r.x1, r.y1, 4326)"
                    )
                by_id = [b for b in missing if not (family == "tutor" and cells[b] >= 0)]
                if by_id:
                    idx = np.concatenate(
                        [np.arange(starts[b], starts[b] + counts[b]) for b in by_id]
                    )
                    args["text_ids"] = blocks.id_literal(idx)
                    parts.append(
                        f"SELECT provider_id, search_vector FROM {table}"
                        " WHERE provider_id = ANY (%(text_ids)s::uuid[])"
                    )
                source = (
                    "(SELECT DISTINCT ON (provider_id) provider_id, search_vector FROM ("
                    + " UNION ALL ".join(parts)
                    + ") u) x"
                )
                where = "true"
            elif plan.radius is None:  # every block: the whole table
                where, missing = "true", list(range(len(cells)))
            else:
                # the box of every fetched cell, so each block's matches come out whole
                ix, iy = blocks.cells // COLUMN, blocks.cells % COLUMN
                args = {
                    **p,
                    "tx0": int(ix.min()) * CELL_DEG - 180.0 - BOX_MARGIN,
                    "ty0": int(iy.min()) * CELL_DEG - 90.0 - BOX_MARGIN,
                    "tx1": (int(ix.max()) + 1) * CELL_DEG - 180.0 + BOX_MARGIN,
                    "ty1": (int(iy.max()) + 1) * CELL_DEG - 90.0 + BOX_MARGIN,
                }
                where = (
                    "(location::geometry) && ST_MakeEnvelope(%(tx0)s, %(ty0)s, %(tx1)s,"
                    " %(ty1)s, 4326)"
                )
                missing = list(range(len(cells)))
            cur = await conn.cursor(binary=True).execute(
                "SELECT coalesce(string_agg(uuid_send(provider_id), ''::bytea), ''::bytea),"
                f" {rank_agg} FROM {source} WHERE {where} AND {text.condition}",
                args,
            )
            row = await cur.fetchone()
            got, got_rank = blocks.lookup(bytes(row[0]), bytes(row[1])) if row else (None, None)
            if got is None:
                got = np.zeros(n, dtype=bool)
            if ranked and got_rank is None:  # no match at all
                got_rank = np.full(n, np.nan)
            for b in missing:
                first = starts[b]
                idx = np.flatnonzero(got[first : first + counts[b]])
                ranks = None if got_rank is None else got_rank[first + idx]
                self.text_cache.store(key, cells[b], versions[b], idx, ranks)
                found[first + idx] = True
                if rank is not None and ranks is not None:
                    rank[first + idx] = ranks
        blocks.rank = rank
        return found

    # ------------------------------------------------------------------ the page

    async def page(
        self,
        conn: psycopg.AsyncConnection[Any],
        family: str,
        plan: QueryPlan,
        state: PassState,
        sort: str,
        limit: int,
        key: Any,
    ) -> BlockPage | None:
        """The page (`limit` records) of a list query whose facet pass ran on the blocks,
        picked there: the rating/price/relevance keyset page (`Blocks.page`), or the
        distance page's candidates on the sphere (`Blocks.nearest`) ordered exactly on
        the spheroid by (distance, id) after the keyset, by the WGS84 distances of the
        page's records (or the candidates) computed in C (`Blocks.st_distance`); the
        directory check the query owes runs now (`_owed_check`). The items are those the
        directory holds for the versions the query computed on, taken before that check
        (it may change the directory). None when the directory holds them no more (its
        copies were dropped, or a block changed while the query awaited): the SQL page
        answers."""
        blocks, hits = state.blocks, state.hits
        assert blocks is not None
        assert hits is not None
        radius = plan.radius
        if sort == "distance":
            assert radius is not None
            after = float(key[0]) if key is not None else None
            idx = blocks.nearest(hits, radius.lat, radius.lng, limit, after)
        else:
            idx = blocks.page(hits, sort, limit, key)
        b, _ = blocks.block_of(idx)
        items = self.directory[family].items_of(blocks.cells[b], blocks.versions[b])
        if items is None:
            return None
        dist = blocks.st_distance(idx, radius.lat, radius.lng) if radius is not None and idx else []
        await self._owed_check(conn, state)
        if sort != "distance":
            return BlockPage(blocks, idx, items, dist or None, sort)
        # uuid order is byte order: the hex ids compare like the uuids
        ranked = sorted(zip(dist, blocks.ids(idx), idx, items, strict=True))
        if key is not None:
            after_key = (float(key[0]), uuid.UUID(str(key[1])).hex)
            ranked = [r for r in ranked if (r[0], r[1]) > after_key]
        ranked = ranked[:limit]
        return BlockPage(
            blocks, [r[2] for r in ranked], [r[3] for r in ranked], [r[0] for r in ranked], sort
        )

    async def _owed_check(self, conn: psycopg.AsyncConnection[Any], state: PassState) -> None:
        """The directory check the query owes (`state.check`), if any, in one light
        statement, applied by `check`."""
        owed = state.check
        if owed is None:
            return
        cur = await conn.execute(
            "SELECT " + sync_sql(owed.family),
            {"sync_horizon": str(self.directory[owed.family].horizon)},
        )
        row = await cur.fetchone()
        assert row is not None  # a scalar subquery: always one row
        # NULL: the blocks table was replaced as the statement began (a reindex's swap: the
        # name was read before the rename, the old table is gone since), then `check`
        # asks again
        await self.check(conn, state, None if row[0] is None else bytes(row[0]))

    # ------------------------------------------------------------------ the map

    async def viewport(
        self, conn: psycopg.AsyncConnection[Any], q: TutorMapQuery, plan: QueryPlan
    ) -> tuple[Blocks, Counts]:
        """(blocks, counts) of a map query from the facet blocks of the viewport's cells:
        the records of the cells on its sides are tested in numpy, those within
        `BOX_MARGIN` of a side by PostGIS (`&&`, like the SQL pass); filters as in the
        facet pass."""
        box = plan.viewport
        assert box is not None
        window = bool(q.available_from or q.available_to)
        blocks = await self._fetch(conn, "tutor", bbox_cover(box).ranges(), avail=window)
        keep = None
        if blocks.edge.any():
            keep, near = blocks.box_test(box)
            await _decide(
                conn, blocks, keep, near,
                "ST_SetSRID(ST_MakePoint(x, y), 4326)"
                " && ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326)",
                plan.params,
            )  # fmt: skip
        if window:
            keep = _in_window(blocks, q, keep)
        return blocks, blocks.count(_filters(q, plan), keep)

    async def points(
        self, conn: psycopg.AsyncConnection[Any], q: TutorMapQuery, plan: QueryPlan, limit: int
    ) -> tuple[bytes, int] | None:
        """(points JSON array, total) of a map query in points mode: the `limit`
        best-rated tutors of the viewport (rating, then id: the SQL order of
        `rating_sort DESC, provider_id`, `Blocks.page`), cut from the list items the
        block directory holds (`Blocks.points_json`). None when it holds them no more
        (its copies were dropped meanwhile): the SQL path answers."""
        blocks, counts = await self.viewport(conn, q, plan)
        assert counts.hits is not None  # always set by `count`
        idx = blocks.page(counts.hits, "rating", limit, None)
        b, _ = blocks.block_of(idx)
        items = self.directory["tutor"].items_of(blocks.cells[b], blocks.versions[b])
        if items is None:
            return None
        return blocks.points_json(idx, items), counts.total

    async def clusters(
        self, conn: psycopg.AsyncConnection[Any], q: TutorMapQuery, plan: QueryPlan, cell: float
    ) -> list[tuple[Any, ...]]:
        """The clusters of a map query in clusters mode, as `sql_path.map_clusters` gives
        them, from the blocks of the viewport (`Blocks.clusters`)."""
        blocks, counts = await self.viewport(conn, q, plan)
        assert counts.hits is not None  # always set by `count`
        return blocks.clusters(counts.hits, cell)


async def _decide(
    conn: psycopg.AsyncConnection[Any],
    blocks: Blocks,
    keep: Any,
    undecided: Any,
    predicate: str,
    params: dict[str, Any],
) -> None:
    """Set `keep[i]` for the records `undecided` (indexes) to what PostgreSQL answers
    for `predicate` (SQL over a record's `x` = lng, `y` = lat, and `params`)."""
    if not undecided.size:
        return
    rec = blocks.records
    cur = await conn.execute(
        f"SELECT array_agg({predicate} ORDER BY i)"
        " FROM unnest(%(xs)s::float8[], %(ys)s::float8[]) WITH ORDINALITY u(x, y, i)",
        {
            **params,
            "xs": _float_array(rec["lng"][undecided]),
            "ys": _float_array(rec["lat"][undecided]),
        },
    )
    row = await cur.fetchone()
    keep[undecided] = row[0] if row else False


def _arithmetic(
    bits: Bits, c: Counts, facet: str, selected: tuple[str, ...], langs: tuple[str, ...]
) -> Facets | None:
    """Facets and total from the block counts (per bit: single-bit masks), None when a
    bit has no name."""
    return bits.facets(
        facet, selected, langs,
        {1 << b: n for b, n in c.cat.items()},
        {1 << b: n for b, n in c.lang.items()},
        c.lang_other, c.rating, c.price,
    )  # fmt: skip
