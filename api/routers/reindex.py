"""Full reindex administration: `POST/GET/DELETE /api/v1/admin/reindex[/{task_id}]`.

The run's row (`reindex_runs`) is the source of truth for its state and progress; the
Celery task id is the run id. Database work here is a few short statements on a
synchronous psycopg connection, run in the thread pool (admin traffic only).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Body, Response
from starlette.concurrency import run_in_threadpool

from api.deps import AdminUser
from api.errors import problem_responses
from core.settings import get_settings
from indexer import reindex as service
from indexer.reindex_repository import ReindexRun
from indexer.schemas import ReindexAccepted, ReindexRequest, ReindexStatus

router = APIRouter(prefix="/admin/reindex", tags=["admin"])
_PREFIX = "/api/v1/admin/reindex"


def connect_db() -> psycopg.Connection[Any]:
    return psycopg.connect(
        get_settings().libpq_database_url, autocommit=True, application_name="educonnect-api"
    )


def _publish(run_id: uuid.UUID, engine: str, kind: str) -> None:
    from indexer.tasks import reindex

    reindex.apply_async(kwargs={"engine": engine, "kind": kind}, task_id=str(run_id))


def request_reindex(engine: str, kind: str, requested_by: uuid.UUID | None) -> ReindexRun:
    """Create the run (409 if one is active) and queue its task (503 if the broker is
    unreachable; the run is then marked failed). Blocking: call from a thread."""
    s = get_settings()
    with connect_db() as conn:
        with conn.transaction():
            run = service.create_run(
                conn,
                engine=engine,
                kind=kind,
                requested_by=requested_by,
                queue_timeout_s=s.reindex_queue_timeout_s,
            )
        try:
            _publish(run.id, engine, kind)
        except Exception as exc:
            with conn.transaction():
                service.publish_failed(conn, run.id, exc)
            raise service.ReindexUnavailable(
                "The reindex task could not be queued (broker unreachable); try again."
            ) from exc
    return run


def _get(run_id: uuid.UUID) -> ReindexRun:
    with connect_db() as conn:
        return service.get_run(conn, run_id)


def _cancel(run_id: uuid.UUID) -> ReindexRun:
    with connect_db() as conn, conn.transaction():
        run = service.cancel_run(conn, run_id)
    if run.state == "canceled":
        try:  # a queued message that no worker has taken yet: drop it from the queue
            from core.celery_app import app

            app.control.revoke(str(run_id))
        except Exception:  # best effort: the task does nothing for a canceled run anyway
            service.log.warning("reindex_revoke_failed", task_id=str(run_id))
    return run


@router.post(
    "",
    status_code=202,
    response_model=ReindexAccepted,
    summary="Start a full reindex (admin)",
    responses=problem_responses(401, 403, 409, 422, 503),
)
async def start_reindex(
    user: AdminUser,
    response: Response,
    body: Annotated[ReindexRequest | None, Body()] = None,
) -> ReindexAccepted:
    """Queue a reindex of `engine` (`postgres`) for `kind` (`all`, `tutors`, `coaches`).
    One reindex per engine at a time: 409 `reindex_running` names the active `task_id`.
    Follow the run at the `Location` URL."""
    req = body or ReindexRequest()
    run = await run_in_threadpool(request_reindex, req.engine, req.kind, user.id)
    url = f"{_PREFIX}/{run.id}"
    response.headers["Location"] = url
    return ReindexAccepted(
        task_id=run.id, state="queued", engine=run.engine, kind=run.kind, status_url=url
    )


@router.get(
    "/{task_id}",
    response_model=ReindexStatus,
    summary="Progress of a reindex (admin)",
    responses=problem_responses(401, 403, 404, 422),
)
async def reindex_status(task_id: uuid.UUID, user: AdminUser) -> ReindexStatus:
    """State, phase, done/total documents, rate (documents/s), ETA (s) and errors."""
    return ReindexStatus.of(await run_in_threadpool(_get, task_id))


@router.delete(
    "/{task_id}",
    status_code=202,
    response_model=ReindexStatus,
    summary="Cancel a reindex (admin)",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def cancel_reindex(task_id: uuid.UUID, user: AdminUser) -> ReindexStatus:
    """A queued run is canceled at once; a running one stops at its next check (between
    batches), drops its shadow tables and leaves the live tables untouched — follow it
    with GET until `state` is `canceled`. 409 `reindex_finished` if it already ended."""
    return ReindexStatus.of(await run_in_threadpool(_cancel, task_id))
