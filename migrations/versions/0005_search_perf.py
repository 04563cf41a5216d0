"""Search performance: integer bitmasks for the facet columns, a rating bucket, a
geometry index for map viewports and covering indexes for the grouped facet pass.

- `search_catalogue.bit`: a stable bit position per slug within its facet (subjects,
  expertises), assigned once in catalogue order and never changed; new slugs take the next
  free bit (`indexer.projection.sync_catalogue`).
- `search_language_bits`: a fixed code → bit table (63 ISO 639-1 codes, bits 0-62). Codes
  outside it are kept in the document's `languages_other` array, so every code stays exact.
- Document columns `subject_bits` / `expertise_bits`, `language_bits`, `languages_other`
  and `rating_bucket`, computed by `search_document_source` (one definition, both paths).
- `tutor_documents_geom_idx`: GiST on `location::geometry` for the map's bbox filter.
- `tutor_facets` / `coach_facets`: one narrow row (~100 bytes, vs ~1.4 KB for a document)
  per document with only what the facet pass and the structured filters read, so the
  grouped scan of a large radius touches a few hundred pages that stay in shared buffers.
  Tutors carry a `geometry` point (GiST, bbox pre-filter) and the point as a unit vector
  (`ux`, `uy`, `uz`) for a cheap exact sphere test. Filled from the documents by the
  projection (bulk and streaming), so they never disagree with them.
- `fillfactor = 90` on the document tables so streaming updates stay on their page (HOT).

The documents must be rebuilt after this migration (`educonnect index build`); the upgrade
fills the new columns of existing rows itself.

Revision ID: 0005_search_perf
Revises: 0004_indexer
Create Date: 2026-11-22
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0005_search_perf"
down_revision = "0004_indexer"
branch_labels = None
depends_on = None

# Bit positions are part of the stored documents: append only, never reorder.
LANGUAGE_BITS = (
    "fr en es ar de it zh nl wo pt ru ja ko hi bn ur fa tr pl uk ro el cs sv da no fi hu he "
    "vi th id ms sw am ha yo ig zu xh af sq hy az eu be bg bs ca hr et ka kk lt lv mk mn ne "
    "sk sl sr ta te"
).split()
assert len(LANGUAGE_BITS) == len(set(LANGUAGE_BITS)) == 63

SOURCE_VIEW = """
CREATE OR REPLACE VIEW search_document_source AS
SELECT
    p.user_id                                   AS provider_id,
    p.kind                                      AS kind,
    (u.active AND p.kyc_status <> 'rejected')   AS searchable,
    p.version                                   AS version,
    p.display_name                              AS display_name,
    p.headline                                  AS headline,
    p.city                                      AS city,
    p.country_code                              AS country_code,
    p.subjects                                  AS subjects,
    p.expertises                                AS expertises,
    p.languages                                 AS languages,
    p.hourly_rate_minor                         AS price_minor,
    p.currency                                  AS currency,
    p.rating_avg                                AS rating_avg,
    p.rating_count                              AS rating_count,
    coalesce(p.rating_avg, 0)::numeric(3, 2)    AS rating_sort,
    p.online                                    AS online,
    p.in_person                                 AS in_person,
    p.location                                  AS location,
    ST_Y(p.location::geometry)                  AS lat,
    ST_X(p.location::geometry)                  AS lng,
    coalesce(
        (SELECT range_agg(tstzrange(s.starts_at, s.ends_at))
           FROM availability_slots s
          WHERE s.provider_id = p.user_id AND s.status = 'open' AND s.ends_at > now()),
        '{}'::tstzmultirange
    )                                           AS availability,
    setweight(to_tsvector('educonnect_simple', p.display_name), 'A')
    || setweight(to_tsvector('educonnect_fr', t.terms || ' ' || p.headline), 'B')
    || setweight(to_tsvector('educonnect_en', t.terms || ' ' || p.headline), 'B')
    || setweight(to_tsvector('educonnect_simple', t.terms || ' ' || p.headline), 'B')
    || setweight(
           to_tsvector(
               CASE u.locale WHEN 'fr' THEN 'educonnect_fr' ELSE 'educonnect_en' END::regconfig,
               p.bio),
           'C')                                 AS search_vector,
    t.subject_bits                              AS subject_bits,
    t.expertise_bits                            AS expertise_bits,
    l.language_bits                             AS language_bits,
    l.languages_other                           AS languages_other,
    CASE WHEN p.rating_avg IS NOT NULL
         THEN (least(floor(p.rating_avg), 4)::int - 1)::smallint END
                                                AS rating_bucket
