"""Alembic migrations: up to head, down to base, up again, on a scratch database."""

from __future__ import annotations

import psycopg
import pytest

from core.migrate import current_revision, downgrade, upgrade
from tests.conftest import TEST_DATABASE_URL, recreate_database

SCRATCH_URL = TEST_DATABASE_URL + "_migrations"
EXPECTED_TABLES = {
    "users",
    "parent_children",
    "provider_profiles",
    "availability_slots",
    "outbox",
    "tutor_documents",
    "coach_documents",
}


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}


@pytest.fixture(scope="module")
def scratch() -> str:
    recreate_database(SCRATCH_URL)
    return SCRATCH_URL


def test_upgrade_downgrade_upgrade(scratch: str) -> None:
    assert current_revision(scratch) is None
    upgrade("head", scratch)
    head = current_revision(scratch)
    assert head is not None
    assert _tables(scratch) >= EXPECTED_TABLES

    downgrade("base", scratch)
    assert current_revision(scratch) is None
    assert not (_tables(scratch) & EXPECTED_TABLES)

    upgrade("head", scratch)
    assert current_revision(scratch) == head
    assert _tables(scratch) >= EXPECTED_TABLES


def test_extensions_and_text_search_configs(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        exts = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
        assert {"postgis", "citext", "unaccent", "pg_trgm", "btree_gist"} <= exts
        # accents and case fold, French stems apply
        row = conn.execute("SELECT to_tsvector('educonnect_fr', 'Mathématiques')::text").fetchone()
        assert row == ("'mathemat':1",)
        row = conn.execute(
            "SELECT to_tsvector('educonnect_fr', 'Mathématiques') @@ "
            "to_tsquery('educonnect_fr', 'mathematiques')"
        ).fetchone()
        assert row == (True,)


def test_slot_overlap_is_rejected_by_the_database(db: psycopg.Connection) -> None:
    uid = db.execute(
        "INSERT INTO users (email, password_hash, role) VALUES ('t@example.com', 'x', 'tutor') "
        "RETURNING id"
    ).fetchone()[0]
    db.execute(
        "INSERT INTO provider_profiles (user_id, kind, display_name, hourly_rate_minor, currency)"
        " VALUES (%s, 'tutor', 'T', 3000, 'EUR')",
        (uid,),
    )
    ins = (
        "INSERT INTO availability_slots (provider_id, starts_at, ends_at, mode) "
        "VALUES (%s, %s, %s, 'online')"
    )
    db.execute(ins, (uid, "2030-01-01T10:00Z", "2030-01-01T11:00Z"))
    db.execute(ins, (uid, "2030-01-01T11:00Z", "2030-01-01T12:00Z"))  # touching is fine
    with pytest.raises(psycopg.errors.ExclusionViolation):
        db.execute(ins, (uid, "2030-01-01T10:30Z", "2030-01-01T11:30Z"))
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(ins, (uid, "2030-01-01T15:00Z", "2030-01-01T14:00Z"))


def test_in_person_provider_needs_a_location(db: psycopg.Connection) -> None:
    uid = db.execute(
        "INSERT INTO users (email, password_hash, role) VALUES ('p@example.com', 'x', 'tutor') "
        "RETURNING id"
    ).fetchone()[0]
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(
            "INSERT INTO provider_profiles (user_id, kind, display_name, hourly_rate_minor,"
            " currency, in_person, online) VALUES (%s, 'tutor', 'T', 3000, 'EUR', true, false)",
            (uid,),
        )


def test_outbox_txid_is_the_writing_transaction(db: psycopg.Connection) -> None:
    with db.transaction():
        db.execute(
            "INSERT INTO outbox (aggregate_type, aggregate_id, event_type) "
            "VALUES ('provider', 'x', 'provider.updated')"
        )
        current = db.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
    stored = db.execute("SELECT txid::text FROM outbox").fetchone()[0]
    assert stored == current
