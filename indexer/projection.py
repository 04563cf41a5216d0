"""The projection: a provider (profile + account + open future slots + rating) → one row
of `tutor_documents` or `coach_documents`.

One definition, two paths. The SQL view `search_document_source` (migrations 0002, 0005,
0007) computes a document for every provider; `build_all` bulk-inserts it into empty tables
(the seed, a shadow table for a reindex) and `rebuild_documents` upserts it for a few ids
(the streaming indexer: ONE statement per batch — the view evaluated once per id into a
materialized CTE, then the deletes and version-guarded upserts of both families, and the
facet rows from the upserts' RETURNING). So a streaming rebuild equals a from-scratch build
column for column, except `indexed_at`.

Document columns (both tables unless noted; the OpenSearch mapping mirrors them):

| column          | type                     | meaning                                                       |
|-----------------|--------------------------|---------------------------------------------------------------|
| provider_id     | uuid, primary key        | `provider_profiles.user_id`                                   |
| version         | bigint                   | `provider_profiles.version`; upserts never go backwards       |
| kind            | text (coach table only)  | `coach` or `mentor`                                           |
| display_name    | text                     | public name                                                   |
| headline        | text                     | one-line pitch                                                |
| city            | text, null               | city name                                                     |
| country_code    | char(2), null            | ISO 3166-1 alpha-2                                            |
| subjects        | text[] (tutor table)     | catalogue slugs (`profiles/catalogue.py`)                     |
| expertises      | text[] (coach table)     | catalogue slugs                                               |
| languages       | text[]                   | ISO 639-1 codes                                               |
| price_minor     | integer                  | hourly rate in minor units of `currency`                      |
| currency        | char(3)                  | ISO 4217 code                                                 |
| rating_avg      | numeric(3,2), null       | 1.00-5.00, null when never rated                              |
| rating_count    | integer                  | number of ratings                                             |
| rating_sort     | numeric(3,2)             | the damped rating, the `sort=rating` key of both engines:     |
|                 |                          | (v·R + m·C) / (v + m) rounded to hundredths, 0 when unrated   |
|                 |                          | (the IMDb weighted rating; `reviews/service.py`)              |
| online          | boolean                  | teaches online                                                |
| in_person       | boolean                  | teaches in person                                             |
| location        | geography(Point,4326)    | (tutor table) WGS84 position, null for online-only without one |
| lat, lng        | double precision, null   | (tutor table) the same position in degrees                    |
| availability    | tstzmultirange           | union of the open slots that have not ended                   |
| search_vector   | tsvector                 | A: name (simple); B: subject/expertise words in French and    |
|                 |                          | English (both labels + keywords) and headline, with the       |
|                 |                          | `educonnect_fr` and `educonnect_en` configs; C: bio in the    |
|                 |                          | provider's locale config. All configs unaccent.               |
| subject_bits    | bigint (tutor table)     | bit `search_catalogue.bit` set for each subject               |
| expertise_bits  | bigint (coach table)     | the same for expertises                                       |
| language_bits   | bigint                   | bit `search_language_bits.bit` set for each language          |
| languages_other | text[], null             | languages without a bit (sorted), null when there are none    |
| rating_bucket   | smallint, null           | facet bucket 0-3 (`[1,2) [2,3) [3,4) [4,5]`), null if unrated |
| text_key        | uuid, null               | md5 of every input of `search_vector` (migration 0009): a    |
|                 |                          | streaming rebuild keeps the vector while it is unchanged      |
| indexed_at      | timestamptz              | when the row was written                                      |

The bit columns (migration 0005) let the engine compute every facet from one grouped pass
on integers: bit positions never change once assigned (catalogue slugs get the next free
bit on first sync; the 63 language bits are fixed), and a language without a bit is kept
exactly in `languages_other`.

A provider has a document when it exists, `users.active` is true and `kyc_status` is
`verified` (migration 0018); tutors go to `tutor_documents`, coaches and mentors to `coach_documents`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from search.engines.postgres.blocks import block_rows_sql

TUTOR_COLUMNS: tuple[str, ...] = (
    "provider_id", "version", "display_name", "headline", "city", "country_code", "subjects",
    "languages", "price_minor", "currency", "rating_avg", "rating_count", "rating_sort",
    "online", "in_person", "location", "lat", "lng", "availability", "search_vector",
    "subject_bits", "language_bits", "languages_other", "rating_bucket", "text_key",
)  # fmt: skip
COACH_COLUMNS: tuple[str, ...] = (
    "provider_id", "version", "kind", "display_name", "headline", "city", "country_code",
    "expertises", "languages", "price_minor", "currency", "rating_avg", "rating_count",
    "rating_sort", "online", "in_person", "availability", "search_vector",
    "expertise_bits", "language_bits", "languages_other", "rating_bucket", "text_key",
)  # fmt: skip

# The narrow facet rows (migration 0005), derived from the documents: what the grouped facet
# pass and the structured filters read. `{t}` is the document table.
TUTOR_FACET_COLUMNS: tuple[str, ...] = (
    "provider_id", "geom", "ux", "uy", "uz", "subject_bits", "language_bits",
    "languages_other", "rating_bucket", "currency", "price_minor", "rating_avg", "online",
    "in_person", "availability", "rating_sort",
)  # fmt: skip
_TUTOR_FACET_EXPRS = (
    "provider_id, location::geometry, cos(radians(lat)) * cos(radians(lng)),"
    " cos(radians(lat)) * sin(radians(lng)), sin(radians(lat)), subject_bits, language_bits,"
    " languages_other, rating_bucket, currency, price_minor, rating_avg, online, in_person,"
    " availability, rating_sort"
)
COACH_FACET_COLUMNS: tuple[str, ...] = (
    "provider_id", "kind", "expertise_bits", "language_bits", "languages_other",
    "rating_bucket", "currency", "price_minor", "rating_avg", "online", "in_person",
    "availability", "rating_sort",
)  # fmt: skip
_COACH_FACET_EXPRS = ", ".join(COACH_FACET_COLUMNS)

_SUFFIX_RE = re.compile(r"^[a-z0-9_]{0,40}$")


@dataclass(frozen=True, slots=True)
class ProjectionResult:
    """What `rebuild_documents` did: documents written and documents removed."""

    upserted: int
    deleted: int


def _table(base: str, suffix: str) -> sql.Identifier:
    if not _SUFFIX_RE.match(suffix):
        raise ValueError(f"table suffix must match {_SUFFIX_RE.pattern}, got {suffix!r}")
    return sql.Identifier(base + suffix)


def _cols(columns: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(map(sql.Identifier, columns))


_TUTOR = "kind = 'tutor'"
_COACH = "kind IN ('coach', 'mentor')"
# Which providers go to which documents table: the one definition (the reindex uses it too).
KIND_FILTER: dict[str, str] = {"tutor_documents": _TUTOR, "coach_documents": _COACH}


def _family_ctes(
    n: int,
    docs: sql.Identifier,
    facets: sql.Identifier,
    columns: Sequence[str],
    facet_columns: Sequence[str],
    facet_exprs: str,
) -> sql.Composed:
    """The data-modifying CTEs of family `n` (0 tutors, 1 coaches) of `rebuild_documents`:
    documents of the batch that are no longer searchable in this family deleted, the
    others upserted from `src` (version guarded), and the facet rows deleted / upserted
    from exactly what the document upsert wrote (its RETURNING), so a stale version that
    the guard skips leaves both rows untouched."""
    updates = sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
        for c in (*columns[1:], "indexed_at")
    )
    facet_updates = sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in facet_columns[1:]
    )
    return sql.SQL(
        "del{n} AS (DELETE FROM {d} WHERE provider_id = ANY (ARRAY("
        "SELECT id FROM fam WHERE family IS DISTINCT FROM {n})) RETURNING 1),"
        " fdel{n} AS (DELETE FROM {f} WHERE provider_id = ANY (ARRAY("
        "SELECT id FROM fam WHERE family IS DISTINCT FROM {n})) RETURNING 1),"
        " up{n} AS (INSERT INTO {d} AS target ({cols}) SELECT {cols} FROM src"
        " WHERE family = {n} ON CONFLICT (provider_id) DO UPDATE SET"
        " {updates} WHERE target.version <= EXCLUDED.version RETURNING " + facet_exprs + "),"
        " fup{n} AS (INSERT INTO {f} ({fcols}) SELECT * FROM up{n}"
        " ON CONFLICT (provider_id) DO UPDATE SET {fupdates} RETURNING cell),"
        " oc{n} AS MATERIALIZED (SELECT cell FROM {f} WHERE provider_id IN (SELECT id FROM ids))"
    ).format(
        n=sql.Literal(n),
        d=docs,
        f=facets,
        cols=_cols(columns),
        updates=updates,
        fcols=_cols(facet_columns),
        fupdates=facet_updates,
    )


def _facet_tables(
    suffix: str,
) -> tuple[tuple[sql.Identifier, sql.Identifier, tuple[str, ...], str], ...]:
    return (
        (
            _table("tutor_documents", suffix),
            _table("tutor_facets", suffix),
            TUTOR_FACET_COLUMNS,
            _TUTOR_FACET_EXPRS,
        ),
        (
            _table("coach_documents", suffix),
            _table("coach_facets", suffix),
            COACH_FACET_COLUMNS,
            _COACH_FACET_EXPRS,
        ),
    )


def _rebuild_statement(suffix: str) -> sql.Composed:
    """ONE statement for a batch of ids: the view is evaluated once per id (`src`,
    materialized: the multiranges are computed once), then both families' deletes and
    version-guarded upserts, documents and facet rows, read from it. Returns (deleted,
    upserted, facet rows written, tutor cells, coach cells): the cells the batch's facet
    rows were in before the statement (`oc0`/`oc1`, read in its snapshot) and are in
    after it (the upserts' RETURNING), the blocks to re-pack.

    The tsvector (about half a batch's cost) is computed only for the providers whose
    `text_key` differs from their stored document's (`vec`, a second evaluation of the
    view for those ids, same snapshot); the others keep their stored vector, which the
    same inputs would rebuild identically."""
    src_cols = sorted({*TUTOR_COLUMNS, *COACH_COLUMNS} - {"search_vector"})
    families = [
        _family_ctes(i, docs, facets, cols, fcols, fexprs)
        for i, ((docs, facets, fcols, fexprs), cols) in enumerate(
            zip(_facet_tables(suffix), (TUTOR_COLUMNS, COACH_COLUMNS), strict=True),
        )
    ]
    # `family`: 0 = a tutor document, 1 = a coach document, null = no document.
    return sql.SQL(
        "WITH ids AS MATERIALIZED (SELECT id FROM unnest(%(ids)s::uuid[]) i(id)),"
        " src0 AS MATERIALIZED (SELECT {src}, CASE WHEN s.searchable AND s."
        + _TUTOR
        + " THEN 0 WHEN s.searchable AND s."
        + _COACH
        + " THEN 1 END AS family"
        " FROM search_document_source s JOIN ids ON s.provider_id = ids.id),"
        " vec AS MATERIALIZED (SELECT v.provider_id, v.search_vector"
        " FROM search_document_source v WHERE v.provider_id = ANY (ARRAY("
        "SELECT s.provider_id FROM src0 s WHERE s.family IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM {tdocs} d WHERE d.provider_id = s.provider_id"
        " AND d.text_key = s.text_key)"
        " AND NOT EXISTS (SELECT 1 FROM {cdocs} d WHERE d.provider_id = s.provider_id"
        " AND d.text_key = s.text_key)))),"
        " src AS MATERIALIZED (SELECT s.*,"
        " coalesce(v.search_vector, ot.search_vector, oc.search_vector) AS search_vector"
        " FROM src0 s LEFT JOIN vec v ON v.provider_id = s.provider_id"
        " LEFT JOIN {tdocs} ot ON ot.provider_id = s.provider_id AND ot.text_key = s.text_key"
        " LEFT JOIN {cdocs} oc ON oc.provider_id = s.provider_id"
        " AND oc.text_key = s.text_key),"
        " fam AS MATERIALIZED (SELECT ids.id, src.family FROM ids"
        " LEFT JOIN src ON src.provider_id = ids.id), {families}"
        " SELECT (SELECT count(*) FROM del0) + (SELECT count(*) FROM del1),"
        " (SELECT count(*) FROM up0) + (SELECT count(*) FROM up1),"
        " (SELECT count(*) FROM fdel0) + (SELECT count(*) FROM fdel1)"
        " + (SELECT count(*) FROM fup0) + (SELECT count(*) FROM fup1),"
        " ARRAY(SELECT cell FROM oc0 UNION SELECT cell FROM fup0),"
        " ARRAY(SELECT cell FROM oc1 UNION SELECT cell FROM fup1)"
    ).format(
        src=sql.SQL(", ").join(sql.SQL("s.") + sql.Identifier(c) for c in src_cols),
        tdocs=_table("tutor_documents", suffix),
        cdocs=_table("coach_documents", suffix),
        families=sql.SQL(", ").join(families),
    )


def rebuild_documents(
    conn: psycopg.Connection[Any], provider_ids: Sequence[uuid.UUID], *, table_suffix: str = ""
) -> ProjectionResult:
    """Recompute the documents of `provider_ids` from the source tables, in the caller's
    transaction (never commits).

    Upserts the document of each searchable provider into its kind's table, guarded by
    version (an older version never overwrites a newer one; an equal version rewrites, so
    availability changes land). Deletes the document of a provider that no longer exists,
    is inactive, was KYC-rejected, or changed kind (from the other table). The facet rows
    follow their documents in the same statement. Returns the number of rows upserted
    (skipped stale versions do not count) and deleted.
    """
    ids = list(dict.fromkeys(provider_ids))
    if not ids:
        return ProjectionResult(0, 0)
    row = conn.execute(_rebuild_statement(table_suffix), {"ids": ids}).fetchone()
    assert row is not None
    # the cells of the batch's facet rows before the statement and after it
    for family, cells in zip(FAMILIES, (row[3], row[4]), strict=True):
        refresh_blocks(conn, family, cells, table_suffix=table_suffix)
    return ProjectionResult(upserted=int(row[1]), deleted=int(row[0]))


FAMILIES = ("tutor", "coach")
# `pg_advisory_xact_lock(class, cell)` classes: one writer at a time re-packs a cell.
BLOCK_LOCK_CLASS = {"tutor": 0x45430001, "coach": 0x45430002}


def refresh_blocks(
    conn: psycopg.Connection[Any],
    family: str,
    cells: Sequence[int],
    *,
    table_suffix: str = "",
) -> int:
    """Re-pack the facet blocks (`search.engines.postgres.blocks`) of `cells` — the cells where the
    changed providers' facet rows were before the change and are now — in the caller's
    transaction, which must be READ COMMITTED: the cells are locked first (advisory
    transaction locks, sorted, so concurrent writers cannot deadlock), then re-packed by
    a later statement whose snapshot holds every writer that released them. A re-packed
    block takes a new `version` (engines cache blocks by it) and records the writing
    transaction in `xid` (engines ask for the blocks written since their last check:
    `search.engines.postgres.block_sync`); a cell left without rows keeps an empty block
    (`n = 0`), so that question sees it go. Returns the number of cells re-packed."""
    facets = _table(f"{family}_facets", table_suffix)
    blocks = _table(f"{family}_facet_blocks", table_suffix)
    touched = sorted(set(cells))
    if not touched:
        return 0
    conn.execute(
        "SELECT count(pg_advisory_xact_lock(%(cls)s, c))"
        " FROM (SELECT unnest(%(cells)s::integer[]) AS c ORDER BY 1) x",
        {"cls": BLOCK_LOCK_CLASS[family], "cells": touched},
    )
    docs = _table(f"{family}_documents", table_suffix)
    rows = block_rows_sql(
        family, facets.as_string(conn), docs.as_string(conn), "cell = ANY (%(cells)s::integer[])"
    )
    conn.execute(
        sql.SQL("WITH fresh AS MATERIALIZED (")
        + sql.SQL(rows)  # not a format string: the items' JSON has braces
        + sql.SQL(
            ") INSERT INTO {b} AS b (cell, n, rows, others, avail, items) SELECT * FROM fresh"
            " UNION ALL SELECT c, 0, ''::bytea, NULL, ''::bytea, ''::bytea"
            " FROM unnest(%(cells)s::integer[]) c WHERE c NOT IN (SELECT cell FROM fresh)"
            " ON CONFLICT (cell) DO UPDATE SET n = EXCLUDED.n, rows = EXCLUDED.rows,"
            " others = EXCLUDED.others, avail = EXCLUDED.avail, items = EXCLUDED.items,"
            " version = EXCLUDED.version, xid = EXCLUDED.xid"
        ).format(b=blocks),
        {"cells": touched},
    )
    return len(touched)


def build_all(conn: psycopg.Connection[Any], *, table_suffix: str = "") -> int:
    """Fill `tutor_documents{suffix}` and `coach_documents{suffix}` from scratch.

    Empties the two tables (creating them `LIKE` the live ones, indexes included, when a
    suffix names tables that do not exist yet), inserts every searchable provider's
    document set-based in spatial order (so the geo scans read few heap pages), then
    ANALYZEs. Runs in the caller's transaction when there is one (the ANALYZE too).
    Returns the number of documents written (tutors + coaches).
    """
    tutors = _table("tutor_documents", table_suffix)
    coaches = _table("coach_documents", table_suffix)
    sync_catalogue(conn)
    total = 0
    with conn.cursor() as cur:
        if table_suffix:
            for live, table in (
                ("tutor_documents", tutors),
                ("coach_documents", coaches),
                ("tutor_facets", _table("tutor_facets", table_suffix)),
                ("coach_facets", _table("coach_facets", table_suffix)),
                ("tutor_facet_blocks", _table("tutor_facet_blocks", table_suffix)),
                ("coach_facet_blocks", _table("coach_facet_blocks", table_suffix)),
            ):
                cur.execute(
                    sql.SQL("CREATE TABLE IF NOT EXISTS {} (LIKE {} INCLUDING ALL)").format(
                        table, sql.Identifier(live)
                    )
                )
        facets = _facet_tables(table_suffix)
        cur.execute(
            sql.SQL("TRUNCATE {}, {}, {}, {}, {}, {}").format(
                tutors,
                coaches,
                facets[0][1],
                facets[1][1],
                _table("tutor_facet_blocks", table_suffix),
                _table("coach_facet_blocks", table_suffix),
            )
        )
        cur.execute(
            sql.SQL(
                "INSERT INTO {t} ({cols}) SELECT {cols} FROM search_document_source "
                "WHERE searchable AND " + _TUTOR + " "
                # Z-order (geohash) insertion keeps neighbours on the same heap pages.
                "ORDER BY ST_GeoHash(location::geometry, 8), provider_id"
            ).format(t=tutors, cols=_cols(TUTOR_COLUMNS))
        )
        total += max(cur.rowcount, 0)
        cur.execute(
            sql.SQL(
                "INSERT INTO {t} ({cols}) SELECT {cols} FROM search_document_source "
                "WHERE searchable AND " + _COACH
            ).format(t=coaches, cols=_cols(COACH_COLUMNS))
        )
        total += max(cur.rowcount, 0)
        for family in FAMILIES:
            fill_facets(conn, family=family, table_suffix=table_suffix)
            fill_blocks(conn, family=family, table_suffix=table_suffix)
            for name in (f"{family}_facets", f"{family}_facet_blocks"):
                cur.execute(sql.SQL("ANALYZE {}").format(_table(name, table_suffix)))
        cur.execute(sql.SQL("ANALYZE {}").format(tutors))
        cur.execute(sql.SQL("ANALYZE {}").format(coaches))
    return total


def fill_facets(conn: psycopg.Connection[Any], *, family: str, table_suffix: str = "") -> int:
    """Fill the empty `{family}_facets{suffix}` from `{family}_documents{suffix}` (family
    `tutor` or `coach`), tutors in geohash order so a radius reads few pages. The one
    bulk definition of facet rows, used by `build_all` and the reindex. Returns rows."""
    docs, facets, columns, exprs = _facet_tables(table_suffix)[0 if family == "tutor" else 1]
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("INSERT INTO {f} ({cols}) SELECT " + exprs + " FROM {d}").format(
                f=facets, d=docs, cols=_cols(columns)
            )
            + sql.SQL(
                " ORDER BY ST_GeoHash(location::geometry, 8), provider_id"
                if family == "tutor"
                else ""
            )
        )
        return max(cur.rowcount, 0)


def fill_blocks(conn: psycopg.Connection[Any], *, family: str, table_suffix: str = "") -> int:
    """Fill the empty `{family}_facet_blocks{suffix}` from `{family}_facets{suffix}` and
    `{family}_documents{suffix}` (the one bulk definition of blocks:
    `search.engines.postgres.blocks.block_rows_sql`), in cell order. Returns the number of
    blocks."""
    facets = _table(f"{family}_facets", table_suffix)
    docs = _table(f"{family}_documents", table_suffix)
    blocks = _table(f"{family}_facet_blocks", table_suffix)
    rows = block_rows_sql(family, facets.as_string(conn), docs.as_string(conn))
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("INSERT INTO {} (cell, n, rows, others, avail, items) ").format(blocks)
            + sql.SQL(rows + " ORDER BY cell")
        )
        return max(cur.rowcount, 0)


def sync_catalogue(conn: psycopg.Connection[Any]) -> None:
    """Upsert `search_catalogue` (slug, facet, labels, indexed words) from
    `profiles/catalogue.py`, the one source of subjects and expertises."""
    from profiles.catalogue import EXPERTISES, SUBJECTS, search_terms

    rows = [(e.slug, "subject", e.fr, e.en, search_terms(e.slug)) for e in SUBJECTS] + [
        (e.slug, "expertise", e.fr, e.en, search_terms(e.slug)) for e in EXPERTISES
    ]
    with conn.transaction(), conn.cursor() as cur:
        # A new slug takes the next free bit of its facet; existing bits never move (the
        # documents store them). The lock serializes concurrent syncs.
        cur.execute("LOCK TABLE search_catalogue IN SHARE ROW EXCLUSIVE MODE")
        cur.executemany(
            "INSERT INTO search_catalogue (slug, facet, label_fr, label_en, terms, bit) "
            "VALUES (%s, %s, %s, %s, %s, (SELECT coalesce(max(bit) + 1, 0) "
            "FROM search_catalogue WHERE facet = %s)) ON CONFLICT (slug) DO UPDATE SET "
            "bit = CASE WHEN search_catalogue.facet = EXCLUDED.facet "
            "THEN search_catalogue.bit ELSE EXCLUDED.bit END, "
            "facet = EXCLUDED.facet, label_fr = EXCLUDED.label_fr, "
            "label_en = EXCLUDED.label_en, terms = EXCLUDED.terms "
            "WHERE (search_catalogue.facet, search_catalogue.label_fr, search_catalogue.label_en,"
            " search_catalogue.terms) IS DISTINCT FROM "
            "(EXCLUDED.facet, EXCLUDED.label_fr, EXCLUDED.label_en, EXCLUDED.terms)",
            [(*r, r[1]) for r in rows],
        )
