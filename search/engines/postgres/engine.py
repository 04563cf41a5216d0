"""The PostgreSQL search engine: hand-written SQL over `tutor_documents` /
`coach_documents` on a psycopg 3 async connection pool.

Plans: statements are never prepared server-side (`prepare_threshold=None`) and sessions
run with `plan_cache_mode = force_custom_plan`, so every query is planned with its actual
values. A generic plan of the radius query drops the KNN/GiST shape and was measured 30x
slower; planning costs ~0.2 ms. JIT is off (it costs milliseconds on these short queries).

The facet pass normally runs on the facet blocks (`search.engines.postgres.blocks`) this process holds,
listed by its block directory (`search.engines.postgres.block_sync`), and so does the page: picked on the
records, its items joined from the blocks' rendered items (`_block_page`), its WGS84
distances computed in C as PostGIS computes them (`Blocks.st_distance`). The directory is
checked when the process's block watch says a check is due (`search.engines.postgres.block_watch`: after a
write's notification, at least every second, on every query inside `fresh_reads()` or
while not listening), and the check rides on one light statement: a list query on
current copies runs no statement at all, and one whose blocks changed meanwhile is
computed again. The SQL pass below answers when the blocks cannot (a radius box that
wraps) and for `PostgresEngine(blocks=False)`; it runs two statements on one connection:

- the facet pass: ONE scan of the rows matching every filter except subject/expertise and
  language, grouped on integers (`*_bits`, `language_bits`, `languages_other`,
  `rating_bucket`, `currency`) with count/min/max/sum(price). The disjunctive facet
  arithmetic runs in Python over those groups (a few thousand at most), iterating set
  bits only; the total, rating buckets and price stats come from the groups whose masks
  pass the subject/expertise and language filters. Exact, no approximation.
- the page: keyset on the sort key + id, `limit + 1` rows to know whether a next page
  exists. Distance pages use the GiST KNN order (sphere) to find the `limit + 1` nearest
  candidates, then re-rank exactly on the spheroid inside a radius that provably holds
  every row that could be nearer (sphere and WGS84 distances differ by less than 0.56 %).

Radius test: a box holding the sphere cap of `radius_out` (indexable, a superset), then
sphere distance within `radius_in` (certainly inside) OR the spheroid test with `r` — the
spheroid only decides the thin ring between the two (`sphere_scale`: a quarter of r's
0.6 % at Paris), and the inclusive radius stays exact.
"""

from __future__ import annotations

import math
import re
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import psycopg
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool

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
    EARTH_R,
    WGS84_A,
    WGS84_F,
    Blocks,
    CellRanges,
    Counts,
    Filters,
    bbox_cover,
    radius_cover,
    signed64,
    window_bounds,
)
from search.engines.postgres.text_cache import TextMatchCache
from search.facets import build_facets
from search.schemas import (
    CoachQuery,
    CoachResults,
    MapResults,
    TutorMapQuery,
    TutorQuery,
    TutorResults,
    normalized,
)

NAME = "postgres"
_POINT = "ST_SetSRID(ST_MakePoint(%(lng)s, %(lat)s), 4326)::geography"
_TSQUERY_CACHE_SIZE = 4096
_PREFIX_TERM = re.compile(r"^'([a-z0-9]+)':\*$")
# WGS84 geodesic over great-circle (PostGIS sphere, R = (2a + b) / 3) distance lies in
# [0.99440, 1.00449] anywhere (`sphere_scale` gives tighter bounds per latitude); this
# factor keeps a margin above.
_SPHERE_OUT = 1.006
# A rating/price page comes from the facet rows when the facet pass counted at most this
# many results (see `_page`).
_FACET_PAGE_MAX = 5000
# Packed facet blocks kept per process and family (the 250k-provider benchmark's tutor
# blocks are 12 MB of records, 29 MB of availability entries and 77 MB of list items);
# over it, start over.
_BLOCK_CACHE_BYTES = 256 * 1024 * 1024
_FACET_PAGE_SCAN_MAX = 12000
# Matching the documents of a few cells costs about this many rows of a documents pass
# over the box (a cell's rows through the GiST index ~1.6 µs each, by id ~2.4 µs, a box
# row ~1.1 µs, measured here): the blocks missing from the text match cache are matched
# on their own while they hold fewer records than the fetched blocks / this.
_MISS_COST = 1.5
# Computations of one list query on the blocks held, each checked by its page statement
# (`search.engines.postgres.block_sync`); the last one checks the blocks first.
_SYNC_TRIES = 3
# Exact radius test on a document (geography): certainly inside on the sphere, or inside on
# the spheroid. `_ST_DWithin` is the non-indexable form: the bbox above is the index filter.
_RADIUS_EXACT = (
    f"(_ST_DWithin(location, {_POINT}, %(radius_in)s, false)"
    f" OR _ST_DWithin(location, {_POINT}, %(radius_m)s, true))"
)
_RADIUS_WIDE = (
    "(location::geometry) && ST_MakeEnvelope(%(gx0)s, %(gy0)s, %(gx1)s, %(gy1)s, 4326)"
    f" AND {_RADIUS_EXACT}"
)
# The same on a facet row: the sphere test is a dot product of unit vectors; only the thin
# ring between the two sphere bounds goes to the spheroid.
_DOT = "(ux * %(px)s + uy * %(py)s + uz * %(pz)s)"
_RADIUS_DOT = (
    f"({_DOT} >= %(cos_in)s OR ({_DOT} >= %(cos_out)s"
    f" AND _ST_DWithin(geom::geography, {_POINT}, %(radius_m)s, true)))"
)
_RADIUS_FACETS = (
    f"geom && ST_MakeEnvelope(%(gx0)s, %(gy0)s, %(gx1)s, %(gy1)s, 4326) AND {_RADIUS_DOT}"
)


def _array(values: Sequence[Any]) -> str:
    """An array literal of uuids or integers (`str` of each): psycopg dumps a list
    element by element (~2 µs each)."""
    return "{" + ",".join([str(v) for v in values]) + "}"


def _float_array(values: npt.NDArray[Any]) -> str:
    """A float8[] literal of `values`, exact (`repr` round-trips a float64)."""
    return "{" + ",".join([repr(v) for v in values.astype(float).tolist()]) + "}"


