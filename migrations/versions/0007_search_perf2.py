"""Search performance, second pass: a cheaper document text vector and availability on
the facet rows.

- `search_document_source` (the one definition of a document) computes the B-weight text
  vectors as `(catalogue entries' vectors, ||-ed in slug order) || to_tsvector(cfg,
  headline)`, each entry's terms parsed once and stored (generated columns `v_fr`, `v_en`,
  `v_simple` of `search_catalogue`), instead of parsing `terms || ' ' || headline` three
  times for every row. The result is identical, not approximately equal: `||` shifts the
  right vector by the largest position of the left one, which equals the number of word
  positions of the left text unless it ends with a stop word (or contains `<`/`&`, which
  the parser may join across the space); the generated column `split` checks exactly that
  per entry (`terms || ' qqqq'` parsed whole vs split) and the view falls back to the
  whole parse for a row with any entry where it does not hold. The streaming rebuild of
  2,000 providers spent ~60 % of its time in these parses.
- `tutor_facets.availability` / `coach_facets.availability`: the document's
  `tstzmultirange`, so the availability filter runs on the narrow rows (the facet pass and
  the page no longer go to the ~1.4 KB documents for it). Last column: scans that do not
  test it never deform it.

The upgrade fills the new facet column from the documents; the documents themselves are
unchanged (same vectors).

Revision ID: 0007_search_perf2
Revises: 0006_reindex
Create Date: 2026-11-23
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0007_search_perf2"
down_revision = "0006_reindex"
branch_labels = None
depends_on = None

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
    || setweight(CASE WHEN t.split THEN t.v_fr || to_tsvector('educonnect_fr', p.headline)
                      ELSE to_tsvector('educonnect_fr', t.terms || ' ' || p.headline) END, 'B')
    || setweight(CASE WHEN t.split THEN t.v_en || to_tsvector('educonnect_en', p.headline)
                      ELSE to_tsvector('educonnect_en', t.terms || ' ' || p.headline) END, 'B')
    || setweight(CASE WHEN t.split THEN t.v_simple || to_tsvector('educonnect_simple', p.headline)
                      ELSE to_tsvector('educonnect_simple', t.terms || ' ' || p.headline) END,
                 'B')
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
           search_tsvector_agg(c.v_fr ORDER BY c.slug) AS v_fr,
           search_tsvector_agg(c.v_en ORDER BY c.slug) AS v_en,
           search_tsvector_agg(c.v_simple ORDER BY c.slug) AS v_simple,
           coalesce(bool_and(c.split), true) AS split,
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


def _module(name: str) -> object:
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_educonnect_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_FACET_ROWS = {
    # A snapshot of `indexer.projection`'s facet SELECT at this revision (rebuilt in
    # geohash order, the order `fill_facets` writes).
    "tutor": "SELECT provider_id, location::geometry, cos(radians(lat)) * cos(radians(lng)),"
    " cos(radians(lat)) * sin(radians(lng)), sin(radians(lat)), subject_bits, language_bits,"
    " languages_other, rating_bucket, currency, price_minor, rating_avg, online, in_person,"
    " availability FROM tutor_documents ORDER BY ST_GeoHash(location::geometry, 8), provider_id",
    "coach": "SELECT provider_id, kind, expertise_bits, language_bits, languages_other,"
    " rating_bucket, currency, price_minor, rating_avg, online, in_person, availability"
    " FROM coach_documents",
}


# Per catalogue entry: its terms parsed once (stored), and whether the split form is exact
# for them (see the module docstring).
_CATALOGUE_COLUMNS = """
ALTER TABLE search_catalogue
  ADD COLUMN v_fr tsvector GENERATED ALWAYS AS (to_tsvector('educonnect_fr', terms)) STORED,
  ADD COLUMN v_en tsvector GENERATED ALWAYS AS (to_tsvector('educonnect_en', terms)) STORED,
  ADD COLUMN v_simple tsvector
      GENERATED ALWAYS AS (to_tsvector('educonnect_simple', terms)) STORED,
  ADD COLUMN split boolean GENERATED ALWAYS AS (
      terms !~ '[<&]'
      AND to_tsvector('educonnect_fr', terms) || to_tsvector('educonnect_fr', 'qqqq')
          = to_tsvector('educonnect_fr', terms || ' qqqq')
      AND to_tsvector('educonnect_en', terms) || to_tsvector('educonnect_en', 'qqqq')
          = to_tsvector('educonnect_en', terms || ' qqqq')
      AND to_tsvector('educonnect_simple', terms) || to_tsvector('educonnect_simple', 'qqqq')
          = to_tsvector('educonnect_simple', terms || ' qqqq')) STORED
"""


def upgrade() -> None:
    # `||` of tsvectors in input order (ORDER BY in the call); '' for no rows.
    op.execute(
        "CREATE AGGREGATE search_tsvector_agg(tsvector)"
        " (SFUNC = tsvector_concat, STYPE = tsvector, INITCOND = '')"
    )
    op.execute(_CATALOGUE_COLUMNS)
    op.execute(SOURCE_VIEW)
    for family, rows in _FACET_ROWS.items():
        op.execute(f"TRUNCATE {family}_facets")
        op.execute(f"ALTER TABLE {family}_facets ADD COLUMN availability tstzmultirange NOT NULL")
        op.execute(f"INSERT INTO {family}_facets {rows}")
        op.execute(f"ANALYZE {family}_facets")


def downgrade() -> None:
    for family in ("tutor", "coach"):
        op.execute(f"ALTER TABLE {family}_facets DROP COLUMN availability")
    op.execute("DROP VIEW search_document_source")
    op.execute(str(_module("0005_search_perf").SOURCE_VIEW))  # type: ignore[attr-defined]
    op.execute(
        "ALTER TABLE search_catalogue DROP COLUMN v_fr, DROP COLUMN v_en, DROP COLUMN v_simple,"
        " DROP COLUMN split"
    )
    op.execute("DROP AGGREGATE search_tsvector_agg(tsvector)")
