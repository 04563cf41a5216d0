"""The PostgreSQL search engine: hand-written SQL over `tutor_documents` /
`coach_documents` on a psycopg 3 async connection pool.

Plans: statements are never prepared server-side (`prepare_threshold=None`) and sessions
run with `plan_cache_mode = force_custom_plan`, so every query is planned with its actual
values. A generic plan of the radius query drops the KNN/GiST shape and was measured 30x
slower; planning costs ~0.2 ms. JIT is off (it costs milliseconds on these short queries).

Each list request runs two statements on one connection: the facet pass over the whole
filtered set (one scan materialized once, then aggregated four ways) and the page (keyset
on the sort key + id, `limit + 1` rows to know whether a next page exists).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from search import cursor as cursors
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


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(
        "SET jit = off; SET plan_cache_mode = force_custom_plan; "
        "SET max_parallel_workers_per_gather = 0"
    )


class _Sql:
    """WHERE clauses and parameters of one query, split the way facets need them."""

    def __init__(self) -> None:
        self.base: list[str] = []
        self.params: dict[str, Any] = {}
        self.cat_ok = "true"
        self.lang_ok = "true"

    def all(self) -> str:
        return " AND ".join([*self.base, self.cat_ok, self.lang_ok])

    def base_sql(self) -> str:
        return " AND ".join(self.base) or "true"


class PostgresEngine:
    """`SearchEngine` on PostgreSQL. `pool` is an open `AsyncConnectionPool`."""

    name = NAME

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool
        self._tsq: OrderedDict[tuple[str, ...], str] = OrderedDict()

    @classmethod
    async def open(cls, conninfo: str, *, min_size: int = 2, max_size: int = 10) -> PostgresEngine:
        """Open a pool on `conninfo` (libpq URL) and return the engine."""
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, "prepare_threshold": None},
            configure=_configure,
            open=False,
        )
        await pool.open(wait=True, timeout=10)
        return cls(pool)

    async def close(self) -> None:
        """Close the pool."""
        await self.pool.close()

    # ------------------------------------------------------------------ helpers

    async def _tsquery(self, conn: psycopg.AsyncConnection[Any], words: tuple[str, ...]) -> str:
        """The tsquery (text form) for folded words: every word must match, the last as
        a prefix, under the French, English or simple configuration (OR of the three)."""
        hit = self._tsq.get(words)
        if hit is not None:
            self._tsq.move_to_end(words)
            return hit
        expr = " & ".join([*words[:-1], words[-1] + ":*"])
        cur = await conn.execute(
            "SELECT (to_tsquery('educonnect_fr', %(e)s) || to_tsquery('educonnect_en', %(e)s)"
            " || to_tsquery('educonnect_simple', %(e)s))::text",
            {"e": expr},
        )
        row = await cur.fetchone()
        text = str(row[0]) if row else ""
        self._tsq[words] = text
        if len(self._tsq) > _TSQUERY_CACHE_SIZE:
            self._tsq.popitem(last=False)
        return text

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
            tsq = await self._tsquery(conn, q.q)
            if tsq:
                p["tsq"] = tsq
                s.base.append("search_vector @@ %(tsq)s::tsquery")
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
            s.base.append("availability && tstzrange(%(af)s, %(at)s)")
        if catalogue:
            p["cat"] = list(catalogue)
            s.cat_ok = f"{catalogue_col} && %(cat)s::text[]"
        if q.language:
            p["lang"] = list(q.language)
            s.lang_ok = "languages && %(lang)s::text[]"
        return s

    async def _facets(
        self,
        conn: psycopg.AsyncConnection[Any],
        table: str,
        col: str,
        s: _Sql,
        selected: tuple[str, ...],
        langs: tuple[str, ...],
    ) -> tuple[dict[str, Any], int]:
        sql = f"""
            WITH b AS MATERIALIZED (
                SELECT {col} AS cat, languages, rating_avg, price_minor, currency,
                       {s.cat_ok} AS c_ok, {s.lang_ok} AS l_ok
                  FROM {table} WHERE {s.base_sql()}
            )
            SELECT 0, x, count(*), NULL::int, NULL::int, NULL::bigint
              FROM b, unnest(b.cat) x WHERE l_ok GROUP BY x
            UNION ALL
            SELECT 1, x, count(*), NULL, NULL, NULL
              FROM b, unnest(b.languages) x WHERE c_ok GROUP BY x
            UNION ALL
            SELECT 2, (least(floor(rating_avg), 4)::int - 1)::text, count(*), NULL, NULL, NULL
              FROM b WHERE c_ok AND l_ok AND rating_avg IS NOT NULL GROUP BY 2
            UNION ALL
            SELECT 3, currency, count(*), min(price_minor), max(price_minor), sum(price_minor)
              FROM b WHERE c_ok AND l_ok GROUP BY currency
        """
        cur = await conn.execute(sql, s.params)
        cat: dict[str, int] = {}
        lang: dict[str, int] = {}
        rating: dict[int, int] = {}
        price: dict[str, tuple[int, int, int, int]] = {}
        for kind, key, n, mn, mx, total in await cur.fetchall():
            if kind == 0:
                cat[key] = n
            elif kind == 1:
                lang[key] = n
            elif kind == 2:
                rating[int(key)] = n
            else:
                price[key] = (n, mn, mx, int(total))
        facets = build_facets(
            catalogue_facet="subjects" if col == "subjects" else "expertises",
            catalogue_counts=cat,
            catalogue_selected=selected,
            language_counts=lang,
            language_selected=langs,
            rating_counts=rating,
            price_stats=price,
        )
        return facets, sum(v[0] for v in price.values())

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
    ) -> list[tuple[Any, ...]]:
        p = dict(s.params)
        expr, cond, order = self._order(sort, key, p)
        p["limit"] = limit + 1
        sql = (
            f"SELECT {columns}, {expr} AS sort_key{', location AS page_location' if extra else ''}"
            f" FROM {table} WHERE {s.all()} AND {cond} ORDER BY {order} LIMIT %(limit)s"
        )
        if extra:
            # Computed for the page only, not for every row of the filtered set.
            sql = f"SELECT *, {extra} FROM ({sql}) page ORDER BY {order.replace(expr, 'sort_key')}"
        cur = await conn.execute(sql, p)
        return await cur.fetchall()

    @staticmethod
    def _cursor_key(sort: str, value: Any, pid: Any) -> list[Any]:
        if sort == "rating":
            value = str(value)
        elif sort in ("distance", "relevance"):
            value = float(value)
        return [value, str(pid)]

    # ------------------------------------------------------------------ tutors

    async def search_tutors(self, q: TutorQuery) -> TutorResults:
        """See `SearchEngine.search_tutors`. Distances are geodesic on the WGS84 spheroid
        (PostGIS geography), `radius_km` inclusive."""
        fp = cursors.fingerprint(normalized(q, exclude={"limit", "cursor"}))
        key = cursors.decode(q.cursor, q.sort, fp) if q.cursor else None
        async with self.pool.connection() as conn:
            s = await self._filters(conn, q, "subjects", q.subject)
            if q.lat is not None and q.lng is not None and q.radius_km is not None:
                s.params.update(lat=q.lat, lng=q.lng, radius_m=q.radius_km * 1000.0)
                s.base.insert(0, f"ST_DWithin(location, {_POINT}, %(radius_m)s)")
            facets, total = await self._facets(
                conn, "tutor_documents", "subjects", s, q.subject, q.language
            )
            cols = (
                "provider_id, display_name, headline, subjects, languages, price_minor,"
                " currency, rating_avg, rating_count, online, in_person, lat, lng, city,"
                " country_code"
            )
            has_point = "lat" in s.params
            extra = ""
            if has_point and q.sort != "distance":
                extra = f"ST_Distance(page_location, {_POINT}) AS dist"
            rows = await self._page(conn, "tutor_documents", cols, s, q.sort, q.limit, key, extra)
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
                s.params.update(lat=q.lat, lng=q.lng, radius_m=q.radius_km * 1000.0)
                s.base.insert(0, f"ST_DWithin(location, {_POINT}, %(radius_m)s)")
            min_lng, min_lat, max_lng, max_lat = q.bbox
            s.params.update(x0=min_lng, y0=min_lat, x1=max_lng, y1=max_lat)
            s.base.insert(
                0, "(location::geometry) && ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326)"
            )
            if q.zoom >= POINTS_ZOOM:
                s.params["max_points"] = MAX_POINTS
                cur = await conn.execute(
                    "SELECT provider_id, lat, lng, display_name, price_minor, currency,"
                    " rating_avg, rating_count, count(*) OVER () FROM tutor_documents"
                    f" WHERE {s.all()} ORDER BY rating_sort DESC, provider_id"
                    " LIMIT %(max_points)s",
                    s.params,
                )
                rows = await cur.fetchall()
                total = rows[0][8] if rows else 0
                points = [
                    {
                        "id": str(r[0]),
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
            cur = await conn.execute(
                "SELECT count(*), avg(lat), avg(lng), min(lat), min(lng), max(lat), max(lng)"
                f" FROM tutor_documents WHERE {s.all()}"
                " GROUP BY floor(lng / %(cell)s), floor(lat / %(cell)s)"
                " ORDER BY 1 DESC, 2, 3",
                s.params,
            )
            rows = await cur.fetchall()
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
            for r in rows
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
        async with self.pool.connection() as conn:
            s = await self._filters(conn, q, "expertises", q.expertise)
            if q.kind:
                s.params["kinds"] = list(q.kind)
                s.base.append("kind = ANY(%(kinds)s::text[])")
            facets, total = await self._facets(
                conn, "coach_documents", "expertises", s, q.expertise, q.language
            )
            cols = (
                "provider_id, kind, display_name, headline, expertises, languages, price_minor,"
                " currency, rating_avg, rating_count, online, in_person, city, country_code"
            )
            rows = await self._page(conn, "coach_documents", cols, s, q.sort, q.limit, key)
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
