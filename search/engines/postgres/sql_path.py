"""The SQL path of the PostgreSQL engine: facets, pages and the map computed by
statements over `tutor_documents` / `coach_documents` and their narrow facet rows
(`tutor_facets` / `coach_facets`). It answers when the facet blocks cannot (a radius box
that wraps, a map with a radius or a text filter), for `PostgresEngine(blocks=False)`,
and pages what the blocks cannot page (a relevance sort without a text query).

- the facet pass (`facet_pass`): ONE scan of the rows matching every filter except
  subject/expertise and language, grouped on integers (`*_bits`, `language_bits`,
  `languages_other`, `rating_bucket`, `currency`) with count/min/max/sum(price). The
  disjunctive facet arithmetic runs in Python over those groups (a few thousand at
  most), iterating set bits only; the total, rating buckets and price stats come from
  the groups whose masks pass the subject/expertise and language filters. Exact, no
  approximation.
- the page (`page`): keyset on the sort key + id, `limit + 1` rows to know whether a next
  page exists. Distance pages use the GiST KNN order (sphere) to find the `limit + 1`
  nearest candidates, then re-rank exactly on the spheroid inside a radius that provably
  holds every row that could be nearer (sphere and WGS84 distances differ by less than
  0.56 %).
"""

from __future__ import annotations

from typing import Any

import psycopg

from search import cursor as cursors
from search.engines.postgres.plan import (
    NAME,
    POINT,
    RADIUS_EXACT,
    RADIUS_WIDE,
    SPHERE_OUT,
    Bits,
    Facets,
    PassState,
    QueryPlan,
    Vocabulary,
)
from search.schemas import CoachQuery, CoachResults, TutorQuery, TutorResults

# A rating/price page comes from the facet rows when the facet pass counted at most this
# many results, and scanned at most `_FACET_PAGE_SCAN_MAX` rows (see `page`).
_FACET_PAGE_MAX = 5000
_FACET_PAGE_SCAN_MAX = 12000

TUTOR_COLUMNS = (
    "provider_id, display_name, headline, subjects, languages, price_minor,"
    " currency, rating_avg, rating_count, online, in_person, lat, lng, city,"
    " country_code"
)
COACH_COLUMNS = (
    "provider_id, kind, display_name, headline, expertises, languages, price_minor,"
    " currency, rating_avg, rating_count, online, in_person, city, country_code"
)
# The page distance of a tutor list sorted otherwise than by distance (`page`'s `extra`)
PAGE_DISTANCE = f"ST_Distance(page_location, {POINT}) AS dist"

# ------------------------------------------------------------------ facets


async def facet_pass(
    conn: psycopg.AsyncConnection[Any],
    vocabulary: Vocabulary,
    table: str,
    plan: QueryPlan,
    state: PassState,
    selected: tuple[str, ...],
    langs: tuple[str, ...],
) -> Facets:
    """The facets and total of a list query on `table` (the documents), by one grouping
    statement on the narrow facet rows (on the documents with a documents-only filter);
    sets `state.scanned`."""
    facet = plan.facet
    narrow = not plan.documents_only
    if narrow:  # the narrow facet rows answer every remaining filter
        table = table.replace("_documents", "_facets")
    async with conn.transaction():
        # Row estimates of the radius are far too low in dense cities, which makes the
        # planner sort tens of thousands of rows for a GroupAggregate; the hash aggregate
        # is always the right plan for this statement.
        await conn.execute("SET LOCAL enable_sort = off")
        both = f"{plan.cat_ok} AND {plan.lang_ok}"
        cur = await conn.execute(
            f"SELECT GROUPING({facet}_bits, language_bits, rating_bucket), {facet}_bits,"
            " language_bits, languages_other, rating_bucket, currency,"
            f" count(*) FILTER (WHERE {plan.lang_ok}), count(*) FILTER (WHERE {plan.cat_ok}),"
            f" count(*) FILTER (WHERE {both}), min(price_minor) FILTER (WHERE {both}),"
            f" max(price_minor) FILTER (WHERE {both}), sum(price_minor) FILTER (WHERE {both})"
            f" FROM {table} WHERE {plan.base_sql(narrow)} GROUP BY GROUPING SETS"
            f" (({facet}_bits), (language_bits, languages_other), (rating_bucket, currency))",
            plan.params,
        )
        groups = await cur.fetchall()
    # Rows passing every filter but subject/expertise: a lower bound of what a scan of
    # the facet rows reads (the choice of the rating/price page plan, `page`).
    state.scanned = sum(g[6] for g in groups if g[0] == 3)
    return await vocabulary.named(
        conn, facet, lambda bits: _arithmetic(bits, groups, facet, selected, langs)
    )


