"""Contract tests: every request body the OpenSearch engine, sink and reindex send is valid
for the official OpenSearch API specification (`tests/search/opensearch_spec.py`).

The bodies are captured at the HTTP level: the real code (opensearch-py clients, async
for the engine, sync for the sink and the reindex) talks to a local stand-in server
(`tests/search/opensearch_standin.py`) that records each request and answers with realistic
response shapes. Query classes: every sort, with/without text, geo, availability, every
filter, disjunctive facets, the map at cluster and point zooms, cursor pages
(`search_after`), coach queries; bulk lines (external-version index, deletes); index
templates, index creation (load settings, alias), settings restore, alias swaps.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from opensearchpy import OpenSearch

from indexer.opensearch_reindex import bootstrap, reindex, replay, rollback
from indexer.opensearch_sink import BulkWriteError, OpenSearchSink
from indexer.repository import OutboxEvent
from profiles.catalogue import SUBJECTS
from search.engines.opensearch.engine import OpenSearchEngine
from search.engines.opensearch.index import FAMILIES, index_template
from search.schemas import CoachQuery, TutorMapQuery, TutorQuery
from tests.conftest import create_provider
from tests.search.opensearch_spec import (
    CHECKED,
    errors,
    request_body_ref,
    validate_bulk,
    validate_request,
)
from tests.search.opensearch_standin import StandIn

SEARCH = request_body_ref("_core", "search", "application/json")


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    s = StandIn()
    yield s
    s.close()


def assert_bodies_valid(standin: StandIn, since: int) -> list[str]:
    """Validate every request with a body recorded after `since`; returns the operations."""
    ops = []
    for r in standin.requests[since:]:
        if not r.body.strip():
            continue
        op, problems = validate_request(r.method, r.path, r.body)
        assert not problems, (
            f"{r.method} {r.path} violates the spec ({op}):\n"
            + "\n".join(problems[:10])
            + "\n"
            + r.body.decode()[:2000]
        )
        assert op is not None
        ops.append(op)
    return ops


# ---------------------------------------------------------------- the validator itself


@pytest.mark.parametrize(
    "body",
    [
        {"query": {"geo_distance": 5}},
        {"query": {"geo_distanc": {"distance": "1km", "location": {"lat": 1, "lon": 2}}}},
        {"query": {"bool": {"filter": [{"term": {"currency": {"value": ["EUR"]}}}]}}},
        {"size": "twenty"},
        {"track_total_hits": "yes"},
        {"aggs": {"x": {"geotile_grid": {"field": "location", "precision": "fine"}}}},
        {"sort": [{"_geo_distance": {"location": {"lat": 1, "lon": 2}, "order": "upwards"}}]},
        {"search_after": "not-a-list"},
    ],
)
def test_validator_rejects_bodies_the_spec_forbids(body: dict[str, Any]) -> None:
    assert errors(SEARCH, body)


def test_validator_accepts_a_plain_search() -> None:
    body = {
        "query": {"bool": {"filter": [{"term": {"currency": "EUR"}}]}},
        "sort": [{"price_minor": {"order": "asc"}}, {"provider_id": {"order": "asc"}}],
        "size": 21,
        "search_after": [2500, "x"],
    }
    assert errors(SEARCH, body) == []


@pytest.mark.parametrize(
    "raw",
    [
        b'{"upsert": {"_index": "tutors", "_id": "1"}}\n{"display_name": "x"}\n',
        b'{"index": {"_index": "tutors", "_id": "1", "version_type": "sometimes"}}\n{"a": 1}\n',
        b'{"index": {"_index": "tutors", "_id": "1"}, "delete": {"_id": "2"}}\n{"a": 1}\n',
        b'{"index": {"_index": "tutors", "_id": "1"}}\n',
        b'{"delete": {"_index": "tutors", "_id": "1", "version": "three"}}\n',
    ],
)
def test_validator_rejects_bad_bulk_lines(raw: bytes) -> None:
    assert validate_bulk(raw)


# ---------------------------------------------------------------- search bodies

PARIS = {"lat": "48.8566", "lng": "2.3522"}
WINDOW = {"available_from": "2030-03-05T08:00:00+01:00", "available_to": "2030-03-05T20:00:00Z"}
TUTOR_QUERIES: list[dict[str, Any]] = [
    {},
    {"sort": "price"},
    {**PARIS},
    {**PARIS, "radius_km": "5", "sort": "rating"},
    {**PARIS, "radius_km": "50", "sort": "price", "currency": "EUR"},
    {**PARIS, "subject": "mathematics", "sort": "distance"},
    {**PARIS, "subject": ["mathematics", "physics"], "language": "fr,en"},
    {"q": "algèbre lin", "sort": "relevance"},
    {**PARIS, "q": "maths", "sort": "relevance", "radius_km": "10"},
    {**PARIS, "q": "physique", "sort": "distance"},
    {"q": "piano", "sort": "rating", "language": "en"},
    {**PARIS, **WINDOW, "mode": "in_person"},
    {"available_from": "2030-03-05T08:00:00Z"},
    {"available_to": "2030-03-05T08:00:00Z", "mode": "online"},
    {"min_price": "1000", "max_price": "4000", "min_rating": "3.5", "sort": "price"},
    {"min_rating": "4.25", "subject": "physics", "language": "de"},
    {**PARIS, "radius_km": "500", "limit": "1"},
]
COACH_QUERIES: list[dict[str, Any]] = [
    {},
    {"expertise": "public-speaking", "sort": "price"},
    {"kind": "mentor", "language": "fr", "q": "leadership"},
    {"kind": "coach,mentor", "expertise": ["public-speaking"], "language": ["en", "fr"]},
    {"q": "prise de parole", "sort": "rating", "min_price": "2000", "currency": "EUR"},
    {**WINDOW, "mode": "online", "min_rating": "4"},
]
MAP_QUERIES: list[dict[str, Any]] = [
    {"bbox": "-180,-85,180,85", "zoom": "0"},
    {"bbox": "-5,42,8,51", "zoom": "5"},
    {"bbox": "2.2,48.8,2.5,48.95", "zoom": "10", "subject": "mathematics"},
    {"bbox": "2.2,48.8,2.5,48.95", "zoom": "12", **PARIS, "radius_km": "8", "q": "maths"},
    {"bbox": "2.3,48.84,2.36,48.87", "zoom": "13", "language": "fr", **WINDOW},
    {"bbox": "2.33,48.85,2.35,48.86", "zoom": "16", "min_rating": "4", "mode": "in_person"},
    {"bbox": "2.33,48.85,2.35,48.86", "zoom": "22"},
]


@pytest.fixture
async def engine(standin: StandIn) -> Any:
    e = OpenSearchEngine.open(standin.url, prefix="", timeout_s=5)
    yield e
    await e.close()


@pytest.mark.parametrize("params", TUTOR_QUERIES)
async def test_tutor_search_bodies_follow_the_spec(
    standin: StandIn, engine: OpenSearchEngine, params: dict[str, Any]
) -> None:
    since = len(standin.requests)
    q = TutorQuery(**{**params, "limit": params.get("limit", "2")})
    page1 = await engine.search_tutors(q)
    assert page1.engine == "opensearch"
    assert page1.next_cursor is not None  # 3 hits for a limit of 2: a next page
    page2 = await engine.search_tutors(q.model_copy(update={"cursor": page1.next_cursor}))
    assert page2.items
    ops = assert_bodies_valid(standin, since)
    assert ops == ["search", "search"]
    bodies = [json.loads(r.body) for r in standin.requests[since:]]
    assert "search_after" not in bodies[0]
    assert bodies[1]["search_after"][1] == page1.items[-1]["id"]
    assert all(r.path == "/tutors/_search" for r in standin.requests[since:])


@pytest.mark.parametrize("params", COACH_QUERIES)
async def test_coach_search_bodies_follow_the_spec(
    standin: StandIn, engine: OpenSearchEngine, params: dict[str, Any]
) -> None:
    since = len(standin.requests)
    q = CoachQuery(**params, limit="2")
    page1 = await engine.search_coaches(q)
    assert page1.next_cursor is not None
    await engine.search_coaches(q.model_copy(update={"cursor": page1.next_cursor}))
    assert assert_bodies_valid(standin, since) == ["search", "search"]
    assert all(r.path == "/coaches/_search" for r in standin.requests[since:])


@pytest.mark.parametrize("params", MAP_QUERIES)
async def test_map_bodies_follow_the_spec(
    standin: StandIn, engine: OpenSearchEngine, params: dict[str, Any]
) -> None:
    since = len(standin.requests)
    result = await engine.tutor_map(TutorMapQuery(**params))
    assert assert_bodies_valid(standin, since) == ["search"]
    body = json.loads(standin.requests[since].body)
    if int(params["zoom"]) >= 13:
        assert result.mode == "points"
        assert "aggs" not in body
    else:
        assert result.mode == "clusters"
        grid = body["aggs"]["cells"]["geotile_grid"]
        assert grid["precision"] == int(params["zoom"]) + 2


async def test_facet_aggregations_are_disjunctive_and_exact(
    standin: StandIn, engine: OpenSearchEngine
) -> None:
    since = len(standin.requests)
    await engine.search_tutors(
        TutorQuery(**PARIS, subject="mathematics", language="fr", min_rating="3")
    )
    body = json.loads(standin.requests[since].body)
    post = body["post_filter"]["bool"]["filter"]
    assert {"terms": {"subjects": ["mathematics"]}} in post
    assert {"terms": {"languages": ["fr"]}} in post
    aggs = body["aggs"]
    assert aggs["catalogue"]["filter"] == {"terms": {"languages": ["fr"]}}
    assert aggs["languages"]["filter"] == {"terms": {"subjects": ["mathematics"]}}
    terms = aggs["catalogue"]["aggs"]["values"]["terms"]
    assert terms["size"] == len(SUBJECTS)  # the whole catalogue: exact counts
    assert terms["shard_size"] >= terms["size"]
    geo = body["query"]["bool"]["filter"][0]["geo_distance"]
    assert geo["distance_type"] == "arc"
    assert geo["distance"] == "25000.0m"
    # filter context only: nothing scores outside sort=relevance
    assert "must" not in body["query"]["bool"]


# ---------------------------------------------------------------- sink bulk bodies


def _event(pid: Any, n: int) -> OutboxEvent:
    return OutboxEvent(
        id=n,
        txid=1000 + n,
        aggregate_type="provider",
        aggregate_id=str(pid),
        event_type="provider.updated",
        payload={"provider_id": str(pid)},
        created_at=datetime.now(UTC),
    )


@pytest.fixture
def providers(db: psycopg.Connection[Any]) -> dict[str, Any]:
    tutor = create_provider(db, kind="tutor", in_person=True, lat=48.85, lng=2.35)
    coach = create_provider(db, kind="coach")
    gone = create_provider(db, kind="tutor")
    db.execute("UPDATE users SET active = false WHERE id = %s", (gone,))
    return {"tutor": tutor, "coach": coach, "inactive": gone, "deleted": uuid.uuid4()}


def _sync_client(standin: StandIn) -> OpenSearch:
    return OpenSearch(hosts=[standin.url], timeout=5, max_retries=0)


def test_sink_bulk_body_follows_the_spec(
    standin: StandIn, db: psycopg.Connection[Any], providers: dict[str, Any]
) -> None:
    since = len(standin.requests)
    sink = OpenSearchSink(_sync_client(standin))
    events = [_event(pid, i) for i, pid in enumerate(providers.values(), 1)]
    sink.apply(db, events)
    assert assert_bodies_valid(standin, since) == ["bulk"]
    bulk = standin.requests[since]
    assert bulk.query["require_alias"] == ["true"]
    assert bulk.query["refresh"] == ["wait_for"]
    lines = [json.loads(x) for x in bulk.body.decode().splitlines()]
    actions = [(next(iter(x)), x[next(iter(x))]) for x in lines if set(x) <= {"index", "delete"}]
    tutor, coach = str(providers["tutor"]), str(providers["coach"])
    index_ops = {(m["_index"], m["_id"]): m for op, m in actions if op == "index"}
    assert set(index_ops) == {("tutors", tutor), ("coaches", coach)}
    assert all(m["version_type"] == "external" and m["version"] == 1 for m in index_ops.values())
    deletes = {(m["_index"], m["_id"]) for op, m in actions if op == "delete"}
    for pid in (str(providers["inactive"]), str(providers["deleted"])):
        assert {("tutors", pid), ("coaches", pid)} <= deletes
    assert ("coaches", tutor) in deletes  # re-kinded providers leave the other index
    doc = lines[lines.index({"index": index_ops[("tutors", tutor)]}) + 1]
    props = index_template("tutors")["template"]["mappings"]["properties"]
    assert set(doc) <= set(props)  # dynamic: strict would refuse anything else
    assert doc["location"] == {"lat": 48.85, "lon": 2.35}


def test_sink_counts_conflicts_and_missing_deletes_as_success(
    standin: StandIn,
    db: psycopg.Connection[Any],
    providers: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from indexer import opensearch_sink

    tutor, gone = str(providers["tutor"]), str(providers["inactive"])
    standin.state.bulk_status[f"tutors/{tutor}"] = [409]  # a newer version is indexed
    standin.state.bulk_status[f"coaches/{tutor}"] = [404]  # never was a coach
    standin.state.missing.add(gone)  # in neither index
    outcomes: list[Any] = []
    write = opensearch_sink.write

    def recorded(*args: Any, **kwargs: Any) -> Any:
        outcomes.append(write(*args, **kwargs))
        return outcomes[-1]

    monkeypatch.setattr(opensearch_sink, "write", recorded)
    since = len(standin.requests)
    # no BulkWriteError: a stale version (409) and a delete of nothing (404) are successes
    OpenSearchSink(_sync_client(standin)).apply(db, [_event(tutor, 1), _event(gone, 2)])
    [outcome] = outcomes
    assert (outcome.applied, outcome.stale, outcome.missing, outcome.errors) == (0, 1, 3, [])
    assert standin.state.bulk_status[f"tutors/{tutor}"] == []  # both answers were served
    assert standin.state.bulk_status[f"coaches/{tutor}"] == []
    bulks = [r for r in standin.requests[since:] if r.path == "/_bulk"]
    assert len(bulks) == 1  # neither is retried
    lines = [json.loads(x) for x in bulks[0].body.decode().splitlines()]
    ops = [
        (op, m["_index"], m["_id"])
        for x in lines
        for op, m in x.items()
        if op in ("index", "delete")
    ]
    assert ops == [
        ("index", "tutors", tutor),
        ("delete", "coaches", tutor),
        ("delete", "tutors", gone),
        ("delete", "coaches", gone),
    ]


def test_sink_retries_429_with_backoff(
    standin: StandIn, db: psycopg.Connection[Any], providers: dict[str, Any]
) -> None:
    tutor = str(providers["tutor"])
    standin.state.bulk_status[f"tutors/{tutor}"] = [429, 429, 201]
    since = len(standin.requests)
    OpenSearchSink(_sync_client(standin), max_retries=3).apply(db, [_event(tutor, 1)])
    bulks = [r for r in standin.requests[since:] if r.path == "/_bulk"]
    assert len(bulks) == 3
    assert tutor in bulks[-1].body.decode()
    assert_bodies_valid(standin, since)


def test_sink_raises_on_other_item_errors(
    standin: StandIn, db: psycopg.Connection[Any], providers: dict[str, Any]
) -> None:
    tutor = str(providers["tutor"])
    standin.state.bulk_status[tutor] = [400]
    with pytest.raises(BulkWriteError) as exc:
        OpenSearchSink(_sync_client(standin)).apply(db, [_event(tutor, 1)])
    assert exc.value.errors[0]["index"]["status"] == 400


# ---------------------------------------------------------------- reindex bodies


def test_reindex_and_rollback_bodies_follow_the_spec(
    standin: StandIn, db: psycopg.Connection[Any], providers: dict[str, Any]
) -> None:
    client = _sync_client(standin)
    prefix = "ct_"
    since = len(standin.requests)
    assert bootstrap(client, prefix=prefix) == {
        "ct_tutors": "ct_tutors_v1",
        "ct_coaches": "ct_coaches_v1",
    }
    with psycopg.connect(db.info.dsn, autocommit=True) as conn:
        result = reindex(conn, client, prefix=prefix, replicas=1)
        assert result.swapped == {
            "ct_tutors": ("ct_tutors_v1", "ct_tutors_v2"),
            "ct_coaches": ("ct_coaches_v1", "ct_coaches_v2"),
        }
        assert result.documents == 2
        assert standin.state.aliases["ct_tutors"] == "ct_tutors_v2"
        assert standin.state.indices["ct_tutors_v2"]["settings"] == {
            "index": {"number_of_replicas": 0, "refresh_interval": "-1"}
        }
        rolled = rollback(conn, client, prefix=prefix)
        assert rolled.swapped["ct_tutors"] == ("ct_tutors_v2", "ct_tutors_v1")
        assert standin.state.aliases == {"ct_tutors": "ct_tutors_v1", "ct_coaches": "ct_coaches_v1"}
        # the reindex's outbox hold is released
        left = conn.execute(
            "SELECT count(*) FROM indexer_checkpoints WHERE consumer = 'opensearch-reindex'"
        ).fetchone()
        assert left == (0,)
    ops = assert_bodies_valid(standin, since)
    assert {
        "indices.put_index_template",
        "indices.create",
        "bulk",
        "indices.put_settings",
        "indices.update_aliases",
    } <= set(ops)
    swaps = [json.loads(r.body) for r in standin.requests[since:] if r.path == "/_aliases"]
    # one atomic request per swap, remove + add for both families
    assert swaps[0]["actions"] == [
        {"remove": {"index": "ct_tutors_v1", "alias": "ct_tutors"}},
        {"add": {"index": "ct_tutors_v2", "alias": "ct_tutors"}},
        {"remove": {"index": "ct_coaches_v1", "alias": "ct_coaches"}},
        {"add": {"index": "ct_coaches_v2", "alias": "ct_coaches"}},
    ]
    settings = [
        json.loads(r.body) for r in standin.requests[since:] if r.path.endswith("/_settings")
    ]
    assert settings == [
        {"index": {"number_of_replicas": 1, "refresh_interval": "1s"}} for _ in FAMILIES
    ]


def test_replay_sends_the_events_after_the_mark(
    standin: StandIn, db: psycopg.Connection[Any], providers: dict[str, Any]
) -> None:
    tutor = providers["tutor"]
    db.execute(
        "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
        " VALUES ('provider', %s, 'provider.updated', '{}')",
        (str(tutor),),
    )
    since = len(standin.requests)
    n = replay(
        db, _sync_client(standin), mark=0, targets={"tutors": "tutors_v9", "coaches": "coaches_v9"}
    )
    assert n == 1
    assert assert_bodies_valid(standin, since) == ["bulk"]
    first = json.loads(standin.requests[since].body.decode().splitlines()[0])
    assert first == {
        "index": {
            "_id": str(tutor),
            "_index": "tutors_v9",
            "version": 1,
            "version_type": "external",
        }
    }


def test_every_spec_operation_was_exercised(request: pytest.FixtureRequest) -> None:
    """Summary (also printed with `-s`): which operations were validated, how many bodies."""
    ran = {i.name.split("[")[0] for i in request.session.items}
    if (
        not {
            "test_tutor_search_bodies_follow_the_spec",
            "test_reindex_and_rollback_bodies_follow_the_spec",
        }
        <= ran
    ):
        pytest.skip("only meaningful when the whole module runs")
    print(f"\nOpenSearch bodies validated: {CHECKED.total} {CHECKED.by_operation}")
    assert {
        "search",
        "bulk",
        "indices.put_index_template",
        "indices.create",
        "indices.put_settings",
        "indices.update_aliases",
    } <= set(CHECKED.by_operation)
