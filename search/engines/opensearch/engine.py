"""The OpenSearch search engine: the same API and answers as the PostgreSQL engine
(`search.engines.postgres`), on the `tutors` / `coaches` aliases (`index`, mappings in
`infra/opensearch/`).

Request shape (one `_search` per call, validated against the official API spec in
`tests/search/test_opensearch_contract.py`):

- every filter in filter context (`bool.filter`): price/currency/rating/mode, availability
  (`range` on the `date_range` field with `relation: intersects`), kind, the radius
  (`geo_distance`, `distance_type: arc`) and, outside `sort=relevance`, the text;
- the disjunctive filters (subjects/expertises and languages) go to `post_filter`, so the
  hits get them and the aggregations do not; each facet is a `filter` aggregation that
  applies the *other* one (a subject facet counts with the language filter, and vice
  versa); rating buckets (`range`) and price (`terms` on currency + `stats`) apply both;
- `terms` aggregations ask for a `size` (and `shard_size`) covering the whole vocabulary
  (catalogue, ISO 639-1, ISO 4217), so their counts are exact whatever the shard count
  (ANCHORS: terms counts are approximate across shards only when a shard truncates);
- sorts `rating_sort desc` / `price_minor asc` / `_geo_distance asc` (metres, arc) /
  `_score desc`, always followed by `provider_id asc`; pages use `search_after` with those
  values, carried in the API's opaque signed cursor (`search/cursor.py`): the same key
  format as the PostgreSQL engine (rating as a 2-decimal string, price an integer,
  distance in metres, then the id), so a rating/price/distance cursor survives a fallback
  to PostgreSQL. A relevance cursor is bound to this engine (scores are not comparable).
- the map: `geo_bounding_box` on the snapped viewport; below zoom 13 a `geotile_grid`
  (precision zoom + 2, i.e. 4 x 4 cells per web-map tile) with `geo_centroid` and
  `geo_bounds`; from zoom 13 the 500 best-rated points.

Known differences with PostgreSQL (documented in the README, "OpenSearch"):
- distances: OpenSearch's `arc` is a great circle on a sphere of radius 6,371,008.8 m,
  PostGIS geography is the WGS84 spheroid. They differ by up to ~0.5 %: a tutor within
  ~0.5 % of the radius boundary (e.g. 24.9-25.1 km for 25 km) may be in one engine's
  answer and not the other's, and two tutors whose distances differ by less than that may
  swap places in a distance sort. `distance_km` is the arc distance here.
- relevance: BM25 scores (OpenSearch) and `ts_rank` (PostgreSQL) order differently; the
  matching set is the same (every word, the last as a prefix, French/English/unstemmed).
- map clusters: geotiles are Web-Mercator tiles (rows are not equal-degree bands as in
  PostgreSQL's degree grid), so cluster boundaries differ at mid/high latitudes; totals
  and points are the same.
- availability is compared at millisecond resolution (`date_range`).

Errors: a transport failure or timeout raises `search.engine.EngineUnavailable`
(`unreachable` / `timeout` / `error`); a bad cursor raises `InvalidParameter`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from opensearchpy import AsyncOpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import ConnectionTimeout, OpenSearchException, TransportError

from core.languages import ISO_639_1
from profiles.catalogue import EXPERTISES, SUBJECTS
from search import cursor as cursors
from search.engine import EngineUnavailable
from search.engines.opensearch.index import alias_name
from search.facets import RATING_BUCKETS, build_facets
from search.geo import MAX_POINTS, POINTS_ZOOM
from search.schemas import (
    CoachQuery,
    CoachResults,
    MapResults,
    TutorMapQuery,
    TutorQuery,
    TutorResults,
    normalized,
)

NAME = "opensearch"
EARTH_MEAN_RADIUS_M = 6_371_008.7714  # OpenSearch GeoUtils.EARTH_MEAN_RADIUS (arc distances)
# Vocabulary sizes: a terms aggregation of this size returns every value, exactly.
CURRENCY_BUCKETS = 300  # ISO 4217 has ~180 active codes
LANGUAGE_BUCKETS = len(ISO_639_1)
SUBJECT_BUCKETS = len(SUBJECTS)
EXPERTISE_BUCKETS = len(EXPERTISES)
MAX_CLUSTERS = 10_000  # geotile_grid default size; a snapped viewport holds far fewer cells

_TUTOR_SOURCE = [
    "provider_id", "display_name", "headline", "subjects", "languages", "price_minor",
    "currency", "rating_avg", "rating_count", "online", "in_person", "location", "city",
    "country_code",
]  # fmt: skip
_COACH_SOURCE = [
    "provider_id", "kind", "display_name", "headline", "expertises", "languages",
    "price_minor", "currency", "rating_avg", "rating_count", "online", "in_person", "city",
    "country_code",
]  # fmt: skip
_POINT_SOURCE = [
    "provider_id", "location", "display_name", "price_minor", "currency", "rating_avg",
    "rating_count",
]  # fmt: skip


# ---------------------------------------------------------------------- request bodies


def _iso_ms(value: Any) -> str:
    return str(value.isoformat(timespec="milliseconds"))


def text_query(words: tuple[str, ...]) -> dict[str, Any]:
    """Every word must match, the last as a prefix, under the French, English or
    unstemmed analysis (mirrors the PostgreSQL tsquery `fr || en || simple`)."""
    text = " ".join(words)
    return {
        "bool": {
            "should": [
                {"match_bool_prefix": {field: {"query": text, "operator": "and"}}}
                for field in ("text_fr", "text_en", "text_simple")
            ],
            "minimum_should_match": 1,
        }
    }


class _Filters:
    """Filter clauses of one query, split the way the facets need them."""

    def __init__(self) -> None:
        self.base: list[dict[str, Any]] = []
        self.catalogue: dict[str, Any] | None = None
        self.language: dict[str, Any] | None = None

    def disjunctive(self) -> list[dict[str, Any]]:
        return [f for f in (self.catalogue, self.language) if f is not None]


def _filters(
    q: TutorQuery | TutorMapQuery | CoachQuery,
    catalogue_field: str,
    catalogue: tuple[str, ...],
    *,
    text_in_filter: bool,
) -> _Filters:
    f = _Filters()
    if q.q and text_in_filter:
        f.base.append(text_query(q.q))
    price: dict[str, Any] = {}
    if q.min_price is not None:
        price["gte"] = q.min_price
    if q.max_price is not None:
        price["lte"] = q.max_price
    if price:
        f.base.append({"range": {"price_minor": price}})
    if q.currency:
        f.base.append({"term": {"currency": q.currency}})
    if q.min_rating is not None:
        f.base.append({"range": {"rating_avg": {"gte": q.min_rating}}})
    if q.mode:
        f.base.append({"term": {q.mode: True}})
    if q.available_from or q.available_to:
        window: dict[str, Any] = {"relation": "intersects"}
        if q.available_from:
            window["gte"] = _iso_ms(q.available_from)
        if q.available_to:
            window["lt"] = _iso_ms(q.available_to)
        f.base.append({"range": {"availability": window}})
    if isinstance(q, CoachQuery) and q.kind:
        f.base.append({"terms": {"kind": list(q.kind)}})
    if isinstance(q, TutorQuery | TutorMapQuery) and q.lat is not None and q.lng is not None:
        radius_km = q.radius_km if q.radius_km is not None else 25.0
        f.base.insert(
            0,
            {
                "geo_distance": {
                    "distance": f"{radius_km * 1000.0}m",
                    "distance_type": "arc",
                    "location": {"lat": q.lat, "lon": q.lng},
                }
            },
        )
    if catalogue:
        f.catalogue = {"terms": {catalogue_field: list(catalogue)}}
    if q.language:
        f.language = {"terms": {"languages": list(q.language)}}
    return f


def _all(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    if not clauses:
        return {"match_all": {}}
    if len(clauses) == 1:
        return clauses[0]
    return {"bool": {"filter": clauses}}


def _terms(field: str, size: int) -> dict[str, Any]:
    """A `terms` aggregation over `field` asking every shard for all `size` buckets."""
    return {"terms": {"field": field, "size": size, "shard_size": size}}


def _disjunctive_facet(other: dict[str, Any] | None, field: str, size: int) -> dict[str, Any]:
    """A facet counted under every filter but its own: a `filter` aggregation on the other
    disjunctive clause (`match_all` without one) around a `values` terms aggregation."""
    return {"filter": _all([other] if other else []), "aggs": {"values": _terms(field, size)}}


def _facet_aggs(f: _Filters, catalogue_field: str, catalogue_size: int) -> dict[str, Any]:
    return {
        "catalogue": _disjunctive_facet(f.language, catalogue_field, catalogue_size),
        "languages": _disjunctive_facet(f.catalogue, "languages", LANGUAGE_BUCKETS),
        "results": {
            "filter": _all(f.disjunctive()),
            "aggs": {
                "rating": {
                    "range": {
                        "field": "rating_avg",
                        "ranges": [
                            {"key": key, "from": lo, "to": hi}
                            if hi < RATING_BUCKETS[-1][2]
                            else {"key": key, "from": lo}  # [4,5]: 5 included
                            for key, lo, hi in RATING_BUCKETS
                        ],
                    }
                },
                "price": {
                    **_terms("currency", CURRENCY_BUCKETS),
                    "aggs": {"stats": {"stats": {"field": "price_minor"}}},
                },
            },
        },
    }


def _sort(sort: str, q: TutorQuery | CoachQuery) -> list[dict[str, Any]]:
    if sort == "rating":
        first: dict[str, Any] = {"rating_sort": {"order": "desc"}}
    elif sort == "price":
        first = {"price_minor": {"order": "asc"}}
    elif sort == "distance":
        assert isinstance(q, TutorQuery)
        assert q.lat is not None
        assert q.lng is not None
        first = {
            "_geo_distance": {
                "location": {"lat": q.lat, "lon": q.lng},
                "order": "asc",
                "unit": "m",
                "distance_type": "arc",
            }
        }
    else:
        first = {"_score": {"order": "desc"}}
    return [first, {"provider_id": {"order": "asc"}}]


def _search_after(sort: str, key: list[Any]) -> list[Any]:
    """Cursor key (`[value, id]`, PostgreSQL engine format) → `search_after` values."""
    if len(key) != 2:
        from search.errors import InvalidParameter

        raise InvalidParameter("cursor", "malformed cursor")
    value, pid = key
    try:
        out: Any = int(value) if sort == "price" else float(value)
    except (TypeError, ValueError):
        from search.errors import InvalidParameter

        raise InvalidParameter("cursor", "malformed cursor") from None
    return [out, str(pid)]


def _cursor_key(sort: str, values: list[Any]) -> list[Any]:
    """`hit.sort` → cursor key in the PostgreSQL engine's format."""
    value, pid = values[0], values[1]
    if sort == "rating":
        return [f"{float(value):.2f}", str(pid)]
    if sort == "price":
        return [round(float(value)), str(pid)]
    return [float(value), str(pid)]


