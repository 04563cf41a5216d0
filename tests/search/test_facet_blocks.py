"""Facet blocks (`search/engines/postgres/blocks.py`, migration 0008): the radius cover is
sound, the block facet pass answers exactly what the SQL pass answers, and the blocks
stay equal to a from-scratch build under streaming writes, moves, deletes and concurrent
writers."""

from __future__ import annotations

import math
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import psycopg
import pytest
from geographiclib.geodesic import Geodesic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexer.projection import rebuild_documents
from profiles.catalogue import SUBJECTS
from search.engines.postgres import _kernels
from search.engines.postgres.block_sync import BlockDirectory
from search.engines.postgres.blocks import (
    AVAIL_SQL,
    CELL_DEG,
    COLUMN,
    DTYPE,
    EARTH_R,
    GEODESIC_MARGIN,
    Blocks,
    Counts,
    Cover,
    Filters,
    radius_cover,
    signed64,
    wgs84_distance,
    window_bounds,
)
from search.engines.postgres.engine import PostgresEngine
from search.engines.postgres.plan import radius_filter, sphere_scale
from search.engines.postgres.text_cache import TextMatchCache
from search.geo import snap_bbox
from search.schemas import CoachQuery, TutorMapQuery, TutorQuery, body_fields
from tests.conftest import EngineThread
from tests.indexer.projection_check import assert_equals_from_scratch
from tests.search.test_search_oracle import CENTRES, T0, coach_queries, tutor_queries

# --------------------------------------------------------------------- the cover (no DB)


def _cell(lat: float, lng: float) -> int:
    """The SQL generated column's arithmetic (IEEE doubles, same operations)."""
    return math.floor((lng + 180) / CELL_DEG) * COLUMN + math.floor((lat + 90) / CELL_DEG)


def _in(ranges: list[tuple[int, int]], cell: int) -> bool:
    return any(lo <= cell <= hi for lo, hi in ranges)


def _cover(lat: float, lng: float, radius_km: float) -> tuple[Cover, dict[str, Any]]:
    """`radius_cover` of the radius query (lat, lng, radius_km), with the query's
    parameters (`radius_filter`)."""
    p = radius_filter(lat, lng, radius_km).params()
    cover = radius_cover(
        lat, lng, p["radius_in"], p["radius_out"], (p["gx0"], p["gy0"], p["gx1"], p["gy1"])
    )
    assert cover is not None
    return cover, p


@settings(max_examples=60, deadline=None)
@given(
    lat=st.floats(-75, 75),
    lng=st.floats(-170, 170),
    radius_km=st.sampled_from([0.3, 1.0, 5.0, 12.5, 40.0, 150.0]),
    fractions=st.lists(st.tuples(st.floats(-1.3, 1.3), st.floats(-1.3, 1.3)), min_size=40),
)
def test_cover_is_sound(
    lat: float, lng: float, radius_km: float, fractions: list[tuple[float, float]]
) -> None:
    """A point in an inner cell is within the radius (WGS84 geodesic, geographiclib); a
    point in no inner or edge cell is outside it."""
    cover, p = _cover(lat, lng, radius_km)
    assert cover.edge, "a circle always has an edge"
    half_w, half_h = (p["gx1"] - p["gx0"]) / 2, (p["gy1"] - p["gy0"]) / 2
    # random points over the box and beyond, plus the corners of cells (the worst case)
    points = [(lat + fy * half_h, lng + fx * half_w) for fx, fy in fractions]
    points += [
        (math.floor((y + 90) / CELL_DEG) * CELL_DEG - 90, math.floor((x + 180) / CELL_DEG) * CELL_DEG - 180)
        for y, x in points
    ]  # fmt: skip
    for y, x in points:
        if not -90 <= y <= 90:
            continue
        d = Geodesic.WGS84.Inverse(lat, lng, y, x)["s12"]
        cell = _cell(y, x)
        if _in(cover.inner, cell):
            assert d <= radius_km * 1000, (y, x, d)
        elif not _in(cover.edge, cell):
            assert d > radius_km * 1000, (y, x, d)


def _unit(lat: float, lng: float) -> tuple[float, float, float]:
    phi, lam = math.radians(lat), math.radians(lng)
    return math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi)


@settings(max_examples=40, deadline=None)
@given(
    lat=st.floats(-70, 70),
    lng=st.floats(-170, 170),
    radius_km=st.sampled_from([0.5, 3.0, 12.5, 40.0]),
)
def test_cover_classifies_every_cell_by_its_rule(lat: float, lng: float, radius_km: float) -> None:
    """The cover (`radius_cover`, walked in C) is, cell by cell, what its docstring says:
    inner when the 4 corners are within `r_in - 1 m` on the sphere, else edge when the
    cell's nearest point is within `r_out` plus 1.5 cell diagonals, else absent; the
    runs are sorted, disjoint and cover exactly those cells. Cells whose dot product
    is within 1e-12 of a bound are not judged (the two computations may round apart)."""
    cover, p = _cover(lat, lng, radius_km)
    r = cover.ranges()
    assert (r.lo <= r.hi).all()
    assert (r.hi[:-1] < r.lo[1:]).all()
    cos_in = math.cos(max(0.0, p["radius_in"] - 1.0) / EARTH_R)
    cos_near = math.cos(min(math.pi, p["radius_out"] / EARTH_R + 1.5 * math.radians(CELL_DEG)))
    c = _unit(lat, lng)
    ix0, ix1 = math.floor((p["gx0"] + 180) / CELL_DEG), math.floor((p["gx1"] + 180) / CELL_DEG)
    iy0, iy1 = math.floor((p["gy0"] + 90) / CELL_DEG), math.floor((p["gy1"] + 90) / CELL_DEG)
    inner, edge = set(), set()
    for ix, iy in ((ix, iy) for ix in range(ix0, ix1 + 1) for iy in range(iy0, iy1 + 1)):
        x0, y0 = ix * CELL_DEG - 180, iy * CELL_DEG - 90
        x1, y1 = x0 + CELL_DEG, y0 + CELL_DEG
        dots = [sum(a * b for a, b in zip(c, _unit(y, x), strict=True))
                for x, y in ((x0, y0), (x0, y1), (x1, y0), (x1, y1))]  # fmt: skip
        near = sum(a * b for a, b in zip(c, _unit(min(max(lat, y0), y1), min(max(lng, x0), x1)),
                                         strict=True))  # fmt: skip
        if any(abs(d - cos_in) < 1e-12 for d in dots) or abs(near - cos_near) < 1e-12:
            continue  # too close to call
        cell = ix * COLUMN + iy
        if min(dots) >= cos_in:
            inner.add(cell)
            assert _in(cover.inner, cell), (ix, iy)
        elif near >= cos_near:
            edge.add(cell)
            assert _in(cover.edge, cell), (ix, iy)
        else:
            assert not _in(cover.inner, cell), (ix, iy)
            assert not _in(cover.edge, cell), (ix, iy)
    assert edge, "a circle always has an edge"
    if radius_km >= 12.5:
        assert inner, "a 12.5 km circle holds whole cells"


def _sphere_m(lat: float, lng: float, y: float, x: float) -> float:
    """Great-circle distance on the PostGIS sphere (haversine), metres."""
    p1, p2, dl = math.radians(lat), math.radians(y), math.radians(x - lng)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_R * math.asin(min(1.0, math.sqrt(h)))


