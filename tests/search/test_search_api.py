"""Search over HTTP: bad input → 422 naming the parameter, cache behaviour, Redis down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.cache import SearchCache
from search.errors import InvalidParameter
from search.schemas import BBOX_EXAMPLE, BBOX_PATTERN, MAX_ZOOM, TutorMapQuery, TutorQuery
from search.service import SearchService

BASE = "/api/v1/search/tutors"


@pytest.fixture
async def api(search_dataset: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client on a fresh app over the module's dataset (no truncation per test); an
    unexpected error is a 500 response, as a server sends it."""
    from api.app import create_app

    app = create_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


@pytest.mark.parametrize(
    ("url", "param"),
    [
        (BASE + "?lat=48.8", "lng"),
        (BASE + "?lng=2.3", "lat"),
        (BASE + "?lat=91&lng=2", "lat"),
        (BASE + "?lat=-90.5&lng=2", "lat"),
        (BASE + "?lat=48&lng=2&radius_km=0", "radius_km"),
        (BASE + "?lat=48&lng=2&radius_km=-3", "radius_km"),
        (BASE + "?lat=48&lng=2&radius_km=500.1", "radius_km"),
        (BASE + "?lat=abc&lng=2", "lat"),
        (BASE + "?min_price=5000&max_price=1000", "min_price"),
        (BASE + "?sort=cheapest", "sort"),
        (BASE + "?sort=distance", "sort"),
        (BASE + "?subject=Math%20s", "subject"),
        (BASE + "?subject=basket-weaving", "subject"),
        (BASE + "?cursor=not-a-cursor", "cursor"),
        (BASE + "?cursor=eyJ2IjoxfQ.AAAA", "cursor"),
        (BASE + "?limit=0", "limit"),
        (BASE + "?limit=101", "limit"),
        (BASE + "?language=xx", "language"),
        (BASE + "?currency=EURO", "currency"),
        (BASE + "?min_rating=6", "min_rating"),
        (BASE + "?mode=teleport", "mode"),
        (
            BASE + "?available_from=2030-03-05T10:00:00Z&available_to=2030-03-05T09:00:00Z",
            "available_to",
        ),
        (BASE + "?available_from=2030-03-05T10:00:00", "available_from"),
        (BASE + "/map?bbox=3,48,2,49&zoom=5", "bbox"),
        (BASE + "/map?bbox=2,49,3,48&zoom=5", "bbox"),
        (BASE + "/map?bbox=2,48,3&zoom=5", "bbox"),
        (BASE + "/map?bbox=2,48,3,49&zoom=23", "zoom"),
        ("/api/v1/search/coaches?kind=guru", "kind"),
        ("/api/v1/search/coaches?expertise=mathematics", "expertise"),
    ],
)
async def test_bad_input_is_a_422_naming_the_parameter(
    api: httpx.AsyncClient, url: str, param: str
) -> None:
    r = await api.get(url)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "validation_error"
    assert param in {e["param"] for e in body["errors"]}
    assert all(e["in"] == "query" for e in body["errors"])


async def test_foreign_cursor_is_rejected(api: httpx.AsyncClient) -> None:
    first = (await api.get(BASE, params={"sort": "price", "limit": 2})).json()
    assert first["next_cursor"]
    ok = await api.get(BASE, params={"sort": "price", "limit": 5, "cursor": first["next_cursor"]})
    assert ok.status_code == 200  # limit may change between pages
    other = await api.get(
        BASE, params={"sort": "price", "currency": "EUR", "cursor": first["next_cursor"]}
    )
    assert other.status_code == 422
    assert other.json()["errors"][0]["param"] == "cursor"
    tampered = first["next_cursor"][:-2] + (
        "AA" if not first["next_cursor"].endswith("AA") else "BB"
    )
    assert (await api.get(BASE, params={"sort": "price", "cursor": tampered})).status_code == 422


async def test_response_shape(api: httpx.AsyncClient) -> None:
    r = await api.get(BASE, params={"lat": 48.8566, "lng": 2.3522, "radius_km": 20, "limit": 3})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"items", "facets", "total", "next_cursor", "engine", "cached", "took_ms"}
    assert body["engine"] == "postgres"
    item = body["items"][0]
    assert set(item) == {
        "id", "display_name", "headline", "subjects", "languages", "price", "rating", "online",
        "in_person", "location", "city", "country_code", "distance_km",
    }  # fmt: skip
    assert item["distance_km"] <= 20
    assert set(body["facets"]) == {"rating", "price", "subjects", "languages"}
    assert [b["key"] for b in body["facets"]["rating"]] == ["1-2", "2-3", "3-4", "4-5"]
    coaches = (await api.get("/api/v1/search/coaches", params={"limit": 2})).json()
    assert set(coaches["items"][0]) == {
        "id", "kind", "display_name", "headline", "expertises", "languages", "price", "rating",
        "online", "in_person", "city", "country_code",
    }  # fmt: skip
    assert set(coaches["facets"]) == {"rating", "price", "expertises", "languages"}