def _fingerprint(q: TutorQuery | CoachQuery) -> str:
    fields = normalized(q, exclude={"limit", "cursor"})
    if q.sort == "relevance":
        fields["engine"] = NAME  # scores differ between engines: never mix their cursors
    return cursors.fingerprint(fields)


def list_body(q: TutorQuery | CoachQuery, search_after: list[Any] | None) -> dict[str, Any]:
    """The `_search` body of a tutor or coach list query (page of `limit + 1` hits)."""
    tutors = isinstance(q, TutorQuery)
    field = "subjects" if tutors else "expertises"
    selected = q.subject if isinstance(q, TutorQuery) else q.expertise
    relevance = q.sort == "relevance"
    f = _filters(q, field, selected, text_in_filter=not relevance)
    query: dict[str, Any] = {"bool": {"filter": f.base}}
    if relevance and q.q:
        query["bool"]["must"] = [text_query(q.q)]
    body: dict[str, Any] = {
        "query": query,
        "size": q.limit + 1,
        "track_total_hits": True,
        "sort": _sort(q.sort, q),
        "_source": _TUTOR_SOURCE if tutors else _COACH_SOURCE,
        "aggs": _facet_aggs(f, field, SUBJECT_BUCKETS if tutors else EXPERTISE_BUCKETS),
    }
    if f.disjunctive():
        body["post_filter"] = _all(f.disjunctive())
    if search_after is not None:
        body["search_after"] = search_after
    return body