@settings(max_examples=80, deadline=None)
@given(
    lat=st.floats(-89.9, 89.9),
    radius_km=st.floats(0.001, 500),
    shots=st.lists(st.tuples(st.floats(0, 360), st.floats(0.5, 1.0)), min_size=8, max_size=24),
)
def test_sphere_scale_bounds_the_geodesic(
    lat: float, radius_km: float, shots: list[tuple[float, float]]
) -> None:
    """`sphere_scale`: for points at a geodesic distance up to the radius, in any
    azimuth (GeographicLib's direct problem), the geodesic over the sphere distance lies
    in [lo, hi]; and the two sphere radii `radius_filter` derives classify them soundly."""
    r = radius_km * 1000
    lo, hi = sphere_scale(lat, r)
    radius = radius_filter(lat, 0.0, radius_km)
    r_in, r_out = radius.radius_in, radius.radius_out
    for azimuth, fraction in shots:
        g = Geodesic.WGS84.Direct(lat, 0.0, azimuth, r * fraction)
        d, sphere = g["s12"], _sphere_m(lat, 0.0, g["lat2"], g["lon2"])
        if sphere > 1.0:  # below a metre the haversine's rounding dominates the ratio
            assert lo * (1 - 1e-9) <= d / sphere <= hi * (1 + 1e-9), (azimuth, d, sphere)
        assert sphere <= r_out
        if sphere <= r_in:
            assert d <= r


@pytest.mark.parametrize(
    ("lat", "lo", "hi"),
    [(0.0, 0.99442, 1.00112), (48.85, 1.00009, 1.00303), (89.0, 1.00448, 1.00449)],
)
def test_sphere_scale_is_tight(lat: float, lo: float, hi: float) -> None:
    """At 10 km the bounds are the local radii of curvature over R: at Paris the ring a
    record needs the spheroid for is a quarter of the global bounds' [0.99440, 1.00449];
    the north-south and east-west geodesics come close to each bound."""
    got_lo, got_hi = sphere_scale(lat, 10_000)
    assert got_lo == pytest.approx(lo, abs=1e-5)
    assert got_hi == pytest.approx(hi, abs=1e-5)
    north = Geodesic.WGS84.Direct(lat, 0.0, 0.0, 10_000)
    east = Geodesic.WGS84.Direct(lat, 0.0, 90.0, 10_000)
    for g, bound in ((north, got_lo), (east, got_hi)):
        ratio = 10_000 / _sphere_m(lat, 0.0, g["lat2"], g["lon2"])
        assert ratio == pytest.approx(bound, abs=3e-5)


@settings(max_examples=60, deadline=None)
@given(
    lat=st.floats(-89.99, 89.99),
    lng=st.floats(-180, 180),
    offsets=st.lists(st.tuples(st.floats(-6, 6), st.floats(-6, 6)), min_size=1, max_size=50),
)
def test_vincenty_agrees_with_geographiclib(
    lat: float, lng: float, offsets: list[tuple[float, float]]
) -> None:
    """The ring's geodesic (Vincenty, in C) is within 1 mm of GeographicLib (what PostGIS
    uses) everywhere, poles and antimeridian included: far below the 1 cm
    `GEODESIC_MARGIN` inside which PostGIS decides."""
    lats = np.clip(np.array([lat + dy for dy, _ in offsets]), -90, 90)
    lngs = (np.array([lng + dx for _, dx in offsets]) + 180) % 360 - 180
    got = wgs84_distance(lat, lng, lats, lngs)
    for i, (y, x) in enumerate(zip(lats.tolist(), lngs.tolist(), strict=True)):
        want = Geodesic.WGS84.Inverse(lat, lng, y, x)["s12"]
        d = float(got[i])
        if not math.isnan(d):  # NaN: no convergence, left to PostGIS
            assert abs(d - want) < 1e-3, (lat, lng, y, x, d, want)
    assert wgs84_distance(lat, lng, np.array([lat]), np.array([lng]))[0] == 0.0  # the centre


def _st_distance_cases(rng: np.random.Generator) -> list[tuple[float, float, np.ndarray]]:
    """(lat, lng, records) cases: pages around random centres (records within 0.5 degrees),
    records anywhere on the globe, and the edges (antimeridian, poles, the centre
    itself, nearly antipodal points)."""
    cases = []
    for _ in range(150):
        lat, lng = float(rng.uniform(-85, 85)), float(rng.uniform(-180, 180))
        rec = np.zeros(40, dtype=DTYPE["tutor"])
        rec["lat"] = np.clip(lat + rng.uniform(-0.5, 0.5, 40), -90, 90)
        rec["lng"] = (lng + rng.uniform(-0.5, 0.5, 40) + 180) % 360 - 180
        rec["lat"][:5] = np.round(rec["lat"][:5], 4)  # seeded coordinates are short decimals
        rec["lng"][:5] = np.round(rec["lng"][:5], 5)
        rec["lat"][5], rec["lng"][5] = lat, lng
        cases.append((lat, lng, rec))
    edges = [(90.0, 0.0), (-90.0, 180.0), (0.0, 180.0), (0.0, -180.0), (45.0, -180.0),
             (45.0, 179.9999), (-0.000001, 0.0), (89.999, 45.0), (-33.0, -70.0)]  # fmt: skip
    rec = np.zeros(len(edges) + 60, dtype=DTYPE["tutor"])
    rec["lat"][: len(edges)] = [e[0] for e in edges]
    rec["lng"][: len(edges)] = [e[1] for e in edges]
    rec["lat"][len(edges) :] = rng.uniform(-90, 90, 60)
    rec["lng"][len(edges) :] = rng.uniform(-180, 180, 60)
    for lat, lng in [*edges, (33.0, 110.0), (0.5, -179.5)]:
        cases.append((lat, lng, rec))
    return cases


def test_st_distance_is_postgis_to_the_bit(database_url: str) -> None:
    """The page's distances in C (`Blocks.st_distance`) equal PostGIS's `ST_Distance`
    on geography exactly (the float, not within a tolerance), so a page, its
    `distance_km` and its cursor do not depend on which of the two computed them."""
    xs, ys, lxs, lys, got = [], [], [], [], []
    for lat, lng, rec in _st_distance_cases(np.random.default_rng(7)):
        blocks = Blocks.from_parts("tutor", [(rec.tobytes(), None, False)])
        got += blocks.st_distance(list(range(rec.size)), lat, lng)
        xs += rec["lng"].tolist()
        ys += rec["lat"].tolist()
        lxs += [lng] * rec.size
        lys += [lat] * rec.size
    with psycopg.connect(database_url) as conn:
        (want,) = conn.execute(
            "SELECT array_agg(ST_Distance(ST_SetSRID(ST_MakePoint(x, y), 4326)::geography,"
            " ST_SetSRID(ST_MakePoint(lx, ly), 4326)::geography) ORDER BY i)"
            " FROM unnest(%s::float8[], %s::float8[], %s::float8[], %s::float8[])"
            " WITH ORDINALITY u(x, y, lx, ly, i)",
            (xs, ys, lxs, lys),
        ).fetchone()
    assert len(got) == len(want) > 6_500
    wrong = [(ys[i], xs[i], lys[i], lxs[i], got[i], want[i])
             for i in range(len(got)) if got[i] != want[i]]  # fmt: skip
    assert wrong == []
    assert 0.0 in got  # the centre itself
    with pytest.raises(ValueError, match=f"record {rec.size} of {rec.size}"):
        blocks.st_distance([rec.size], 0.0, 0.0)


def test_radius_test_leaves_the_margin_to_postgis() -> None:
    """Edge records certainly inside on the sphere are kept, those beyond the outer
    bound dropped, the ring between is decided by the geodesic distance except within
    `GEODESIC_MARGIN` of the radius (left to PostGIS); records off the edge are kept."""
    lat, lng, r = 48.8566, 2.3522, 10_000.0
    line = Geodesic.WGS84.InverseLine(lat, lng, lat + 1, lng + 1)
    at = [r - 1, r - GEODESIC_MARGIN / 2, r, r + GEODESIC_MARGIN / 2, r + 1, 1_000, 30_000]
    rec = np.zeros(len(at), dtype=DTYPE["tutor"])
    for i, d in enumerate(at):
        pos = line.Position(d)
        rec[i]["lat"], rec[i]["lng"] = pos["lat2"], pos["lon2"]
    off_edge = rec[-1:].copy()  # 30 km away, but in a cell wholly inside (not tested)
    blocks = Blocks.from_parts(
        "tutor", [(rec.tobytes(), None, True), (off_edge.tobytes(), None, False)]
    )
    cos_in, cos_out = math.cos(5_000 / EARTH_R), math.cos(20_000 / EARTH_R)
    keep, undecided = blocks.radius_test(lat, lng, cos_in, cos_out, r)
    assert undecided.tolist() == [1, 2, 3]
    assert keep.tolist() == [True, False, False, False, False, True, False, True]