async def test_equivalent_spellings_share_one_cache_entry(api: httpx.AsyncClient) -> None:
    a = await api.get(
        BASE + "?lat=48.8566&lng=2.3522&subject=physics&subject=mathematics&language=FR&q=Mathé"
    )
    assert a.json()["cached"] is False
    b = await api.get(
        BASE + "?q=%20MATHE%20&language=fr&subject=mathematics,physics&lng=2.3522&lat=48.8566"
        "&radius_km=25&limit=20&sort=relevance"
    )
    assert b.json()["cached"] is True
    assert b.json()["items"] == a.json()["items"]


async def test_generation_bump_invalidates(api: httpx.AsyncClient) -> None:
    from core.redis import get_async_redis

    url = BASE + "?subject=music"
    assert (await api.get(url)).json()["cached"] is False
    assert (await api.get(url)).json()["cached"] is True
    await SearchCache(get_async_redis(), "postgres").bump_generation()
    assert (await api.get(url)).json()["cached"] is False
    assert (await api.get(url)).json()["cached"] is True


async def test_hits_and_misses_are_in_metrics(api: httpx.AsyncClient) -> None:
    await api.get(BASE + "?subject=latin")
    await api.get(BASE + "?subject=latin")
    text = (await api.get("/metrics")).text
    assert 'educonnect_search_cache_total{endpoint="tutors",result="hit"}' in text
    assert 'educonnect_search_cache_total{endpoint="tutors",result="miss"}' in text


class _Counting:
    name = "postgres"

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    async def search_tutors(self, q: TutorQuery) -> Any:
        self.calls += 1
        await asyncio.sleep(0)  # let the other requests reach the cache first
        return await self.inner.search_tutors(q)


async def test_concurrent_misses_compute_once(search_dataset: str, redis_url: str) -> None:
    import redis.asyncio as aioredis

    from search.engines.postgres.engine import PostgresEngine

    engine = await PostgresEngine.open(search_dataset, min_size=1, max_size=4)
    client = aioredis.Redis.from_url(redis_url)
    try:
        counting = _Counting(engine)
        service = SearchService(counting, SearchCache(client, "postgres"))  # type: ignore[arg-type]
        q = TutorQuery(subject="chemistry", lat=45.764, lng=4.8357)
        bodies = await asyncio.gather(*(service.search_tutors(q) for _ in range(12)))
        assert counting.calls == 1
        assert len({b.split(b'"cached"')[0] for b in bodies}) == 1
    finally:
        await engine.close()
        await client.aclose()


async def test_redis_down_answers_from_postgres(search_dataset: str) -> None:
    import redis.asyncio as aioredis

    from search.engines.postgres.engine import PostgresEngine

    engine = await PostgresEngine.open(search_dataset, min_size=1, max_size=2)
    dead = aioredis.Redis.from_url(
        "redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2
    )
    try:
        service = SearchService(engine, SearchCache(dead, "postgres"))
        body = await service.search_tutors(TutorQuery(subject="mathematics"))
        assert b'"cached":false' in body
        assert b'"total":' in body
    finally:
        await engine.close()
        await dead.aclose()