def map_body(q: TutorMapQuery) -> dict[str, Any]:
    """The `_search` body of the map: points from `POINTS_ZOOM`, geotile clusters below."""
    f = _filters(q, "subjects", q.subject, text_in_filter=True)
    min_lng, min_lat, max_lng, max_lat = q.bbox
    f.base.insert(
        0,
        {
            "geo_bounding_box": {
                "location": {
                    "top_left": {"lat": max_lat, "lon": min_lng},
                    "bottom_right": {"lat": min_lat, "lon": max_lng},
                }
            }
        },
    )
    query = {"bool": {"filter": [*f.base, *f.disjunctive()]}}
    if q.zoom >= POINTS_ZOOM:
        return {
            "query": query,
            "size": MAX_POINTS,
            "track_total_hits": True,
            "sort": [{"rating_sort": {"order": "desc"}}, {"provider_id": {"order": "asc"}}],
            "_source": _POINT_SOURCE,
        }
    return {
        "query": query,
        "size": 0,
        "track_total_hits": True,
        "aggs": {
            "cells": {
                "geotile_grid": {
                    "field": "location",
                    "precision": min(q.zoom + 2, 29),
                    "size": MAX_CLUSTERS,
                },
                "aggs": {
                    "centroid": {"geo_centroid": {"field": "location"}},
                    "bounds": {"geo_bounds": {"field": "location"}},
                },
            }
        },
    }