_MASK = st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 2**63, 2**64 - 1])
_RECORD = st.fixed_dictionaries(
    {
        "cat": _MASK,
        "lang": _MASK,
        "price": st.integers(-3, 3) | st.integers(-(2**31), 2**31 - 1),
        # x 100, -1 unrated; the bucket and threshold boundaries drawn often
        "rating": st.sampled_from([-1, 0, 99, 100, 199, 200, 333, 400, 499, 500])
        | st.integers(-1, 500),
        "flags": st.integers(0, 15),  # online, in person, has others, mentor
        "currency": st.sampled_from(["EUR", "CAD", "XOF", "GBP", "AAA", "ZZZ"]),
        "keep": st.booleans(),
        "others": st.lists(st.sampled_from(["eo", "la", "yi"]), max_size=2),
    }
)
_FILTERS = st.fixed_dictionaries(
    {
        "min_price": st.none() | st.integers(-3, 3) | st.integers(-(2**40), 2**40),
        "max_price": st.none() | st.integers(-3, 3) | st.integers(-(2**40), 2**40),
        "currency": st.none() | st.sampled_from(["EUR", "CAD", "QQQ"]),
        "min_rating": st.none() | st.sampled_from([0.0, 1.0, 2.5, 3.33, 4.995, 5.0]),
        "mode": st.none() | st.sampled_from(["online", "in_person"]),
        "kinds": st.sampled_from([(), ("coach",), ("mentor",), ("coach", "mentor")]),
        "cat_mask": st.none() | _MASK,
        "lang_mask": _MASK,
        "lang_other": st.sampled_from([(), ("eo",), ("la", "yi")]),
        "lang_filtered": st.booleans(),
    }
)


def _count_one_by_one(records: list[dict[str, Any]], f: Filters, keep: bool) -> Counts:
    """`Blocks.count` one record at a time, in plain Python (the rules of `Counts`)."""
    out = Counts()
    threshold = None if f.min_rating is None else math.ceil(round(f.min_rating * 100, 9))
    hits = []
    for r in records:
        base = (
            (not keep or r["keep"])
            and (f.min_price is None or r["price"] >= f.min_price)
            and (f.max_price is None or r["price"] <= f.max_price)
            and (f.currency is None or r["currency"] == f.currency)
            and (threshold is None or r["rating"] >= max(threshold, 0))
            and (f.mode != "online" or r["flags"] & 1 != 0)
            and (f.mode != "in_person" or r["flags"] & 2 != 0)
            and (not f.kinds or ("mentor" if r["flags"] & 8 else "coach") in f.kinds)
        )
        cat_ok = f.cat_mask is None or r["cat"] & f.cat_mask != 0
        others = r["others"] if r["flags"] & 4 else []
        lang_ok = not f.lang_filtered or (
            r["lang"] & f.lang_mask != 0 or bool(set(f.lang_other) & set(others))
        )
        hits.append(base and cat_ok and lang_ok)
        if base and lang_ok:
            out.scanned += 1
            for b in range(64):
                if r["cat"] >> b & 1:
                    out.cat[b] = out.cat.get(b, 0) + 1
        if base and cat_ok:
            for b in range(64):
                if r["lang"] >> b & 1:
                    out.lang[b] = out.lang.get(b, 0) + 1
            for code in others:
                out.lang_other[code] = out.lang_other.get(code, 0) + 1
        if base and cat_ok and lang_ok:
            out.total += 1
            if r["rating"] >= 100:
                bucket = min(r["rating"] // 100, 4) - 1
                out.rating[bucket] = out.rating.get(bucket, 0) + 1
            n, lo, hi, total = out.price.get(r["currency"], (0, r["price"], r["price"], 0))
            out.price[r["currency"]] = (
                n + 1, min(lo, r["price"]), max(hi, r["price"]), total + r["price"],
            )  # fmt: skip
    out.hits = np.array(hits, dtype=bool)
    return out


@settings(max_examples=300, deadline=None)
@given(
    blocks=st.lists(st.lists(_RECORD, max_size=12), max_size=5),
    f=_FILTERS,
    keep=st.booleans(),
)
def test_block_counts_equal_a_count_one_record_at_a_time(
    blocks: list[list[dict[str, Any]]], f: dict[str, Any], keep: bool
) -> None:
    """The facet pass (`Blocks.count`, in C) equals a count one record at a time over
    records of several blocks: every filter, bit 63 (the sign bit of the packed int8),
    unrated records, the `languages_other` codes, and a `keep` mask or none."""
    parts = []
    for block in blocks:
        packed = b"".join(
            uuid.uuid4().bytes + signed64(r["cat"]).to_bytes(8, "big", signed=True)
            + signed64(r["lang"]).to_bytes(8, "big", signed=True)
            + r["price"].to_bytes(4, "big", signed=True)
            + r["rating"].to_bytes(2, "big", signed=True)
            + max(r["rating"], 0).to_bytes(2, "big", signed=True)  # rank: unused by counts
            + r["flags"].to_bytes(2, "big") + r["currency"].encode()
            for r in block
        )  # fmt: skip
        others = [f"{i}:{','.join(r['others'])}" for i, r in enumerate(block)
                  if r["flags"] & 4 and r["others"]]  # fmt: skip
        parts.append((packed, others, False))
    b = Blocks.from_parts("coach", parts)
    records = [r for block in blocks for r in block]
    filters = Filters(**f)
    mask = np.array([r["keep"] for r in records], dtype=bool) if keep else None
    got = b.count(filters, mask)
    want = _count_one_by_one(records, filters, keep)
    assert got.hits is not None
    assert want.hits is not None
    assert got.hits.tolist() == want.hits.tolist()
    assert (got.scanned, got.total, got.cat, got.lang, got.lang_other, got.rating, got.price) == (
        want.scanned, want.total, want.cat, want.lang, want.lang_other, want.rating, want.price,
    )  # fmt: skip


_PAGE_RECORD = st.fixed_dictionaries(
    {
        # few distinct halves, so ties on the primary key and on id_hi are common
        "hi": st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1]),
        "lo": st.sampled_from([0, 5, 2**63, 2**64 - 1]),
        "price": st.sampled_from([-5, 0, 1500, 2**31 - 1]),
        "rating": st.sampled_from([-1, 0, 100, 450, 500]),
        # rating_sort x 100 (the damped rating the rating page sorts by)
        "sort_key": st.sampled_from([0, 100, 333, 450, 500]),
        "rank": st.sampled_from([0.0, 0.0607927, 0.1, 1e-20]),
        "hit": st.booleans(),
    }
)


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(_PAGE_RECORD, max_size=40),
    sort=st.sampled_from(["rating", "price", "relevance"]),
    limit=st.integers(1, 8),
    cut=st.none() | st.integers(0, 39),
)
def test_block_page_equals_a_sorted_walk(
    records: list[dict[str, Any]], sort: str, limit: int, cut: int | None
) -> None:
    """`Blocks.page` (a heap pass in C) returns what sorting the hits by (sort key, id)
    and taking the first `limit` after the keyset gives: rating_sort (the damped rating)
    descending, price ascending, rank descending, the uuid compared as bytes; the keyset is a
    record's own key (the cursor of the page it ended), so ties straddle it."""
    packed = b"".join(
        r["hi"].to_bytes(8, "big") + r["lo"].to_bytes(8, "big") + bytes(16)
        + r["price"].to_bytes(4, "big", signed=True) + r["rating"].to_bytes(2, "big", signed=True)
        + r["sort_key"].to_bytes(2, "big", signed=True) + bytes(2) + b"EUR"
        for r in records
    )  # fmt: skip
    b = Blocks.from_parts("coach", [(packed, None, False)])
    ranks = np.array([float(np.float32(r["rank"])) for r in records], dtype=np.float64)
    b.rank = ranks if sort == "relevance" else None
    hits = np.array([r["hit"] for r in records], dtype=bool)

    def primary(i: int) -> Any:
        r = records[i]
        if sort == "rating":
            return -r["sort_key"]
        return r["price"] if sort == "price" else -ranks[i]

    def ident(i: int) -> str:
        return uuid.UUID(bytes=packed[i * 45 : i * 45 + 16]).hex

    order = sorted(
        (i for i in range(len(records)) if hits[i]), key=lambda i: (primary(i), ident(i))
    )
    key = None
    if cut is not None and cut < len(records):
        r = records[cut]
        value = {"rating": str(r["sort_key"] / 100), "price": r["price"],
                 "relevance": str(np.float32(r["rank"]))}[sort]  # fmt: skip
        key = [value, str(uuid.UUID(ident(cut)))]
        order = [i for i in order if (primary(i), ident(i)) > (primary(cut), ident(cut))]
    assert b.ids(b.page(hits, sort, limit, key)) == [ident(i) for i in order[:limit]]


