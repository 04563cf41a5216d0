"""Shared check: the live search tables equal a from-scratch projection, column by column."""

from __future__ import annotations

from typing import Any

import psycopg

from indexer.projection import (
    COACH_COLUMNS,
    COACH_FACET_COLUMNS,
    TUTOR_COLUMNS,
    TUTOR_FACET_COLUMNS,
    build_all,
)

BLOCK_COLUMNS = ("cell", "n", "rows", "others", "avail")
SEARCH_TABLES = (
    ("tutor_documents", TUTOR_COLUMNS),
    ("coach_documents", COACH_COLUMNS),
    ("tutor_facets", TUTOR_FACET_COLUMNS),
    ("coach_facets", COACH_FACET_COLUMNS),
    ("tutor_facet_blocks", BLOCK_COLUMNS),
    ("coach_facet_blocks", BLOCK_COLUMNS),
)
EXPECTED_SUFFIX = "_expected"


def assert_equals_from_scratch(conn: psycopg.Connection[Any]) -> None:
    """Every column (but `indexed_at`) of the documents, facet rows and facet blocks
    equals what `build_all` produces from the source tables now (`*_expected` tables,
    left in place for `drop_expected`)."""
    with conn.transaction():
        build_all(conn, table_suffix=EXPECTED_SUFFIX)
    for table, columns in SEARCH_TABLES:
        cols = ", ".join(columns)
        expected = table + EXPECTED_SUFFIX
        # an emptied cell keeps an empty block (migration 0010); a build has none
        where = " WHERE n > 0" if table.endswith("_blocks") else ""
        for a, b in ((table, expected), (expected, table)):
            diff = conn.execute(
                f"SELECT count(*) FROM (SELECT {cols} FROM {a}{where}"
                f" EXCEPT ALL SELECT {cols} FROM {b}{where}) d"
            ).fetchone()
            assert diff == (0,), f"{a} has rows not in {b}"
        if where:
            bad = conn.execute(
                f"SELECT count(*) FROM {table} WHERE n = 0 AND (rows <> ''::bytea"
                " OR others IS NOT NULL OR avail <> ''::bytea)"
            ).fetchone()
            assert bad == (0,), f"{table} has an empty block with records"


def drop_expected(conn: psycopg.Connection[Any]) -> None:
    """Drop the `*_expected` tables of `assert_equals_from_scratch`."""
    names = ", ".join(table + EXPECTED_SUFFIX for table, _ in SEARCH_TABLES)
    conn.execute(f"DROP TABLE IF EXISTS {names}")
