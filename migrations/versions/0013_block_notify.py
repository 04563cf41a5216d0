"""The facet blocks tables notify `search_blocks` when written.

Each search process keeps a directory of the facet blocks (`search.engines.postgres.block_sync`) and
checked it with every query, in the page's statement: on this machine that statement
was most of what PostgreSQL spent on a list query answered from the blocks, and the
round trip most of the rest (waking another process costs more than the check). Now a
statement-level trigger on `{tutor,coach}_facet_blocks` calls
`pg_notify('search_blocks', <family>)` after every INSERT, UPDATE, DELETE or TRUNCATE
(even one that touched no row), and a search process that listens checks its directory
only after a notification, at least every second, and on every query while it is not
listening (`search.engines.postgres.block_watch`).

NOTIFY is delivered at commit, once per transaction, channel and payload, and a
listener receives it only once the writing transaction is visible to new snapshots, so
a check that starts after the notification sees the write. A reindex renames a shadow
table into place, which fires no trigger: it copies the live table's triggers onto the
shadow and notifies at the swap (`indexer.reindex_repository`).

Revision ID: 0013_block_notify
Revises: 0012_block_items
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0013_block_notify"
down_revision = "0012_block_items"
branch_labels = None
depends_on = None

FAMILIES = ("tutor", "coach")


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION search_blocks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('search_blocks', TG_ARGV[0]);
            RETURN NULL;
        END $$
        """
    )
    for family in FAMILIES:
        op.execute(
            f"CREATE TRIGGER search_blocks_notify"
            f" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {family}_facet_blocks"
            f" FOR EACH STATEMENT EXECUTE FUNCTION search_blocks_notify('{family}')"
        )


def downgrade() -> None:
    for family in FAMILIES:
        op.execute(f"DROP TRIGGER IF EXISTS search_blocks_notify ON {family}_facet_blocks")
    op.execute("DROP FUNCTION IF EXISTS search_blocks_notify()")
