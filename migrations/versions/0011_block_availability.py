"""Facet blocks carry their records' availability (`avail`, `search.engines.postgres.blocks`).

An availability window was the one filter of a facet pass the blocks could not answer:
the engine asked PostgreSQL for the providers of the radius's box whose multirange
overlaps the window (`availability && tstzrange(...)` on ~7,600 facet rows for 40 km
around London: 4 ms of the server's CPU per query). Each block now holds, beside its
records, one 20-byte entry per range of each record's `availability`: (record index
int4, L int8, U int8), the bounds on a doubled microsecond line where inclusivity is part
of the value (`search.engines.postgres.blocks`, module docstring), so a window is two
integer comparisons per range, exactly PostgreSQL's `&&`. Stored uncompressed like `rows`.

The upgrade fills every block's entries (a snapshot of the packing SQL at this revision)
and gives each block a new version and the migrating transaction's id, so an engine that
held a copy reads it again.

Revision ID: 0011_block_availability
Revises: 0010_block_sync
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0011_block_availability"
down_revision = "0010_block_sync"
branch_labels = None
depends_on = None

FAMILIES = ("tutor", "coach")
_US = (
    "(CASE WHEN {t} = '-infinity' THEN -2305843009213693952 WHEN {t} = 'infinity'"
    " THEN 2305843009213693952 ELSE greatest(-2305843009213693952, least(2305843009213693952,"
    " extract(epoch FROM {t}) * 1000000))::bigint END)"
)
AVAIL = (
    "(SELECT string_agg(int4send(rn::integer) || int8send(CASE WHEN lower_inf(r) THEN"
    " -9223372036854775808 ELSE 2 * " + _US.format(t="lower(r)") + " + (NOT lower_inc(r))::int"
    " END) || int8send(CASE WHEN upper_inf(r) THEN 9223372036854775807 ELSE 2 * "
    + _US.format(t="upper(r)")
    + " - (NOT upper_inc(r))::int END), ''::bytea) FROM unnest(availability) r)"
)


def upgrade() -> None:
    for family in FAMILIES:
        op.execute(
            f"ALTER TABLE {family}_facet_blocks ADD COLUMN avail bytea NOT NULL DEFAULT ''::bytea"
        )
        op.execute(f"ALTER TABLE {family}_facet_blocks ALTER COLUMN avail SET STORAGE EXTERNAL")
        op.execute(
            f"UPDATE {family}_facet_blocks b SET avail = x.avail,"
            " version = nextval('search_facet_block_version'), xid = pg_current_xact_id()"
            f" FROM (SELECT cell, coalesce(string_agg({AVAIL}, ''::bytea ORDER BY provider_id),"
            " ''::bytea) AS avail FROM (SELECT f.*, (row_number() OVER (PARTITION BY cell"
            f" ORDER BY provider_id) - 1) AS rn FROM {family}_facets f) y GROUP BY cell) x"
            " WHERE b.cell = x.cell"
        )
        op.execute(f"ANALYZE {family}_facet_blocks")


def downgrade() -> None:
    for family in FAMILIES:
        op.execute(f"ALTER TABLE {family}_facet_blocks DROP COLUMN avail")