def _arithmetic(
    bits: Bits,
    groups: list[tuple[Any, ...]],
    facet: str,
    selected: tuple[str, ...],
    langs: tuple[str, ...],
) -> Facets | None:
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
    return bits.facets(
        facet, selected, langs, cat_by_mask, lang_by_mask, lang_other_counts,
        rating, {k: (v[0], v[1], v[2], v[3]) for k, v in price.items()},
    )  # fmt: skip


# ------------------------------------------------------------------ the page


def _order(sort: str, key: list[Any] | None, text: bool) -> tuple[str, str, str, dict[str, Any]]:
    """(sort key expression, keyset condition, ORDER BY, parameters they add) for
    `sort`; `text`: the query has a text filter (its rank query is bound)."""
    extra: dict[str, Any] = {}
    if sort == "rating":
        expr, order = "rating_sort", "rating_sort DESC, provider_id"
        cond = "(rating_sort < %(k0)s::numeric OR (rating_sort = %(k0)s::numeric AND provider_id > %(kid)s::uuid))"
    elif sort == "price":
        expr, order = "price_minor", "price_minor, provider_id"
        cond = "(price_minor, provider_id) > (%(k0)s::int, %(kid)s::uuid)"
    elif sort == "distance":
        expr = f"ST_Distance(location, {POINT})"
        order = f"{expr}, provider_id"
        cond = f"({expr}, provider_id) > (%(k0)s::float8, %(kid)s::uuid)"
    else:
        expr = "ts_rank(search_vector, %(tsq)s::tsquery)"
        order = f"{expr} DESC, provider_id"
        cond = f"({expr} < %(k0)s::real OR ({expr} = %(k0)s::real AND provider_id > %(kid)s::uuid))"
        if not text:  # no lexeme in q: every rank is 0
            extra["tsq"] = ""
    if key is None:
        return expr, "true", order, extra
    extra["k0"], extra["kid"] = key[0], key[1]
    return expr, cond, order, extra


async def page(
    conn: psycopg.AsyncConnection[Any],
    table: str,
    columns: str,
    plan: QueryPlan,
    state: PassState,
    sort: str,
    limit: int,
    key: list[Any] | None,
    extra: str = "",
    total: int | None = None,
) -> list[tuple[Any, ...]]:
    """The page rows (`limit` of them: `columns`, the sort key, then `extra` when given)
    of a list query on `table` whose facet pass ran in SQL, or that the blocks cannot
    page (a relevance sort without a text query); `total`: the facet pass's count."""
    expr, cond, order, added = _order(sort, key, plan.text is not None)
    p = {**plan.params, **added, "limit": limit}
    where = f"{plan.all()} AND {cond}"
    if (
        sort in ("rating", "price")
        and not plan.documents_only
        and total is not None
        and total <= _FACET_PAGE_MAX
        and state.scanned <= _FACET_PAGE_SCAN_MAX
    ):
        # Few results: the keyset page is found on the narrow facet rows (every
        # filter is there), then only its rows are read from the documents. The
        # documents' sort-key btree walk would read (limit / selectivity) wide
        # rows, and the planner ANDs big bitmaps (price, availability) instead.
        f_cond, f_order = cond, order  # the facet rows carry rating_sort (migration 0018)
        where = (
            f"provider_id IN (SELECT provider_id FROM {table.replace('_documents', '_facets')}"
            f" WHERE {plan.all(True)} AND {f_cond} ORDER BY {f_order} LIMIT %(limit)s)"
        )
    sql = (
        f"SELECT {columns}, {expr} AS sort_key{', location AS page_location' if extra else ''}"
        f" FROM {table} WHERE {where} ORDER BY {order} LIMIT %(limit)s"
    )
    if extra:
        # Computed for the page only, not for every row of the filtered set.
        sql = f"SELECT *, {extra} FROM ({sql}) page ORDER BY {order.replace(expr, 'sort_key')}"
    if sort == "distance":
        sql = _knn_page(table, columns, plan, cond, order)
    cur = await conn.execute(sql, p)
    return await cur.fetchall()


