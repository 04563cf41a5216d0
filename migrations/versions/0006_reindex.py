"""Reindex runs: one row per full reindex (Celery task), with its progress, lease and
outcome; a partial unique index allows one queued-or-running reindex per engine.

Revision ID: 0006_reindex
Revises: 0005_search_perf (re-chained after 0005_search_perf at merge)
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0006_reindex"
down_revision = "0005_search_perf"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # `id` is the Celery task id. A run is active while `state` is queued or running; its
    # `lease_until` is pushed forward by the worker's heartbeat, so a run whose worker died
    # stops blocking new requests once the lease has expired (indexer/reindex.py).
    op.execute(
        """
        CREATE TABLE reindex_runs (
            id                uuid PRIMARY KEY,
            engine            text NOT NULL CHECK (engine IN ('postgres', 'opensearch')),
            kind              text NOT NULL CHECK (kind IN ('all', 'tutors', 'coaches')),
            state             text NOT NULL DEFAULT 'queued'
                              CHECK (state IN ('queued', 'running', 'succeeded', 'failed',
                                               'canceled')),
            phase             text NOT NULL DEFAULT 'queued',
            requested_by      uuid REFERENCES users (id) ON DELETE SET NULL,
            created_at        timestamptz NOT NULL DEFAULT now(),
            started_at        timestamptz,
            loaded_at         timestamptz,
            finished_at       timestamptz,
            lease_until       timestamptz NOT NULL,
            heartbeat_at      timestamptz,
            cancel_requested  boolean NOT NULL DEFAULT false,
            attempts          integer NOT NULL DEFAULT 0,
            worker            text,
            shadow_suffix     text,
            mark              xid8,
            total             bigint NOT NULL DEFAULT 0,
            done              bigint NOT NULL DEFAULT 0,
            replayed          bigint NOT NULL DEFAULT 0,
            phases            jsonb NOT NULL DEFAULT '{}'::jsonb,
            error             text
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX reindex_runs_one_active ON reindex_runs (engine) "
        "WHERE state IN ('queued', 'running')"
    )
    op.execute("CREATE INDEX reindex_runs_created_idx ON reindex_runs (created_at DESC)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS reindex_runs")
