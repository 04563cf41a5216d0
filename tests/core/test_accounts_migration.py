"""Migration 0003_accounts: its tables appear on upgrade and go away on downgrade."""

from __future__ import annotations

import psycopg
import pytest

from core.migrate import current_revision, downgrade, upgrade
from tests.conftest import TEST_DATABASE_URL, recreate_database

SCRATCH_URL = TEST_DATABASE_URL + "_migrations_accounts"
TABLES = {"refresh_tokens", "idempotency_keys", "audit_log"}


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}


@pytest.fixture(scope="module")
def scratch() -> str:
    recreate_database(SCRATCH_URL)
    return SCRATCH_URL


def test_accounts_revision_up_down_up(scratch: str) -> None:
    upgrade("0003_accounts", scratch)
    assert current_revision(scratch) == "0003_accounts"
    assert _tables(scratch) >= TABLES
    downgrade("0001_foundation", scratch)
    assert current_revision(scratch) == "0001_foundation"
    assert not TABLES & _tables(scratch)
    assert "users" in _tables(scratch)
    upgrade("0003_accounts", scratch)
    assert _tables(scratch) >= TABLES