async def test_redis_down_over_http_is_200(
    search_dataset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.app import create_app
    from core import redis as core_redis
    from core.settings import get_settings

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    core_redis._async_client.cache_clear()
    try:
        app = create_app()
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                r = await c.get(BASE, params={"subject": "physics"})
        assert r.status_code == 200
        assert r.json()["cached"] is False
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        core_redis._async_client.cache_clear()


async def test_map_viewport_is_snapped_for_the_cache(api: httpx.AsyncClient) -> None:
    a = await api.get(BASE + "/map", params={"bbox": "2.01,48.01,2.99,48.99", "zoom": 6})
    b = await api.get(BASE + "/map", params={"bbox": "2.02,48.02,2.98,48.97", "zoom": 6})
    assert a.status_code == b.status_code == 200
    assert a.json()["cached"] is False
    assert b.json()["cached"] is True
    assert a.json()["mode"] == "clusters"


# --- the lean miss path, the response models, the OpenAPI document -------------------


@pytest.mark.parametrize(
    ("path", "params", "model"),
    [
        (BASE, {"lat": 48.8566, "lng": 2.3522, "radius_km": 30, "subject": "mathematics"}, "T"),
        (BASE, {"sort": "price", "limit": 3, "language": "en"}, "T"),
        ("/api/v1/search/coaches", {"kind": "mentor", "limit": 5}, "C"),
        (BASE + "/map", {"bbox": "1.5,48.5,3.2,49.2", "zoom": 8}, "M"),
        (BASE + "/map", {"bbox": "2.2,48.8,2.5,48.9", "zoom": 14}, "M"),
    ],
)
async def test_bodies_have_the_documented_shape(
    api: httpx.AsyncClient, path: str, params: dict[str, Any], model: str
) -> None:
    """Every field and type of a real body, miss and hit, against the models the OpenAPI
    document publishes (`extra="forbid"`: no undocumented field either)."""
    from search.schemas import CoachPage, MapPage, TutorPage

    page = {"T": TutorPage, "C": CoachPage, "M": MapPage}[model]
    for cached in (False, True):
        r = await api.get(path, params=params)
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["cached"] is cached
        parsed = page.model_validate(body, strict=True)
        assert parsed.model_dump(by_alias=True, exclude_unset=True) == body
    if model == "M":
        assert body["mode"] == ("points" if params["zoom"] >= 13 else "clusters")
        assert body["total"] > 0
    else:
        assert body["items"]
        assert body["facets"]["rating"]


async def test_missing_map_viewport_is_a_422_naming_each_parameter(
    api: httpx.AsyncClient,
) -> None:
    r = await api.get(BASE + "/map", params={"subject": "physics"})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "validation_error"
    assert [(e["param"], e["in"], e["type"]) for e in body["errors"]] == [
        ("bbox", "query", "missing"),
        ("zoom", "query", "missing"),
    ]


@pytest.mark.parametrize(
    ("url", "param"),
    [
        (BASE + "?lat=", "lat"),
        (BASE + "?lat=&lng=", "lat"),
        (BASE + "?lat=48.8&lng=", "lng"),
        (BASE + "?lat=48.8&lng=2.3&radius_km=", "radius_km"),
        (BASE + "?min_price=", "min_price"),
        (BASE + "?max_price=", "max_price"),
        (BASE + "?min_rating=", "min_rating"),
        (BASE + "?limit=", "limit"),
        (BASE + "?sort=", "sort"),
        (BASE + "?mode=", "mode"),
        (BASE + "?currency=", "currency"),
        (BASE + "?available_from=", "available_from"),
        (BASE + "/map?bbox=2,48,3,49&zoom=", "zoom"),
        (BASE + "/map?bbox=&zoom=9", "bbox"),
        (BASE + "/map?bbox=2,48,3,49&zoom=9&lat=&lng=", "lat"),
        ("/api/v1/search/coaches?min_price=", "min_price"),
        ("/api/v1/search/coaches?limit=", "limit"),
        ("/api/v1/search/coaches?sort=", "sort"),
    ],
)
async def test_an_empty_typed_value_is_a_422_naming_the_parameter(
    api: httpx.AsyncClient, url: str, param: str
) -> None:
    r = await api.get(url)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "validation_error"
    assert [e["param"] for e in body["errors"]] == [param]


@pytest.mark.parametrize(
    "url",
    [
        BASE + "?q=&subject=&language=&cursor=",
        BASE + "/map?bbox=2,48,3,49&zoom=9&subject=&q=",
        "/api/v1/search/coaches?q=&expertise=&kind=&cursor=",
    ],
)
async def test_empty_text_lists_and_cursor_mean_none(api: httpx.AsyncClient, url: str) -> None:
    r = await api.get(url)
    assert r.status_code == 200, r.text
    plain = await api.get(url.split("?")[0] + ("?bbox=2,48,3,49&zoom=9" if "map" in url else ""))
    assert {**r.json(), "cached": None, "took_ms": None} == {
        **plain.json(),
        "cached": None,
        "took_ms": None,
    }


async def test_the_app_without_its_lifespan_has_no_search_service(
    database_url: str, redis_url: str
) -> None:
    """The engines are opened by the lifespan only: a bare app answers 500, not a
    half-built service."""
    from api.app import create_app

    transport = httpx.ASGITransport(app=create_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/api/v1/search/coaches")
    assert r.status_code == 500
    assert r.json()["code"] == "internal_error"


async def test_unexpected_error_on_a_miss_is_a_500_problem(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(*_args: Any, **_kwargs: Any) -> bytes:
        raise RuntimeError("boom: internal detail")

    monkeypatch.setattr(SearchService, "search_coaches", boom)
    r = await api.get("/api/v1/search/coaches", params={"limit": 7})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "internal_error"
    assert "boom" not in r.text
    assert r.headers["x-request-id"]


async def test_misses_are_counted_under_their_route(api: httpx.AsyncClient) -> None:
    await api.get(BASE, params={"subject": "geography", "limit": 2})
    await api.get(BASE, params={"lat": "x", "lng": 2})
    text = (await api.get("/metrics")).text
    for status in ("200", "422"):
        assert (
            'educonnect_http_requests_total{method="GET",route="/api/v1/search/tutors",'
            f'status="{status}"}}'
        ) in text


async def test_openapi_describes_parameters_and_bodies(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/openapi.json")).json()
    expected = {
        "/api/v1/search/tutors": ("TutorPage", {"subject", "lat", "lng", "radius_km", "sort", "cursor"}, set()),
        "/api/v1/search/tutors/map": ("MapPage", {"bbox", "zoom", "subject", "language"}, {"bbox", "zoom"}),
        "/api/v1/search/coaches": ("CoachPage", {"expertise", "kind", "language", "sort", "limit"}, set()),
    }  # fmt: skip
    for path, (page, some, required) in expected.items():
        op = doc["paths"][path]["get"]
        params = {p["name"]: p for p in op["parameters"]}
        assert some <= set(params)
        assert {n for n, p in params.items() if p["required"]} == required
        assert all(p["in"] == "query" for p in params.values())
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{page}"}
        assert "application/problem+json" in op["responses"]["422"]["content"]
    schemas = doc["components"]["schemas"]
    assert set(schemas["TutorItem"]["required"]) >= {"id", "price", "rating", "distance_km"}
    assert set(schemas["RatingBucket"]["properties"]) == {"key", "from", "to", "count"}


async def test_openapi_describes_the_map_viewport_and_its_example_is_answered(
    api: httpx.AsyncClient,
) -> None:
    doc = (await api.get("/openapi.json")).json()
    params = {p["name"]: p for p in doc["paths"][BASE + "/map"]["get"]["parameters"]}
    zoom, bbox = params["zoom"], params["bbox"]
    assert {k: zoom["schema"][k] for k in ("type", "minimum", "maximum")} == {
        "type": "integer", "minimum": 0, "maximum": MAX_ZOOM,
    }  # fmt: skip
    assert (bbox["schema"]["type"], bbox["schema"]["pattern"]) == ("string", BBOX_PATTERN)
    assert bbox["example"] == BBOX_EXAMPLE
    r = await api.get(BASE + "/map", params={"bbox": bbox["example"], "zoom": zoom["example"]})
    assert r.status_code == 200, r.text


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.from_regex(BBOX_PATTERN, fullmatch=True), st.integers(0, MAX_ZOOM))
def test_every_bbox_the_pattern_admits_is_read_by_the_map_query(bbox: str, zoom: int) -> None:
    """The published pattern describes the parser: each value it admits is read as its
    four numbers, unless min > max (which no pattern can exclude) — then a 422 on bbox."""
    box = tuple(float(v) for v in bbox.split(","))
    if box[0] <= box[2] and box[1] <= box[3]:
        assert TutorMapQuery(bbox=bbox, zoom=zoom).bbox == box
    else:
        with pytest.raises(InvalidParameter) as exc:
            TutorMapQuery(bbox=bbox, zoom=zoom)
        assert exc.value.param == "bbox"


async def test_a_miss_stores_the_body_and_releases_the_lock(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    cache = SearchCache(client, "postgres", ttl_s=30)
    try:

        async def compute() -> bytes:
            return b'{"total":1}'

        body, hit = await cache.get_or_compute("d1", compute)
        assert (body, hit) == (b'{"total":1}', False)
        gen = await cache.generation()
        assert await client.get(f"search:v1:postgres:{gen}:d1") == body
        assert 0 < await client.ttl(f"search:v1:postgres:{gen}:d1") <= 30
        assert not await client.exists(f"search:v1:postgres:{gen}:d1:lock")
        assert await cache.get_or_compute("d1", compute) == (body, True)

        async def failing() -> bytes:
            raise RuntimeError("engine down")

        with pytest.raises(RuntimeError):
            await cache.get_or_compute("d2", failing)
        assert not await client.exists(f"search:v1:postgres:{gen}:d2:lock")
        assert not await client.exists(f"search:v1:postgres:{gen}:d2")
    finally:
        await client.aclose()