def sphere_scale(lat: float, radius_m: float) -> tuple[float, float]:
    """(lo, hi): bounds of (WGS84 geodesic distance) / (great-circle distance on the
    PostGIS sphere, `EARTH_R`) between (lat, any lng) and any point whose geodesic
    distance from it is at most `radius_m`, or whose sphere distance is at most
    `radius_m` x 1.006 (the same lat/lng read on both surfaces).

    Why (a comparison of Riemannian metrics): in (geodetic latitude phi, longitude) the
    spheroid's line element is ds^2 = M^2 dphi^2 + N^2 cos^2(phi) dlambda^2, with the
    meridional and prime-vertical radii of curvature M = a (1 - e^2) / W^3 and N = a / W,
    W = sqrt(1 - e^2 sin^2 phi); the sphere's is R^2 (dphi^2 + cos^2(phi) dlambda^2).
    Since M <= N, at a point of latitude phi a path element's length ratio lies in
    [M(phi) / R, N(phi) / R]. The geodesic is at most the spheroid length of the great
    circle (ratio <= max N / R along it) and at least `min M / R` times the sphere length
    of itself, which is at least the great-circle distance. Both paths stay within their
    length of the centre, so within (`radius_m` x 1.02 + 2 m) / M(0) radians of its latitude
    (a path's length is at least M(0) times its latitude change); M and N grow with
    |phi|, so the bounds are M at the band's smallest |phi| and N at its largest. At the
    equator and the poles they reach the global [0.99440, 1.00449]; at 49 degrees N
    (Paris) they are [1.0001, 1.0030], a ring a quarter as wide. (M, N: e.g. Torge &
    Müller, "Geodesy", 4th ed., §4.1.)"""
    e2 = WGS84_F * (2.0 - WGS84_F)
    reach = math.degrees((radius_m * 1.02 + 2.0) / (WGS84_A * (1.0 - e2)))
    south, north = lat - reach, lat + reach
    nearest = 0.0 if south <= 0.0 <= north else min(abs(south), abs(north))
    farthest = min(90.0, max(abs(south), abs(north)))
    w_near = math.sqrt(1.0 - e2 * math.sin(math.radians(nearest)) ** 2)
    w_far = math.sqrt(1.0 - e2 * math.sin(math.radians(farthest)) ** 2)
    return WGS84_A * (1.0 - e2) / w_near**3 / EARTH_R, WGS84_A / w_far / EARTH_R


def _radius(s: _Sql, lat: float, lng: float, radius_km: float) -> None:
    """Add the inclusive WGS84 radius filter (both table shapes) to `s`: a record within
    the sphere radius `radius_in` is inside, one beyond `radius_out` outside (bounds of
    `sphere_scale`, with 1 m and 1e-6 of margin for float rounding), and only the ring
    between them needs the spheroid."""
    r = radius_km * 1000.0
    lo, hi = sphere_scale(lat, r)
    r_in = max(0.0, r / hi * (1.0 - 1e-6) - 1.0)
    r_out = r / lo * (1.0 + 1e-6) + 1.0
    # A lng/lat box holding the sphere cap of radius r_out (whole longitudes near a pole or
    # across the antimeridian: a superset is always correct, the exact tests decide).
    d = r_out / EARTH_R
    dlat = math.degrees(d) * 1.001 + 1e-9
    y0, y1 = lat - dlat, lat + dlat
    x0, x1 = -180.0, 180.0
    if y0 > -90.0 and y1 < 90.0:
        cos_max = math.cos(math.radians(max(abs(y0), abs(y1))))
        ratio = math.sin(d) / cos_max
        if ratio < 1.0:
            dlng = math.degrees(math.asin(ratio)) * 1.001 + 1e-9
            if lng - dlng > -180.0 and lng + dlng < 180.0:
                x0, x1 = lng - dlng, lng + dlng
    phi, lam = math.radians(lat), math.radians(lng)
    s.params.update(
        lat=lat,
        lng=lng,
        radius_m=r,
        radius_in=r_in,
        radius_out=r_out,
        gx0=x0,
        gy0=max(-90.0, y0),
        gx1=x1,
        gy1=min(90.0, y1),
        px=math.cos(phi) * math.cos(lam),
        py=math.cos(phi) * math.sin(lam),
        pz=math.sin(phi),
        cos_in=math.cos(r_in / EARTH_R),
        cos_out=math.cos(min(math.pi, r_out / EARTH_R)),
    )
    s.geo = (_RADIUS_WIDE, _RADIUS_FACETS)


class _Bits:
    """Bit positions of catalogue slugs and language codes (migration 0005)."""

    def __init__(self, rows: list[tuple[str, str, int]]) -> None:
        self.bit: dict[tuple[str, str], int] = {(f, v): b for f, v, b in rows}
        self.value: dict[str, list[str | None]] = {}
        for f, v, b in rows:
            table = self.value.setdefault(f, [None] * 64)
            table[b] = v

    def mask(self, facet: str, values: tuple[str, ...]) -> tuple[int, list[str]]:
        """(mask of the values that have a bit, the values that have none)."""
        m, other = 0, []
        for v in values:
            b = self.bit.get((facet, v))
            if b is None:
                other.append(v)
            else:
                m |= 1 << b
        return m, other

    def names(self, facet: str, mask: int) -> list[str] | None:
        """The values of the set bits of `mask`, None if a bit is unknown (reload)."""
        table = self.value.get(facet, [])
        out = []
        while mask:
            low = mask & -mask
            b = low.bit_length() - 1
            v = table[b] if b < len(table) else None
            if v is None:
                return None
            out.append(v)
            mask ^= low
        return out


def _block_filters(q: TutorQuery | TutorMapQuery | CoachQuery, p: dict[str, Any]) -> Filters:
    """The block filters of `q`; the masks come from `_filters`' parameters `p`."""
    return Filters(
        min_price=q.min_price,
        max_price=q.max_price,
        currency=q.currency,
        min_rating=q.min_rating,
        mode=q.mode,
        kinds=tuple(getattr(q, "kind", ())),
        cat_mask=(int(p["cat_mask"]) & ((1 << 64) - 1)) if "cat_mask" in p else None,
        lang_mask=int(p.get("lang_mask", 0)) & ((1 << 64) - 1),
        lang_other=tuple(p.get("lang_other", ())),
        lang_filtered=bool(q.language),
    )


def _in_window(
    blocks: Blocks,
    q: TutorQuery | TutorMapQuery | CoachQuery,
    keep: npt.NDArray[np.bool_] | None,
) -> npt.NDArray[np.bool_]:
    """`keep` (None: every record) narrowed to the records with an open slot overlapping
    `q`'s availability window (the blocks' availability entries, `Blocks.available`)."""
    matched = blocks.available(*window_bounds(q.available_from, q.available_to))
    return matched if keep is None else keep & matched


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # uuids come back as their text (what the responses and cursors hold): psycopg's
    # default builds a `uuid.UUID` per value, which then has to be printed again.
    conn.adapters.register_loader("uuid", TextLoader)
    await conn.execute(
        "SET jit = off; SET plan_cache_mode = force_custom_plan; "
        "SET max_parallel_workers_per_gather = 0"
    )


class _BlockPage:
    """A list page picked on the facet blocks (`PostgresEngine._block_page`): record
    indexes in page order (up to `limit + 1`), the list items of each one's block
    (`items`, as held when the page was picked), their WGS84 distances in metres (None
    when the query has no point), the sort."""

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
            r = max(int(rec["rating"]), 0)
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