def _knn_page(table: str, columns: str, plan: QueryPlan, cond: str, order: str) -> str:
    """The distance page, exact on the spheroid but found through the GiST KNN order.

    The `limit + 1` nearest rows on the sphere (index order) give `m`, their largest
    spheroid distance; a row nearer than `m` on the spheroid is within `m * 1.006` on
    the sphere, so the page is the first `limit + 1` rows, exactly ordered by
    (spheroid distance, id), among the rows within that sphere radius."""
    where = f"{plan.all()} AND {cond}"
    # No geometry bbox in the KNN part (another index would compete with the KNN
    # order), but the sphere bound on the geography itself: the same GiST scan then
    # stops at the radius instead of walking the whole table when fewer than
    # `limit + 1` rows match (a selective filter, the last page of a walk).
    knn_where = where.replace(RADIUS_WIDE, RADIUS_EXACT)
    if RADIUS_WIDE in where:
        knn_where += f" AND ST_DWithin(location, {POINT}, %(radius_m)s * {SPHERE_OUT}, false)"
    return (
        "WITH knn AS MATERIALIZED (SELECT max(d) AS m FROM ("
        f"SELECT ST_Distance(location, {POINT}) AS d FROM {table} WHERE {knn_where}"
        f" ORDER BY location <-> {POINT} LIMIT %(limit)s) x)"
        f" SELECT {columns}, ST_Distance(location, {POINT}) AS sort_key FROM {table}"
        f" WHERE {knn_where} AND ST_DWithin(location, {POINT},"
        f" (SELECT m FROM knn) * {SPHERE_OUT}, false)"
        f" ORDER BY {order} LIMIT %(limit)s"
    )


def _cursor_key(sort: str, value: Any, pid: Any) -> list[Any]:
    if sort == "rating":
        value = str(value)
    elif sort in ("distance", "relevance"):
        value = float(value)
    return [value, str(pid)]


def tutor_results(
    q: TutorQuery,
    fp: str,
    rows: list[tuple[Any, ...]],
    facets: dict[str, Any],
    total: int,
    *,
    distances: bool,
) -> TutorResults:
    """The results of a tutor list query from its SQL page rows (`TUTOR_COLUMNS`, the sort
    key, then with `distances` and another sort than distance, the page distance);
    `fp`: the query's fingerprint (the next page's cursor)."""
    items = []
    for r in rows[: q.limit]:
        dist = r[15] if q.sort == "distance" else (r[17] if distances else None)
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
        next_cursor = cursors.encode(q.sort, fp, _cursor_key(q.sort, last[15], last[0]))
    return TutorResults(
        items=items, facets=facets, total=total, next_cursor=next_cursor, engine=NAME
    )


def coach_results(
    q: CoachQuery,
    fp: str,
    rows: list[tuple[Any, ...]],
    facets: dict[str, Any],
    total: int,
) -> CoachResults:
    """The results of a coach list query from its SQL page rows (`COACH_COLUMNS`, then the
    sort key)."""
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
        next_cursor = cursors.encode(q.sort, fp, _cursor_key(q.sort, last[14], last[0]))
    return CoachResults(
        items=items, facets=facets, total=total, next_cursor=next_cursor, engine=NAME
    )


# ------------------------------------------------------------------ the map

_VIEWPORT = "ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326)"


async def map_points(
    conn: psycopg.AsyncConnection[Any], plan: QueryPlan, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """(points, total) of a map query in points mode: the `limit` best-rated tutors of
    the viewport (rating, then id), and how many the viewport holds."""
    plan.params["max_points"] = limit
    cur = await conn.execute(
        # the id as text: psycopg would build a UUID per point, then str it
        "SELECT provider_id::text AS id, lat, lng, display_name, price_minor, currency,"
        " rating_avg, rating_count, count(*) OVER () FROM tutor_documents"
        f" WHERE (location::geometry) && {_VIEWPORT} AND {plan.all()}"
        " ORDER BY rating_sort DESC, provider_id"
        " LIMIT %(max_points)s",
        plan.params,
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
    return points, total


async def map_clusters(
    conn: psycopg.AsyncConnection[Any], plan: QueryPlan, cell: float
) -> list[tuple[Any, ...]]:
    """The clusters of a map query in clusters mode on the grid of `cell` degrees: one
    (count, avg lat, avg lng, min lat, min lng, max lat, max lng) per non-empty grid cell,
    by count descending, then average latitude and longitude."""
    plan.params["cell"] = cell
    if plan.documents_only:
        source = f"SELECT lat, lng FROM tutor_documents WHERE (location::geometry) && {_VIEWPORT}"
    else:  # the narrow facet rows hold every other filter and the point
        source = "SELECT ST_Y(geom) AS lat, ST_X(geom) AS lng FROM tutor_facets"
        source += f" WHERE geom && {_VIEWPORT}"
    cur = await conn.execute(
        "SELECT count(*), avg(lat), avg(lng), min(lat), min(lng), max(lat),"
        f" max(lng) FROM ({source} AND {plan.all(not plan.documents_only)}) m"
        " GROUP BY floor(lng / %(cell)s), floor(lat / %(cell)s)"
        " ORDER BY 1 DESC, 2, 3",
        plan.params,
    )
    return await cur.fetchall()