# ---------------------------------------------------------------------- response mapping


def arc_distance_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle (haversine) distance in metres on OpenSearch's mean-radius sphere."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_MEAN_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def total_hits(resp: dict[str, Any]) -> int:
    """`hits.total` as an int (an object `{value, relation}` since OpenSearch 1, a bare
    number in older clusters or with `rest_total_hits_as_int`)."""
    total = resp["hits"]["total"]
    return int(total["value"] if isinstance(total, dict) else total)


def _rating(src: dict[str, Any]) -> dict[str, Any]:
    avg = src.get("rating_avg")
    return {"avg": round(float(avg), 2) if avg is not None else None, "count": src["rating_count"]}


def _price(src: dict[str, Any]) -> dict[str, Any]:
    return {"amount_minor": round(float(src["price_minor"])), "currency": src["currency"]}


def _location(src: dict[str, Any]) -> dict[str, float] | None:
    loc = src.get("location")
    if loc is None:
        return None
    return {"lat": float(loc["lat"]), "lng": float(loc["lon"])}


def map_facets(
    aggs: dict[str, Any],
    *,
    catalogue_facet: str,
    catalogue_selected: tuple[str, ...],
    language_selected: tuple[str, ...],
) -> dict[str, Any]:
    """`aggregations` of a list query → the API's `facets` (same builder as PostgreSQL)."""
    cat = {b["key"]: b["doc_count"] for b in aggs["catalogue"]["values"]["buckets"]}
    lang = {b["key"]: b["doc_count"] for b in aggs["languages"]["values"]["buckets"]}
    keys = [k for k, _, _ in RATING_BUCKETS]
    rating = {
        keys.index(b["key"]): b["doc_count"]
        for b in aggs["results"]["rating"]["buckets"]
        if b["doc_count"]
    }
    price: dict[str, tuple[int, int, int, int]] = {}
    for b in aggs["results"]["price"]["buckets"]:
        st = b["stats"]
        if st["count"]:
            price[b["key"]] = (
                int(st["count"]),
                round(st["min"]),
                round(st["max"]),
                round(st["sum"]),
            )
    return build_facets(
        catalogue_facet=catalogue_facet,
        catalogue_counts=cat,
        catalogue_selected=catalogue_selected,
        language_counts=lang,
        language_selected=language_selected,
        rating_counts=rating,
        price_stats=price,
    )


