"""The PostgreSQL engine against an independent Python oracle (hypothesis).

The oracle loads the source rows (profiles and open slots, not the search tables), computes
WGS84 geodesic distances with geographiclib, applies the same filters, sorts with the id as
tie-break and counts every facet.

Text (`q`): stemming French and English is PostgreSQL's (Snowball), so the text oracle
(`text_oracle`) asks PostgreSQL — but over vectors it builds itself from
`provider_profiles`, `users` and the catalogue's `search_terms`, following the definition
of a document's text (name A in `educonnect_simple`; subject/expertise words and headline B in
`educonnect_fr`, `educonnect_en` and `educonnect_simple`, parsed as one text; bio C in the
account locale's configuration), not from the search tables, the source view or the
catalogue's stored vectors. A query matches when every folded word matches, the last as a
prefix, under one of the three configurations; `relevance` orders by `ts_rank` against
the OR of the three queries, then by id.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import psycopg
import pytest
from geographiclib.geodesic import Geodesic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiles.catalogue import EXPERTISES, SUBJECTS, search_terms
from search.facets import RATING_BUCKETS, rating_bucket
from search.schemas import CoachQuery, TutorQuery, fold_text
from tests.conftest import EngineThread

CENTRES = [(48.8566, 2.3522), (45.764, 4.8357), (50.8503, 4.3517), (46.2044, 6.1432),
           (45.5017, -73.5673), (14.7167, -17.4677), (51.5074, -0.1278), (40.7128, -74.006)]  # fmt: skip
LANGS = ["fr", "en", "es", "de", "ar", "nl", "it", "wo"]
T0 = datetime(2030, 3, 4, tzinfo=UTC)


@pytest.fixture(scope="module")
def source(search_dataset: str) -> dict[str, list[dict[str, Any]]]:
    with psycopg.connect(search_dataset) as conn:
        slots: dict[uuid.UUID, list[tuple[datetime, datetime]]] = {}
        for pid, s, e in conn.execute(
            # what search offers: open slots with a free seat (the seed books some of them)
            "SELECT provider_id, starts_at, ends_at FROM availability_slots"
            " WHERE status = 'open' AND seats_taken < capacity"
        ):
            slots.setdefault(pid, []).append((s, e))
        rows = conn.execute(
            "SELECT p.user_id, p.kind, p.subjects, p.expertises, p.languages,"
            " p.hourly_rate_minor, p.currency, p.rating_avg, p.online, p.in_person,"
            " ST_Y(p.location::geometry), ST_X(p.location::geometry), p.rating_count"
            " FROM provider_profiles p JOIN users u ON u.id = p.user_id"
            " WHERE u.active AND p.kyc_status = 'verified'"
        ).fetchall()
        prior = conn.execute("SELECT mean, weight FROM search_rating_prior").fetchone() or (
            Decimal(0),
            0,
        )
    out: dict[str, list[dict[str, Any]]] = {"tutor": [], "coach": []}
    for r in rows:
        d = {
            "id": str(r[0]), "kind": r[1], "cat": r[2] if r[1] == "tutor" else r[3],
            "languages": r[4], "price": r[5], "currency": r[6],
            "rating": float(r[7]) if r[7] is not None else None, "online": r[8],
            "in_person": r[9], "lat": r[10], "lng": r[11], "slots": slots.get(r[0], []),
            "rank": _damped(r[12], r[7], prior[0], prior[1]),
        }  # fmt: skip
        out["tutor" if r[1] == "tutor" else "coach"].append(d)
    return out


@pytest.fixture(scope="module")
def text_oracle(search_dataset: str) -> Iterator[Any]:
    """`match(words)` → {provider id: ts_rank} of the providers matching the folded words,
    or None when the words make an empty query in all three configurations (no filter)."""
    conn = psycopg.connect(search_dataset, autocommit=True)
    rows = conn.execute("SELECT user_id, subjects || expertises FROM provider_profiles").fetchall()
    terms = {}
    for pid, slugs in rows:
        known = []
        for slug in sorted(set(slugs)):
            try:
                known.append(search_terms(slug))
            except KeyError:
                continue
        terms[pid] = " ".join(known)
    conn.execute(
        "CREATE TEMP TABLE oracle_text AS SELECT p.user_id AS id,"
        " setweight(to_tsvector('educonnect_simple', p.display_name), 'A')"
        " || setweight(to_tsvector('educonnect_fr', t.terms || ' ' || p.headline), 'B')"
        " || setweight(to_tsvector('educonnect_en', t.terms || ' ' || p.headline), 'B')"
        " || setweight(to_tsvector('educonnect_simple', t.terms || ' ' || p.headline), 'B')"
        " || setweight(to_tsvector(CASE u.locale WHEN 'fr' THEN 'educonnect_fr'"
        " ELSE 'educonnect_en' END::regconfig, p.bio), 'C') AS v"
        " FROM provider_profiles p JOIN users u ON u.id = p.user_id"
        " JOIN unnest(%s::uuid[], %s::text[]) AS t(id, terms) ON t.id = p.user_id",
        (list(terms), list(terms.values())),
    )

    def match(words: tuple[str, ...]) -> dict[str, float] | None:
        expr = " & ".join([*words[:-1], words[-1] + ":*"])
        (tsq,) = conn.execute(
            "SELECT (to_tsquery('educonnect_fr', %(e)s) || to_tsquery('educonnect_en', %(e)s)"
            " || to_tsquery('educonnect_simple', %(e)s))::text",
            {"e": expr},
        ).fetchone()
        if not tsq:
            return None
        return {
            str(pid): rank
            for pid, rank in conn.execute(
                "SELECT id, ts_rank(v, %(q)s::tsquery) FROM oracle_text WHERE v @@ %(q)s::tsquery",
                {"q": tsq},
            )
        }

    yield match
    conn.close()


@pytest.fixture(scope="module")
def vocabulary(search_dataset: str) -> dict[str, list[list[str]]]:
    """Per family, word lists to draw `q` from: one per seeded provider (name, headline,
    start of the bio), so that words drawn together can match one document, and one per
    catalogue entry of the family (words shared by many documents, with different
    weights and counts)."""
    out: dict[str, list[list[str]]] = {}
    with psycopg.connect(search_dataset) as conn:
        for family, kinds, entries in (
            ("tutor", ["tutor"], SUBJECTS),
            ("coach", ["coach", "mentor"], EXPERTISES),
        ):
            texts = [
                " ".join(r)
                for r in conn.execute(
                    "SELECT display_name, headline, left(bio, 300) FROM provider_profiles"
                    " WHERE kind = ANY (%s) ORDER BY user_id LIMIT 200",
                    (kinds,),
                )
            ]
            texts += [search_terms(e.slug) for e in entries]
            lists = [sorted(set(re.findall(r"\w{3,}", t))) for t in texts]
            out[family] = [w for w in lists if w]
    return out


@st.composite
def text_queries(draw: Any, vocabulary: list[list[str]]) -> str:
    """A `q`: one or two words of one provider's or catalogue entry's text (case and
    accents as they come), the last one often cut to a prefix, now and then followed by
    a word found nowhere."""
    words = draw(st.sampled_from(vocabulary))
    q = draw(st.lists(st.sampled_from(words), min_size=1, max_size=2))
    if draw(st.booleans()):
        last = q[-1]
        q[-1] = last[: draw(st.integers(min(2, len(last)), len(last)))]
    if draw(st.integers(0, 9)) == 5:
        q.append("zqxwvyk")
    if draw(st.booleans()):
        q = [w.upper() for w in q]
    return " ".join(q)


def _damped(v: int, r: Decimal | None, c: Decimal, m: int) -> Decimal:
    """The IMDb weighted rating (v·R + m·C) / (v + m), half up to hundredths; 0 unrated."""
    if not v or r is None:
        return Decimal(0)
    return ((v * r + m * c) / (v + m)).quantize(Decimal("0.01"), ROUND_HALF_UP)


def _match(d: dict[str, Any], q: Any) -> bool:
    if q.min_price is not None and d["price"] < q.min_price:
        return False
    if q.max_price is not None and d["price"] > q.max_price:
        return False
    if q.currency and d["currency"] != q.currency:
        return False
    if q.min_rating is not None and (d["rating"] is None or d["rating"] < q.min_rating):
        return False
    if q.mode == "online" and not d["online"]:
        return False
    if q.mode == "in_person" and not d["in_person"]:
        return False
    if q.available_from or q.available_to:
        lo = q.available_from or datetime.min.replace(tzinfo=UTC)
        hi = q.available_to or datetime.max.replace(tzinfo=UTC)
        if not any(s < hi and e > lo for s, e in d["slots"]):
            return False
    return not (getattr(q, "kind", ()) and d["kind"] not in q.kind)


def oracle(
    docs: list[dict[str, Any]],
    q: Any,
    cat_sel: tuple[str, ...],
    text: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Expected ordered ids, total and facets for `q`; `text` is `text_oracle`'s answer
    for `q.q` (None: no text filter, every rank 0)."""
    base = []
    for d in docs:
        if not _match(d, q):
            continue
        if text is not None and d["id"] not in text:
            continue
        dist = None
        if getattr(q, "lat", None) is not None:
            dist = Geodesic.WGS84.Inverse(q.lat, q.lng, d["lat"], d["lng"])["s12"]
            if dist > q.radius_km * 1000:
                continue
        c_ok = not cat_sel or bool(set(d["cat"]) & set(cat_sel))
        l_ok = not q.language or bool(set(d["languages"]) & set(q.language))
        base.append((d, dist, c_ok, l_ok))
    hits = [(d, dist) for d, dist, c, lo in base if c and lo]
    if q.sort == "distance":
        hits.sort(key=lambda x: (x[1], x[0]["id"]))
    elif q.sort == "rating":
        hits.sort(key=lambda x: (-x[0]["rank"], x[0]["id"]))
    elif q.sort == "relevance":
        hits.sort(key=lambda x: (-(text or {}).get(x[0]["id"], 0.0), x[0]["id"]))
    else:
        hits.sort(key=lambda x: (x[0]["price"], x[0]["id"]))
    cat: Counter[str] = Counter()
    lang: Counter[str] = Counter()
    for d, _, c, lo in base:
        if lo:
            cat.update(d["cat"])
        if c:
            lang.update(d["languages"])
    rating: Counter[int] = Counter()
    price: dict[str, list[int]] = {}
    for d, _ in hits:
        b = rating_bucket(d["rating"])
        if b is not None:
            rating[b] += 1
        price.setdefault(d["currency"], []).append(d["price"])
    for v in cat_sel:
        cat.setdefault(v, 0)
    for v in q.language:
        lang.setdefault(v, 0)
    return {
        "ids": [d["id"] for d, _ in hits],
        "total": len(hits),
        "cat": dict(cat),
        "lang": dict(lang),
        "rating": [rating.get(i, 0) for i in range(len(RATING_BUCKETS))],
        "price": {c: (len(v), min(v), max(v), round(sum(v) / len(v), 2)) for c, v in price.items()},
    }


