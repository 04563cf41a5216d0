"""Response mapping of the OpenSearch engine, from real OpenSearch 2.x response shapes."""

from __future__ import annotations

from typing import Any

import pytest

from search import cursor as cursors
from search.engines.opensearch.engine import (
    _cursor_key,
    _search_after,
    arc_distance_m,
    map_facets,
    map_results,
    total_hits,
    tutor_item,
)
from search.schemas import TutorMapQuery, TutorQuery

HIT = {
    "_index": "tutors_v3",
    "_id": "6f1c…",
    "_score": None,
    "_source": {
        "provider_id": "6f1c2b4e-0000-4000-8000-000000000001",
        "display_name": "Camille Martin",
        "headline": "Maths et physique",
        "subjects": ["mathematics", "physics"],
        "languages": ["fr", "en"],
        "price_minor": 3500,
        "currency": "EUR",
        "rating_avg": 4.5,
        "rating_count": 12,
        "online": True,
        "in_person": True,
        "location": {"lat": 48.8666, "lon": 2.3522},
        "city": "Paris",
        "country_code": "FR",
    },
    "sort": [1112.4321, "6f1c2b4e-0000-4000-8000-000000000001"],
}

AGGS: dict[str, Any] = {
    "catalogue": {
        "doc_count": 120,
        "values": {
            "doc_count_error_upper_bound": 0,
            "sum_other_doc_count": 0,
            "buckets": [
                {"key": "physics", "doc_count": 40},
                {"key": "mathematics", "doc_count": 90},
            ],
        },
    },
    "languages": {
        "doc_count": 95,
        "values": {
            "doc_count_error_upper_bound": 0,
            "sum_other_doc_count": 0,
            "buckets": [{"key": "fr", "doc_count": 90}, {"key": "en", "doc_count": 31}],
        },
    },
    "results": {
        "doc_count": 88,
        "rating": {
            "buckets": [
                {"key": "1-2", "from": 1.0, "to": 2.0, "doc_count": 0},
                {"key": "2-3", "from": 2.0, "to": 3.0, "doc_count": 3},
                {"key": "3-4", "from": 3.0, "to": 4.0, "doc_count": 20},
                {"key": "4-5", "from": 4.0, "doc_count": 60},
            ]
        },
        "price": {
            "doc_count_error_upper_bound": 0,
            "sum_other_doc_count": 0,
            "buckets": [
                {
                    "key": "EUR",
                    "doc_count": 80,
                    "stats": {
                        "count": 80,
                        "min": 1500.0,
                        "max": 9000.0,
                        "avg": 3512.5,
                        "sum": 281000.0,
                    },
                },
                {
                    "key": "CHF",
                    "doc_count": 8,
                    "stats": {
                        "count": 8,
                        "min": 4000.0,
                        "max": 7000.0,
                        "avg": 5125.0,
                        "sum": 41000.0,
                    },
                },
            ],
        },
    },
}


def test_total_hits_object_and_legacy_int() -> None:
    assert total_hits({"hits": {"total": {"value": 42, "relation": "eq"}}}) == 42
    assert total_hits({"hits": {"total": 7}}) == 7


def test_facets_from_aggregations_match_the_postgres_shape() -> None:
    facets = map_facets(
        AGGS, catalogue_facet="subjects", catalogue_selected=("chemistry",), language_selected=()
    )
    assert [(s["value"], s["count"]) for s in facets["subjects"]] == [
        ("mathematics", 90),
        ("physics", 40),
        ("chemistry", 0),  # selected values always appear
    ]
    assert facets["subjects"][0]["label_fr"] == "Mathématiques"
    assert facets["languages"] == [{"value": "fr", "count": 90}, {"value": "en", "count": 31}]
    assert facets["rating"] == [
        {"key": "1-2", "from": 1, "to": 2, "count": 0},
        {"key": "2-3", "from": 2, "to": 3, "count": 3},
        {"key": "3-4", "from": 3, "to": 4, "count": 20},
        {"key": "4-5", "from": 4, "to": 5, "count": 60},
    ]
    assert facets["price"] == [
        {"currency": "EUR", "min": 1500, "avg": 3512.5, "max": 9000, "count": 80},
        {"currency": "CHF", "min": 4000, "avg": 5125.0, "max": 7000, "count": 8},
    ]