def test_gather_joins_copies_by_position() -> None:
    """`_kernels.gather` concatenates the copies at the positions given, in that order,
    and writes each one's length when asked; a position without a copy (None) or out of
    range is a ValueError."""
    copies: list[bytes | None] = [b"ccc", b"a", b"", None, b"ee"]
    lengths = np.zeros(4, dtype=np.int64)
    assert _kernels.gather(copies, np.array([4, 1, 2, 0], dtype=np.int64), lengths) == b"eeaccc"
    assert lengths.tolist() == [2, 1, 0, 3]
    assert _kernels.gather(copies, np.array([], dtype=np.int64), None) == b""
    for bad in ([4, 3], [5], [-1]):
        with pytest.raises(ValueError, match=r"copy|range"):
            _kernels.gather(copies, np.array(bad, dtype=np.int64), None)


def test_items_json_joins_the_items_of_the_records_asked() -> None:
    """`Blocks.items_json` (C) finds each record's item in its block's items by the
    block's int4 ends, closes it with its tail and joins them as a JSON array, in the
    order asked; items that do not fit their block's record count are refused."""
    texts = [["a", '\u00e9t\u00e9 \\"q\\"'], ["", "bb", '{"x":[1,2]}']]

    def part(items: list[str]) -> bytes:
        body = [t.encode() for t in items]
        ends = np.cumsum([len(b) for b in body]).astype(">i4").tobytes()
        return ends + b"".join(body)

    rec = [uuid.uuid4().bytes + bytes(29) for _ in range(5)]
    b = Blocks.from_parts(
        "coach", [(rec[0] + rec[1], None, False), (b"".join(rec[2:]), None, False)]
    )
    parts = [part(t) for t in texts]
    flat = [t for block in texts for t in block]
    idx, tails = [4, 0, 1, 2, 3], [b"}", b"!", b"", b"?", b"}"]
    owner = [parts[1], parts[0], parts[0], parts[1], parts[1]]
    want = b"[" + b",".join(flat[i].encode() + t for i, t in zip(idx, tails, strict=True)) + b"]"
    assert b.items_json(idx, tails, owner) == want
    assert b.items_json([], [], []) == b"[]"
    cut = part(texts[0])[:-1]  # the last item is cut
    for bad in (cut, parts[1], b"", b"\x00\x00\x00\x05ab", part(["a", "bc", "d"])):
        with pytest.raises(ValueError, match="do not match"):
            b.items_json([1], [b""], [bad])
    with pytest.raises(ValueError, match="differ in length"):
        _kernels.items_json([parts[0]], [2], [0], [])


def test_points_json_cuts_the_map_points_from_the_items() -> None:
    """`_kernels.points_json` cuts each map point (`MapPoint`, in its key order) from the
    tutor's list item, whatever the values hold: a name or headline spelling out the
    markers (escaped quotes), unicode; an item that is not a tutor's with a location,
    or items that do not fit their block, are refused."""
    items = [
        {
            "id": str(uuid.uuid4()),
            "display_name": 'Zo\u00e9 ,"headline":{"x"}',
            "headline": ',"price":{"amount_minor":1},"rating":',
            "subjects": ["maths"],
            "languages": ["fr"],
            "price": {"amount_minor": 2500, "currency": "EUR"},
            "rating": {"avg": 4.5, "count": 3},
            "online": True,
            "in_person": False,
            "location": {"lat": 48.8566, "lng": -2.0},
            "city": '},"location":{"lat":1',
            "country_code": "FR",
        },
        {
            "id": str(uuid.uuid4()),
            "display_name": "B",
            "headline": "",
            "subjects": [],
            "languages": [],
            "price": {"amount_minor": 0, "currency": "XOF"},
            "rating": {"avg": None, "count": 0},
            "online": False,
            "in_person": True,
            "location": {"lat": -90.0, "lng": 180.0},
            "city": None,
            "country_code": None,
        },
    ]
    body = [orjson.dumps(i)[:-1] for i in items]  # stored open, as the blocks hold them
    part = np.cumsum([len(b) for b in body]).astype(">i4").tobytes() + b"".join(body)
    got = orjson.loads(_kernels.points_json([part, part, part], [2, 2, 2], [1, 0, 1]))
    keys = ["id", "lat", "lng", "display_name", "price", "rating"]
    want = [
        {k: (i["location"][k] if k in ("lat", "lng") else i[k]) for k in keys}
        for i in (items[1], items[0], items[1])
    ]
    assert got == want
    assert [list(p) for p in got] == [keys] * 3
    assert _kernels.points_json([], [], []) == b"[]"
    coach = orjson.dumps({"id": "x", "display_name": "C", "headline": "", "kind": "coach"})[:-1]
    no_place = orjson.dumps({**items[1], "location": None})[:-1]
    for other in (coach, no_place):
        one = np.array([len(other)], dtype=">i4").tobytes() + other
        with pytest.raises(ValueError, match="not a tutor's with a location"):
            _kernels.points_json([one], [1], [0])
    with pytest.raises(ValueError, match="do not match"):
        _kernels.points_json([part[:-1]], [2], [0])
    with pytest.raises(ValueError, match="do not match"):
        _kernels.points_json([part], [2], [2])


def test_ids_print_the_uuids_of_the_records_asked() -> None:
    """`Blocks.ids` (`_kernels.hex_ids`) gives each asked record's uuid as 32 hex digits,
    in the order asked; an index outside the records is an IndexError."""
    ids = [uuid.uuid4() for _ in range(3)]
    b = Blocks.from_parts("coach", [(b"".join(i.bytes + bytes(29) for i in ids), None, False)])
    assert b.ids(np.array([2, 0, 2], dtype=np.intp)) == [ids[2].hex, ids[0].hex, ids[2].hex]
    assert b.ids([]) == []
    with pytest.raises(IndexError):
        b.ids([3])
    with pytest.raises(IndexError):
        b.ids([-1])


def test_block_counts_refuse_a_currency_that_is_not_three_letters() -> None:
    packed = uuid.uuid4().bytes + bytes(16) + (1000).to_bytes(4, "big") + bytes(6) + b"eu\x00"
    b = Blocks.from_parts("coach", [(packed, None, False)])
    with pytest.raises(ValueError, match="three letters"):
        b.count(Filters())


def test_cover_gives_way_when_the_box_wraps() -> None:
    for lat, lng in ((10.0, 179.9), (89.9, 0.0), (-10.0, -179.95)):
        r = radius_filter(lat, lng, 50)
        assert radius_cover(lat, lng, r.radius_in, r.radius_out, r.box) is None