FROM provider_profiles p
JOIN users u ON u.id = p.user_id
CROSS JOIN LATERAL (
    SELECT coalesce(string_agg(c.terms, ' ' ORDER BY c.slug), '') AS terms,
           coalesce(bit_or(1::bigint << c.bit) FILTER (
               WHERE c.facet = 'subject' AND c.slug = ANY (p.subjects)), 0) AS subject_bits,
           coalesce(bit_or(1::bigint << c.bit) FILTER (
               WHERE c.facet = 'expertise' AND c.slug = ANY (p.expertises)), 0) AS expertise_bits
      FROM search_catalogue c
     WHERE c.slug = ANY (p.subjects) OR c.slug = ANY (p.expertises)
) t
CROSS JOIN LATERAL (
    SELECT coalesce(bit_or(1::bigint << b.bit), 0) AS language_bits,
           array_agg(x.code ORDER BY x.code) FILTER (WHERE b.bit IS NULL) AS languages_other
      FROM unnest(p.languages) AS x(code)
      LEFT JOIN search_language_bits b ON b.code = x.code
) l
"""

_NEW_COLUMNS = {
    "tutor_documents": ("subject_bits", "language_bits", "languages_other", "rating_bucket"),
    "coach_documents": ("expertise_bits", "language_bits", "languages_other", "rating_bucket"),
}


TUTOR_FACETS = """
CREATE TABLE {name} (
    provider_id     uuid PRIMARY KEY,
    geom            geometry(Point, 4326),
    ux              double precision,
    uy              double precision,
    uz              double precision,
    subject_bits    bigint NOT NULL,
    language_bits   bigint NOT NULL,
    languages_other text[],
    rating_bucket   smallint,
    currency        char(3) NOT NULL,
    price_minor     integer NOT NULL,
    rating_avg      numeric(3, 2),
    online          boolean NOT NULL,
    in_person       boolean NOT NULL
) WITH (fillfactor = 90)
"""

COACH_FACETS = """
CREATE TABLE {name} (
    provider_id     uuid PRIMARY KEY,
    kind            text NOT NULL,
    expertise_bits  bigint NOT NULL,
    language_bits   bigint NOT NULL,
    languages_other text[],
    rating_bucket   smallint,
    currency        char(3) NOT NULL,
    price_minor     integer NOT NULL,
    rating_avg      numeric(3, 2),
    online          boolean NOT NULL,
    in_person       boolean NOT NULL
) WITH (fillfactor = 90)
"""


def upgrade() -> None:
    op.execute("ALTER TABLE search_catalogue ADD COLUMN bit smallint")
    from profiles.catalogue import EXPERTISES, SUBJECTS

    for facet, entries in (("subject", SUBJECTS), ("expertise", EXPERTISES)):
        for i, e in enumerate(entries):
            op.execute(
                f"UPDATE search_catalogue SET bit = {i} WHERE slug = '{e.slug}'"
                f" AND facet = '{facet}'"
            )
    # Slugs no longer in the catalogue keep a bit after the current ones.
    op.execute(
        """
        UPDATE search_catalogue c SET bit = n.bit FROM (
            SELECT slug, (SELECT coalesce(max(bit), -1) FROM search_catalogue x
                           WHERE x.facet = s.facet) + row_number() OVER (
                               PARTITION BY facet ORDER BY slug) AS bit
              FROM search_catalogue s WHERE bit IS NULL) n
         WHERE c.slug = n.slug
        """
    )
    op.execute("ALTER TABLE search_catalogue ALTER COLUMN bit SET NOT NULL")
    op.execute(
        "ALTER TABLE search_catalogue ADD CONSTRAINT search_catalogue_bit_range"
        " CHECK (bit BETWEEN 0 AND 62)"
    )
    op.execute(
        "ALTER TABLE search_catalogue ADD CONSTRAINT search_catalogue_facet_bit_key"
        " UNIQUE (facet, bit)"
    )
    op.execute(
        """
        CREATE TABLE search_language_bits (
            code    text PRIMARY KEY,
            bit     smallint NOT NULL UNIQUE CHECK (bit BETWEEN 0 AND 62)
        )
        """
    )
    values = ", ".join(f"('{c}', {i})" for i, c in enumerate(LANGUAGE_BITS))
    op.execute(f"INSERT INTO search_language_bits (code, bit) VALUES {values}")

    for table, (cat, *_rest) in _NEW_COLUMNS.items():
        op.execute(
            f"ALTER TABLE {table} ADD COLUMN {cat} bigint NOT NULL DEFAULT 0,"
            " ADD COLUMN language_bits bigint NOT NULL DEFAULT 0,"
            " ADD COLUMN languages_other text[],"
            " ADD COLUMN rating_bucket smallint,"
            " SET (fillfactor = 90)"
        )
    op.execute(SOURCE_VIEW)
    # Existing rows: the new columns from the one definition.
    for table, (cat, *_rest) in _NEW_COLUMNS.items():
        op.execute(
            f"UPDATE {table} d SET {cat} = s.{cat}, language_bits = s.language_bits,"
            " languages_other = s.languages_other, rating_bucket = s.rating_bucket"
            " FROM search_document_source s WHERE s.provider_id = d.provider_id"
        )
    op.execute(
        "CREATE INDEX tutor_documents_geom_idx ON tutor_documents USING gist ((location::geometry))"
    )
    op.execute(TUTOR_FACETS.format(name="tutor_facets"))
    op.execute("CREATE INDEX tutor_facets_geom_idx ON tutor_facets USING gist (geom)")
    op.execute(COACH_FACETS.format(name="coach_facets"))
    # The same rows as `indexer.projection` derives (a snapshot of its SELECT).
    op.execute(
        "INSERT INTO tutor_facets SELECT provider_id, location::geometry,"
        " cos(radians(lat)) * cos(radians(lng)), cos(radians(lat)) * sin(radians(lng)),"
        " sin(radians(lat)), subject_bits, language_bits, languages_other, rating_bucket,"
        " currency, price_minor, rating_avg, online, in_person FROM tutor_documents"
        " ORDER BY ST_GeoHash(location::geometry, 8), provider_id"
    )
    op.execute(
        "INSERT INTO coach_facets SELECT provider_id, kind, expertise_bits, language_bits,"
        " languages_other, rating_bucket, currency, price_minor, rating_avg, online,"
        " in_person FROM coach_documents"
    )


def _old_view() -> str:
    path = Path(__file__).with_name("0002_search.py")
    spec = importlib.util.spec_from_file_location("_educonnect_0002_search", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.SOURCE_VIEW)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS tutor_facets, coach_facets")
    op.execute("DROP INDEX IF EXISTS tutor_documents_geom_idx")
    op.execute("DROP VIEW IF EXISTS search_document_source")
    op.execute(_old_view())
    for table, cols in _NEW_COLUMNS.items():
        drops = ", ".join(f"DROP COLUMN {c}" for c in cols)
        op.execute(f"ALTER TABLE {table} {drops}, RESET (fillfactor)")
    op.execute("DROP TABLE search_language_bits")
    op.execute("ALTER TABLE search_catalogue DROP COLUMN bit")
