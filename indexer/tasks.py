"""Celery tasks of the indexer (thin shims over `indexer.reindex`)."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task

from core.bootstrap import bump_cache_generation
from core.celery_app import app
from core.settings import get_settings
from indexer import reindex_metrics  # noqa: F401  (registered at import: /metrics lists them)


@app.task(  # type: ignore[untyped-decorator]
    name="indexer.reindex", bind=True, acks_late=True, ignore_result=False
)
def reindex(self: Task, engine: str = "postgres", kind: str = "all") -> dict[str, Any]:
    """Run the full reindex whose `reindex_runs` row has this task's id (created by the
    API or the CLI, which also checked `engine`/`kind`). Idempotent: a redelivered message
    for a finished, canceled or still-alive run does nothing (`state: skipped`).

    Returns the run summary (see `indexer.reindex.run_reindex`); raises on failure.
    """
    from indexer.reindex import ReindexConfig, run_reindex

    s = get_settings()
    task_id = self.request.id
    if task_id is None:  # called eagerly without an id: nothing to run
        raise ValueError("indexer.reindex needs the run id as its task id")
    config = ReindexConfig(
        batch_size=s.reindex_batch_size,
        lease_s=s.reindex_lease_s,
        lock_timeout_s=s.reindex_lock_timeout_s,
        swap_timeout_s=s.reindex_swap_timeout_s,
        parallelism=s.reindex_parallelism,
        maintenance_work_mem=s.reindex_maintenance_work_mem,
    )
    return run_reindex(
        uuid.UUID(task_id),
        url=s.libpq_database_url,
        config=config,
        worker=self.request.hostname,
        on_swapped=bump_cache_generation,
    )