def _check(got_pages: list[Any], exp: dict[str, Any], facet: str) -> None:
    first = got_pages[0]
    assert first.total == exp["total"]
    ids = [i["id"] for p in got_pages for i in p.items]
    assert ids == exp["ids"][: len(ids)]
    if got_pages[-1].next_cursor is None:
        assert len(ids) == exp["total"]
    f = first.facets
    assert {x["value"]: x["count"] for x in f[facet]} == exp["cat"]
    assert {x["value"]: x["count"] for x in f["languages"]} == exp["lang"]
    assert [x["count"] for x in f["rating"]] == exp["rating"]
    assert {x["currency"]: (x["count"], x["min"], x["max"], x["avg"]) for x in f["price"]} == exp[
        "price"
    ]


def _walk(et: EngineThread, method: str, q: Any, max_pages: int = 6) -> list[Any]:
    pages = [et.run(getattr(et.engine, method)(q))]
    while pages[-1].next_cursor and len(pages) < max_pages:
        q = q.model_copy(update={"cursor": pages[-1].next_cursor})
        pages.append(et.run(getattr(et.engine, method)(q)))
    return pages


_filters = {
    "language": st.lists(st.sampled_from(LANGS), max_size=2),
    "min_price": st.one_of(st.none(), st.integers(0, 6000)),
    "max_price": st.one_of(st.none(), st.integers(2000, 20000)),
    "currency": st.one_of(st.none(), st.sampled_from(["EUR", "CAD", "XOF", "GBP"])),
    "min_rating": st.one_of(st.none(), st.sampled_from([1.0, 3.5, 4.2, 4.87, 5.0])),
    "mode": st.one_of(st.none(), st.sampled_from(["online", "in_person"])),
    "window": st.one_of(st.none(), st.tuples(st.integers(0, 27 * 24), st.integers(1, 72))),
    "limit": st.integers(1, 60),
}


