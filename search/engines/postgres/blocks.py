"""Facet blocks: the facet rows of one grid cell packed into one `bytea`, and the
facet pass over them (migration 0008).

Why: a facet pass must read every row matching the filters, and a SQL aggregate pays a
per-row cost that grows with the rows inside the radius (tens of thousands in a dense
city), not with the matches. The rows a facet pass needs are small fixed-size records,
so PostgreSQL stores them per cell, packed (`{family}_facet_blocks`, one row per cell,
kept exact by the projection), the engine fetches the blocks of the cells that the
radius covers as a few hundred `bytea` values, tests the records of the cells its edge
crosses (on the sphere, then on the ellipsoid, PostGIS deciding those within
`GEODESIC_MARGIN` of the radius), and counts the facets over the packed records. The
filters and counts, the edge test and the distances of the distance page run in C
(`_kernels.c`, one loop each, where numpy needs dozens of array operations per facet
pass); the rest is numpy. Exact: the same rows, the same filters, the same integer
arithmetic as the SQL pass.

Cells: a regular lng/lat grid of `CELL_DEG` = 360 / 2^14 degrees (about 2.4 km x 1.6 km at
Paris), aligned on (-180, -90) so it nests in the map's cluster grids (`search.geo`).
`cell = ix * 16384 + iy` with `ix = floor((lng + 180) / CELL_DEG)` and
`iy = floor((lat + 90) / CELL_DEG)`, so one grid column is one contiguous id range. A
tutor without a position and every coach go to one of 1024 negative cells
`-1 - (first two bytes of the uuid & 1023)`: they are only read whole, and small cells
keep the re-pack of a streaming write small (~50 records at 50,000 coaches).

Record: fixed-size, big-endian (as PostgreSQL's `*send` functions write it), in
provider_id order within a block; its fields are defined once, in `record_layout`
(numpy dtype `DTYPE`, SQL `PACK_SQL` and the kernels' C header all come from there).

`languages_other` (codes without a bit) travels beside the block as `'{index}:{c1},{c2}'`
entries, `index` counted from 0 within the block.

`availability` (a `tstzmultirange`) travels beside it too (`avail`, migration 0011): one
20-byte big-endian entry per range of each record, (index int4, L int8, U int8), records
in block order, ranges in multirange order. L and U are the range's bounds on a doubled
microsecond line, so a bound's inclusivity is part of its value: a finite bound at `v`
µs after 1970-01-01 UTC is `2v`, plus 1 for an exclusive lower bound, minus 1 for an
exclusive upper one; an unbounded side is the int64 minimum / maximum. PostgreSQL's
`&&` (`range_overlaps`) compares bounds by value, then by inclusivity exactly this way,
so a record's range overlaps the window [from, to) iff `L <= 2 to - 1` and
`2 from <= U` (`Blocks.available`; one side of the window may be open). Timestamps are
clamped to ±2^61 µs (±73,000 years), beyond any window's bound (years 1-9999), so the
comparisons with a window are unchanged and the doubled values fit in int64.

`items` (migration 0012) holds each record's JSON list item (`ITEM_SQL`: the response's
`TutorItem` / `CoachItem`, rendered by PostgreSQL from the document when the block is
packed, left open for the engine to close): one big-endian int4 per record, in block
order, the end of its item counted from the first item, then the items. The engine serves
a page from the blocks with them (`Blocks.items_json`), no document read; the block's
version covers them, as a document write re-packs its block.
"""

from __future__ import annotations

import copy
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from search.engines.postgres import _kernels
from search.engines.postgres.record_layout import FAMILIES, numpy_fields, pack_sql

CELL_DEG = 360.0 / 16384.0
COLUMN = 16384  # cell ids per grid column
EARTH_R = 6371008.7714  # the PostGIS sphere: (2a + b) / 3 of WGS84

# The packed record, per family: read with `DTYPE`, written by `PACK_SQL` over a
# `{family}_facets` row (the projection builds blocks with it); both come from
# `record_layout`, as the kernels' C offsets do.
DTYPE: dict[str, np.dtype[Any]] = {f: np.dtype(numpy_fields(f)) for f in FAMILIES}
PACK_SQL: dict[str, str] = {f: pack_sql(f) for f in FAMILIES}
# The cell of a facet row (a generated column of `{family}_facets`, migration 0008).
_LOOSE = "(-1 - (((get_byte(uuid_send(provider_id), 0) << 8) | get_byte(uuid_send(provider_id), 1)) & 1023))"
CELL_SQL: dict[str, str] = {
    "tutor": (
        "CASE WHEN geom IS NULL THEN " + _LOOSE + " ELSE"
        f" (floor((ST_X(geom) + 180) / {CELL_DEG!r})::integer * {COLUMN}"
        f" + floor((ST_Y(geom) + 90) / {CELL_DEG!r})::integer) END"
    ),
    "coach": _LOOSE,
}
# Records this close to a viewport side (degrees) are tested by PostGIS: `&&` compares
# float4 boxes (a float4 step at 180 degrees is 1.5e-5).
BOX_MARGIN = 1e-4


