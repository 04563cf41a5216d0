"""Facet blocks a search process can keep in step with one small statement.

An engine holds the blocks it read (`search.engines.postgres.blocks`), and used to ask
PostgreSQL for the (cell, version) of every block of a query's cells on every query (~600 index probes for
a 50 km radius at Paris) to know which copies were stale. Now each block records the
transaction that last wrote it (`xid`, a `xid8`, indexed), so a process can ask instead
for the blocks written since its previous check (`search.engines.postgres.block_sync`):

- A block written by a transaction that the previous check's snapshot did not see has an
  `xid` at or above that snapshot's `xmin` (every older transaction had ended, and its
  writes were visible); `xid >= xmin` therefore returns every such block, plus a few
  already seen. `version` alone would not do: a version is taken when a transaction
  writes, not when it commits, so a smaller version can become visible later.
- A cell left without rows keeps its block, empty (`n = 0`): a deleted row would be
  invisible to that question. The rows of empty blocks are a few bytes each.

Existing rows get the migrating transaction's id.

Revision ID: 0010_block_sync
Revises: 0009_text_key
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0010_block_sync"
down_revision = "0009_text_key"
branch_labels = None
depends_on = None

FAMILIES = ("tutor", "coach")


def upgrade() -> None:
    for family in FAMILIES:
        op.execute(
            f"ALTER TABLE {family}_facet_blocks"
            " ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id()"
        )
        op.execute(f"CREATE INDEX {family}_facet_blocks_xid ON {family}_facet_blocks (xid)")


def downgrade() -> None:
    for family in FAMILIES:
        op.execute(f"DELETE FROM {family}_facet_blocks WHERE n = 0")
        op.execute(f"ALTER TABLE {family}_facet_blocks DROP COLUMN xid")
