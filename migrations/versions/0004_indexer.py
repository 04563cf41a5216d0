"""Indexer: per-consumer outbox checkpoints, a NOTIFY wake-up on outbox inserts, and the
outbox insert time taken at the insert itself.

Revision ID: 0004_indexer
Revises: 0003_accounts
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0004_indexer"
down_revision = "0003_accounts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per (consumer, partition): the last outbox position applied, in commit order.
    op.execute(
        """
        CREATE TABLE indexer_checkpoints (
            consumer     text NOT NULL,
            partition    integer NOT NULL CHECK (partition >= 0),
            partitions   integer NOT NULL CHECK (partitions >= 1),
            txid         xid8 NOT NULL DEFAULT '0'::xid8,
            outbox_id    bigint NOT NULL DEFAULT 0,
            events       bigint NOT NULL DEFAULT 0,
            updated_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (consumer, partition)
        )
        """
    )
    # The relay's high-water mark: every transaction of *this* database with a smaller
    # xid has finished. pg_snapshot_xmin() alone is cluster-wide, so a long transaction in
    # another database of the same server would stall the relay; transactions that
    # pg_stat_activity shows in another database (matched by exact xid) are ignored. An xid
    # we cannot attribute (finished meanwhile, prepared, or hidden by privileges) is kept,
    # which only makes the relay wait, never skip.
    op.execute(
        """
        CREATE FUNCTION outbox_horizon() RETURNS xid8 LANGUAGE sql VOLATILE AS $$
            WITH s AS (SELECT pg_current_snapshot() AS snap),
            ours AS (
                SELECT x FROM s, pg_snapshot_xip(s.snap) AS x
                WHERE NOT EXISTS (
                    SELECT 1 FROM pg_stat_activity a
                    WHERE a.backend_xid IS NOT NULL
                      AND a.datname IS DISTINCT FROM current_database()
                      AND a.backend_xid::text::bigint = mod(x::text::bigint, 4294967296)
                )
            )
            SELECT coalesce(min(x), (SELECT pg_snapshot_xmax(snap) FROM s)) FROM ours
        $$
        """
    )
    # Freshness is measured from the outbox insert, normally the last statement of the
    # write transaction: clock_timestamp() is that instant, now() would be the start.
    op.execute("ALTER TABLE outbox ALTER COLUMN created_at SET DEFAULT clock_timestamp()")
    # NOTIFY is only a wake-up (delivered at commit, once per transaction and channel);
    # the outbox table stays the source of truth.
    op.execute(
        """
        CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('outbox', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
        "FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")
    op.execute("DROP FUNCTION IF EXISTS outbox_horizon()")
    op.execute("ALTER TABLE outbox ALTER COLUMN created_at SET DEFAULT now()")
    op.execute("DROP TABLE IF EXISTS indexer_checkpoints")