# A timestamptz in µs after 1970-01-01 UTC, clamped to ±2^61 (module docstring), and the
# availability entries of one facet row (`rn`: its index in the block), NULL without any.
_US = (
    "(CASE WHEN {t} = '-infinity' THEN -2305843009213693952 WHEN {t} = 'infinity'"
    " THEN 2305843009213693952 ELSE greatest(-2305843009213693952, least(2305843009213693952,"
    " extract(epoch FROM {t}) * 1000000))::bigint END)"
)
AVAIL_SQL = (
    "(SELECT string_agg(int4send(rn::integer) || int8send(CASE WHEN lower_inf(r) THEN"
    " -9223372036854775808 ELSE 2 * " + _US.format(t="lower(r)") + " + (NOT lower_inc(r))::int"
    " END) || int8send(CASE WHEN upper_inf(r) THEN 9223372036854775807 ELSE 2 * "
    + _US.format(t="upper(r)")
    + " - (NOT upper_inc(r))::int END), ''::bytea) FROM unnest(availability) r)"
)
AVAIL_ENTRY = np.dtype([("i", ">i4"), ("lo", ">i8"), ("hi", ">i8")])
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _json(expr: str) -> str:
    """SQL: `expr` as JSON text, `null` when NULL."""
    return f"coalesce(to_json({expr})::text, 'null')"


def _json_float(expr: str) -> str:
    """SQL: a float8 as JSON text the way orjson writes a Python float: PostgreSQL's
    shortest exact text (`extra_float_digits` >= 1, the default since PostgreSQL 12),
    with `.0` added to an integral value ('2' -> '2.0')."""
    return f"(CASE WHEN {expr}::text ~ '[.en]' THEN {expr}::text ELSE {expr}::text || '.0' END)"


_ITEM_HEAD = (
    "'{{\"id\":\"' || d.provider_id::text || '\"'{kind}"
    " || ',\"display_name\":' || "
    + _json("d.display_name")
    + " || ',\"headline\":' || "
    + _json("d.headline")
    + " || ',\"{cat}\":' || "
    + _json("d.{cat}")
    + " || ',\"languages\":' || "
    + _json("d.languages")
    + ' || \',"price":{{"amount_minor":\' || d.price_minor::text'
    " || ',\"currency\":' || "
    + _json("d.currency::text")
    + " || '}},\"rating\":{{\"avg\":' || coalesce(d.rating_avg::text, 'null')"
    " || ',\"count\":' || d.rating_count::text || '}},\"online\":' || d.online::text"
    " || ',\"in_person\":' || d.in_person::text"
)
_ITEM_TAIL = (
    " || ',\"city\":' || "
    + _json("d.city")
    + " || ',\"country_code\":' || "
    + _json("d.country_code::text")
)
# The list item of one document `d` as UTF-8 JSON (the response's `TutorItem` /
# `CoachItem`, keys in their order), left open: the engine closes it, a tutor's with its
# `distance_km` (`Blocks.items_json`).
ITEM_SQL: dict[str, str] = {
    "tutor": "convert_to("
    + _ITEM_HEAD.format(kind="", cat="subjects")
    + " || ',\"location\":' || coalesce('{\"lat\":' || "
    + _json_float("d.lat")
    + " || ',\"lng\":' || "
    + _json_float("d.lng")
    + " || '}', 'null')"
    + _ITEM_TAIL
    + ", 'UTF8')",
    "coach": "convert_to("
    + _ITEM_HEAD.format(kind=" || ',\"kind\":' || " + _json("d.kind"), cat="expertises")
    + _ITEM_TAIL
    + ", 'UTF8')",
}


