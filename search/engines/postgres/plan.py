"""What both query paths of the PostgreSQL engine share: the query's filters as SQL and as
typed values (`QueryPlan`, built by `Vocabulary.plan`), the inclusive WGS84 radius
(`radius_filter`), what one computation of a list query found on its way to its page
(`PassState`), and the bit tables that name facet counts (`Bits`).

Radius test: a box holding the sphere cap of `radius_out` (indexable, a superset), then
sphere distance within `radius_in` (certainly inside) OR the spheroid test with `r` — the
spheroid only decides the thin ring between the two (`sphere_scale`: a quarter of r's
0.6 % at Paris), and the inclusive radius stays exact.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from search.engines.postgres.block_watch import Token
from search.engines.postgres.blocks import (
    EARTH_R,
    WGS84_A,
    WGS84_F,
    Blocks,
    CellRanges,
    signed64,
)
from search.facets import build_facets
from search.schemas import CoachQuery, TutorMapQuery, TutorQuery

NAME = "postgres"  # the engine's name in responses and cache keys
POINT = "ST_SetSRID(ST_MakePoint(%(lng)s, %(lat)s), 4326)::geography"
# WGS84 geodesic over great-circle (PostGIS sphere, R = (2a + b) / 3) distance lies in
# [0.99440, 1.00449] anywhere (`sphere_scale` gives tighter bounds per latitude); this
# factor keeps a margin above.
SPHERE_OUT = 1.006
# Exact radius test on a document (geography): certainly inside on the sphere, or inside on
# the spheroid. `_ST_DWithin` is the non-indexable form: the bbox above is the index filter.
RADIUS_EXACT = (
    f"(_ST_DWithin(location, {POINT}, %(radius_in)s, false)"
    f" OR _ST_DWithin(location, {POINT}, %(radius_m)s, true))"
)
RADIUS_WIDE = (
    "(location::geometry) && ST_MakeEnvelope(%(gx0)s, %(gy0)s, %(gx1)s, %(gy1)s, 4326)"
    f" AND {RADIUS_EXACT}"
)
# The same on a facet row: the sphere test is a dot product of unit vectors; only the thin
# ring between the two sphere bounds goes to the spheroid.
_DOT = "(ux * %(px)s + uy * %(py)s + uz * %(pz)s)"
_RADIUS_DOT = (
    f"({_DOT} >= %(cos_in)s OR ({_DOT} >= %(cos_out)s"
    f" AND _ST_DWithin(geom::geography, {POINT}, %(radius_m)s, true)))"
)
RADIUS_FACETS = (
    f"geom && ST_MakeEnvelope(%(gx0)s, %(gy0)s, %(gx1)s, %(gy1)s, 4326) AND {_RADIUS_DOT}"
)
_TSQUERY_CACHE_SIZE = 4096
_PREFIX_TERM = re.compile(r"^'([a-z0-9]+)':\*$")

AnyQuery = TutorQuery | TutorMapQuery | CoachQuery
Facets = tuple[dict[str, Any], int]  # the `facets` object and the total


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


@dataclass(frozen=True, slots=True)
class Radius:
    """The inclusive WGS84 radius filter around (`lat`, `lng`), `radius_m` metres: a record
    within the sphere radius `radius_in` is inside, one beyond `radius_out` outside, the
    ring between needs the spheroid; (`gx0`, `gy0`, `gx1`, `gy1`) a lng/lat box holding
    the `radius_out` cap; (`px`, `py`, `pz`) the centre's unit vector and `cos_in`,
    `cos_out` the two sphere radii as cosines (the facet rows' dot product test)."""

    lat: float
    lng: float
    radius_m: float
    radius_in: float
    radius_out: float
    gx0: float
    gy0: float
    gx1: float
    gy1: float
    px: float
    py: float
    pz: float
    cos_in: float
    cos_out: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) holding the `radius_out` cap."""
        return self.gx0, self.gy0, self.gx1, self.gy1

    def params(self) -> dict[str, float]:
        """The bound parameters of the radius SQL (`RADIUS_WIDE`, `RADIUS_FACETS`, `POINT`)."""
        return {
            "lat": self.lat,
            "lng": self.lng,
            "radius_m": self.radius_m,
            "radius_in": self.radius_in,
            "radius_out": self.radius_out,
            "gx0": self.gx0,
            "gy0": self.gy0,
            "gx1": self.gx1,
            "gy1": self.gy1,
            "px": self.px,
            "py": self.py,
            "pz": self.pz,
            "cos_in": self.cos_in,
            "cos_out": self.cos_out,
        }


def radius_filter(lat: float, lng: float, radius_km: float) -> Radius:
    """The radius filter of (lat, lng, radius_km): the sphere bounds of `sphere_scale`,
    with 1 m and 1e-6 of margin for float rounding."""
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
    return Radius(
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


@dataclass(frozen=True, slots=True)
class TextQuery:
    """The text filter `q`: `rank` the tsquery `ts_rank` ranks with, `match` the one that
    matches (the same documents, fewer index scans: `Vocabulary.tsquery`), `condition`
    the SQL that applies it (documents only: the facet rows have no text)."""

    rank: str
    match: str
    condition: str


@dataclass(slots=True)
class QueryPlan:
    """The filters of one query, split the way facets need them: as SQL and, for the block
    path, as typed values.

    `base` holds conditions valid on both the documents and the facet rows, `params` the
    bound parameters of every statement; `cat_ok` / `lang_ok` the subject/expertise and
    language filters (the disjunctive facets ignore their own); the radius filter goes in
    each table's shape (`all`, `base_sql`). `documents_only` is set by a filter only the
    documents can answer (the text), which sends the SQL facet pass to the documents
    table. Masks are unsigned 64-bit: `cat_mask` None without a subject/expertise filter,
    `lang_mask` / `lang_other` the selected languages with a bit / without one."""

    facet: str  # "subject" or "expertise"
    base: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    cat_ok: str = "true"
    lang_ok: str = "true"
    cat_mask: int | None = None
    lang_mask: int = 0
    lang_other: tuple[str, ...] = ()
    text: TextQuery | None = None
    radius: Radius | None = None
    viewport: tuple[float, float, float, float] | None = None
    documents_only: bool = False

    def add_radius(self, radius: Radius) -> None:
        """Filter on `radius` (both table shapes)."""
        self.radius = radius
        self.params.update(radius.params())

    def set_viewport(self, bbox: tuple[float, float, float, float]) -> None:
        """The map's viewport (min_lng, min_lat, max_lng, max_lat), for the map's statements."""
        self.viewport = bbox
        min_lng, min_lat, max_lng, max_lat = bbox
        self.params.update(x0=min_lng, y0=min_lat, x1=max_lng, y1=max_lat)

    def _conds(self, facets: bool) -> list[str]:
        if self.radius is None:
            return self.base
        return [RADIUS_FACETS if facets else RADIUS_WIDE, *self.base]

    def all(self, facets: bool = False) -> str:
        """Every filter, on the documents table (or the facet rows)."""
        return " AND ".join([*self._conds(facets), self.cat_ok, self.lang_ok])

    def base_sql(self, facets: bool = False) -> str:
        """Every filter except subject/expertise and language."""
        return " AND ".join(self._conds(facets)) or "true"


@dataclass(slots=True)
class DirectoryCheck:
    """A block directory check a list query owes: its blocks (`family`, the cell `ranges`
    it read, the `blocks` it computed on) must still be current when its page is read;
    `token`: the block watch's, taken when the check was set up."""

    family: str
    ranges: CellRanges
    blocks: Blocks
    token: Token | None