def test_records_decode_with_their_languages_and_edge_flags() -> None:
    pid = uuid.UUID("f0000000-0000-4000-8000-000000000001")
    rec = (
        pid.bytes
        + (5).to_bytes(8, "big", signed=True)  # cat bits 0 and 2
        + (1 << 63).to_bytes(8, "big")  # language bit 63 (the sign bit)
        + (2500).to_bytes(4, "big")
        + (487).to_bytes(2, "big")
        + (471).to_bytes(2, "big")  # rank: rating_sort x 100
        + (1 | 4).to_bytes(2, "big")
        + b"EUR"
    )
    unrated = rec[:36] + (-1).to_bytes(2, "big", signed=True) + rec[38:]
    blocks = Blocks.from_parts(
        "coach", [(Blocks.check("coach", 2, rec + unrated), ["1:tlh,qya"], True)]
    )
    assert blocks.records["price"].tolist() == [2500, 2500]
    assert blocks.records["id_hi"][0] == pid.int >> 64
    assert blocks.records["rating"].tolist() == [487, -1]
    assert blocks.others == {1: ["tlh", "qya"]}
    assert blocks.edge.tolist() == [True, True]
    with pytest.raises(ValueError, match="count 3"):
        Blocks.check("coach", 3, rec)


# --------------------------------------------------------------------- block pass == SQL pass


@pytest.fixture(scope="module")
def sql_engine(engine_thread: EngineThread, search_dataset: str) -> Iterator[PostgresEngine]:
    """The same engine with the facet pass kept in SQL, on `engine_thread`'s loop."""
    engine = engine_thread.run(
        PostgresEngine.open(search_dataset, min_size=1, max_size=1, blocks=False)
    )
    yield engine
    engine_thread.run(engine.close())


_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _both(et: EngineThread, sql_engine: PostgresEngine, q: Any) -> tuple[Any, Any]:
    """(block path, SQL path) answers to the tutor or coach query `q`."""
    method = "search_tutors" if isinstance(q, TutorQuery) else "search_coaches"
    return (
        et.run(getattr(et.engine, method)(q)),
        et.run(getattr(sql_engine, method)(q)),
    )


@_SETTINGS
@given(q=tutor_queries())
def test_block_pass_equals_sql_pass_tutors(
    engine_thread: EngineThread, sql_engine: PostgresEngine, q: TutorQuery
) -> None:
    got, want = _both(engine_thread, sql_engine, q)
    assert got.model_dump() == want.model_dump()


@_SETTINGS
@given(q=coach_queries())
def test_block_pass_equals_sql_pass_coaches(
    engine_thread: EngineThread, sql_engine: PostgresEngine, q: CoachQuery
) -> None:
    got, want = _both(engine_thread, sql_engine, q)
    assert got.model_dump() == want.model_dump()


def test_block_pass_without_a_position_covers_every_tutor(
    engine_thread: EngineThread, sql_engine: PostgresEngine
) -> None:
    q = TutorQuery(subject=["mathematics"], language=["fr", "en"], sort="price")
    got, want = _both(engine_thread, sql_engine, q)
    assert got.total > 0
    assert got.model_dump() == want.model_dump()


@pytest.mark.parametrize("sort", ["distance", "rating"])
def test_block_page_distances_in_c_answer_as_postgis(
    engine_thread: EngineThread,
    sql_engine: PostgresEngine,
    monkeypatch: pytest.MonkeyPatch,
    sort: str,
) -> None:
    """The block page's distances come from the kernels (PROJ's geodesic, as PostGIS
    computes them), the SQL page's from PostGIS: the same answer, cursor included."""
    calls: list[int] = []
    in_c = Blocks.st_distance

    def counted(self: Blocks, idx: list[int], lat: float, lng: float) -> list[float]:
        calls.append(len(idx))
        return in_c(self, idx, lat, lng)

    monkeypatch.setattr(Blocks, "st_distance", counted)
    q = TutorQuery(lat=45.764, lng=4.8357, radius_km=30, sort=sort, limit=9)
    got, want = _both(engine_thread, sql_engine, q)
    assert got.total > 9
    assert got.next_cursor is not None
    assert got.model_dump() == want.model_dump()
    assert calls, "the block page's distances were computed in C"


@pytest.mark.parametrize("sort", ["distance", "price"])
def test_a_block_page_without_its_items_held_falls_back_to_sql(
    engine_thread: EngineThread,
    sql_engine: PostgresEngine,
    monkeypatch: pytest.MonkeyPatch,
    sort: str,
) -> None:
    """When the directory no longer holds the items of the versions the query computed
    on (its copies dropped, or a block re-packed while the query awaited), the page is
    read from the documents instead, and the answer is the same."""
    calls: list[object] = []

    def nothing_held(*args: Any) -> None:
        calls.append(args)

    monkeypatch.setattr(BlockDirectory, "items_of", nothing_held)
    q = TutorQuery(lat=48.8566, lng=2.3522, radius_km=40, sort=sort, limit=7)
    got, want = _both(engine_thread, sql_engine, q)
    assert calls
    assert got.total > 7
    assert got.model_dump() == want.model_dump()


WORDS = ["maths", "math", "anglais", "physique", "algeb", "histoire", "piano", "english",
         "chem", "mar", "jean", "prof", "cours", "the", "xyzzy"]  # fmt: skip


@st.composite
def text_queries(draw: Any) -> TutorQuery | CoachQuery:
    words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=2))
    common = {
        "q": " ".join(words),
        "sort": draw(st.sampled_from(["relevance", "rating", "price"])),
        "min_rating": draw(st.one_of(st.none(), st.sampled_from([3.5, 4.2]))),
        "language": draw(st.lists(st.sampled_from(["fr", "en"]), max_size=1)),
        "limit": draw(st.integers(1, 30)),
    }
    if draw(st.booleans()):
        return CoachQuery(**common)
    lat, lng = draw(st.sampled_from(CENTRES))
    if draw(st.booleans()):
        common["sort"] = draw(st.sampled_from([common["sort"], "distance"]))
        common.update(lat=lat, lng=lng, radius_km=draw(st.sampled_from([5.0, 40.0, 300.0])))
    return TutorQuery(**common)


@_SETTINGS
@given(q=text_queries())
def test_block_text_pass_equals_sql_pass(
    engine_thread: EngineThread, sql_engine: PostgresEngine, q: TutorQuery | CoachQuery
) -> None:
    """Text queries: the matches (and ranks) from one pass over the documents, facets and
    pages on the blocks — every page of a cursor walk equals the SQL path's."""
    for _ in range(4):
        got, want = _both(engine_thread, sql_engine, q)
        assert got.model_dump() == want.model_dump()
        if got.next_cursor is None:
            break
        q = q.model_copy(update={"cursor": got.next_cursor})


@st.composite
def map_queries(draw: Any, points: bool = False) -> TutorMapQuery:
    """Map queries around the dataset's centres: clusters (zoom 3-12), or with `points`
    points (zoom 13-16)."""
    lat, lng = draw(st.sampled_from(CENTRES))
    w, h = draw(st.floats(0.01, 3.0)), draw(st.floats(0.01, 2.0))
    x0, y0 = lng + draw(st.floats(-1.5, 0.5)), lat + draw(st.floats(-1.0, 0.3))
    bbox = (x0, y0, x0 + w, y0 + h)
    zoom = draw(st.integers(13, 16) if points else st.integers(3, 12))
    if draw(st.booleans()):  # the API snaps viewports; raw ones cut through cells
        bbox = snap_bbox(bbox, zoom)
    window: dict[str, Any] = {}
    w = draw(st.one_of(st.none(), st.tuples(st.integers(0, 27 * 24), st.integers(1, 72))))
    if w:  # an open side sometimes: the blocks' entries answer both shapes
        start, end = T0 + timedelta(hours=w[0]), T0 + timedelta(hours=w[0] + w[1])
        side = draw(st.sampled_from(["both", "from", "to"]))
        if side != "to":
            window["available_from"] = start
        if side != "from":
            window["available_to"] = end
    return TutorMapQuery(
        **window,
        bbox=",".join(repr(v) for v in bbox),
        zoom=zoom,
        subject=draw(st.lists(st.sampled_from([e.slug for e in SUBJECTS]), max_size=2)),
        language=draw(st.lists(st.sampled_from(["fr", "en", "ar", "nl"]), max_size=1)),
        min_price=draw(st.one_of(st.none(), st.integers(0, 6000))),
        min_rating=draw(st.one_of(st.none(), st.sampled_from([3.5, 4.2]))),
        mode=draw(st.one_of(st.none(), st.sampled_from(["online", "in_person"]))),
    )


