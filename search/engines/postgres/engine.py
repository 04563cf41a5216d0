"""The PostgreSQL search engine: `SearchEngine` over `tutor_documents` /
`coach_documents` on a psycopg 3 async connection pool, by two query paths.

- the block path (`block_path`): the facet pass, the page and the map on the facet
  blocks this process holds (`blocks`), checked against the block directory
  (`block_sync`, `block_watch`);
- the SQL path (`sql_path`): the same answers from SQL statements, where the blocks
  cannot answer (a radius box that wraps, a map with a radius or a text filter, a
  relevance sort without a text query) and for `PostgresEngine(blocks=False)`.

Both paths return the same answers (tests compare them); this class builds the query's
plan (`plan.QueryPlan`), chooses the path, and computes a list query again when a block
it read changed before its page was read.

Plans: statements are never prepared server-side (`prepare_threshold=None`) and sessions
run with `plan_cache_mode = force_custom_plan`, so every query is planned with its actual
values: a generic plan of the radius query drops the KNN/GiST order and is an order of
magnitude slower, while planning costs a fraction of a millisecond. JIT is off (it costs
milliseconds on these short queries).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool

from search import cursor as cursors
from search.engines.postgres import block_path, sql_path
from search.engines.postgres.block_path import BlockPage, BlockPath
from search.engines.postgres.block_watch import BlockWatch
from search.engines.postgres.plan import (
    NAME,
    Facets,
    PassState,
    QueryPlan,
    Vocabulary,
    radius_filter,
)
from search.geo import MAX_POINTS, POINTS_ZOOM, cell_deg
from search.schemas import (
    CoachQuery,
    CoachResults,
    MapResults,
    TutorMapQuery,
    TutorQuery,
    TutorResults,
    normalized,
)

# Computations of one list query on the blocks held, each checked by its page statement
# (`block_sync`); the last one checks the blocks first.
_SYNC_TRIES = 3


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # uuids come back as their text (what the responses and cursors hold): psycopg's
    # default builds a `uuid.UUID` per value, which then has to be printed again.
    conn.adapters.register_loader("uuid", TextLoader)
    await conn.execute(
        "SET jit = off; SET plan_cache_mode = force_custom_plan; "
        "SET max_parallel_workers_per_gather = 0"
    )


class PostgresEngine:
    """`SearchEngine` on PostgreSQL. `pool` is an open `AsyncConnectionPool`."""

    name = NAME

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        blocks: bool = True,
        watch: BlockWatch | None = None,
    ) -> None:
        """`blocks`: answer on the facet blocks where they can (the default); False keeps
        every query on the SQL path (tests and A/B benchmarks compare the two). `watch`:
        says when the block directory must be checked (`block_watch`, started by the
        caller, closed by `close`); None checks it on every query."""
        self.pool = pool
        self.blocks = blocks
        self.block_path = BlockPath(watch)
        self.vocabulary = Vocabulary()
        # list queries computed again because a block they read changed before their page
        self.recomputed = 0

    @property
    def watch(self) -> BlockWatch | None:
        """The block watch (None: the block directory is checked on every query)."""
        return self.block_path.watch

    @watch.setter
    def watch(self, watch: BlockWatch | None) -> None:
        self.block_path.watch = watch

    @property
    def directory_checks(self) -> int:
        """Checks of the block directory run so far (for tests and tools)."""
        return self.block_path.directory_checks

    @classmethod
    async def open(
        cls,
        conninfo: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        blocks: bool = True,
        recheck_s: float = 1.0,
    ) -> PostgresEngine:
        """Open a pool on `conninfo` (libpq URL) and return the engine (`blocks`: see
        `__init__`). `recheck_s` > 0: a `BlockWatch` on `conninfo` (one LISTEN
        connection) with that staleness bound in seconds; 0: check the block directory
        on every query."""
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, "prepare_threshold": None},
            configure=_configure,
            open=False,
        )
        await pool.open(wait=True, timeout=10)
        watch = None
        if recheck_s > 0 and blocks:  # the SQL path holds no blocks to check
            watch = BlockWatch(conninfo, recheck_s=recheck_s)
            watch.start()
        return cls(pool, blocks=blocks, watch=watch)

    async def close(self) -> None:
        """Stop the block watch and close the pool."""
        if self.watch is not None:
            await self.watch.close()
        await self.pool.close()

    # ------------------------------------------------------------------ list queries

    async def _listing(
        self,
        q: TutorQuery | CoachQuery,
        table: str,
        catalogue_col: str,
        catalogue: tuple[str, ...],
        columns: str,
        key: list[Any] | None,
        extra: str = "",
    ) -> tuple[Facets, list[tuple[Any, ...]] | BlockPage]:
        """((facets, total), page: `limit + 1` SQL rows, or a `BlockPage`) of a list query
        on `table`: plan, facet pass, page, each on the blocks where they can answer,
        else in SQL. Computed on the blocks held, checked with the page
        (`BlockPath.check`) and computed again while a block it read changed, up to
        `_SYNC_TRIES` times, the last one checking the block directory first."""
        family = "tutor" if table.startswith("tutor") else "coach"
        for attempt in range(_SYNC_TRIES):
            state = PassState(sync_first=attempt == _SYNC_TRIES - 1)
            async with self.pool.connection() as conn:
                plan = await self._plan(conn, q, catalogue_col, catalogue)
                facets = None
                if self.blocks:
                    facets = await self.block_path.facet_pass(
                        conn, self.vocabulary, table, q, plan, state, catalogue, q.language
                    )
                if facets is None:
                    facets = await sql_path.facet_pass(
                        conn, self.vocabulary, table, plan, state, catalogue, q.language
                    )
                page: list[tuple[Any, ...]] | BlockPage | None = None
                if block_path.pages(state, plan, q.sort):
                    page = await self.block_path.page(
                        conn, family, plan, state, q.sort, q.limit + 1, key
                    )
                if page is None:
                    page = await sql_path.page(
                        conn, table, columns, plan, state, q.sort, q.limit + 1, key, extra,
                        facets[1],
                    )  # fmt: skip
                if state.check is not None:  # a page that did not carry the check
                    await self.block_path.check(conn, state, None)
            if not state.stale:
                return facets, page
            self.recomputed += 1
        raise AssertionError("the last try checks the directory first: never stale")

    async def _plan(
        self,
        conn: psycopg.AsyncConnection[Any],
        q: TutorQuery | TutorMapQuery | CoachQuery,
        catalogue_col: str,
        catalogue: tuple[str, ...],
    ) -> QueryPlan:
        """The plan of `q`: the common filters, then the tutors' radius or the coaches'
        kinds."""
        plan = await self.vocabulary.plan(conn, q, catalogue_col, catalogue)
        if isinstance(q, CoachQuery):
            if q.kind:
                plan.params["kinds"] = list(q.kind)
                plan.base.append("kind = ANY(%(kinds)s::text[])")
        elif q.lat is not None and q.lng is not None and q.radius_km is not None:
            plan.add_radius(radius_filter(q.lat, q.lng, q.radius_km))
        return plan

    async def search_tutors(self, q: TutorQuery) -> TutorResults:
        """See `SearchEngine.search_tutors`. Distances are geodesic on the WGS84 spheroid
        (PostGIS geography), `radius_km` inclusive."""
        fp = cursors.fingerprint(normalized(q, exclude={"limit", "cursor"}))
        key = cursors.decode(q.cursor, q.sort, fp) if q.cursor else None
        has_point = q.lat is not None and q.lng is not None and q.radius_km is not None
        extra = sql_path.PAGE_DISTANCE if has_point and q.sort != "distance" else ""
        (facets, total), rows = await self._listing(
            q, "tutor_documents", "subjects", q.subject, sql_path.TUTOR_COLUMNS, key, extra
        )
        if isinstance(rows, BlockPage):
            return block_path.results(q, fp, rows, facets, total, tutor=True)
        return sql_path.tutor_results(q, fp, rows, facets, total, distances=bool(extra))

    async def search_coaches(self, q: CoachQuery) -> CoachResults:
        """See `SearchEngine.search_coaches`."""
        fp = cursors.fingerprint(normalized(q, exclude={"limit", "cursor"}))
        key = cursors.decode(q.cursor, q.sort, fp) if q.cursor else None
        (facets, total), rows = await self._listing(
            q, "coach_documents", "expertises", q.expertise, sql_path.COACH_COLUMNS, key
        )
        if isinstance(rows, BlockPage):
            return block_path.results(q, fp, rows, facets, total, tutor=False)
        return sql_path.coach_results(q, fp, rows, facets, total)

    # ------------------------------------------------------------------ the map

    async def tutor_map(self, q: TutorMapQuery) -> MapResults:
        """See `SearchEngine.tutor_map`. Points mode (zoom ≥ `POINTS_ZOOM`) returns the
        best-rated `MAX_POINTS` tutors of the viewport; clusters group a regular
        lng/lat grid of `cell_deg(zoom)` degrees (4 cells per web-map tile width). The
        blocks answer unless the query has a radius or a text filter."""
        async with self.pool.connection() as conn:
            plan = await self._plan(conn, q, "subjects", q.subject)
            plan.set_viewport(q.bbox)
            on_blocks = self.blocks and not plan.documents_only and plan.radius is None
            if q.zoom >= POINTS_ZOOM:
                answer = None
                if on_blocks:
                    answer = await self.block_path.points(conn, q, plan, MAX_POINTS)
                if answer is not None:
                    return MapResults(
                        mode="points",
                        clusters=[],
                        points_json=answer[0],
                        total=answer[1],
                        engine=NAME,
                    )
                points, total = await sql_path.map_points(conn, plan, MAX_POINTS)
                return MapResults(
                    mode="points", clusters=[], points=points, total=total, engine=NAME
                )
            cell = cell_deg(q.zoom)
            if on_blocks:
                grouped = await self.block_path.clusters(conn, q, plan, cell)
            else:
                grouped = await sql_path.map_clusters(conn, plan, cell)
        clusters = [
            {
                "count": r[0],
                # avg() may land a few ulps outside [min, max]; a centroid stays inside its bounds
                "centroid": {
                    "lat": min(max(round(r[1], 6), r[3]), r[5]),
                    "lng": min(max(round(r[2], 6), r[4]), r[6]),
                },
                "bounds": {"min_lat": r[3], "min_lng": r[4], "max_lat": r[5], "max_lng": r[6]},
            }
            for r in grouped
        ]
        return MapResults(
            mode="clusters",
            clusters=clusters,
            points=[],
            total=sum(c["count"] for c in clusters),
            engine=NAME,
        )
