"""Facet blocks carry their records' list items (`items`, `search.engines.postgres.blocks`).

A list query's facets and page came from the blocks, but its 21 page rows were read
from the documents by id in a second table access, and turned into JSON in Python: on
this machine ~0.55 ms of the server's CPU and ~0.3 ms of the engine's per query, most
of what a search cost beyond the blocks. Each block now also holds the JSON list item
of each of its records (the response's `TutorItem` / `CoachItem`), rendered by
PostgreSQL when the block is packed: one big-endian int4 per record (the end of its
item) followed by the items. An engine that holds a block therefore answers the page
from it; the block's version, which the engine already checks with every query, covers
the items too (a document write re-packs its block). Stored uncompressed like `rows`.

The upgrade fills every block's items (a snapshot of the packing SQL at this revision)
and gives each block a new version and the migrating transaction's id, so an engine
that held a copy reads it again.

Revision ID: 0012_block_items
Revises: 0011_block_availability
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0012_block_items"
down_revision = "0011_block_availability"
branch_labels = None
depends_on = None


def _json(expr: str) -> str:
    return f"coalesce(to_json({expr})::text, 'null')"


def _json_float(expr: str) -> str:
    return f"(CASE WHEN {expr}::text ~ '[.en]' THEN {expr}::text ELSE {expr}::text || '.0' END)"


def _item(family: str) -> str:
    cat = "subjects" if family == "tutor" else "expertises"
    kind = "" if family == "tutor" else " || ',\"kind\":' || " + _json("d.kind")
    location = (
        " || ',\"location\":' || coalesce('{\"lat\":' || "
        + _json_float("d.lat")
        + " || ',\"lng\":' || "
        + _json_float("d.lng")
        + " || '}', 'null')"
        if family == "tutor"
        else ""
    )
    return (
        "convert_to('{\"id\":\"' || d.provider_id::text || '\"'" + kind
        + " || ',\"display_name\":' || " + _json("d.display_name")
        + " || ',\"headline\":' || " + _json("d.headline")
        + f" || ',\"{cat}\":' || " + _json(f"d.{cat}")
        + " || ',\"languages\":' || " + _json("d.languages")
        + " || ',\"price\":{\"amount_minor\":' || d.price_minor::text"
        + " || ',\"currency\":' || " + _json("d.currency::text")
        + " || '},\"rating\":{\"avg\":' || coalesce(d.rating_avg::text, 'null')"
        + " || ',\"count\":' || d.rating_count::text || '},\"online\":' || d.online::text"
        + " || ',\"in_person\":' || d.in_person::text"
        + location
        + " || ',\"city\":' || " + _json("d.city")
        + " || ',\"country_code\":' || " + _json("d.country_code::text")
        + ", 'UTF8')"
    )  # fmt: skip


def upgrade() -> None:
    for family in ("tutor", "coach"):
        op.execute(
            f"ALTER TABLE {family}_facet_blocks ADD COLUMN items bytea NOT NULL DEFAULT ''::bytea"
        )
        op.execute(f"ALTER TABLE {family}_facet_blocks ALTER COLUMN items SET STORAGE EXTERNAL")
        op.execute(
            f"UPDATE {family}_facet_blocks b SET items = x.items,"
            " version = nextval('search_facet_block_version'), xid = pg_current_xact_id()"
            " FROM (SELECT cell, string_agg(int4send(item_end::integer), ''::bytea"
            " ORDER BY provider_id) || string_agg(item, ''::bytea ORDER BY provider_id) AS items"
            " FROM (SELECT y.*, sum(octet_length(item)) OVER (PARTITION BY cell"
            " ORDER BY provider_id) AS item_end FROM (SELECT f.cell, f.provider_id,"
            f" (SELECT {_item(family)} FROM {family}_documents d"
            f" WHERE d.provider_id = f.provider_id) AS item FROM {family}_facets f) y) z"
            " GROUP BY cell) x WHERE b.cell = x.cell"
        )
        op.execute(f"ANALYZE {family}_facet_blocks")


def downgrade() -> None:
    for family in ("tutor", "coach"):
        op.execute(f"ALTER TABLE {family}_facet_blocks DROP COLUMN items")
