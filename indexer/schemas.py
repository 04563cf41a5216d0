"""Request and response bodies of the reindex admin API (pydantic)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from indexer.reindex import progress
from indexer.reindex_repository import ReindexRun

RunState = Literal["queued", "running", "succeeded", "failed", "canceled"]


class ReindexRequest(BaseModel):
    """`POST /admin/reindex`: which engine, and which document tables."""

    model_config = ConfigDict(extra="forbid")

    engine: Literal["postgres", "opensearch"] = "postgres"
    kind: Literal["all", "tutors", "coaches"] = "all"


class ReindexAccepted(BaseModel):
    """202 answer: the task id (also the run id) and where to follow it."""

    task_id: uuid.UUID
    state: RunState
    engine: str
    kind: str
    status_url: str


class ReindexStatus(BaseModel):
    """A run as `GET /admin/reindex/{task_id}` reports it.

    `done`/`total`: documents loaded from the snapshot; `rate`: documents per second
    during the load; `eta_s`: seconds left in the load at that rate; `replayed`: outbox
    events replayed into the shadow tables; `phase`: queued, starting, snapshot, indexes,
    analyze, replay, swap, then the final state; `errors`: why it failed (empty otherwise).
    """

    task_id: uuid.UUID
    engine: str
    kind: str
    state: RunState
    phase: str
    done: int
    total: int
    rate: float | None = Field(description="documents/s")
    eta_s: float | None
    elapsed_s: float | None
    replayed: int
    phases: dict[str, float] = Field(description="seconds spent in each finished phase")
    cancel_requested: bool
    attempts: int
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    errors: list[str]

    @classmethod
    def of(cls, run: ReindexRun) -> ReindexStatus:
        """The status of `run`."""
        p = progress(run)
        return cls(
            task_id=run.id,
            engine=run.engine,
            kind=run.kind,
            state=run.state,
            phase=run.phase,
            done=run.done,
            total=run.total,
            rate=p.rate,
            eta_s=None if p.eta_s is None else round(p.eta_s, 1),
            elapsed_s=p.elapsed_s,
            replayed=run.replayed,
            phases=run.phases,
            cancel_requested=run.cancel_requested,
            attempts=run.attempts,
            worker=run.worker,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            errors=[run.error] if run.error else [],
        )