@_SETTINGS
@given(q=map_queries())
def test_block_clusters_equal_sql_clusters(
    engine_thread: EngineThread, sql_engine: PostgresEngine, q: TutorMapQuery
) -> None:
    got = engine_thread.run(engine_thread.engine.tutor_map(q)).model_dump()
    want = engine_thread.run(sql_engine.tutor_map(q)).model_dump()
    assert got["total"] == want["total"]
    assert len(got["clusters"]) == len(want["clusters"])
    for g, w in zip(got["clusters"], want["clusters"], strict=True):
        assert (g["count"], g["bounds"]) == (w["count"], w["bounds"])
        # averages summed in another order may differ in the last ulp, then in the 6th
        # decimal once rounded
        for axis in ("lat", "lng"):
            assert math.isclose(g["centroid"][axis], w["centroid"][axis], abs_tol=1.01e-6)


@_SETTINGS
@given(q=map_queries(points=True))
def test_block_points_equal_sql_points(
    engine_thread: EngineThread, sql_engine: PostgresEngine, q: TutorMapQuery
) -> None:
    """Points mode: the best-rated `MAX_POINTS` tutors of the viewport, cut from the
    blocks' list items, equal the SQL pass's points (same order, same values) and
    total."""
    got = engine_thread.run(engine_thread.engine.tutor_map(q)).model_dump()
    want = engine_thread.run(sql_engine.tutor_map(q)).model_dump()
    assert got == want
    assert got["mode"] == "points"


def test_block_points_cut_at_the_limit_in_rating_order(
    engine_thread: EngineThread, sql_engine: PostgresEngine, search_dataset: str
) -> None:
    """A viewport holding more tutors than `MAX_POINTS`: the block answer keeps the
    `MAX_POINTS` best-rated (ties by id), equal to the SQL pass's, and counts them all;
    the points have the list items' values."""
    from search.geo import MAX_POINTS

    lat, lng = CENTRES[0]
    q = TutorMapQuery(bbox=f"{lng - 3},{lat - 2},{lng + 3},{lat + 2}", zoom=13)
    got = engine_thread.run(engine_thread.engine.tutor_map(q))
    want = engine_thread.run(sql_engine.tutor_map(q))
    assert got.total == want.total > MAX_POINTS
    assert len(got.points) == MAX_POINTS
    assert got.points == want.points
    # the rating order is the damped rating's (rating_sort), then the id
    with psycopg.connect(search_dataset) as conn:
        rank = dict(
            conn.execute(
                "SELECT provider_id::text, rating_sort FROM tutor_documents"
                " WHERE provider_id = ANY (%s::uuid[])",
                ([p["id"] for p in got.points],),
            ).fetchall()
        )
    keys = [(-rank[p["id"]], p["id"]) for p in got.points]
    assert keys == sorted(keys)
    assert list(got.points[0]) == ["id", "lat", "lng", "display_name", "price", "rating"]
    # the response body: the rendered points sent as they are, in the field order
    body = orjson.loads(orjson.dumps(body_fields(got)))
    assert list(body) == ["mode", "clusters", "points", "total", "engine"]
    assert body == orjson.loads(orjson.dumps(body_fields(want)))


def test_viewport_sides_through_a_tutor_match_postgis(
    engine_thread: EngineThread, sql_engine: PostgresEngine, search_dataset: str
) -> None:
    """A viewport side exactly on a tutor (Québec: large longitudes, coarse float4) or
    a hair beside it, where `&&`'s float4 boxes and the exact coordinates disagree,
    counts what PostGIS counts."""
    with psycopg.connect(search_dataset) as conn:
        lat, lng = conn.execute(
            "SELECT lat, lng FROM tutor_documents WHERE lat BETWEEN 48 AND 49.5"
            " AND lng BETWEEN -75 AND -70 LIMIT 1"
        ).fetchone()
    seen = set()
    # a float4 step at |lng| 64-128 is 7.6e-6 degrees
    for dx in (0.0, 1e-9, -1e-9, 1e-6, -1e-6, -1e-5, -5e-5, -2e-4, 2e-4):
        q = TutorMapQuery(bbox=f"{lng - 0.5!r},{lat - 0.3!r},{lng + dx!r},{lat + 0.3!r}", zoom=9)
        got = engine_thread.run(engine_thread.engine.tutor_map(q))
        want = engine_thread.run(sql_engine.tutor_map(q))
        assert got.total == want.total
        seen.add(got.total)
    assert len(seen) > 1, "the side never crossed the tutor"


# --------------------------------------------------------------------- streaming exactness
# (last in the module: the `db` fixture empties the tables `search_dataset` filled)


def _rebuild(conn: psycopg.Connection[Any], ids: list[uuid.UUID]) -> None:
    with conn.transaction():
        rebuild_documents(conn, ids)


def test_moves_deletes_and_kind_switches_keep_blocks_exact(market: psycopg.Connection[Any]) -> None:
    rows = market.execute(
        "SELECT provider_id, cell FROM tutor_facets WHERE cell >= 0 ORDER BY provider_id LIMIT 3"
    ).fetchall()
    moved, deleted, switched = (r[0] for r in rows)
    # a move to a cell of its own (the old cell loses the record, the new one gains it)
    market.execute(
        "UPDATE provider_profiles SET location = ST_SetSRID(ST_MakePoint(-21.94, 64.15),"
        " 4326)::geography WHERE user_id = %s",
        (moved,),
    )
    market.execute("DELETE FROM users WHERE id = %s", (deleted,))
    market.execute(
        "UPDATE provider_profiles SET kind = 'mentor', expertises = ARRAY['leadership']"
        " WHERE user_id = %s",
        (switched,),
    )
    _rebuild(market, [moved, deleted, switched])
    assert market.execute(
        "SELECT n FROM tutor_facet_blocks WHERE cell = (SELECT cell FROM tutor_facets"
        " WHERE provider_id = %s)",
        (moved,),
    ).fetchone() == (1,)
    assert_equals_from_scratch(market)


