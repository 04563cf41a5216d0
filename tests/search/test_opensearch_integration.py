"""Integration with a real OpenSearch (`pytest -m opensearch`; skipped unless
`OPENSEARCH_URL` is set):

    docker compose --profile opensearch up -d opensearch
    OPENSEARCH_URL=http://127.0.0.1:9200 .venv/bin/pytest -m opensearch

The seeded dataset (`search_dataset`: 2,500 tutors, 500 coaches) is indexed into both
engines (PostgreSQL tables and, through the alias-swap reindex, OpenSearch under a unique
index prefix) and the answers compared: same ids in the same order, same facets and
totals. Distance-filtered queries exclude tutors within 0.5 % of the radius boundary
(arc vs spheroid, see `search/engines/opensearch/engine.py`); relevance compares the
matching sets (BM25 vs ts_rank order). Then a reindex runs while searches hammer the alias: none fails, and
the totals never change.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

pytestmark = [
    pytest.mark.opensearch,
    pytest.mark.skipif(
        not os.environ.get("OPENSEARCH_URL"),
        reason="needs a real OpenSearch: set OPENSEARCH_URL (docker compose --profile opensearch up -d opensearch)",
    ),
]

URL = os.environ.get("OPENSEARCH_URL", "")
PREFIX = f"it{uuid.uuid4().hex[:8]}_"


@pytest.fixture(scope="module")
def indexed(search_dataset: str) -> Iterator[str]:
    from opensearchpy import OpenSearch

    from indexer.opensearch_reindex import reindex

    client = OpenSearch(hosts=[URL], timeout=60)
    with psycopg.connect(search_dataset, autocommit=True) as conn:
        reindex(conn, client, prefix=PREFIX, replicas=0)
    yield search_dataset
    client.indices.delete(index=f"{PREFIX}*")
    client.indices.delete_index_template(name=f"{PREFIX}educonnect-*")


@pytest.fixture
async def engines(indexed: str) -> AsyncIterator[tuple[Any, Any]]:
    from search.engines.opensearch.engine import OpenSearchEngine
    from search.engines.postgres.engine import PostgresEngine

    pg = await PostgresEngine.open(indexed, min_size=1, max_size=2)
    os_engine = OpenSearchEngine.open(URL, prefix=PREFIX, timeout_s=10)
    yield pg, os_engine
    await pg.close()
    await os_engine.close()


PARIS = {"lat": 48.8566, "lng": 2.3522}
LISTS: list[tuple[str, dict[str, Any]]] = [
    ("tutors", {"sort": "rating", "limit": 50}),
    ("tutors", {"sort": "price", "limit": 50, "currency": "EUR"}),
    ("tutors", {"subject": "mathematics,physics", "language": "fr", "limit": 30}),
    ("tutors", {"min_rating": 4, "mode": "online", "sort": "price", "limit": 40}),
    ("tutors", {**PARIS, "radius_km": 30, "sort": "rating", "limit": 50}),
    ("tutors", {**PARIS, "radius_km": 20, "sort": "distance", "limit": 50}),
    ("tutors", {"available_from": "2030-03-05T08:00:00Z", "available_to": "2030-03-05T12:00:00Z"}),
    ("coaches", {"sort": "rating", "limit": 50}),
    ("coaches", {"kind": "mentor", "language": "en", "sort": "price", "limit": 50}),
    ("coaches", {"expertise": "public-speaking", "min_price": 2000, "limit": 30}),
]


def _near_boundary(item: dict[str, Any], params: dict[str, Any]) -> bool:
    r = params.get("radius_km")
    d = item.get("distance_km")
    return r is not None and d is not None and abs(d - r) <= 0.005 * r


async def _pages(engine: Any, kind: str, params: dict[str, Any], pages: int = 3) -> list[Any]:
    from search.schemas import CoachQuery, TutorQuery

    model = TutorQuery if kind == "tutors" else CoachQuery
    out = []
    cursor = None
    for _ in range(pages):
        q = model(**params, cursor=cursor)
        res = await (engine.search_tutors(q) if kind == "tutors" else engine.search_coaches(q))
        out.append(res)
        cursor = res.next_cursor
        if cursor is None:
            break
    return out


@pytest.mark.parametrize(("kind", "params"), LISTS)
async def test_parity_ids_order_facets(
    engines: tuple[Any, Any], kind: str, params: dict[str, Any]
) -> None:
    pg, os_engine = engines
    a = await _pages(pg, kind, params)
    b = await _pages(os_engine, kind, params)
    ids_a = [i["id"] for p in a for i in p.items if not _near_boundary(i, params)]
    ids_b = [i["id"] for p in b for i in p.items if not _near_boundary(i, params)]
    assert ids_a == ids_b
    if "radius_km" not in params:
        assert a[0].total == b[0].total
        assert a[0].facets == b[0].facets


async def test_relevance_matches_the_same_set(engines: tuple[Any, Any]) -> None:
    from search.schemas import TutorQuery

    pg, os_engine = engines
    q = TutorQuery(q="math", sort="rating", limit=100)
    a, b = await pg.search_tutors(q), await os_engine.search_tutors(q)
    assert a.total == b.total
    assert [i["id"] for i in a.items] == [i["id"] for i in b.items]


async def test_map_points_and_totals(engines: tuple[Any, Any]) -> None:
    from search.geo import snap_bbox
    from search.schemas import TutorMapQuery

    pg, os_engine = engines
    for zoom, bbox in ((9, (2.0, 48.6, 2.7, 49.1)), (14, (2.33, 48.85, 2.36, 48.87))):
        q = TutorMapQuery(bbox=snap_bbox(bbox, zoom), zoom=zoom)
        a, b = await pg.tutor_map(q), await os_engine.tutor_map(q)
        assert a.total == b.total
        assert [p["id"] for p in a.points] == [p["id"] for p in b.points]


def test_alias_swap_reindex_under_load(indexed: str) -> None:
    from opensearchpy import OpenSearch

    from indexer.opensearch_reindex import reindex
    from search.engines.opensearch.engine import OpenSearchEngine
    from search.schemas import TutorQuery

    errors: list[BaseException] = []
    totals: set[int] = set()
    stop = threading.Event()

    def hammer() -> None:
        async def loop() -> None:
            engine = OpenSearchEngine.open(URL, prefix=PREFIX, timeout_s=10)
            try:
                while not stop.is_set():
                    try:
                        res = await engine.search_tutors(TutorQuery(sort="rating", limit=5))
                        totals.add(res.total)
                    except BaseException as exc:
                        errors.append(exc)
            finally:
                await engine.close()

        asyncio.run(loop())

    workers = [threading.Thread(target=hammer) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        client = OpenSearch(hosts=[URL], timeout=60)
        with psycopg.connect(indexed, autocommit=True) as conn:
            result = reindex(conn, client, prefix=PREFIX, replicas=0)
        old, new = result.swapped[f"{PREFIX}tutors"]
        assert old != new
        assert client.indices.exists(index=old)  # kept for rollback
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
    assert errors == []
    assert len(totals) == 1
