"""Facet blocks: each grid cell's facet rows packed into one `bytea` (`search.engines.postgres.blocks`).

- `tutor_facets.cell` / `coach_facets.cell`: a generated column, the row's cell
  (`search.engines.postgres.blocks.CELL_SQL`: a 360/2^14-degree lng/lat grid for tutors
  with a position, 1024 uuid-hashed negative cells for the others and for coaches), with a btree index.
- `tutor_facet_blocks` / `coach_facet_blocks` (cell primary key, n records, rows = the
  packed records in provider_id order, others = `languages_other` entries, version = a
  new `search_facet_block_version` value at every write, so a reader holding a copy
  knows whether it is current): derived from
  the facet rows by the projection (bulk and streaming: the cells a batch touched are
  re-packed in its transaction), swapped with them by a reindex. `rows` is stored
  uncompressed (STORAGE EXTERNAL) and inline up to ~8 KB (toast_tuple_target), so reading
  a block is a copy, never a decompression.

The upgrade fills the blocks from the facet rows (a snapshot of the packing SQL at this
revision).

Revision ID: 0008_facet_blocks
Revises: 0007_search_perf2
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0008_facet_blocks"
down_revision = "0007_search_perf2"
branch_labels = None
depends_on = None

CELL = {
    "tutor": "CASE WHEN geom IS NULL THEN (-1 - (((get_byte(uuid_send(provider_id), 0) << 8) | get_byte(uuid_send(provider_id), 1)) & 1023)) ELSE (floor((ST_X(geom) + 180) / 0.02197265625)::integer * 16384 + floor((ST_Y(geom) + 90) / 0.02197265625)::integer) END",
    "coach": "(-1 - (((get_byte(uuid_send(provider_id), 0) << 8) | get_byte(uuid_send(provider_id), 1)) & 1023))",
}
BLOCK_ROWS = {
    "tutor": "SELECT cell, count(*)::integer, string_agg(uuid_send(provider_id) || int8send(subject_bits) || int8send(language_bits) || int4send(price_minor) || int2send(coalesce((rating_avg * 100)::smallint, -1::smallint)) || int2send((online::int | (in_person::int << 1) | ((languages_other IS NOT NULL)::int << 2))::smallint) || convert_to(currency::text, 'SQL_ASCII') || float8send(coalesce(ST_Y(geom), 'NaN')) || float8send(coalesce(ST_X(geom), 'NaN')), ''::bytea ORDER BY provider_id), array_agg(rn::text || ':' || array_to_string(languages_other, ',') ORDER BY rn) FILTER (WHERE languages_other IS NOT NULL) FROM (SELECT f.*, (row_number() OVER (PARTITION BY cell ORDER BY provider_id) - 1) AS rn FROM tutor_facets f WHERE true) x GROUP BY cell",
    "coach": "SELECT cell, count(*)::integer, string_agg(uuid_send(provider_id) || int8send(expertise_bits) || int8send(language_bits) || int4send(price_minor) || int2send(coalesce((rating_avg * 100)::smallint, -1::smallint)) || int2send((online::int | (in_person::int << 1) | ((languages_other IS NOT NULL)::int << 2) | ((kind = 'mentor')::int << 3))::smallint) || convert_to(currency::text, 'SQL_ASCII'), ''::bytea ORDER BY provider_id), array_agg(rn::text || ':' || array_to_string(languages_other, ',') ORDER BY rn) FILTER (WHERE languages_other IS NOT NULL) FROM (SELECT f.*, (row_number() OVER (PARTITION BY cell ORDER BY provider_id) - 1) AS rn FROM coach_facets f WHERE true) x GROUP BY cell",
}


def upgrade() -> None:
    op.execute("CREATE SEQUENCE search_facet_block_version")
    for family in ("tutor", "coach"):
        op.execute(
            f"ALTER TABLE {family}_facets ADD COLUMN cell integer"
            f" GENERATED ALWAYS AS ({CELL[family]}) STORED"
        )
        op.execute(f"CREATE INDEX {family}_facets_cell_idx ON {family}_facets (cell)")
        op.execute(
            f"CREATE TABLE {family}_facet_blocks (cell integer PRIMARY KEY,"
            " n integer NOT NULL, rows bytea NOT NULL, others text[],"
            " version bigint NOT NULL DEFAULT nextval('search_facet_block_version'))"
            " WITH (toast_tuple_target = 8160)"
        )
        op.execute(f"ALTER TABLE {family}_facet_blocks ALTER COLUMN rows SET STORAGE EXTERNAL")
        op.execute(
            f"INSERT INTO {family}_facet_blocks (cell, n, rows, others)"
            f" {BLOCK_ROWS[family]} ORDER BY cell"
        )
        op.execute(f"ANALYZE {family}_facet_blocks")
        op.execute(f"ANALYZE {family}_facets")


def downgrade() -> None:
    for family in ("tutor", "coach"):
        op.execute(f"DROP TABLE {family}_facet_blocks")
        op.execute(f"ALTER TABLE {family}_facets DROP COLUMN cell")
    op.execute("DROP SEQUENCE search_facet_block_version")