def tutor_item(hit: dict[str, Any], q: TutorQuery) -> dict[str, Any]:
    """One tutor hit → the API item (`distance_km`: arc, 3 decimals, with a position)."""
    src = hit["_source"]
    loc = _location(src)
    dist: float | None = None
    if q.lat is not None and q.lng is not None:
        if q.sort == "distance":
            dist = float(hit["sort"][0])
        elif loc is not None:
            dist = arc_distance_m(q.lat, q.lng, loc["lat"], loc["lng"])
    return {
        "id": src["provider_id"],
        "display_name": src["display_name"],
        "headline": src["headline"],
        "subjects": list(src.get("subjects") or []),
        "languages": list(src.get("languages") or []),
        "price": _price(src),
        "rating": _rating(src),
        "online": src["online"],
        "in_person": src["in_person"],
        "location": loc,
        "city": src.get("city"),
        "country_code": src.get("country_code"),
        "distance_km": round(dist / 1000.0, 3) if dist is not None else None,
    }


def coach_item(hit: dict[str, Any]) -> dict[str, Any]:
    """One coach hit → the API item."""
    src = hit["_source"]
    return {
        "id": src["provider_id"],
        "kind": src["kind"],
        "display_name": src["display_name"],
        "headline": src["headline"],
        "expertises": list(src.get("expertises") or []),
        "languages": list(src.get("languages") or []),
        "price": _price(src),
        "rating": _rating(src),
        "online": src["online"],
        "in_person": src["in_person"],
        "city": src.get("city"),
        "country_code": src.get("country_code"),
    }


def map_results(resp: dict[str, Any], q: TutorMapQuery) -> MapResults:
    """A map `_search` response → `MapResults` (clusters sorted as PostgreSQL's: count
    desc, then centroid lat, lng)."""
    total = total_hits(resp)
    if q.zoom >= POINTS_ZOOM:
        points = []
        for hit in resp["hits"]["hits"]:
            src = hit["_source"]
            loc = _location(src) or {"lat": 0.0, "lng": 0.0}
            points.append(
                {
                    "id": src["provider_id"],
                    "lat": loc["lat"],
                    "lng": loc["lng"],
                    "display_name": src["display_name"],
                    "price": _price(src),
                    "rating": _rating(src),
                }
            )
        return MapResults(mode="points", clusters=[], points=points, total=total, engine=NAME)
    clusters = []
    for b in resp["aggregations"]["cells"]["buckets"]:
        c = b["centroid"]["location"]
        box = b["bounds"]["bounds"]
        clusters.append(
            {
                "count": b["doc_count"],
                "centroid": {"lat": round(c["lat"], 6), "lng": round(c["lon"], 6)},
                "bounds": {
                    "min_lat": box["bottom_right"]["lat"],
                    "min_lng": box["top_left"]["lon"],
                    "max_lat": box["top_left"]["lat"],
                    "max_lng": box["bottom_right"]["lon"],
                },
            }
        )
    clusters.sort(key=lambda c: (-c["count"], c["centroid"]["lat"], c["centroid"]["lng"]))
    return MapResults(mode="clusters", clusters=clusters, points=[], total=total, engine=NAME)


# ---------------------------------------------------------------------- the engine