@dataclass(slots=True)
class PassState:
    """What one computation of a list query found on its way to its page.

    `sync_first`: check the block directory before reading blocks (else with the page,
    `check`); `scanned`: rows passing every filter but subject/expertise (the choice of
    the SQL rating/price page plan); `blocks` / `hits`: the blocks the facet pass ran on
    and the results' mask over their records (None: the SQL pass ran); `check`: the
    directory check still owed; `stale`: that check found a block the query read
    re-packed, so the query is computed again."""

    sync_first: bool = True
    scanned: int = 0
    blocks: Blocks | None = None
    hits: npt.NDArray[np.bool_] | None = None
    check: DirectoryCheck | None = None
    stale: bool = False


class Bits:
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

    def _expand(self, facet: str, by_mask: dict[int, int]) -> dict[str, int] | None:
        out: dict[str, int] = {}
        for mask, n in by_mask.items():
            names = self.names(facet, mask)
            if names is None:
                return None
            for v in names:
                out[v] = out.get(v, 0) + n
        return out

    def facets(
        self,
        facet: str,
        selected: tuple[str, ...],
        langs: tuple[str, ...],
        cat_by_mask: dict[int, int],
        lang_by_mask: dict[int, int],
        lang_other: dict[str, int],
        rating: dict[int, int],
        price: dict[str, tuple[int, int, int, int]],
    ) -> Facets | None:
        """The `facets` object and the total (the results: the price counts) from counts
        per catalogue mask and per language mask (a mask's count goes to each of its
        bits), per other language code, per rating bucket and per currency; None when a
        mask has a bit without a name."""
        cat = self._expand(facet, cat_by_mask)
        lang = self._expand("language", lang_by_mask)
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


