"""Projection, text, geographic edge cases and cursor stability on small hand-made data."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from geographiclib.geodesic import Geodesic

from indexer.projection import TUTOR_COLUMNS, build_all, rebuild_documents
from search.schemas import CoachQuery, TutorQuery
from tests.conftest import EngineThread


def provider(
    conn: psycopg.Connection[Any],
    *,
    lat: float = 48.85,
    lng: float = 2.35,
    kind: str = "tutor",
    name: str = "Jeanne Martin",
    headline: str = "Cours particuliers",
    bio: str = "",
    subjects: list[str] | None = None,
    expertises: list[str] | None = None,
    languages: list[str] | None = None,
    price: int = 3000,
    rating: float | None = 4.5,
    locale: str = "fr",
) -> uuid.UUID:
    """Insert a user + provider profile; returns its id."""
    pid = uuid.uuid4()
    conn.execute(
        "INSERT INTO users (id, email, password_hash, role, locale) VALUES (%s, %s, 'x', %s, %s)",
        (pid, f"{pid}@example.com", kind, locale),
    )
    conn.execute(
        "INSERT INTO provider_profiles (user_id, kind, display_name, headline, bio, subjects,"
        " expertises, languages, hourly_rate_minor, currency, rating_avg, rating_count, online,"
        " in_person, location, kyc_status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'EUR',"
        " %s, %s, true, false, ST_SetSRID(ST_MakePoint(%s, %s), 4326)::geography, 'verified')",
        (pid, kind, name, headline, bio, subjects if subjects is not None else ["mathematics"],
         expertises or [], languages or ["fr"], price, rating, 1 if rating else 0, lng, lat),
    )  # fmt: skip
    return pid


@pytest.fixture
def et(db: psycopg.Connection[Any], database_url: str) -> Iterator[EngineThread]:
    # builds and queries alternate: a check of the block directory on every query
    e = EngineThread(database_url, recheck_s=0)
    yield e
    e.close()


def _ids(et: EngineThread, **kw: Any) -> list[str]:
    return [i["id"] for i in et.run(et.engine.search_tutors(TutorQuery(**kw))).items]


def _tutor_rows(conn: psycopg.Connection[Any], table: str = "tutor_documents") -> list[Any]:
    cols = ", ".join(c for c in TUTOR_COLUMNS if c != "location") + ", ST_AsEWKT(location)"
    return conn.execute(f"SELECT {cols} FROM {table} ORDER BY provider_id").fetchall()


# ---------------------------------------------------------------- projection


def test_streaming_rebuild_equals_bulk_build(db: psycopg.Connection[Any]) -> None:
    from datetime import date

    from devdata.seed import SeedParams, seed

    seed(db, SeedParams(tutors=60, coaches=20, students=0, seed=3, start=date(2030, 3, 4)))
    with db.transaction():
        build_all(db)
    bulk = _tutor_rows(db)
    db.execute("TRUNCATE tutor_documents, coach_documents")
    ids = [r[0] for r in db.execute("SELECT user_id FROM provider_profiles")]
    with db.transaction():
        result = rebuild_documents(db, ids)
    assert result.upserted == 80
    assert _tutor_rows(db) == bulk
    with db.transaction():
        assert build_all(db, table_suffix="_shadow") == 80
    assert _tutor_rows(db, "tutor_documents_shadow") == bulk


def test_text_key_rebuilds_the_vector_exactly_when_its_inputs_change(
    db: psycopg.Connection[Any],
) -> None:
    """A streaming rebuild keeps the stored tsvector while `text_key` is unchanged (a
    price write: the document is updated in place, HOT) and rebuilds it when any input
    changes (name, headline, bio, locale, subjects, a catalogue term): each time the
    document equals a from-scratch build. The stored vector is planted wrong first, so
    a rebuild that should re-tokenize but keeps it fails."""
    pid = provider(db, bio="Professeure agrégée")
    with db.transaction():
        build_all(db)  # the catalogue synced first, as the bulk builds below do

    def rebuild() -> tuple[Any, ...]:
        with db.transaction():
            rebuild_documents(db, [pid])
        got = _tutor_rows(db)
        with db.transaction():
            build_all(db, table_suffix="_fresh")
        assert got == _tutor_rows(db, "tutor_documents_fresh"), "streaming != bulk"
        row = db.execute(
            "SELECT text_key, search_vector::text FROM tutor_documents WHERE provider_id = %s",
            (pid,),
        ).fetchone()
        assert row is not None
        return tuple(row)

    key, _ = rebuild()
    db.execute(
        "UPDATE tutor_documents SET search_vector = 'planted' WHERE provider_id = %s", (pid,)
    )
    hot_before = db.execute(
        "SELECT n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'tutor_documents'"
    ).fetchone()
    db.execute("UPDATE provider_profiles SET hourly_rate_minor = 4100 WHERE user_id = %s", (pid,))
    with db.transaction():
        rebuild_documents(db, [pid])
    assert db.execute(
        "SELECT text_key, search_vector::text FROM tutor_documents WHERE provider_id = %s", (pid,)
    ).fetchone() == (key, "'planted'"), "an unchanged text key keeps the stored vector"
    hot_after = db.execute(
        "SELECT n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'tutor_documents'"
    ).fetchone()
    assert hot_before is not None
    assert hot_after is not None
    assert hot_after[0] > hot_before[0], "a price write updates the document in place"
    changes = [
        "display_name = 'Jeanne Dupont'",
        "headline = 'Soutien scolaire'",
        "bio = 'Ingénieure'",
        "bio = ''",
        "subjects = '{physics}'",
    ]
    for change in changes:
        db.execute(f"UPDATE provider_profiles SET {change} WHERE user_id = %s", (pid,))
        db.execute(
            "UPDATE tutor_documents SET search_vector = 'planted' WHERE provider_id = %s", (pid,)
        )
        new_key, new_vector = rebuild()
        assert new_key != key, change
        assert new_vector != "'planted'", change
        key = new_key
    db.execute("UPDATE users SET locale = 'en' WHERE id = %s", (pid,))
    db.execute(
        "UPDATE provider_profiles SET bio = 'Engineering teacher' WHERE user_id = %s", (pid,)
    )
    key, _ = rebuild()
    db.execute("UPDATE users SET locale = 'fr' WHERE id = %s", (pid,))
    fr_key, _ = rebuild()
    assert fr_key != key, "the bio's configuration is an input"
    key = fr_key
    # a catalogue term (`build_all` would sync the catalogue back: no bulk comparison)
    db.execute("UPDATE search_catalogue SET terms = terms || ' quanta' WHERE slug = 'physics'")
    with db.transaction():
        rebuild_documents(db, [pid])
    row = db.execute(
        "SELECT text_key, search_vector::text FROM tutor_documents WHERE provider_id = %s", (pid,)
    ).fetchone()
    assert row is not None
    assert row[0] != key
    assert "'quanta'" in row[1]


def test_version_guard_and_deletes(db: psycopg.Connection[Any]) -> None:
    pid = provider(db, name="Old Name")
    db.execute("UPDATE provider_profiles SET version = 5 WHERE user_id = %s", (pid,))
    with db.transaction():
        assert rebuild_documents(db, [pid]).upserted == 1
    # a newer document already indexed is never overwritten by an older source version
    db.execute(
        "UPDATE tutor_documents SET version = 9, display_name = 'Newer' WHERE provider_id = %s",
        (pid,),
    )
    with db.transaction():
        assert rebuild_documents(db, [pid]).upserted == 0
    assert db.execute("SELECT display_name FROM tutor_documents").fetchone() == ("Newer",)
    # kind change moves the document to the other table
    db.execute(
        "UPDATE provider_profiles SET kind = 'coach', expertises = '{leadership}', version = 10 WHERE user_id = %s",
        (pid,),
    )
    with db.transaction():
        r = rebuild_documents(db, [pid])
    assert (r.upserted, r.deleted) == (1, 1)
    assert db.execute("SELECT count(*) FROM tutor_documents").fetchone() == (0,)
    assert db.execute("SELECT kind FROM coach_documents").fetchone() == ("coach",)
    # inactive → removed; rejected KYC → removed; deleted provider → removed
    db.execute("UPDATE users SET active = false WHERE id = %s", (pid,))
    with db.transaction():
        assert rebuild_documents(db, [pid]).deleted == 1
    other = provider(db)
    with db.transaction():
        rebuild_documents(db, [other])
    db.execute("UPDATE provider_profiles SET kyc_status = 'rejected' WHERE user_id = %s", (other,))
    with db.transaction():
        assert rebuild_documents(db, [other]).deleted == 1
    gone = provider(db)
    with db.transaction():
        rebuild_documents(db, [gone])
    db.execute("DELETE FROM users WHERE id = %s", (gone,))
    with db.transaction():
        assert rebuild_documents(db, [gone, uuid.uuid4()]).deleted == 1


def test_availability_is_open_future_slots(db: psycopg.Connection[Any]) -> None:
    pid = provider(db)
    ins = "INSERT INTO availability_slots (provider_id, starts_at, ends_at, mode, status) VALUES (%s, %s, %s, 'online', %s)"
    db.execute(ins, (pid, "2030-01-01T10:00Z", "2030-01-01T11:00Z", "open"))
    db.execute(ins, (pid, "2030-01-02T10:00Z", "2030-01-02T11:00Z", "canceled"))
    db.execute(ins, (pid, "2001-01-01T10:00Z", "2001-01-01T11:00Z", "open"))
    with db.transaction():
        rebuild_documents(db, [pid])
    (av,) = db.execute("SELECT availability::text FROM tutor_documents").fetchone()
    assert av == '{["2030-01-01 10:00:00+00","2030-01-01 11:00:00+00")}'


# ---------------------------------------------------------------- text


def test_text_folds_accents_prefixes_and_stems(
    db: psycopg.Connection[Any], et: EngineThread
) -> None:
    maths = provider(db, headline="Professeur de mathématiques", subjects=["mathematics"])
    phys = provider(db, headline="Cours de physique", subjects=["physics"], name="Paul Durand")
    eng = provider(db, headline="Friendly lessons for teenagers", subjects=["english"],
                   name="Mary Smith", locale="en", bio="I am teaching grammar")  # fmt: skip
    with db.transaction():
        build_all(db)
    assert _ids(et, q="mathematiques") == [str(maths)]
    assert _ids(et, q="Mathématiques") == [str(maths)]
    assert _ids(et, q="algeb") == [str(maths)]  # prefix of "algèbre", a maths keyword
    assert _ids(et, q="mathemat") == [str(maths)]  # prefix of the unstemmed word
    assert _ids(et, q="physiques") == [str(phys)]  # French stem
    assert _ids(et, q="lesson") == [str(eng)]  # English stem of "lessons"
    assert _ids(et, q="teach") == [str(eng)]  # English stem, bio (weight C)
    assert _ids(et, q="durand") == [str(phys)]  # name
    assert _ids(et, q="paul physique") == [str(phys)]  # every word must match
    assert _ids(et, q="paul anglais") == []
    # relevance: a name hit (A) ranks above a bio hit (C)
    named = provider(db, name="Grammar Dupont", subjects=["french"], headline="Cours")
    with db.transaction():
        build_all(db)
    assert _ids(et, q="grammar", sort="relevance")[:2] == [str(named), str(eng)]


# ---------------------------------------------------------------- geography


def _place(lat: float, lng: float, azimuth: float, metres: float) -> tuple[float, float]:
    g = Geodesic.WGS84.Direct(lat, lng, azimuth, metres)
    return g["lat2"], g["lon2"]


def test_radius_boundary(db: psycopg.Connection[Any], et: EngineThread) -> None:
    """5 km radius: points 5 m inside and 5 m outside (margins far above the < 1 mm
    spheroid disagreement between PostGIS and geographiclib), and one placed at exactly
    5,000 m by geographiclib, which PostGIS also puts within 5 km (inclusive radius)."""
    lat0, lng0 = 45.0, 5.0
    inside = provider(db, lat=_place(lat0, lng0, 30, 4995)[0], lng=_place(lat0, lng0, 30, 4995)[1])
    at = provider(db, lat=_place(lat0, lng0, 120, 5000)[0], lng=_place(lat0, lng0, 120, 5000)[1])
    outside = provider(
        db, lat=_place(lat0, lng0, 250, 5005)[0], lng=_place(lat0, lng0, 250, 5005)[1]
    )
    with db.transaction():
        build_all(db)
    (d,) = db.execute(
        "SELECT ST_Distance(location, ST_SetSRID(ST_MakePoint(%s, %s), 4326)::geography)"
        " FROM tutor_documents WHERE provider_id = %s",
        (lng0, lat0, at),
    ).fetchone()
    assert abs(d - 5000) < 0.001
    got = _ids(et, lat=lat0, lng=lng0, radius_km=5, sort="distance")
    assert got == [str(inside), str(at)]
    assert str(outside) not in got


def test_antimeridian_and_poles(db: psycopg.Connection[Any], et: EngineThread) -> None:
    west = provider(db, lat=-17.0, lng=179.98)
    east = provider(db, lat=-17.0, lng=-179.98)
    far = provider(db, lat=-17.0, lng=179.5)
    north_a = provider(db, lat=89.95, lng=0.0)
    north_b = provider(db, lat=89.95, lng=180.0)  # ~11 km away across the pole
    with db.transaction():
        build_all(db)
    assert set(_ids(et, lat=-17.0, lng=180.0, radius_km=5)) == {str(west), str(east)}
    assert str(far) not in _ids(et, lat=-17.0, lng=-180.0, radius_km=30)
    assert set(_ids(et, lat=90.0, lng=0.0, radius_km=10)) == {str(north_a), str(north_b)}
    assert _ids(et, lat=89.95, lng=0.0, radius_km=5) == [str(north_a)]


# ---------------------------------------------------------------- cursor


def test_cursor_walk_is_stable_when_rows_change(
    db: psycopg.Connection[Any], et: EngineThread
) -> None:
    ratings = [4.9, 4.5, 4.5, 4.5, 3.0, 3.0, None, 2.0, 4.5, 5.0, 1.5, None]
    ids = [provider(db, rating=r, price=1000 + i) for i, r in enumerate(ratings)]
    with db.transaction():
        build_all(db)
    seen: list[str] = []
    q = TutorQuery(sort="rating", limit=3)
    page = et.run(et.engine.search_tutors(q))
    seen += [i["id"] for i in page.items]
    # between pages: a row not yet seen disappears, a new one appears, a seen one changes
    unseen = next(i for i in map(str, ids) if i not in seen)
    with db.transaction():
        db.execute("UPDATE users SET active = false WHERE id = %s", (unseen,))
        newcomer = provider(db, rating=1.0)
        db.execute(
            "UPDATE provider_profiles SET hourly_rate_minor = 9999 WHERE user_id = %s", (seen[0],)
        )
        rebuild_documents(db, [uuid.UUID(unseen), newcomer, uuid.UUID(seen[0])])
    while page.next_cursor:
        page = et.run(et.engine.search_tutors(q.model_copy(update={"cursor": page.next_cursor})))
        seen += [i["id"] for i in page.items]
    assert len(seen) == len(set(seen))
    stable = {str(i) for i in ids} - {unseen}
    assert stable <= set(seen)
    assert str(newcomer) in seen  # it sorts after the cursor
    assert unseen not in seen


def test_coach_kind_filter(db: psycopg.Connection[Any], et: EngineThread) -> None:
    c = provider(db, kind="coach", subjects=[], expertises=["leadership"])
    m = provider(db, kind="mentor", subjects=[], expertises=["leadership", "sales"])
    with db.transaction():
        build_all(db)
    r = et.run(et.engine.search_coaches(CoachQuery(kind="mentor")))
    assert [i["id"] for i in r.items] == [str(m)]
    r = et.run(et.engine.search_coaches(CoachQuery(expertise="sales", kind="coach,mentor")))
    assert [i["id"] for i in r.items] == [str(m)]
    assert {x["value"]: x["count"] for x in r.facets["expertises"]} == {"leadership": 2, "sales": 1}
    assert str(c) != str(m)
