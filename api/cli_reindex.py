"""`educonnect reindex`: queue a full reindex (Celery task) and optionally follow it with
a progress bar until it ends."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def reindex_cmd(
    engine: Annotated[str, typer.Option(help="Search engine to rebuild (postgres)")] = "postgres",
    kind: Annotated[str, typer.Option(help="all, tutors or coaches")] = "all",
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the run with a progress bar until it ends")
    ] = False,
    poll_s: Annotated[float, typer.Option(min=0.05, help="Seconds between polls")] = 0.5,
) -> None:
    """Rebuild the search tables from the source of truth with no downtime (a Celery worker
    runs it). Exit codes: 0 queued (or succeeded with --wait), 1 failed or canceled,
    2 bad input, 3 another reindex of this engine is active (its task id is printed)."""
    from api.routers.reindex import request_reindex
    from core.errors import AppError
    from indexer import reindex as service
    from indexer.reindex import ReindexRunning, UnsupportedEngine

    try:
        run = request_reindex(engine, kind, None)
    except UnsupportedEngine as exc:
        raise typer.BadParameter(exc.detail) from None
    except ReindexRunning as exc:
        console.print(f"[yellow]{exc.detail}[/]")
        typer.echo(exc.extra.get("task_id") or "")
        raise typer.Exit(3) from None
    except AppError as exc:
        console.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(1) from None
    typer.echo(str(run.id))
    if not wait:
        console.print(f"reindex queued: task {run.id} (follow: GET /api/v1/admin/reindex/{run.id})")
        return

    from api.routers.reindex import connect_db

    with (
        connect_db() as conn,
        Progress(
            TextColumn("[bold]{task.fields[phase]:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar,
    ):
        task = bar.add_task("reindex", total=None, phase="queued", rate="")
        while True:
            current = service.get_run(conn, run.id)
            p = service.progress(current)
            bar.update(
                task,
                total=current.total or None,
                completed=current.done,
                phase=current.phase,
                rate=f"{p.rate:,.0f} docs/s" if p.rate else "",
            )
            if not current.active:
                break
            time.sleep(poll_s)
    p = service.progress(current)
    summary = (
        f"{current.state}: {current.done} documents, {current.replayed} events replayed"
        f" in {p.elapsed_s or 0:.1f} s"
    )
    if current.state == "succeeded":
        console.print(f"[green]{summary}[/]")
        return
    console.print(f"[red]{summary}[/] {current.error or ''}")
    raise typer.Exit(1)