def _common(draw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {k: draw(v) for k, v in _filters.items() if k != "window"}
    if (
        d["min_price"] is not None
        and d["max_price"] is not None
        and d["min_price"] > d["max_price"]
    ):
        d["min_price"], d["max_price"] = d["max_price"], d["min_price"]
    w = draw(_filters["window"])
    if w:  # open on one side now and then
        side = draw(st.sampled_from(["both", "both", "from", "to"]))
        if side != "to":
            d["available_from"] = (T0 + timedelta(hours=w[0])).isoformat()
        if side != "from":
            d["available_to"] = (T0 + timedelta(hours=w[0] + w[1])).isoformat()
    return d


@st.composite
def tutor_queries(draw: Any, vocabulary: list[list[str]] | None = None) -> TutorQuery:
    """Filters, subjects, a position half of the time, and `q` when `vocabulary` is given
    (then half of the queries have no filter and no position: the text alone is
    selective enough)."""
    d = _common(draw)
    d["subject"] = draw(st.lists(st.sampled_from([e.slug for e in SUBJECTS]), max_size=2))
    bare = vocabulary is not None and draw(st.booleans())
    if bare:
        d = {"limit": d["limit"]}
    sorts = ["rating", "price"]
    if not bare and draw(st.booleans()):
        lat, lng = draw(st.sampled_from(CENTRES))
        d["lat"] = lat + draw(st.floats(-0.05, 0.05))
        d["lng"] = lng + draw(st.floats(-0.05, 0.05))
        d["radius_km"] = draw(st.sampled_from([0.5, 2.0, 5.0, 12.5, 40.0, 500.0]))
        sorts.append("distance")
    if vocabulary is not None:
        d["q"] = draw(text_queries(vocabulary))
        sorts += ["relevance", "relevance"]
    d["sort"] = draw(st.sampled_from(sorts))
    return TutorQuery(**d)


@st.composite
def coach_queries(draw: Any, vocabulary: list[list[str]] | None = None) -> CoachQuery:
    """Filters, expertises, kinds, and `q` when `vocabulary` is given (then half of the
    queries have no filter)."""
    d = _common(draw)
    d["expertise"] = draw(st.lists(st.sampled_from([e.slug for e in EXPERTISES]), max_size=2))
    d["kind"] = draw(st.lists(st.sampled_from(["coach", "mentor"]), max_size=1))
    if vocabulary is not None and draw(st.booleans()):
        d = {"limit": d["limit"]}
    sorts = ["rating", "price"]
    if vocabulary is not None:
        d["q"] = draw(text_queries(vocabulary))
        sorts += ["relevance", "relevance"]
    d["sort"] = draw(st.sampled_from(sorts))
    return CoachQuery(**d)


_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_SETTINGS
@given(q=tutor_queries())
def test_tutors_match_the_oracle(engine_thread: EngineThread, source: Any, q: TutorQuery) -> None:
    exp = oracle(source["tutor"], q, q.subject)
    _check(_walk(engine_thread, "search_tutors", q), exp, "subjects")


@_SETTINGS
@given(q=coach_queries())
def test_coaches_match_the_oracle(engine_thread: EngineThread, source: Any, q: CoachQuery) -> None:
    exp = oracle(source["coach"], q, q.expertise)
    _check(_walk(engine_thread, "search_coaches", q), exp, "expertises")


@_SETTINGS
@given(data=st.data())
def test_tutor_text_matches_the_oracle(
    engine_thread: EngineThread,
    source: Any,
    text_oracle: Any,
    vocabulary: dict[str, list[list[str]]],
    data: st.DataObject,
) -> None:
    q = data.draw(tutor_queries(vocabulary["tutor"]), label="q")
    exp = oracle(source["tutor"], q, q.subject, text_oracle(q.q))
    _check(_walk(engine_thread, "search_tutors", q), exp, "subjects")


@_SETTINGS
@given(data=st.data())
def test_coach_text_matches_the_oracle(
    engine_thread: EngineThread,
    source: Any,
    text_oracle: Any,
    vocabulary: dict[str, list[list[str]]],
    data: st.DataObject,
) -> None:
    q = data.draw(coach_queries(vocabulary["coach"]), label="q")
    exp = oracle(source["coach"], q, q.expertise, text_oracle(q.q))
    _check(_walk(engine_thread, "search_coaches", q), exp, "expertises")


def test_text_oracle_finds_a_provider_by_name(search_dataset: str, text_oracle: Any) -> None:
    """The oracle itself: every word of a provider's name finds them, and a word found
    nowhere finds nothing."""
    with psycopg.connect(search_dataset) as conn:
        rows = conn.execute(
            "SELECT user_id, display_name FROM provider_profiles ORDER BY user_id LIMIT 5"
        ).fetchall()
    for pid, name in rows:
        words = fold_text(name)
        ranks = text_oracle(words)
        assert ranks is not None
        assert str(pid) in ranks, (name, words)
    assert text_oracle(("zqxwvyk",)) == {}


def test_no_position_lists_every_tutor_by_rating(engine_thread: EngineThread, source: Any) -> None:
    q = TutorQuery(limit=100)
    exp = oracle(source["tutor"], q, ())
    _check(_walk(engine_thread, "search_tutors", q, max_pages=3), exp, "subjects")


def test_facets_ignore_their_own_filter(engine_thread: EngineThread) -> None:
    paris = {"lat": 48.8566, "lng": 2.3522, "radius_km": 30}
    unfiltered = engine_thread.run(engine_thread.engine.search_tutors(TutorQuery(**paris)))
    maths = engine_thread.run(
        engine_thread.engine.search_tutors(TutorQuery(**paris, subject="mathematics"))
    )
    both = engine_thread.run(
        engine_thread.engine.search_tutors(TutorQuery(**paris, subject="mathematics,physics"))
    )
    counts = {x["value"]: x["count"] for x in unfiltered.facets["subjects"]}
    # the subject facet is the same with or without a subject filter (disjunctive) …
    assert {x["value"]: x["count"] for x in maths.facets["subjects"]} == counts
    assert maths.total == counts["mathematics"]
    # … ticking a second subject widens the results (OR within a facet)
    assert both.total > maths.total
    # while the language facet does apply the subject filter
    assert sum(x["count"] for x in maths.facets["languages"]) < sum(
        x["count"] for x in unfiltered.facets["languages"]
    )


def test_empty_result(engine_thread: EngineThread) -> None:
    r = engine_thread.run(
        engine_thread.engine.search_tutors(TutorQuery(lat=-40.0, lng=-140.0, radius_km=100))
    )
    assert (r.items, r.total, r.next_cursor) == ([], 0, None)
    assert [b["count"] for b in r.facets["rating"]] == [0, 0, 0, 0]
    assert r.facets["price"] == []
    assert r.facets["subjects"] == []
    assert r.facets["languages"] == []


def test_map_total_matches_the_list(engine_thread: EngineThread) -> None:
    from search.schemas import TutorMapQuery

    filters = {"subject": "mathematics", "min_rating": 4}
    listed = engine_thread.run(engine_thread.engine.search_tutors(TutorQuery(**filters)))
    for zoom in (2, 14):
        m = engine_thread.run(
            engine_thread.engine.tutor_map(
                TutorMapQuery(**filters, bbox="-180,-90,180,90", zoom=zoom)
            )
        )
        assert m.total == listed.total
        assert m.mode == ("clusters" if zoom == 2 else "points")
        if m.mode == "clusters":
            assert sum(c["count"] for c in m.clusters) == listed.total
            for c in m.clusters:
                b = c["bounds"]
                assert b["min_lat"] <= c["centroid"]["lat"] <= b["max_lat"]