def block_rows_sql(family: str, facets: str, documents: str, where: str = "true") -> str:
    """SELECT of (cell, n, rows, others, avail, items) — the rows of
    `{family}_facet_blocks` — from the facet table `facets` and the documents table
    `documents` (quoted identifiers), for the cells whose facet rows pass `where` (SQL
    over the facet table's columns). `items`: the records' list items (`ITEM_SQL`), as
    one big-endian int4 per record (the end of its item, in bytes after the last of
    these ints) followed by the items."""
    return (
        f"SELECT cell, count(*)::integer, string_agg({PACK_SQL[family]}, ''::bytea"
        " ORDER BY provider_id), array_agg(rn::text || ':' || array_to_string("
        "languages_other, ',') ORDER BY rn) FILTER (WHERE languages_other IS NOT NULL),"
        f" coalesce(string_agg({AVAIL_SQL}, ''::bytea ORDER BY provider_id), ''::bytea),"
        " string_agg(int4send(item_end::integer), ''::bytea ORDER BY provider_id)"
        " || string_agg(item, ''::bytea ORDER BY provider_id)"
        " FROM (SELECT y.*, (row_number() OVER w - 1) AS rn,"
        " sum(octet_length(item)) OVER w AS item_end FROM (SELECT f.*,"
        f" (SELECT {ITEM_SQL[family]} FROM {documents} d WHERE d.provider_id = f.provider_id)"
        f" AS item FROM {facets} f WHERE {where}) y"
        " WINDOW w AS (PARTITION BY cell ORDER BY provider_id)) x GROUP BY cell"
    )