def test_concurrent_writers_in_one_cell_leave_exact_blocks(
    market: psycopg.Connection[Any], database_url: str
) -> None:
    """Two transactions re-pack the same cell: the second waits for the first's cell
    lock and re-packs with its committed change (without the lock, the second's stale
    snapshot would overwrite the first's record)."""
    a, b = market.execute(
        "SELECT min(provider_id::text)::uuid, max(provider_id::text)::uuid"
        " FROM tutor_facets WHERE cell >= 0 GROUP BY cell HAVING count(*) >= 2"
        " ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()
    first = psycopg.connect(database_url)
    second = psycopg.connect(database_url)
    try:
        first.execute(
            "UPDATE provider_profiles SET hourly_rate_minor = hourly_rate_minor + 7"
            " WHERE user_id = %s",
            (a,),
        )
        rebuild_documents(first, [a])  # holds the cell's lock until it commits
        errors: list[BaseException] = []

        def other() -> None:
            try:
                second.execute(
                    "UPDATE provider_profiles SET hourly_rate_minor = hourly_rate_minor + 11"
                    " WHERE user_id = %s",
                    (b,),
                )
                rebuild_documents(second, [b])
                second.commit()
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        deadline = time.monotonic() + 30
        while not market.execute(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
            (second.info.backend_pid,),
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "the second writer never waited for the cell"
            assert t.is_alive(), errors
            time.sleep(0.01)  # polling the lock table, not waiting for an outcome
        first.commit()
        t.join(timeout=30)
        assert not errors, errors
    finally:
        first.close()
        second.close()
    assert_equals_from_scratch(market)


def test_cached_blocks_follow_writes(
    market: psycopg.Connection[Any], engines: tuple[EngineThread, PostgresEngine]
) -> None:
    """An engine holding decoded blocks answers with the re-packed ones after a write
    (versions differ), and equals the SQL pass before and after."""
    et, sql = engines
    lat, lng, pid = market.execute(
        "SELECT ST_Y(geom), ST_X(geom), provider_id FROM tutor_facets WHERE cell >= 0"
        " ORDER BY provider_id LIMIT 1"
    ).fetchone()
    q = TutorQuery(lat=lat, lng=lng, radius_km=30, sort="price")
    before = et.run(et.engine.search_tutors(q))
    assert before.model_dump() == et.run(sql.search_tutors(q)).model_dump()
    assert et.engine.block_path.directory["tutor"].held_copies(), (
        "the engine holds the blocks it read"
    )
    market.execute(
        "UPDATE provider_profiles SET hourly_rate_minor = 1, currency = 'EUR' WHERE user_id = %s",
        (pid,),
    )
    _rebuild(market, [pid])
    after = et.run(et.engine.search_tutors(q))
    assert after.model_dump() == et.run(sql.search_tutors(q)).model_dump()
    assert after.items[0]["id"] == str(pid)  # the cheapest now


@pytest.mark.parametrize("sort", ["distance", "rating", "price"])
def test_block_page_items_follow_a_write_outside_the_facet_record(
    market: psycopg.Connection[Any], engines: tuple[EngineThread, PostgresEngine], sort: str
) -> None:
    """The page's items come from the blocks held: a write of a field the facet record
    does not carry (the headline) re-packs the block, and the next answer shows it,
    equal to the SQL path's (which reads the documents)."""
    et, sql = engines
    lat, lng = market.execute(
        "SELECT ST_Y(geom), ST_X(geom) FROM tutor_facets WHERE cell >= 0"
        " ORDER BY provider_id LIMIT 1"
    ).fetchone()
    q = TutorQuery(lat=lat, lng=lng, radius_km=30, sort=sort, limit=5)
    before = et.run(et.engine.search_tutors(q))
    assert before.model_dump() == et.run(sql.search_tutors(q)).model_dump()
    pid = uuid.UUID(before.items[0]["id"])
    headline = f'Rewritten headline {sort} \u00e9"quoted"'
    market.execute("UPDATE provider_profiles SET headline = %s WHERE user_id = %s", (headline, pid))
    _rebuild(market, [pid])
    after = et.run(et.engine.search_tutors(q))
    assert after.items[0]["id"] == str(pid)
    assert after.items[0]["headline"] == headline
    assert after.model_dump() == et.run(sql.search_tutors(q)).model_dump()


@pytest.mark.parametrize("miss_cost", [0.0, 1e9], ids=["missing-cells", "box-pass"])
def test_cached_text_matches_follow_writes(
    market: psycopg.Connection[Any],
    engines: tuple[EngineThread, PostgresEngine],
    miss_cost: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The text match cache (`search.engines.postgres.text_cache`): a word absent
    everywhere is cached as no match per cell; after a tutor's headline gains it, the cell's new block version
    makes the engine match again and find the tutor. A wider circle reuses the cached
    cells and matches only the others (per cell rectangle or by id, or by a pass over
    the box: both forced here); coaches (uuid-hashed cells) the same after a coach's
    headline changes. Every answer equals the SQL pass."""
    monkeypatch.setattr("search.engines.postgres.block_path._MISS_COST", miss_cost)
    et, sql = engines
    # a tutor with another one 100-400 km away (outside a 60 km circle, in a wider one)
    lat, lng, pid, km = market.execute(
        "SELECT ST_Y(a.geom), ST_X(a.geom), a.provider_id,"
        " ST_Distance(a.geom::geography, b.geom::geography) / 1000"
        " FROM tutor_facets a JOIN tutor_facets b ON a.provider_id <> b.provider_id"
        " WHERE ST_DWithin(a.geom::geography, b.geom::geography, 400000)"
        " AND NOT ST_DWithin(a.geom::geography, b.geom::geography, 100000)"
        " ORDER BY a.provider_id, b.provider_id LIMIT 1"
    ).fetchone()
    cache = et.engine.block_path.text_cache

    def both(q: TutorQuery) -> Any:
        got = et.run(et.engine.search_tutors(q))
        assert got.model_dump() == et.run(sql.search_tutors(q)).model_dump()
        return got

    q = TutorQuery(lat=lat, lng=lng, radius_km=60, q="quokka", sort="relevance")
    assert both(q).total == 0
    cached = len(cache)
    assert cached > 0, "the first search cached its cells"
    hits = cache.hits
    assert both(q).total == 0
    assert cache.hits - hits == cached, "the same search reads every cell from the cache"
    market.execute(
        "UPDATE provider_profiles SET headline = headline || ' quokka' WHERE user_id = %s",
        (pid,),
    )
    _rebuild(market, [pid])
    found = both(q)
    assert [i["id"] for i in found.items] == [str(pid)]
    # the wider circle: the 60 km cells from the cache, the others matched now
    for word, sort in (("quokka", "relevance"), ("prof", "price"), ("prof", "relevance")):
        hits, misses = cache.hits, cache.misses
        wide = q.model_copy(update={"radius_km": km + 10, "q": (word,), "sort": sort})
        both(wide)
        both(q.model_copy(update={"q": (word,), "sort": sort}))
        assert cache.misses > misses
    assert cache.hits > hits
    # coaches: no position, 1,024 hashed cells (by id, or the whole table)
    (coach,) = market.execute(
        "SELECT provider_id FROM coach_facets ORDER BY provider_id LIMIT 1"
    ).fetchone()
    cq = CoachQuery(q=("wombat",), sort="relevance")
    for _ in range(2):
        got = et.run(et.engine.search_coaches(cq))
        assert got.model_dump() == et.run(sql.search_coaches(cq)).model_dump()
    assert got.total == 0
    market.execute(
        "UPDATE provider_profiles SET headline = headline || ' wombat' WHERE user_id = %s",
        (coach,),
    )
    _rebuild(market, [coach])
    misses = cache.misses
    got = et.run(et.engine.search_coaches(cq))
    assert got.model_dump() == et.run(sql.search_coaches(cq)).model_dump()
    assert [i["id"] for i in got.items] == [str(coach)]
    assert cache.misses > misses


# --------------------------------------------------------------------- availability entries

_T0 = datetime(2026, 11, 23, tzinfo=UTC)
# bound offsets in µs from _T0 (a few values, so bounds often coincide), or a keyword
_BOUND = st.one_of(
    st.sampled_from([0, 1, 2, 3_600_000_000, 3_600_000_001, 7_200_000_000]),
    st.integers(-(10**12), 10**12),
    st.sampled_from(["infinity", "-infinity", None]),
)


def _bound_text(b: int | str | None) -> str:
    if b is None:
        return ""
    if isinstance(b, str):
        return b
    return (_T0 + timedelta(microseconds=b)).isoformat()


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ranges=st.lists(
        st.tuples(_BOUND, _BOUND, st.sampled_from("[("), st.sampled_from(")]")), max_size=6
    ),
    window=st.tuples(
        st.one_of(
            st.none(), st.sampled_from([0, 1, 3_600_000_000]), st.integers(-(10**12), 10**12)
        ),
        st.one_of(
            st.none(), st.sampled_from([1, 2, 3_600_000_001]), st.integers(-(10**12), 10**12)
        ),
    ),
)
def test_availability_entries_overlap_like_postgresql(
    db: psycopg.Connection[Any],
    ranges: list[tuple[Any, Any, str, str]],
    window: tuple[int | None, int | None],
) -> None:
    """`Blocks.available` on the entries `AVAIL_SQL` packs equals PostgreSQL's
    `availability && tstzrange(from, to)` for multiranges of every kind of bound
    (inclusive, exclusive, unbounded, ±infinity, equal bounds) and half-open windows."""
    texts = []
    for lo, hi, left, right in ranges:
        text = f"{left}{_bound_text(lo)},{_bound_text(hi)}{right}"
        try:  # a lower bound above the upper one is an error: that range is left out
            db.execute("SELECT %s::tstzrange", (text,))
        except psycopg.errors.DataException:
            continue
        texts.append(text)
    start, end = (None if w is None else _T0 + timedelta(microseconds=w) for w in window)
    if start is not None and end is not None and start >= end:
        start, end = end, start + timedelta(microseconds=1)
    multirange = "{" + ",".join(texts) + "}"
    row = db.execute(
        f"SELECT availability && tstzrange(%(s)s, %(e)s), coalesce({AVAIL_SQL}, ''::bytea)"
        " FROM (SELECT 1 AS rn, %(m)s::tstzmultirange AS availability) x",
        {"s": start, "e": end, "m": multirange},
    ).fetchone()
    assert row is not None
    want, entries = row
    blocks = Blocks.from_parts("coach", [(b"\0" * DTYPE["coach"].itemsize * 2, None, False)])
    blocks.avail = (bytes(entries), np.array([len(entries)], dtype=np.int64))
    got = blocks.available(*window_bounds(start, end))
    assert got.tolist() == [False, bool(want)]


@settings(max_examples=150, deadline=None)
@given(
    stored=st.dictionaries(
        st.integers(-3, 12),
        st.tuples(st.integers(1, 3), st.lists(st.integers(0, 9), unique=True, max_size=6)),
        max_size=10,
    ),
    asked=st.lists(
        st.tuples(st.integers(-3, 12), st.integers(1, 3), st.integers(0, 10)),
        unique_by=lambda t: t[0],
        max_size=12,
    ),
    ranked=st.booleans(),
)
def test_text_cache_gathers_the_entries_of_the_blocks_versions(
    stored: dict[int, tuple[int, list[int]]], asked: list[tuple[int, int, int]], ranked: bool
) -> None:
    """`TextMatchCache.gather` (its loop in C) gives, block by block in the order asked,
    the cached positions shifted by the block's first record and their ranks, for the
    blocks whose entry has the block's version; the others are missing."""
    cache = TextMatchCache()
    key = ("tutor", "m:*", "m:*" if ranked else None)
    for cell, (version, idx) in stored.items():
        ranks = np.array([cell + i / 10 for i in idx], dtype=np.float32) if ranked else None
        cache.store(key, cell, version, np.array(idx, dtype=np.int64), ranks)
    cells = np.array([a[0] for a in asked], dtype=np.int64)
    versions = np.array([a[1] for a in asked], dtype=np.int64)
    starts = np.cumsum([0] + [a[2] * 10 for a in asked])[:-1].astype(np.int64)
    pos, ranks, missing = cache.gather(key, cells, versions, starts)
    want_pos: list[int] = []
    want_ranks: list[float] = []
    want_missing = []
    for b, (cell, version, _) in enumerate(asked):
        if cell not in stored or stored[cell][0] != version:
            want_missing.append(b)
            continue
        want_pos += [int(starts[b]) + i for i in stored[cell][1]]
        want_ranks += [float(np.float32(cell + i / 10)) for i in stored[cell][1]]
    assert pos.tolist() == want_pos
    assert missing == want_missing
    if ranked:
        assert ranks is not None
        assert ranks.tolist() == want_ranks
    else:
        assert ranks is None
    assert (cache.hits, cache.misses) == (len(asked) - len(want_missing), len(want_missing))


@settings(max_examples=100, deadline=None)
@given(
    points=st.lists(
        st.tuples(st.floats(-89.9, 89.9), st.floats(-179.9, 179.9), st.booleans()), max_size=60
    ),
    dense=st.lists(
        st.tuples(st.floats(48.8, 48.9), st.floats(2.3, 2.4), st.booleans()), max_size=60
    ),
    cell=st.sampled_from([0.01, 0.35, 5.625, 90.0]),
    spread=st.integers(0, 1500),
)
def test_block_clusters_equal_a_grouping_one_record_at_a_time(
    points: list[tuple[float, float, bool]],
    dense: list[tuple[float, float, bool]],
    cell: float,
    spread: int,
) -> None:
    """`Blocks.clusters` (a hash table in C) groups the hits on the grid like a plain
    Python grouping: count, averages summed in record order, bounds, and the order (count
    descending, average latitude, average longitude). `spread` more hits on as many
    distinct grid cells make the table grow past its first size; `dense` hits crowd a
    few cells."""
    points = points + dense + [((k % 40) * cell * 1.01 - 44.5 * cell, (k // 40) * cell * 1.01 - 20 * cell, True)
                       for k in range(spread)]  # fmt: skip
    points = [(y, x, h) for y, x, h in points if -90 < y < 90 and -180 < x < 180]
    rec = b"".join(uuid.uuid4().bytes + bytes(29) + struct.pack(">dd", y, x) for y, x, _ in points)
    b = Blocks.from_parts("tutor", [(rec, None, False)])
    hits = np.array([h for _, _, h in points], dtype=bool)
    groups: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for y, x, h in points:
        if h:
            groups.setdefault((math.floor(x / cell), math.floor(y / cell)), []).append((y, x))
    want = []
    for key, members in groups.items():
        lat_sum = lng_sum = 0.0
        for y, x in members:
            lat_sum += y
            lng_sum += x
        ys, xs = [y for y, _ in members], [x for _, x in members]
        n = len(members)
        want.append((n, lat_sum / n, lng_sum / n, min(ys), min(xs), max(ys), max(xs), *key))
    want.sort(key=lambda c: (-c[0], c[1], c[2], c[7], c[8]))
    assert b.clusters(hits, cell) == [c[:7] for c in want]


@settings(max_examples=150, deadline=None)
@given(
    points=st.lists(
        st.tuples(st.floats(48.7, 49.0), st.floats(2.2, 2.5), st.booleans()), max_size=80
    ),
    ring=st.lists(st.tuples(st.floats(0.0, 0.02), st.floats(0, 2 * math.pi)), max_size=40),
    limit=st.integers(1, 12),
    after=st.none() | st.floats(0, 20000),
)
def test_nearest_candidates_follow_their_rule(
    points: list[tuple[float, float, bool]],
    ring: list[tuple[float, float]],
    limit: int,
    after: float | None,
) -> None:
    """`Blocks.nearest` (one pass in C) returns, in record order, the hits of the
    uncertain band after `after` and the others within the bound of the `limit`-th
    nearest (the rule of its docstring, computed here in plain Python); so the exact
    page (by sphere distance, after `after`) is among them. A ring of hits at nearly
    one distance puts records on both sides of that bound. Records within 1e-6 m of a
    threshold are not judged."""
    lat, lng = 48.85, 2.35
    # a ring of hits 2-4 % beyond 1 km: the bound of the limit-th falls among them
    points = points + [
        (lat + 1000 * (1 + f) / 111_320 * math.cos(t),
         lng + 1000 * (1 + f) / 73_300 * math.sin(t), True)
        for f, t in ring
    ]  # fmt: skip
    rec = b"".join(uuid.uuid4().bytes + bytes(29) + struct.pack(">dd", y, x) for y, x, _ in points)
    b = Blocks.from_parts("tutor", [(rec, None, False)])
    hits = np.array([h for _, _, h in points], dtype=bool)
    c = _unit(lat, lng)
    dist = [
        math.acos(max(-1.0, min(1.0, sum(a * u for a, u in zip(c, _unit(y, x), strict=True)))))
        * EARTH_R
        for y, x, _ in points
    ]
    lo, hi = (-math.inf, -math.inf) if after is None else (after / 1.006 - 1, after * 1.006 + 1)
    kept = [i for i, h in enumerate(hits) if h and dist[i] >= lo]
    sure = sorted(dist[i] for i in kept if dist[i] > hi)
    bound = (sure[limit - 1] * 1.006 + 1) * 1.006 + 1 if len(sure) > limit else math.inf
    want = [i for i in kept if dist[i] <= hi or dist[i] <= bound]
    got = b.ids(b.nearest(hits, lat, lng, limit, after))
    near = {i for i in range(len(points))
            if min(abs(dist[i] - t) for t in (lo, hi, bound)) < 1e-6}  # fmt: skip
    ids = b.ids(list(range(len(points))))
    assert [x for x in got if ids.index(x) not in near] == [ids[i] for i in want if i not in near]
    exact = sorted((dist[i], i) for i in kept if after is None or dist[i] > after)[:limit]
    assert {ids[i] for _, i in exact} <= set(got)