class Vocabulary:
    """This process's copies of the bit tables (`Bits`, reloaded when a slug or bit is
    newer than the copy) and of the text queries' tsqueries (an LRU); builds a query's
    `QueryPlan`."""

    def __init__(self) -> None:
        self._bits: Bits | None = None
        self._tsq: OrderedDict[tuple[str, ...], tuple[str, str]] = OrderedDict()

    async def _load_bits(self, conn: psycopg.AsyncConnection[Any]) -> Bits:
        cur = await conn.execute(
            "SELECT facet, slug, bit FROM search_catalogue"
            " UNION ALL SELECT 'language', code, bit FROM search_language_bits"
        )
        self._bits = Bits([(str(f), str(v), int(b)) for f, v, b in await cur.fetchall()])
        return self._bits

    async def named(
        self,
        conn: psycopg.AsyncConnection[Any],
        facet: str,
        arithmetic: Callable[[Bits], Facets | None],
    ) -> Facets:
        """`arithmetic` over the bit tables; when it meets a bit without a name (a slug
        newer than our copy), over the tables reloaded once. RuntimeError when a bit is
        in no table."""
        out = arithmetic(self._bits or await self._load_bits(conn))
        if out is None:
            out = arithmetic(await self._load_bits(conn))
            if out is None:
                raise RuntimeError(f"a {facet} or language bit is in no bit table")
        return out

    async def tsquery(
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

    async def plan(
        self,
        conn: psycopg.AsyncConnection[Any],
        q: AnyQuery,
        catalogue_col: str,
        catalogue: tuple[str, ...],
    ) -> QueryPlan:
        """The filters of `q` common to every query kind (the caller adds its own: the
        radius, the viewport, the coach kinds); `catalogue_col` is `subjects` or
        `expertises`, `catalogue` the values selected there."""
        plan = QueryPlan(facet="subject" if catalogue_col == "subjects" else "expertise")
        p = plan.params
        if q.q:
            tsq, match = await self.tsquery(conn, q.q)
            if tsq:
                p["tsq"], p["tsq_match"] = tsq, match
                if getattr(q, "lat", None) is not None:
                    # With a radius the spatial index drives and the text is a filter: the
                    # GIN prefix scan of a common word costs more than testing the few
                    # thousand rows of the radius. The function form of @@ is not matched
                    # to the GIN index.
                    condition = "ts_match_vq(search_vector, %(tsq_match)s::tsquery)"
                else:
                    condition = "search_vector @@ %(tsq_match)s::tsquery"
                plan.text = TextQuery(rank=tsq, match=match, condition=condition)
                plan.base.append(condition)
                plan.documents_only = True
        if q.min_price is not None:
            p["min_price"] = q.min_price
            plan.base.append("price_minor >= %(min_price)s")
        if q.max_price is not None:
            p["max_price"] = q.max_price
            plan.base.append("price_minor <= %(max_price)s")
        if q.currency:
            p["currency"] = q.currency
            plan.base.append("currency = %(currency)s")
        if q.min_rating is not None:
            p["min_rating"] = q.min_rating
            plan.base.append("rating_avg >= %(min_rating)s::numeric")
        if q.mode:
            plan.base.append("online" if q.mode == "online" else "in_person")
        if q.available_from or q.available_to:
            p["af"], p["at"] = q.available_from, q.available_to
            # On the facet rows too (migration 0007): not a documents-only filter.
            plan.base.append("availability && tstzrange(%(af)s, %(at)s)")
        bits = self._bits or await self._load_bits(conn)
        facet = plan.facet
        if catalogue:
            cat_mask, unknown = bits.mask(facet, catalogue)
            if unknown:  # a slug newer than our copy of the bit table
                bits = await self._load_bits(conn)
                cat_mask, unknown = bits.mask(facet, catalogue)
            plan.cat_mask = cat_mask
            p["cat_mask"] = signed64(cat_mask)
            plan.cat_ok = f"({facet}_bits & %(cat_mask)s) <> 0"
        if q.language:
            lang_mask, other = bits.mask("language", q.language)
            plan.lang_mask, plan.lang_other = lang_mask, tuple(other)
            ors = []
            if lang_mask:
                p["lang_mask"] = signed64(lang_mask)
                ors.append("(language_bits & %(lang_mask)s) <> 0")
            if other:
                p["lang_other"] = other
                ors.append("languages_other && %(lang_other)s::text[]")
            plan.lang_ok = "(" + " OR ".join(ors) + ")"
        return plan