def window_bounds(start: datetime | None, end: datetime | None) -> tuple[int | None, int | None]:
    """The availability window [start, end) (aware datetimes; None: open on that side) on
    the doubled microsecond line of the `avail` entries (module docstring): (2 start,
    2 end - 1), None for an open side."""
    lo = None if start is None else 2 * ((start - _EPOCH) // timedelta(microseconds=1))
    hi = None if end is None else 2 * ((end - _EPOCH) // timedelta(microseconds=1)) - 1
    return lo, hi


# ------------------------------------------------------------------ the radius cover


class CellRanges(NamedTuple):
    """Disjoint cell id ranges, sorted: `lo`, `hi` (inclusive, int64) and `edge` (the
    range's cells may hold rows on both sides of the query's boundary)."""

    lo: npt.NDArray[np.int64]
    hi: npt.NDArray[np.int64]
    edge: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, ranges: list[tuple[int, int, bool]]) -> CellRanges:
        """From (lo, hi, edge) tuples (disjoint, any order)."""
        ordered = sorted(ranges)
        return cls(
            np.array([r[0] for r in ordered], dtype=np.int64),
            np.array([r[1] for r in ordered], dtype=np.int64),
            np.array([r[2] for r in ordered], dtype=bool),
        )


# Every cell id (both families): one range.
ALL_CELLS = CellRanges.of([(-(2**31), 2**31 - 1, False)])


def _cell_ranges(runs: bytes) -> CellRanges:
    """The `CellRanges` of runs as the C kernels return them: native int64 triples
    (first cell, last cell, edge 0/1), sorted by cell id."""
    a = np.frombuffer(runs, dtype=np.int64).reshape(-1, 3)
    return CellRanges(a[:, 0], a[:, 1], a[:, 2].astype(bool))


@dataclass(frozen=True, slots=True)
class Cover:
    """Cell id ranges (inclusive, sorted, disjoint) covering a circle or a box: `inner`
    cells lie wholly inside it (their blocks are read whole), `edge` cells may hold rows
    on both sides (their rows are tested one by one)."""

    runs: CellRanges

    def _where(self, edge: bool) -> list[tuple[int, int]]:
        at = self.runs.edge == edge
        return list(zip(self.runs.lo[at].tolist(), self.runs.hi[at].tolist(), strict=True))

    @property
    def inner(self) -> list[tuple[int, int]]:
        """The inner ranges as (lo, hi) tuples."""
        return self._where(False)

    @property
    def edge(self) -> list[tuple[int, int]]:
        """The edge ranges as (lo, hi) tuples."""
        return self._where(True)

    def ranges(self) -> CellRanges:
        """Every range, sorted."""
        return self.runs


def radius_cover(
    lat: float, lng: float, r_in: float, r_out: float, box: tuple[float, float, float, float]
) -> Cover | None:
    """The cover of the circle around (lat, lng): `r_in` / `r_out` are sphere radii in
    metres (PostGIS sphere) inside which every row is certainly inside / outside which
    every row is certainly outside the WGS84 radius; `box` (x0, y0, x1, y1) holds the
    `r_out` cap. None when the box wraps (antimeridian, poles): the caller scans rows.

    A cell is inner when its 4 corners are within `r_in - 1 m` on the sphere (the
    distance from a point to a lng/lat rectangle not holding its antipode peaks at a
    corner: along a parallel it grows with the longitude difference, along a meridian it
    has no interior maximum). A cell is skipped when the point of the cell nearest in
    lng/lat, minus the cell's diameter bound, is beyond `r_out` (triangle inequality).
    The grid is walked in C (`_kernels.radius_cover`), column by column: the unit
    vectors' dot products are separable, cos(y) (cos(x) px + sin(x) py) + sin(y) pz, so
    the trigonometry runs once per grid line."""
    x0, y0, x1, y1 = box
    if x0 <= -180.0 or x1 >= 180.0 or y0 <= -90.0 or y1 >= 90.0:
        return None
    ix0, ix1 = math.floor((x0 + 180.0) / CELL_DEG), math.floor((x1 + 180.0) / CELL_DEG)
    iy0, iy1 = math.floor((y0 + 90.0) / CELL_DEG), math.floor((y1 + 90.0) / CELL_DEG)
    cos_in = math.cos(max(0.0, r_in - 1.0) / EARTH_R)
    # angle(centre, cell) - diam <= r_out / R, as cosines (the angle is in [0, pi])
    diam = 1.5 * math.radians(CELL_DEG)
    cos_near = math.cos(min(math.pi, r_out / EARTH_R + diam))
    runs = _kernels.radius_cover(lat, lng, cos_in, cos_near, ix0, ix1, iy0, iy1)
    return Cover(_cell_ranges(runs))


def bbox_cover(box: tuple[float, float, float, float]) -> Cover:
    """The cover of a lng/lat box (x0, y0, x1, y1): inner cells lie inside it by more
    than `BOX_MARGIN` (the `&&` test of a point is inclusive and runs on float4 boxes),
    the other cells it touches are edge cells."""
    x0, y0, x1, y1 = box
    ix0 = max(0, math.floor((x0 + 180.0) / CELL_DEG) - 1)
    ix1 = min(COLUMN, math.floor((x1 + 180.0) / CELL_DEG) + 1)
    iy0 = max(0, math.floor((y0 + 90.0) / CELL_DEG) - 1)
    iy1 = min(COLUMN // 2, math.floor((y1 + 90.0) / CELL_DEG) + 1)
    xs = np.arange(ix0, ix1 + 2, dtype=np.float64) * CELL_DEG - 180.0
    ys = np.arange(iy0, iy1 + 2, dtype=np.float64) * CELL_DEG - 90.0
    m = BOX_MARGIN
    in_x = (xs[:-1] >= x0 + m) & (xs[1:] <= x1 - m)
    in_y = (ys[:-1] >= y0 + m) & (ys[1:] <= y1 - m)
    touch_x = (xs[1:] >= x0 - m) & (xs[:-1] <= x1 + m)
    touch_y = (ys[1:] >= y0 - m) & (ys[:-1] <= y1 + m)
    inner = in_x[:, None] & in_y[None, :]
    edge = touch_x[:, None] & touch_y[None, :] & ~inner
    state = np.ascontiguousarray(inner.astype(np.uint8) + 2 * edge.astype(np.uint8))
    nx, ny = state.shape
    return Cover(_cell_ranges(_kernels.grid_runs(state, nx, ny, ix0, iy0)))


# ------------------------------------------------------------------ WGS84 distances

WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563
# Vincenty's inverse solution is good to ~0.1 mm (Karney 2013, "Algorithms for
# geodesics", J. Geodesy 87: 43-55, §1); PostGIS computes the geodesic with GeographicLib
# (15 nm). A record nearer than this to the radius (metres) is left to PostGIS.
GEODESIC_MARGIN = 0.01


def wgs84_distance(
    lat: float, lng: float, lats: npt.NDArray[np.float64], lngs: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Geodesic distances in metres on the WGS84 ellipsoid from (lat, lng) to each
    (lats, lngs) (degrees), by Vincenty's inverse formula (T. Vincenty, "Direct and
    inverse solutions of geodesics on the ellipsoid with application of nested
    equations", Survey Review 23(176), 1975; `_kernels.vincenty`, in C); NaN where the
    iteration does not converge (nearly antipodal points)."""
    one = _kernels.vincenty
    return np.array(
        [one(lat, lng, y, x) for y, x in zip(lats.tolist(), lngs.tolist(), strict=True)],
        dtype=np.float64,
    )


# ------------------------------------------------------------------ the facet pass


@dataclass(slots=True)
class Filters:
    """The filters the blocks answer (the engine sends the others to SQL): price bounds in
    minor units, `min_rating` (1.00-5.00 scale), currency, mode, coach kinds, and the
    subject/expertise and language masks (`lang_other`: selected codes without a bit)."""

    min_price: int | None = None
    max_price: int | None = None
    currency: str | None = None
    min_rating: float | None = None
    mode: str | None = None
    kinds: tuple[str, ...] = ()
    cat_mask: int | None = None
    lang_mask: int = 0
    lang_other: tuple[str, ...] = ()
    lang_filtered: bool = False


@dataclass(slots=True)
class Counts:
    """Raw facet counts: per catalogue bit (rows passing every filter but the catalogue
    one), per language bit and per other code (every filter but the language one), per
    rating bucket and per currency (count, min, max, sum) of the results, `total`,
    `scanned` (rows passing every filter but the catalogue one) and `hits` (the results'
    mask over the records)."""

    cat: dict[int, int] = field(default_factory=dict)
    lang: dict[int, int] = field(default_factory=dict)
    lang_other: dict[str, int] = field(default_factory=dict)
    rating: dict[int, int] = field(default_factory=dict)
    price: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    total: int = 0
    scanned: int = 0
    hits: npt.NDArray[np.bool_] | None = None  # the results, over the records


_MODES = {"online": 1, "in_person": 2}  # `facet_pass`'s mode argument


def _int64(v: int | None) -> int | None:
    """A price bound clamped to int64 (`facet_pass` compares int4 prices with it)."""
    return None if v is None else max(-(2**63), min(v, 2**63 - 1))


def signed64(mask: int) -> int:
    """An unsigned 64-bit `mask` as a signed int64 (bit 63 is the sign): a PostgreSQL
    bigint, or a numpy int64 to test against."""
    return mask - (1 << 64) if mask >= 1 << 63 else mask


class Blocks:
    """Decoded records of fetched blocks: `records` (a numpy structured array, native
    byte order) and `others` ({record index: codes}) for `languages_other`."""

    def __init__(
        self,
        family: str,
        rows: list[bytes] | bytes,
        counts: npt.NDArray[np.int64],
        edge: npt.NDArray[np.bool_],
        others: dict[int, list[str]],
        cells: npt.NDArray[np.int64],
        versions: npt.NDArray[np.int64],
        avail: list[bytes] | tuple[bytes, npt.NDArray[np.int64]] | None = None,
    ) -> None:
        """Per block: packed records (sizes checked, `check`; or every block's, joined),
        record count, edge flag,
        cell id and version (`starts` then gives each block's first record); `others`:
        block index -> its `languages_other` entries, for the blocks that have some;
        `avail`: per block, its availability entries (module docstring), when the query
        filters on availability (`available`): a list, or (every block's joined, byte
        length per block)."""
        # one join + one frombuffer: np.concatenate of unaligned records is ~15x slower
        packed = rows if isinstance(rows, bytes) else b"".join(rows)
        self.records = np.frombuffer(packed, dtype=DTYPE[family])
        self.counts = counts
        self.starts = (np.cumsum(counts) - counts).astype(np.int64)
        self.cells, self.versions = cells, versions
        self.edge = np.repeat(edge, counts)
        self.rank: npt.NDArray[np.float64] | None = None  # the text ranks (relevance page)
        # the block directory's generation when it listed exactly these blocks, if known
        self.generation: int | None = None
        if isinstance(avail, list):
            avail = (b"".join(avail), np.array([len(part) for part in avail], dtype=np.int64))
        self.avail = avail
        self.others: dict[int, list[str]] = {}
        for b, entries in others.items():
            if entries:
                offset = int(self.starts[b])
                for entry in entries:
                    i, _, codes = entry.partition(":")
                    self.others[offset + int(i)] = codes.split(",")

    @classmethod
    def from_parts(cls, family: str, parts: list[tuple[bytes, list[str] | None, bool]]) -> Blocks:
        """The blocks of (packed records, `others` entries, edge flag) per block, without
        cell ids or versions (hand-made records)."""
        size = DTYPE[family].itemsize
        none = np.zeros(len(parts), dtype=np.int64)
        return cls(
            family,
            [part[0] for part in parts],
            np.array([len(part[0]) // size for part in parts], dtype=np.int64),
            np.array([part[2] for part in parts], dtype=bool),
            {b: part[1] for b, part in enumerate(parts) if part[1]},
            none,
            none,
        )

    def available(self, lo: int | None, hi: int | None) -> npt.NDArray[np.bool_]:
        """Mask of the records with an availability range overlapping the window
        (`lo`, `hi`) of `window_bounds` (None: open on that side): some entry with
        `L <= hi` and `lo <= U`, PostgreSQL's `availability && tstzrange(from, to)`.
        ValueError when the blocks came without their entries (`avail`)."""
        if self.avail is None:
            raise ValueError("these blocks were read without their availability entries")
        size = AVAIL_ENTRY.itemsize
        joined, lengths = self.avail
        if (lengths % size).any():
            raise ValueError("an availability part is not a whole number of entries")
        entries = np.frombuffer(joined, dtype=AVAIL_ENTRY)
        per_block = lengths // size
        ok = np.ones(entries.size, dtype=bool)
        if hi is not None:
            ok &= entries["lo"] <= hi
        if lo is not None:
            ok &= entries["hi"] >= lo
        owner = np.repeat(self.starts, per_block) + entries["i"]
        found = np.zeros(self.records.size, dtype=bool)
        found[owner[ok]] = True
        return found

    def shared(self) -> Blocks:
        """A view of these blocks for one more query: the records, their decoded columns
        and the directory generation are shared (never written), the text ranks are
        the query's own."""
        view = copy.copy(self)
        view.rank = None
        return view

    def take(self, sel: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """The records at `sel` (a bool mask over the records, or indexes), as a new
        record array. Rows of bytes are copied whole (`np.take` on a 2-D uint8 view):
        a structured-array gather copies field by field, ~20x slower."""
        idx = np.flatnonzero(sel) if sel.dtype == np.bool_ else sel
        rows = np.take(self._bytes, idx, axis=0)
        return rows.view(self.records.dtype).reshape(-1)

    @cached_property
    def _bytes(self) -> npt.NDArray[np.uint8]:
        return self.records.view(np.uint8).reshape(-1, self.records.dtype.itemsize)

    @cached_property
    def cat(self) -> npt.NDArray[np.int64]:
        """The catalogue masks in native int64 (converted once per query)."""
        return self.records["cat"].astype(np.int64)

    @cached_property
    def lang(self) -> npt.NDArray[np.int64]:
        """The language masks in native int64 (converted once per query)."""
        return self.records["lang"].astype(np.int64)

    @staticmethod
    def check(family: str, n: int, rows: bytes) -> bytes:
        """`rows` when it holds exactly `n` records; ValueError otherwise."""
        if len(rows) != n * DTYPE[family].itemsize:
            raise ValueError(f"a block holds {len(rows)} bytes, its count {n} records")
        return rows

    def lookup(
        self, ids: bytes, ranks: bytes
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64] | None]:
        """(mask of the records whose provider id is in `ids` (16-byte uuids, packed),
        rank of each record (NaN where unmatched; None when `ranks` is empty)) with
        `ranks` big-endian float4, one per id."""
        match = np.frombuffer(ids, dtype=">u8").reshape(-1, 2)
        mh, ml = match[:, 0].astype(np.uint64), match[:, 1].astype(np.uint64)
        order = np.lexsort((ml, mh))
        mh, ml = mh[order], ml[order]
        rh = self.records["id_hi"].astype(np.uint64)
        rl = self.records["id_lo"].astype(np.uint64)
        if len(mh) > 1 and not np.all(mh[1:] != mh[:-1]):
            # two matches share their first 8 bytes (p ~ 1e-11): an exact set instead
            pairs = {(int(h), int(low)): i for i, (h, low) in enumerate(zip(mh, ml, strict=True))}
            at = np.array(
                [pairs.get((int(h), int(low)), -1) for h, low in zip(rh, rl, strict=True)]
            )
            found = at >= 0
        else:
            at = np.minimum(np.searchsorted(mh, rh), max(len(mh) - 1, 0))
            found = (mh[at] == rh) & (ml[at] == rl) if len(mh) else np.zeros(len(rh), bool)
        if not ranks:
            return found, None
        rank = np.frombuffer(ranks, dtype=">f4").astype(np.float64)[order]
        if not len(rank):
            return found, np.full(len(found), np.nan)
        return found, np.where(found, rank[np.maximum(at, 0)], np.nan)

    def ids(self, idx: npt.NDArray[np.intp] | list[int]) -> list[str]:
        """The provider ids of records `idx` (in that order) as 32-digit hex strings,
        which PostgreSQL reads as uuids: formatted in C (`_kernels.hex_ids`), no
        `uuid.UUID` per record (building and printing one costs more than the rest)."""
        at = idx.tolist() if isinstance(idx, np.ndarray) else idx
        return _kernels.hex_ids(self.records, self.records.dtype.itemsize, at)

    def id_literal(self, idx: npt.NDArray[np.intp]) -> str:
        """The provider ids of records `idx` as a PostgreSQL uuid[] literal."""
        return "{" + ",".join(self.ids(idx)) + "}"

    def radius_test(
        self, lat: float, lng: float, cos_in: float, cos_out: float, radius_m: float
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.intp]]:
        """The radius test of the edge records (tutors), in C (`_kernels.edge_test`):
        (keep mask over all records — every non-edge record, the edge records certainly
        inside on the sphere (their unit vector's dot product with the centre's is at
        least `cos_in`), and those of the ring between `cos_out` and `cos_in` within
        `radius_m` - `GEODESIC_MARGIN` of (lat, lng) by Vincenty's distance on the WGS84
        ellipsoid; indexes of the ring records within the margin of the radius, or where
        Vincenty's iteration did not converge, which PostGIS decides). The sphere bounds
        carry a margin (`plan.radius_filter`) far above float rounding, so the
        classification never needs to match PostgreSQL's to the ulp."""
        keep = np.empty(self.records.size, dtype=bool)
        undecided = _kernels.edge_test(
            self.records, self.records.dtype.itemsize, self.edge, keep,
            lat, lng, cos_in, cos_out, radius_m, GEODESIC_MARGIN,
        )  # fmt: skip
        return keep, np.array(undecided, dtype=np.intp)

    def count(self, f: Filters, keep: npt.NDArray[np.bool_] | None = None) -> Counts:
        """The facet pass over the records in `keep` (all by default), see `Counts`: one
        loop in C over the packed records (`_kernels.c`, `facet_pass`), which
        applies every filter and counts every facet at once."""
        n = self.records.size
        out = Counts(hits=np.zeros(n, dtype=bool))
        if n == 0:
            return out
        extra = None  # records whose `languages_other` holds a selected code
        if f.lang_filtered and f.lang_other and self.others:
            wanted = set(f.lang_other)
            extra = np.zeros(n, dtype=bool)
            for i, codes in self.others.items():
                if wanted.intersection(codes):
                    extra[i] = True
        threshold = None
        if f.min_rating is not None:
            # rating_avg >= min_rating::numeric on hundredths: PostgreSQL casts a float8 to
            # numeric through its 15 significant digits; times 100, rounded up.
            exact = Decimal(format(f.min_rating, ".15g")) * 100
            threshold = max(int(exact.to_integral_value(ROUND_CEILING)), 0)
        kinds = int("coach" in f.kinds) | int("mentor" in f.kinds) << 1
        hits, by_cat = np.empty(n, dtype=bool), np.empty(n, dtype=bool)
        scanned, total, cat, lang, rating, currencies = _kernels.facet_pass(
            self.records, self.records.dtype.itemsize,
            None if keep is None else np.ascontiguousarray(keep), hits, by_cat,
            _int64(f.min_price), _int64(f.max_price),
            f.currency.encode() if f.currency else None, threshold,
            _MODES.get(f.mode or "", 0), kinds, f.cat_mask,
            f.lang_mask if f.lang_filtered else None, extra,
        )  # fmt: skip
        out.scanned, out.total, out.hits = scanned, total, hits
        out.cat = {b: c for b, c in enumerate(cat) if c}
        out.lang = {b: c for b, c in enumerate(lang) if c}
        for i, codes in self.others.items():
            if by_cat[i]:
                for code in codes:
                    out.lang_other[code] = out.lang_other.get(code, 0) + 1
        out.rating = {b: c for b, c in enumerate(rating) if c}
        out.price = {code.decode(): (k, lo, hi, sm) for code, k, lo, hi, sm in currencies}
        return out

    def box_test(
        self, box: tuple[float, float, float, float]
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.intp]]:
        """The viewport test `geom && box` of the edge records: (keep mask over all
        records — every non-edge record and the edge records inside the box by more
        than `BOX_MARGIN`; indexes of the edge records within `BOX_MARGIN` of a side,
        which PostGIS decides: `&&` compares float4 boxes)."""
        x0, y0, x1, y1 = box
        idx = np.flatnonzero(self.edge)
        rec = self.take(idx)
        lat, lng = rec["lat"].astype(np.float64), rec["lng"].astype(np.float64)
        m = BOX_MARGIN
        inside = (lng >= x0 + m) & (lng <= x1 - m) & (lat >= y0 + m) & (lat <= y1 - m)
        near = (lng >= x0 - m) & (lng <= x1 + m) & (lat >= y0 - m) & (lat <= y1 + m) & ~inside
        keep = ~self.edge
        keep[idx[inside]] = True
        return keep, idx[near]

    def clusters(self, hits: npt.NDArray[np.bool_], cell: float) -> list[tuple[Any, ...]]:
        """Clusters of the `hits` records on the grid of `cell` degrees (tutors): one
        (count, avg lat, avg lng, min lat, min lng, max lat, max lng) per non-empty grid
        cell `(floor(lng / cell), floor(lat / cell))`, by count descending, then average
        latitude and longitude (the SQL pass's order), then grid cell. Grouped in one
        pass in C (`_kernels.clusters`, a hash table of the grid cells met)."""
        rows = _kernels.clusters(
            self.records, self.records.dtype.itemsize, np.ascontiguousarray(hits), cell
        )
        rows.sort(key=lambda c: (-c[0], c[1], c[2], c[7], c[8]))
        return [c[:7] for c in rows]

    def page(
        self, hits: npt.NDArray[np.bool_], sort: str, limit: int, key: list[Any] | None
    ) -> list[int]:
        """The indexes of the first `limit` records of `hits` in the order of `sort` after
        the keyset `key` (the cursor's [sort value, provider id]): `rating` =
        rating_sort (the damped rating, the record's `rank`) descending, `price` = price_minor ascending, `relevance`
        = `self.rank` descending; ties by provider_id ascending (uuid order is byte
        order: (id_hi, id_lo) as unsigned). One pass in C (`_kernels.page`) keeping the
        best `limit` in a heap; the primary keys (hundredths, minor units, float4 ranks)
        are exact as float64."""
        k0: float | None
        if sort == "rating":
            code, k0 = 0, None if key is None else -int(Decimal(str(key[0])) * 100)
        elif sort == "price":
            code, k0 = 1, None if key is None else int(key[0])
        elif sort == "relevance" and self.rank is not None:
            # ts_rank is a float4: its float64 image orders and compares exactly; the
            # cursor holds its shortest decimal text, compared as ::real like in SQL
            code, k0 = 2, None if key is None else -float(np.float32(key[0]))
        else:
            raise ValueError(f"no block page for sort {sort!r}")
        after = None
        if key is not None and k0 is not None:
            kid = uuid.UUID(str(key[1])).int
            after = (float(k0), kid >> 64, kid & ((1 << 64) - 1))
        rank = np.ascontiguousarray(self.rank, dtype=np.float64) if code == 2 else None
        return _kernels.page(
            self.records, self.records.dtype.itemsize, np.ascontiguousarray(hits),
            code, rank, limit, after,
        )  # fmt: skip

    def nearest(
        self, hits: npt.NDArray[np.bool_], lat: float, lng: float, limit: int, after: float | None
    ) -> list[int]:
        """Indexes of the candidates for the first `limit` records of `hits` by WGS84 distance to
        (lat, lng) at or after the distance `after` (metres, the cursor's): a superset
        the database orders exactly. Sphere and spheroid distances differ by less than
        0.56 %, so spheroid = sphere x [1/1.006, 1.006] (+ 1 m for float rounding). The
        records that may be at or after `after` have sphere >= after / 1.006 - 1; those
        certainly after it have sphere > after x 1.006 + 1. With `D` the `limit`-th
        smallest sphere distance among the latter, the exact page lies within the
        spheroid `D` x 1.006 + 1, hence within the sphere (`D` x 1.006 + 1) x 1.006 + 1:
        the candidates are every record of the uncertain band and those up to there.
        One pass in C (`_kernels.nearest`: the distances, the band, and the
        `limit`-th distance in a heap)."""
        return _kernels.nearest(
            self.records, self.records.dtype.itemsize, np.ascontiguousarray(hits),
            lat, lng, limit, after,
        )  # fmt: skip

    def st_distance(self, idx: list[int], lat: float, lng: float) -> list[float]:
        """PostGIS's `ST_Distance(record::geography, point::geography)` in metres of tutor
        records `idx` from (lat, lng), to the bit, in C (`_kernels.st_distance`: PROJ's
        geodesic with PostGIS's steps)."""
        return _kernels.st_distance(
            self.records, self.records.dtype.itemsize, idx, lat, lng
        )  # fmt: skip

    def block_of(self, idx: list[int]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:
        """(block, index within it) of each record of `idx`."""
        at = np.asarray(idx, dtype=np.int64)
        b = np.searchsorted(self.starts, at, side="right") - 1
        return b, at - self.starts[b]

    def points_json(self, idx: list[int], items: list[bytes]) -> bytes:
        """The JSON array of the map points (`MapPoint`) of tutor records `idx` (in that
        order), cut in C (`_kernels.points_json`) from `items[k]`, the items of the block
        of record `idx[k]`: the same values as the list item's. ValueError when a block's
        items do not match its records."""
        b, j = self.block_of(idx)
        return _kernels.points_json(items, self.counts[b].tolist(), j.tolist())

    def items_json(self, idx: list[int], tails: list[bytes], items: list[bytes]) -> bytes:
        """The JSON array of the list items of records `idx` (in that order), item `k`
        closed by `tails[k]` (a tutor's `,"distance_km":…}`, else `}`), joined in C
        (`_kernels.items_json`) from `items[k]`, the items (migration 0012) of the block
        of record `idx[k]`. ValueError when a block's items do not match its records."""
        b, j = self.block_of(idx)
        return _kernels.items_json(items, self.counts[b].tolist(), j.tolist(), tails)