def test_tutor_item_distance_from_the_sort_value_or_computed() -> None:
    by_distance = TutorQuery(lat=48.8566, lng=2.3522, sort="distance")
    item = tutor_item(HIT, by_distance)
    assert item["distance_km"] == 1.112
    assert item["location"] == {"lat": 48.8666, "lng": 2.3522}
    assert item["price"] == {"amount_minor": 3500, "currency": "EUR"}
    assert item["rating"] == {"avg": 4.5, "count": 12}
    by_rating = TutorQuery(lat=48.8566, lng=2.3522, sort="rating")
    hit = {**HIT, "sort": [4.5, HIT["sort"][1]]}
    assert tutor_item(hit, by_rating)["distance_km"] == pytest.approx(1.112, abs=0.001)
    assert tutor_item(hit, TutorQuery())["distance_km"] is None


def test_arc_distance_is_opensearch_haversine() -> None:
    # 1 degree of longitude on the equator on the 6,371,008.7714 m sphere
    assert arc_distance_m(0, 0, 0, 1) == pytest.approx(111_195.08, abs=0.01)


@pytest.mark.parametrize(
    ("sort", "values", "key", "after"),
    [
        ("rating", [4.5, "id"], ["4.50", "id"], [4.5, "id"]),
        ("rating", [0.0, "id"], ["0.00", "id"], [0.0, "id"]),
        ("price", [3500.0, "id"], [3500, "id"], [3500, "id"]),
        ("distance", [1112.4321, "id"], [1112.4321, "id"], [1112.4321, "id"]),
        ("relevance", [7.25, "id"], [7.25, "id"], [7.25, "id"]),
    ],
)
def test_cursor_keys_round_trip_to_search_after(
    sort: str, values: list[Any], key: list[Any], after: list[Any]
) -> None:
    assert _cursor_key(sort, values) == key
    token = cursors.encode(sort, "fp", key)
    assert _search_after(sort, cursors.decode(token, sort, "fp")) == after


def test_geotile_buckets_become_clusters_in_postgres_order() -> None:
    resp = {
        "took": 4,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {"total": {"value": 45, "relation": "eq"}, "max_score": None, "hits": []},
        "aggregations": {
            "cells": {
                "buckets": [
                    {
                        "key": "12/2074/1409",
                        "doc_count": 5,
                        "centroid": {"location": {"lat": 48.86, "lon": 2.31}, "count": 5},
                        "bounds": {
                            "bounds": {
                                "top_left": {"lat": 48.87, "lon": 2.30},
                                "bottom_right": {"lat": 48.85, "lon": 2.32},
                            }
                        },
                    },
                    {
                        "key": "12/2075/1409",
                        "doc_count": 40,
                        "centroid": {
                            "location": {"lat": 48.8566123456, "lon": 2.3522},
                            "count": 40,
                        },
                        "bounds": {
                            "bounds": {
                                "top_left": {"lat": 48.9, "lon": 2.33},
                                "bottom_right": {"lat": 48.82, "lon": 2.39},
                            }
                        },
                    },
                ]
            }
        },
    }
    out = map_results(resp, TutorMapQuery(bbox="2.2,48.8,2.5,48.95", zoom=10))
    assert out.mode == "clusters"
    assert out.total == 45
    assert [c["count"] for c in out.clusters] == [40, 5]
    assert out.clusters[0] == {
        "count": 40,
        "centroid": {"lat": 48.856612, "lng": 2.3522},
        "bounds": {"min_lat": 48.82, "min_lng": 2.33, "max_lat": 48.9, "max_lng": 2.39},
    }


def test_points_mode_maps_hits() -> None:
    resp = {
        "hits": {
            "total": {"value": 1, "relation": "eq"},
            "hits": [{**HIT, "sort": [4.5, HIT["sort"][1]]}],
        }
    }
    out = map_results(resp, TutorMapQuery(bbox="2.33,48.85,2.35,48.86", zoom=15))
    assert out.mode == "points"
    assert out.points == [
        {
            "id": HIT["_source"]["provider_id"],
            "lat": 48.8666,
            "lng": 2.3522,
            "display_name": "Camille Martin",
            "price": {"amount_minor": 3500, "currency": "EUR"},
            "rating": {"avg": 4.5, "count": 12},
        }
    ]