class _Sql:
    """WHERE clauses and parameters of one query, split the way facets need them.

    `base` holds conditions valid on both the documents and the facet rows; `geo` the
    radius filter in each shape; `wide_only` is set by filters only documents can answer
    (text, availability), which send the facet pass to the documents table.
    """

    def __init__(self) -> None:
        self.base: list[str] = []
        self.params: dict[str, Any] = {}
        self.cat_ok = "true"
        self.lang_ok = "true"
        self.geo: tuple[str, str] | None = None
        self.wide_only = False
        self.text: str | None = None  # the full-text condition (documents only)
        self.scanned = 0
        # (blocks, results mask) when the facet pass ran on the facet blocks
        self.block_hits: tuple[Blocks, Any] | None = None
        # check the block directory before reading blocks (else: with the page)
        self.sync_first = True
        # (family, cell ranges, blocks, watch token) of the facet pass, checked with the page
        self.sync_check: tuple[str, CellRanges, Blocks, Token | None] | None = None
        # set when that check found a block of those ranges re-packed: compute again
        self.stale = False

    def _conds(self, facets: bool) -> list[str]:
        geo = [] if self.geo is None else [self.geo[1] if facets else self.geo[0]]
        return [*geo, *self.base]

    def all(self, facets: bool = False) -> str:
        """Every filter, on the documents table (or the facet rows)."""
        return " AND ".join([*self._conds(facets), self.cat_ok, self.lang_ok])

    def base_sql(self, facets: bool = False) -> str:
        """Every filter except subject/expertise and language."""
        return " AND ".join(self._conds(facets)) or "true"


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
        """`blocks`: run the facet pass on the facet blocks where it can (the default);
        False keeps it in SQL (tests and A/B benchmarks compare the two). `watch`: says
        when the block directory must be checked (`search.engines.postgres.block_watch`, started by the
        caller, closed by `close`); None checks it on every query."""
        self.pool = pool
        self.blocks = blocks
        self.watch = watch
        # checks of the block directory run (`_sync`, `_check`), for tests and tools
        self.directory_checks = 0
        # family -> (cell, version) of every block, and the copies held (`search.engines.postgres.block_sync`)
        self._directory: dict[str, BlockDirectory] = {}
        # family -> every block of it, decoded, as of `Blocks.generation` (coach queries
        # read them all: decoded once per change, not per query)
        self._whole: dict[str, Blocks] = {}
        # list queries computed again because a block they read changed before their page
        self.recomputed = 0
        self._text_cache = TextMatchCache()
        self._tsq: OrderedDict[tuple[str, ...], tuple[str, str]] = OrderedDict()
        self._bits: _Bits | None = None

    async def _load_bits(self, conn: psycopg.AsyncConnection[Any]) -> _Bits:
        cur = await conn.execute(
            "SELECT facet, slug, bit FROM search_catalogue"
            " UNION ALL SELECT 'language', code, bit FROM search_language_bits"
        )
        self._bits = _Bits([(str(f), str(v), int(b)) for f, v, b in await cur.fetchall()])
        return self._bits

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
        if recheck_s > 0 and blocks:  # the SQL pass holds no blocks to check
            watch = BlockWatch(conninfo, recheck_s=recheck_s)
            watch.start()
        return cls(pool, blocks=blocks, watch=watch)

    async def close(self) -> None:
        """Stop the block watch and close the pool."""
        if self.watch is not None:
            await self.watch.close()
        await self.pool.close()

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

    # ------------------------------------------------------------------ helpers

    async def _tsquery(
        self, conn: psycopg.AsyncConnection[Any], words: tuple[str, ...]
    ) -> tuple[str, str]:
        """(rank query, match query) in text form for folded words: every word must match,
        the last as a prefix, under the French, English or simple configuration (OR of the
        three). The rank query is that OR as is (`ts_rank` depends on its shape); the match
        query matches exactly the same documents with fewer index scans: identical branches
        dropped, and a one-word prefix branch dropped when a shorter prefix covers it
        ('physique':* is inside 'physiqu':*)."""
        hit = self._tsq.get(words)
        if hit is not None:
            self._tsq.move_to_end(words)
            return hit
        expr = " & ".join([*words[:-1], words[-1] + ":*"])
        cur = await conn.execute(
            "SELECT (to_tsquery('educonnect_fr', %(e)s) || to_tsquery('educonnect_en', %(e)s)"
            " || to_tsquery('educonnect_simple', %(e)s))::text,"
            " to_tsquery('educonnect_fr', %(e)s)::text, to_tsquery('educonnect_en', %(e)s)::text,"
            " to_tsquery('educonnect_simple', %(e)s)::text",
            {"e": expr},
        )
        row = await cur.fetchone()
        rank = str(row[0]) if row else ""
        branches = list(dict.fromkeys(str(b) for b in (row[1:] if row else ()) if b))
        prefixes = {m.group(1) for b in branches if (m := _PREFIX_TERM.match(b))}
        kept = [
            b
            for b in branches
            if not (
                (m := _PREFIX_TERM.match(b))
                and any(p != m.group(1) and m.group(1).startswith(p) for p in prefixes)
            )
        ]
        match = " | ".join(f"( {b} )" for b in kept) if len(kept) > 1 else "".join(kept)
        self._tsq[words] = (rank, match)
        if len(self._tsq) > _TSQUERY_CACHE_SIZE:
            self._tsq.popitem(last=False)
        return rank, match

    async def _filters(
        self,
        conn: psycopg.AsyncConnection[Any],
        q: TutorQuery | TutorMapQuery | CoachQuery,
        catalogue_col: str,
        catalogue: tuple[str, ...],
    ) -> _Sql:
        s = _Sql()
        p = s.params
        if q.q:
            tsq, match = await self._tsquery(conn, q.q)
            if tsq:
                p["tsq"], p["tsq_match"] = tsq, match
                if getattr(q, "lat", None) is not None:
                    # With a radius the spatial index drives and the text is a filter: the
                    # GIN prefix scan of a common word costs more (40k matches: 60-70 ms)
                    # than testing the few thousand rows of the radius. The function form
                    # of @@ is not matched to the GIN index.
                    s.text = "ts_match_vq(search_vector, %(tsq_match)s::tsquery)"
                else:
                    s.text = "search_vector @@ %(tsq_match)s::tsquery"
                s.base.append(s.text)
                s.wide_only = True
        if q.min_price is not None:
            p["min_price"] = q.min_price
            s.base.append("price_minor >= %(min_price)s")
        if q.max_price is not None:
            p["max_price"] = q.max_price
            s.base.append("price_minor <= %(max_price)s")
        if q.currency:
            p["currency"] = q.currency
            s.base.append("currency = %(currency)s")
        if q.min_rating is not None:
            p["min_rating"] = q.min_rating
            s.base.append("rating_avg >= %(min_rating)s::numeric")
        if q.mode:
            s.base.append("online" if q.mode == "online" else "in_person")
        if q.available_from or q.available_to:
            p["af"], p["at"] = q.available_from, q.available_to
            # On the facet rows too (migration 0007): not a wide-only filter.
            s.base.append("availability && tstzrange(%(af)s, %(at)s)")
        bits = self._bits or await self._load_bits(conn)
        facet = "subject" if catalogue_col == "subjects" else "expertise"
        if catalogue:
            cat_mask, unknown = bits.mask(facet, catalogue)
            if unknown:  # a slug newer than our copy of the bit table
                bits = await self._load_bits(conn)
                cat_mask, unknown = bits.mask(facet, catalogue)
            p["cat_mask"] = signed64(cat_mask)
            s.cat_ok = f"({facet}_bits & %(cat_mask)s) <> 0"
        if q.language:
            lang_mask, other = bits.mask("language", q.language)
            ors = []
            if lang_mask:
                p["lang_mask"] = signed64(lang_mask)
                ors.append("(language_bits & %(lang_mask)s) <> 0")
            if other:
                p["lang_other"] = other
                ors.append("languages_other && %(lang_other)s::text[]")
            s.lang_ok = "(" + " OR ".join(ors) + ")"
        return s

    async def _facets(
        self,
        conn: psycopg.AsyncConnection[Any],
        table: str,
        col: str,
        s: _Sql,
        selected: tuple[str, ...],
        langs: tuple[str, ...],
        q: TutorQuery | CoachQuery,
    ) -> tuple[dict[str, Any], int]:
        facet = "subject" if col == "subjects" else "expertise"
        if self.blocks:
            got = await self._block_facets(conn, table, q, s, facet, selected, langs)
            if got is not None:
                return got
        narrow = not s.wide_only
        if narrow:  # the narrow facet rows answer every remaining filter
            table = table.replace("_documents", "_facets")
        async with conn.transaction():
            # Row estimates of the radius are far too low in dense cities (13x at Paris),
            # which makes the planner sort 27k rows for a GroupAggregate; the hash
            # aggregate is always the right plan for this statement.
            await conn.execute("SET LOCAL enable_sort = off")
            both = f"{s.cat_ok} AND {s.lang_ok}"
            cur = await conn.execute(
                f"SELECT GROUPING({facet}_bits, language_bits, rating_bucket), {facet}_bits,"
                " language_bits, languages_other, rating_bucket, currency,"
                f" count(*) FILTER (WHERE {s.lang_ok}), count(*) FILTER (WHERE {s.cat_ok}),"
                f" count(*) FILTER (WHERE {both}), min(price_minor) FILTER (WHERE {both}),"
                f" max(price_minor) FILTER (WHERE {both}), sum(price_minor) FILTER (WHERE {both})"
                f" FROM {table} WHERE {s.base_sql(narrow)} GROUP BY GROUPING SETS"
                f" (({facet}_bits), (language_bits, languages_other), (rating_bucket, currency))",
                s.params,
            )
            groups = await cur.fetchall()
        # Rows passing every filter but subject/expertise: a lower bound of what a scan of
        # the facet rows reads (the choice of the rating/price page plan, `_page`).
        s.scanned = sum(g[6] for g in groups if g[0] == 3)
        return await self._named(
            conn, facet, lambda bits: self._arithmetic(bits, groups, facet, selected, langs)
        )

    async def _named(
        self,
        conn: psycopg.AsyncConnection[Any],
        facet: str,
        arithmetic: Callable[[_Bits], tuple[dict[str, Any], int] | None],
    ) -> tuple[dict[str, Any], int]:
        """`arithmetic` over this process's bit tables; when it meets a bit without a
        name (a slug newer than our copy), over the tables reloaded once. RuntimeError
        when a bit is in no table."""
        out = arithmetic(self._bits or await self._load_bits(conn))
        if out is None:
            out = arithmetic(await self._load_bits(conn))
            if out is None:
                raise RuntimeError(f"a {facet} or language bit is in no bit table")
        return out

    async def _block_facets(
        self,
        conn: psycopg.AsyncConnection[Any],
        table: str,
        q: TutorQuery | CoachQuery,
        s: _Sql,
        facet: str,
        selected: tuple[str, ...],
        langs: tuple[str, ...],
    ) -> tuple[dict[str, Any], int] | None:
        """The facet pass on the facet blocks (`search.engines.postgres.blocks`): the blocks of the cells
        the radius covers (every block without one) in one statement; the records of the
        cells on its edge are tested on the sphere with numpy, and the few in the thin
        ring where sphere and spheroid disagree by PostGIS (`_ST_DWithin` on the WGS84
        spheroid, like the SQL pass); the filters and counts run on the records. None
        when the radius box wraps (the SQL pass answers)."""
        family = "tutor" if table.startswith("tutor") else "coach"
        p = s.params
        ranges = ALL_CELLS
        if "radius_m" in p:
            cover = radius_cover(
                p["lat"], p["lng"], p["radius_in"], p["radius_out"],
                (p["gx0"], p["gy0"], p["gx1"], p["gy1"]),
            )  # fmt: skip
            if cover is None:
                return None
            ranges = cover.ranges()
        window = bool(q.available_from or q.available_to)
        blocks = await self._fetch_blocks(conn, family, ranges, s.sync_first, window)
        if not s.sync_first and self._due(family):
            s.sync_check = (family, ranges, blocks, self._token(family))
        text = None
        if s.text is not None:
            text = await self._text_matches(conn, family, table, blocks, s, q.sort == "relevance")
        keep = None
        if blocks.edge.any():
            # the spheroid decides the thin ring: Vincenty's distance, and PostGIS (as
            # the SQL pass) within `GEODESIC_MARGIN` of the radius
            keep, ring = blocks.radius_test(
                p["lat"], p["lng"], p["cos_in"], p["cos_out"], p["radius_m"]
            )
            await self._decide(
                conn, blocks, keep, ring,
                f"_ST_DWithin(ST_SetSRID(ST_MakePoint(x, y), 4326)::geography, {_POINT},"
                " %(radius_m)s, true)",
                p,
            )  # fmt: skip
        if text is not None:
            keep = text if keep is None else keep & text
        if window:
            keep = _in_window(blocks, q, keep)
        counts = blocks.count(_block_filters(q, p), keep)
        s.scanned = counts.scanned
        s.block_hits = (blocks, counts.hits)
        return await self._named(
            conn, facet, lambda bits: self._block_arithmetic(bits, counts, facet, selected, langs)
        )

    async def _text_matches(
        self,
        conn: psycopg.AsyncConnection[Any],
        family: str,
        table: str,
        blocks: Blocks,
        s: _Sql,
        ranked: bool,
    ) -> npt.NDArray[np.bool_]:
        """Mask of the `blocks` records whose document matches the text query (`s.text`);
        with `ranked`, their `ts_rank` goes to `blocks.rank` (NaN elsewhere).

        Per block, the matches come from the text match cache (`search.engines.postgres.text_cache`) when
        it holds them for the block's version; the other blocks are matched in one
        statement: on their own when they hold few records (per cell rectangle through
        the GiST index, or by id for the cells without positions), else by one pass over
        the documents of the box holding every fetched cell (~1.1 µs per row), which
        renews every block's entry."""
        p = s.params
        key = (family, p["tsq_match"], p["tsq"] if ranked else None)
        pos, pos_rank, missing = self._text_cache.gather(
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
            elif not s.geo:  # every block: the whole table
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
                f" {rank_agg} FROM {source} WHERE {where} AND {s.text}",
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
                self._text_cache.store(key, cells[b], versions[b], idx, ranks)
                found[first + idx] = True
                if rank is not None and ranks is not None:
                    rank[first + idx] = ranks
        blocks.rank = rank
        return found

    async def _block_viewport(
        self, conn: psycopg.AsyncConnection[Any], q: TutorMapQuery, s: _Sql
    ) -> tuple[Blocks, Counts]:
        """(blocks, counts) of a map query from the facet blocks of the viewport's cells:
        the records of the cells on its sides are tested in numpy, those within
        `BOX_MARGIN` of a side by PostGIS (`&&`, like the SQL pass); filters as in the
        facet pass."""
        p = s.params
        box = (p["x0"], p["y0"], p["x1"], p["y1"])
        window = bool(q.available_from or q.available_to)
        blocks = await self._fetch_blocks(conn, "tutor", bbox_cover(box).ranges(), avail=window)
        keep = None
        if blocks.edge.any():
            keep, near = blocks.box_test(box)
            await self._decide(
                conn, blocks, keep, near,
                "ST_SetSRID(ST_MakePoint(x, y), 4326)"
                " && ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326)",
                p,
            )  # fmt: skip
        if window:
            keep = _in_window(blocks, q, keep)
        return blocks, blocks.count(_block_filters(q, p), keep)

    async def _block_points(
        self, conn: psycopg.AsyncConnection[Any], q: TutorMapQuery, s: _Sql, limit: int
    ) -> tuple[bytes, int] | None:
        """(points JSON array, total) of a map query in points mode from the facet blocks: the
        `limit` best-rated tutors of the viewport (rating, then id: the SQL order of
        `rating_sort DESC, provider_id`, `Blocks.page`), cut from the list items the
        block directory holds (`Blocks.points_json`). None when it holds them no more
        (its copies were dropped meanwhile): the SQL pass answers."""
        blocks, counts = await self._block_viewport(conn, q, s)
        assert counts.hits is not None  # always set by `count`
        idx = blocks.page(counts.hits, "rating", limit, None)
        b, _ = blocks.block_of(idx)
        items = self._directory["tutor"].items_of(blocks.cells[b], blocks.versions[b])
        if items is None:
            return None
        return blocks.points_json(idx, items), counts.total

    async def _sync(self, conn: psycopg.AsyncConnection[Any], family: str) -> npt.NDArray[np.int64]:
        """Check `family`'s block directory (`search.engines.postgres.block_sync`), reading it whole the
        first time and when its table was replaced; returns the cells whose block
        appeared, changed or emptied since the previous check."""
        directory = self._directory.setdefault(family, BlockDirectory())
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

    async def _check(
        self, conn: psycopg.AsyncConnection[Any], s: _Sql, answer: bytes | None
    ) -> None:
        """Apply the directory check that came with a page (`answer`; None when the page
        had no row, then one is run now) and set `s.stale` unless the blocks of the
        query's cells are still those it computed on."""
        if s.sync_check is None:
            return
        family, ranges, blocks, token = s.sync_check
        s.sync_check = None
        directory = self._directory[family]
        applied = False
        if answer is not None:
            try:
                directory.apply(answer, whole=False)
                applied = True
                self._checked(family, token)
            except TableReplaced:
                pass
        if not applied:
            await self._sync(conn, family)
        s.stale = not directory.current(ranges, blocks.cells, blocks.versions, blocks.generation)

    async def _fetch_blocks(
        self,
        conn: psycopg.AsyncConnection[Any],
        family: str,
        ranges: CellRanges,
        sync_first: bool = True,
        avail: bool = False,
    ) -> Blocks:
        """The blocks of the cell id ranges (lo, hi, edge), with their availability
        entries when `avail` (`Blocks.available`). Which blocks exist, in which
        version, comes from the block directory (`search.engines.postgres.block_sync`), checked first
        when `sync_first` and a check is due (`_due`; else the caller checks it with its
        page when one is due, and computes again
        when the blocks of `ranges` are no longer those of the returned `Blocks`, whose
        `cells` and `versions` say which they are). The directory holds copies of the
        blocks read (packed), by version; one statement reads the blocks whose copy is
        missing or older, if any. Each block is read whole in one snapshot; one
        re-packed since the check is used in its newer version, one emptied since is
        empty."""
        directory = self._directory.get(family)
        if directory is None or not directory.loaded or (sync_first and self._due(family)):
            await self._sync(conn, family)
            directory = self._directory[family]
        whole = ranges is ALL_CELLS
        memo = self._whole.get(family) if whole else None
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
                self._whole[family] = blocks
                return blocks.shared()
        return blocks

    @staticmethod
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

    def _block_arithmetic(
        self,
        bits: _Bits,
        c: Counts,
        facet: str,
        selected: tuple[str, ...],
        langs: tuple[str, ...],
    ) -> tuple[dict[str, Any], int] | None:
        """Facets and total from the block counts (per bit: single-bit masks), None when a
        bit has no name."""
        return self._facets_from(
            bits, facet, selected, langs,
            {1 << b: n for b, n in c.cat.items()},
            {1 << b: n for b, n in c.lang.items()},
            c.lang_other, c.rating, c.price,
        )  # fmt: skip

    def _arithmetic(
        self,
        bits: _Bits,
        groups: list[tuple[Any, ...]],
        facet: str,
        selected: tuple[str, ...],
        langs: tuple[str, ...],
    ) -> tuple[dict[str, Any], int] | None:
        """Facets and total from the grouping sets, or None when a mask has an unknown bit.

        GROUPING() tells the set: 3 = per subject/expertise mask (rows passing the language
        filter), 5 = per language mask (rows passing the subject/expertise filter), 6 = per
        rating bucket and currency (rows passing both: the results)."""
        cat_by_mask: dict[int, int] = {}
        lang_by_mask: dict[int, int] = {}
        lang_other_counts: dict[str, int] = {}
        rating: dict[int, int] = {}
        price: dict[str, list[int]] = {}
        for g, cmask, lmask, others, bucket, currency, n_l, n_c, n, mn, mx, total in groups:
            if g == 3:
                if n_l:
                    cat_by_mask[cmask] = n_l
            elif g == 5:
                if n_c:
                    lang_by_mask[lmask] = lang_by_mask.get(lmask, 0) + n_c
                    for code in others or ():
                        lang_other_counts[code] = lang_other_counts.get(code, 0) + n_c
            elif n:
                if bucket is not None:
                    rating[bucket] = rating.get(bucket, 0) + n
                st = price.get(currency)
                if st is None:
                    price[currency] = [n, mn, mx, int(total)]
                else:
                    st[0] += n
                    st[1] = min(st[1], mn)
                    st[2] = max(st[2], mx)
                    st[3] += int(total)
        return self._facets_from(
            bits, facet, selected, langs, cat_by_mask, lang_by_mask, lang_other_counts,
            rating, {k: (v[0], v[1], v[2], v[3]) for k, v in price.items()},
        )  # fmt: skip

    def _facets_from(
        self,
        bits: _Bits,
        facet: str,
        selected: tuple[str, ...],
        langs: tuple[str, ...],
        cat_by_mask: dict[int, int],
        lang_by_mask: dict[int, int],
        lang_other: dict[str, int],
        rating: dict[int, int],
        price: dict[str, tuple[int, int, int, int]],
    ) -> tuple[dict[str, Any], int] | None:
        """The `facets` object and the total (the results: the price counts) from counts
        per catalogue mask and per language mask (a mask's count goes to each of its
        bits), per other language code, per rating bucket and per currency; None when a
        mask has a bit without a name."""
        cat = self._expand(bits, facet, cat_by_mask)
        lang = self._expand(bits, "language", lang_by_mask)
        if cat is None or lang is None:
            return None
        for code, n in lang_other.items():
            lang[code] = lang.get(code, 0) + n
        facets = build_facets(
            catalogue_facet=facet + "s",
            catalogue_counts=cat,
            catalogue_selected=selected,
            language_counts=lang,
            language_selected=langs,
            rating_counts=rating,
            price_stats=price,
        )
        return facets, sum(v[0] for v in price.values())

    @staticmethod
    def _expand(bits: _Bits, facet: str, by_mask: dict[int, int]) -> dict[str, int] | None:
        out: dict[str, int] = {}
        for mask, n in by_mask.items():
            names = bits.names(facet, mask)
            if names is None:
                return None
            for v in names:
                out[v] = out.get(v, 0) + n
        return out

    @staticmethod
    def _order(sort: str, key: list[Any] | None, p: dict[str, Any]) -> tuple[str, str, str]:
        """(sort key expression, keyset condition, ORDER BY) for `sort`."""
        if sort == "rating":
            expr, order = "rating_sort", "rating_sort DESC, provider_id"
            cond = "(rating_sort < %(k0)s::numeric OR (rating_sort = %(k0)s::numeric AND provider_id > %(kid)s::uuid))"
        elif sort == "price":
            expr, order = "price_minor", "price_minor, provider_id"
            cond = "(price_minor, provider_id) > (%(k0)s::int, %(kid)s::uuid)"
        elif sort == "distance":
            expr = f"ST_Distance(location, {_POINT})"
            order = f"{expr}, provider_id"
            cond = f"({expr}, provider_id) > (%(k0)s::float8, %(kid)s::uuid)"
        else:
            expr = "ts_rank(search_vector, %(tsq)s::tsquery)"
            order = f"{expr} DESC, provider_id"
            cond = f"({expr} < %(k0)s::real OR ({expr} = %(k0)s::real AND provider_id > %(kid)s::uuid))"
            if "tsq" not in p:  # no lexeme in q: every rank is 0
                p["tsq"] = ""
        if key is None:
            return expr, "true", order
        p["k0"], p["kid"] = key[0], key[1]
        return expr, cond, order

    async def _block_page(
        self,
        conn: psycopg.AsyncConnection[Any],
        family: str,
        s: _Sql,
        sort: str,
        limit: int,
        key: Any,
    ) -> _BlockPage | None:
        """The page (`limit` records) of a list query whose facet pass ran on the blocks,
        picked there: the rating/price/relevance keyset page (`Blocks.page`), or the
        distance page's candidates on the sphere (`Blocks.nearest`) ordered exactly on
        the spheroid by (distance, id) after the keyset, by the WGS84 distances of the
        page's records (or the candidates) that `_light` computes, with the directory
        check of the blocks in its statement; the items are those the directory holds
        for the versions the query computed on, taken before that statement (its check
        may change the directory). None when the directory holds them no more (its
        copies were dropped, or a block changed while the query awaited): the SQL
        page answers."""
        assert s.block_hits is not None
        blocks, hits = s.block_hits
        p = s.params
        if sort == "distance":
            after = float(key[0]) if key is not None else None
            idx = blocks.nearest(hits, p["lat"], p["lng"], limit, after)
        else:
            idx = blocks.page(hits, sort, limit, key)
        b, _ = blocks.block_of(idx)
        items = self._directory[family].items_of(blocks.cells[b], blocks.versions[b])
        if items is None:
            return None
        dist = await self._light(conn, s, blocks, idx if "lat" in p else [])
        if sort != "distance":
            return _BlockPage(blocks, idx, items, dist or None, sort)
        # uuid order is byte order: the hex ids compare like the uuids
        ranked = sorted(zip(dist, blocks.ids(idx), idx, items, strict=True))
        if key is not None:
            after_key = (float(key[0]), uuid.UUID(str(key[1])).hex)
            ranked = [r for r in ranked if (r[0], r[1]) > after_key]
        ranked = ranked[:limit]
        return _BlockPage(
            blocks, [r[2] for r in ranked], [r[3] for r in ranked], [r[0] for r in ranked], sort
        )

    async def _light(
        self, conn: psycopg.AsyncConnection[Any], s: _Sql, blocks: Blocks, idx: list[int]
    ) -> list[float]:
        """The WGS84 distances in metres of records `idx` from the query's point: PostGIS's
        `ST_Distance` on the spheroid, the record's position first as in the SQL page,
        computed here to the bit (`Blocks.st_distance`); and the query's pending
        directory check (`_check`, applied here), the one statement left, if any."""
        dist = blocks.st_distance(idx, s.params["lat"], s.params["lng"]) if idx else []
        if s.sync_check is None:
            return dist
        family = s.sync_check[0]
        cur = await conn.execute(
            "SELECT " + sync_sql(family),
            {"sync_horizon": str(self._directory[family].horizon)},
        )
        row = await cur.fetchone()
        assert row is not None  # a scalar subquery: always one row
        # NULL: the blocks table was replaced as the statement began (a reindex's swap: the
        # name was read before the rename, the old table is gone since), then `_check`
        # asks again
        await self._check(conn, s, None if row[0] is None else bytes(row[0]))
        return dist

    async def _page(
        self,
        conn: psycopg.AsyncConnection[Any],
        table: str,
        columns: str,
        s: _Sql,
        sort: str,
        limit: int,
        key: list[Any] | None,
        extra: str = "",
        total: int | None = None,
    ) -> list[tuple[Any, ...]]:
        """The page rows (`limit` of them) of a list query whose facet pass ran in SQL,
        or that the blocks cannot page (a relevance sort without a text query)."""
        p = dict(s.params)
        expr, cond, order = self._order(sort, key, p)
        p["limit"] = limit
        where = f"{s.all()} AND {cond}"
        if (
            sort in ("rating", "price")
            and not s.wide_only
            and total is not None
            and total <= _FACET_PAGE_MAX
            and s.scanned <= _FACET_PAGE_SCAN_MAX
        ):
            # Few results: the keyset page is found on the narrow facet rows (every
            # filter is there), then only its rows are read from the documents. The
            # documents' sort-key btree walk would read (limit / selectivity) wide
            # rows, and the planner ANDs big bitmaps (price, availability) instead.
            f_cond, f_order = (
                (c.replace("rating_sort", "coalesce(rating_avg, 0)") for c in (cond, order))
                if sort == "rating"
                else (cond, order)
            )
            where = (
                f"provider_id IN (SELECT provider_id FROM {table.replace('_documents', '_facets')}"
                f" WHERE {s.all(True)} AND {f_cond} ORDER BY {f_order} LIMIT %(limit)s)"
            )
        sql = (
            f"SELECT {columns}, {expr} AS sort_key{', location AS page_location' if extra else ''}"
            f" FROM {table} WHERE {where} ORDER BY {order} LIMIT %(limit)s"
        )
        if extra:
            # Computed for the page only, not for every row of the filtered set.
            sql = f"SELECT *, {extra} FROM ({sql}) page ORDER BY {order.replace(expr, 'sort_key')}"
        if sort == "distance":
            sql = self._knn_page(table, columns, s, cond, order)
        cur = await conn.execute(sql, p)
        return await cur.fetchall()

    @staticmethod
    def _knn_page(table: str, columns: str, s: _Sql, cond: str, order: str) -> str:
        """The distance page, exact on the spheroid but found through the GiST KNN order.

        The `limit + 1` nearest rows on the sphere (index order) give `m`, their largest
        spheroid distance; a row nearer than `m` on the spheroid is within `m * 1.006` on
        the sphere, so the page is the first `limit + 1` rows, exactly ordered by
        (spheroid distance, id), among the rows within that sphere radius."""
        where = f"{s.all()} AND {cond}"
        # No geometry bbox in the KNN part (another index would compete with the KNN
        # order), but the sphere bound on the geography itself: the same GiST scan then
        # stops at the radius instead of walking the whole table when fewer than
        # `limit + 1` rows match (a selective filter, the last page of a walk).
        knn_where = where.replace(_RADIUS_WIDE, _RADIUS_EXACT)
        if _RADIUS_WIDE in where:
            knn_where += f" AND ST_DWithin(location, {_POINT}, %(radius_m)s * {_SPHERE_OUT}, false)"
        return (
            "WITH knn AS MATERIALIZED (SELECT max(d) AS m FROM ("
            f"SELECT ST_Distance(location, {_POINT}) AS d FROM {table} WHERE {knn_where}"
            f" ORDER BY location <-> {_POINT} LIMIT %(limit)s) x)"
            f" SELECT {columns}, ST_Distance(location, {_POINT}) AS sort_key FROM {table}"
            f" WHERE {knn_where} AND ST_DWithin(location, {_POINT},"
            f" (SELECT m FROM knn) * {_SPHERE_OUT}, false)"
            f" ORDER BY {order} LIMIT %(limit)s"
        )

    @staticmethod
    def _block_results(
        q: TutorQuery | CoachQuery,
        fp: str,
        page: _BlockPage,
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

    @staticmethod
    def _cursor_key(sort: str, value: Any, pid: Any) -> list[Any]:
        if sort == "rating":
            value = str(value)
        elif sort in ("distance", "relevance"):
            value = float(value)
        return [value, str(pid)]

    async def _listing(
        self,
        q: TutorQuery | CoachQuery,
        table: str,
        col: str,
        catalogue: tuple[str, ...],
        where: Callable[[_Sql], None],
        cols: str,
        key: list[Any] | None,
        extra: str = "",
    ) -> tuple[dict[str, Any], int, list[tuple[Any, ...]] | _BlockPage]:
        """(facets, total, page: `limit + 1` SQL rows, or a `_BlockPage`) of a list query
        on `table`: filters (`where` adds the table's own), facet pass, page. Computed on
        the blocks held, checked with the page (`_check`) and computed again while a
        block it read changed, up to `_SYNC_TRIES` times, the last one checking the
        block directory first."""
        for attempt in range(_SYNC_TRIES):
            async with self.pool.connection() as conn:
                s = await self._filters(conn, q, col, catalogue)
                s.sync_first = attempt == _SYNC_TRIES - 1
                where(s)
                facets, total = await self._facets(conn, table, col, s, catalogue, q.language, q)
                page: list[tuple[Any, ...]] | _BlockPage | None = None
                if self._block_pages(s, q.sort):
                    family = "tutor" if table.startswith("tutor") else "coach"
                    page = await self._block_page(conn, family, s, q.sort, q.limit + 1, key)
                if page is None:
                    page = await self._page(
                        conn, table, cols, s, q.sort, q.limit + 1, key, extra, total
                    )
                if s.sync_check is not None:  # a page that did not carry the check
                    await self._check(conn, s, None)
            if not s.stale:
                return facets, total, page
            self.recomputed += 1
        raise AssertionError("the last try checks the directory first: never stale")

    @staticmethod
    def _block_pages(s: _Sql, sort: str) -> bool:
        """Whether the page comes from the blocks (`_block_page`): the facet pass ran
        there, and the sort is rating, price, relevance with a text query (the ranks),
        or distance from a point."""
        if s.block_hits is None:
            return False
        if sort == "relevance":
            return s.block_hits[0].rank is not None
        return sort in ("rating", "price") or (sort == "distance" and "lat" in s.params)

    # ------------------------------------------------------------------ tutors

    async def search_tutors(self, q: TutorQuery) -> TutorResults:
        """See `SearchEngine.search_tutors`. Distances are geodesic on the WGS84 spheroid
        (PostGIS geography), `radius_km` inclusive."""
        fp = cursors.fingerprint(normalized(q, exclude={"limit", "cursor"}))
        key = cursors.decode(q.cursor, q.sort, fp) if q.cursor else None
        cols = (
            "provider_id, display_name, headline, subjects, languages, price_minor,"
            " currency, rating_avg, rating_count, online, in_person, lat, lng, city,"
            " country_code"
        )
        extra = ""
        has_point = q.lat is not None and q.lng is not None and q.radius_km is not None
        if has_point and q.sort != "distance":
            extra = f"ST_Distance(page_location, {_POINT}) AS dist"

        def where(s: _Sql) -> None:
            if q.lat is not None and q.lng is not None and q.radius_km is not None:
                _radius(s, q.lat, q.lng, q.radius_km)

        facets, total, rows = await self._listing(
            q, "tutor_documents", "subjects", q.subject, where, cols, key, extra
        )
        if isinstance(rows, _BlockPage):
            return self._block_results(q, fp, rows, facets, total, tutor=True)
        items = []
        for r in rows[: q.limit]:
            dist = r[15] if q.sort == "distance" else (r[17] if extra else None)
            items.append(
                {
                    "id": str(r[0]),
                    "display_name": r[1],
                    "headline": r[2],
                    "subjects": list(r[3]),
                    "languages": list(r[4]),
                    "price": {"amount_minor": r[5], "currency": r[6]},
                    "rating": {"avg": float(r[7]) if r[7] is not None else None, "count": r[8]},
                    "online": r[9],
                    "in_person": r[10],
                    "location": {"lat": r[11], "lng": r[12]} if r[11] is not None else None,
                    "city": r[13],
                    "country_code": r[14],
                    "distance_km": round(dist / 1000.0, 3) if dist is not None else None,
                }
            )
        next_cursor = None
        if len(rows) > q.limit:
            last = rows[q.limit - 1]
            next_cursor = cursors.encode(q.sort, fp, self._cursor_key(q.sort, last[15], last[0]))
        return TutorResults(
            items=items, facets=facets, total=total, next_cursor=next_cursor, engine=NAME
        )

    async def tutor_map(self, q: TutorMapQuery) -> MapResults:
        """See `SearchEngine.tutor_map`. Points mode (zoom ≥ `points_zoom`) returns the
        best-rated `max_points` tutors of the viewport; clusters group a regular
        lng/lat grid of `cell_deg(zoom)` degrees (4 cells per web-map tile width)."""
        from search.geo import MAX_POINTS, POINTS_ZOOM, cell_deg

        async with self.pool.connection() as conn:
            s = await self._filters(conn, q, "subjects", q.subject)
            if q.lat is not None and q.lng is not None and q.radius_km is not None:
                _radius(s, q.lat, q.lng, q.radius_km)
            min_lng, min_lat, max_lng, max_lat = q.bbox
            s.params.update(x0=min_lng, y0=min_lat, x1=max_lng, y1=max_lat)
            box = "ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326)"
            blocks = self.blocks and not s.wide_only and "radius_m" not in s.params
            if q.zoom >= POINTS_ZOOM:
                answer = await self._block_points(conn, q, s, MAX_POINTS) if blocks else None
                if answer is not None:
                    return MapResults(
                        mode="points",
                        clusters=[],
                        points_json=answer[0],
                        total=answer[1],
                        engine=NAME,
                    )
                s.params["max_points"] = MAX_POINTS
                cur = await conn.execute(
                    # the id as text: psycopg would build a UUID per point, then str it
                    "SELECT provider_id::text AS id, lat, lng, display_name, price_minor, currency,"
                    " rating_avg, rating_count, count(*) OVER () FROM tutor_documents"
                    f" WHERE (location::geometry) && {box} AND {s.all()}"
                    " ORDER BY rating_sort DESC, provider_id"
                    " LIMIT %(max_points)s",
                    s.params,
                )
                rows = await cur.fetchall()
                total = rows[0][8] if rows else 0
                points = [
                    {
                        "id": r[0],
                        "lat": r[1],
                        "lng": r[2],
                        "display_name": r[3],
                        "price": {"amount_minor": r[4], "currency": r[5]},
                        "rating": {"avg": float(r[6]) if r[6] is not None else None, "count": r[7]},
                    }
                    for r in rows
                ]
                return MapResults(
                    mode="points", clusters=[], points=points, total=total, engine=NAME
                )
            s.params["cell"] = cell_deg(q.zoom)
            grouped: list[Any] | None = None
            if blocks:
                viewport, counts = await self._block_viewport(conn, q, s)
                assert counts.hits is not None  # always set by `count`
                grouped = viewport.clusters(counts.hits, s.params["cell"])
            elif s.wide_only:
                source = f"SELECT lat, lng FROM tutor_documents WHERE (location::geometry) && {box}"
            else:  # the narrow facet rows hold every other filter and the point
                source = "SELECT ST_Y(geom) AS lat, ST_X(geom) AS lng FROM tutor_facets"
                source += f" WHERE geom && {box}"
            if grouped is None:
                cur = await conn.execute(
                    "SELECT count(*), avg(lat), avg(lng), min(lat), min(lng), max(lat),"
                    f" max(lng) FROM ({source} AND {s.all(not s.wide_only)}) m"
                    " GROUP BY floor(lng / %(cell)s), floor(lat / %(cell)s)"
                    " ORDER BY 1 DESC, 2, 3",
                    s.params,
                )
                grouped = await cur.fetchall()
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

    # ------------------------------------------------------------------ coaches

    async def search_coaches(self, q: CoachQuery) -> CoachResults:
        """See `SearchEngine.search_coaches`."""
        fp = cursors.fingerprint(normalized(q, exclude={"limit", "cursor"}))
        key = cursors.decode(q.cursor, q.sort, fp) if q.cursor else None
        cols = (
            "provider_id, kind, display_name, headline, expertises, languages, price_minor,"
            " currency, rating_avg, rating_count, online, in_person, city, country_code"
        )

        def where(s: _Sql) -> None:
            if q.kind:
                s.params["kinds"] = list(q.kind)
                s.base.append("kind = ANY(%(kinds)s::text[])")

        facets, total, rows = await self._listing(
            q, "coach_documents", "expertises", q.expertise, where, cols, key
        )
        if isinstance(rows, _BlockPage):
            return self._block_results(q, fp, rows, facets, total, tutor=False)
        items = [
            {
                "id": str(r[0]),
                "kind": r[1],
                "display_name": r[2],
                "headline": r[3],
                "expertises": list(r[4]),
                "languages": list(r[5]),
                "price": {"amount_minor": r[6], "currency": r[7]},
                "rating": {"avg": float(r[8]) if r[8] is not None else None, "count": r[9]},
                "online": r[10],
                "in_person": r[11],
                "city": r[12],
                "country_code": r[13],
            }
            for r in rows[: q.limit]
        ]
        next_cursor = None
        if len(rows) > q.limit:
            last = rows[q.limit - 1]
            next_cursor = cursors.encode(q.sort, fp, self._cursor_key(q.sort, last[14], last[0]))
        return CoachResults(
            items=items, facets=facets, total=total, next_cursor=next_cursor, engine=NAME
        )