class OpenSearchEngine:
    """`SearchEngine` on OpenSearch. `client` is an `AsyncOpenSearch`; `prefix` the index
    prefix (`OPENSEARCH_INDEX_PREFIX`); `timeout_s` bounds each search request."""

    name = NAME

    def __init__(self, client: AsyncOpenSearch, *, prefix: str = "", timeout_s: float = 2.0):
        self.client = client
        self.prefix = prefix
        self.timeout_s = timeout_s

    @classmethod
    def open(cls, url: str, *, prefix: str = "", timeout_s: float = 2.0) -> OpenSearchEngine:
        """An engine on the cluster at `url` (no request is made until the first search;
        no client-side retries: a failure falls back to PostgreSQL at once)."""
        client = AsyncOpenSearch(
            hosts=[url], timeout=timeout_s, max_retries=0, retry_on_timeout=False
        )
        return cls(client, prefix=prefix, timeout_s=timeout_s)

    async def close(self) -> None:
        """Close the client's HTTP session."""
        await self.client.close()

    async def _search(self, family: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = await asyncio.wait_for(
                self.client.search(
                    index=alias_name(family, self.prefix),
                    body=body,
                    request_timeout=self.timeout_s,
                ),
                timeout=self.timeout_s + 0.5,
            )
        except (TimeoutError, ConnectionTimeout) as exc:
            raise EngineUnavailable(NAME, "timeout", repr(exc)) from exc
        except OSConnectionError as exc:
            raise EngineUnavailable(NAME, "unreachable", repr(exc)) from exc
        except TransportError as exc:
            raise EngineUnavailable(NAME, "error", f"{exc.status_code} {exc.error}") from exc
        except (OpenSearchException, OSError) as exc:
            raise EngineUnavailable(NAME, "error", repr(exc)) from exc
        if resp.get("timed_out"):
            # Partial results would break parity: treat a server-side timeout as one.
            raise EngineUnavailable(NAME, "timeout", "search timed_out")
        shards = resp.get("_shards") or {}
        if shards.get("failed"):
            raise EngineUnavailable(NAME, "error", f"{shards['failed']} shard(s) failed")
        out: dict[str, Any] = resp
        return out

    async def _list(
        self,
        family: str,
        q: TutorQuery | CoachQuery,
        item: Callable[[dict[str, Any]], dict[str, Any]],
        catalogue_facet: str,
        catalogue_selected: tuple[str, ...],
    ) -> tuple[list[dict[str, Any]], dict[str, Any], int, str | None]:
        """One page of a list query on `family`: its items (`item` of each hit), facets,
        total and the next page's cursor (None on the last page)."""
        fp = _fingerprint(q)
        key = cursors.decode(q.cursor, q.sort, fp) if q.cursor else None
        after = _search_after(q.sort, key) if key is not None else None
        resp = await self._search(family, list_body(q, after))
        hits = resp["hits"]["hits"]
        items = [item(h) for h in hits[: q.limit]]
        next_cursor = None
        if len(hits) > q.limit:
            next_cursor = cursors.encode(q.sort, fp, _cursor_key(q.sort, hits[q.limit - 1]["sort"]))
        facets = map_facets(
            resp["aggregations"],
            catalogue_facet=catalogue_facet,
            catalogue_selected=catalogue_selected,
            language_selected=q.language,
        )
        return items, facets, total_hits(resp), next_cursor

    async def search_tutors(self, q: TutorQuery) -> TutorResults:
        """See `SearchEngine.search_tutors`."""
        items, facets, total, next_cursor = await self._list(
            "tutors", q, lambda h: tutor_item(h, q), "subjects", q.subject
        )
        return TutorResults(
            items=items, facets=facets, total=total, next_cursor=next_cursor, engine=NAME
        )

    async def tutor_map(self, q: TutorMapQuery) -> MapResults:
        """See `SearchEngine.tutor_map`."""
        resp = await self._search("tutors", map_body(q))
        return map_results(resp, q)

    async def search_coaches(self, q: CoachQuery) -> CoachResults:
        """See `SearchEngine.search_coaches`."""
        items, facets, total, next_cursor = await self._list(
            "coaches", q, coach_item, "expertises", q.expertise
        )
        return CoachResults(
            items=items, facets=facets, total=total, next_cursor=next_cursor, engine=NAME
        )
