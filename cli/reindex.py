"""`educonnect reindex`: rebuild a search engine's index from the source of truth with no
downtime.

Both engines go through the Celery task (`indexer.reindex`), like the admin endpoint:
`--engine postgres` builds shadow tables, replays and swaps them by rename;
`--engine opensearch` builds the next versioned indices, replays and swaps the aliases
atomically. `--wait` follows the run with a progress bar; `--engine opensearch
--rollback` swaps the aliases back to the previous indices (synchronously).
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cli.common import connect, console
from core.logging import configure_logging
from core.settings import get_settings


def _queue(engine: str, kind: str, wait: bool, poll_s: float) -> None:
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

    with (
        connect("educonnect-reindex-cli") as conn,
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


def _opensearch_rollback() -> None:
    """Point the OpenSearch aliases back at the previous versioned indices (kept by every
    reindex), replaying what they missed. Exit 1 when there is nothing to roll back to."""
    from indexer.opensearch_reindex import ReindexError
    from indexer.opensearch_reindex import rollback as run_rollback
    from indexer.opensearch_sink import client_from_settings

    configure_logging()
    s = get_settings()
    with connect("educonnect-reindex-cli") as conn:
        try:
            result = run_rollback(conn, client_from_settings(), prefix=s.opensearch_index_prefix)
        except ReindexError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
    for alias, (old, new) in result.swapped.items():
        console.print(f"{alias}: {old or '(none)'} → {new}")


def reindex(
    engine: Annotated[
        str, typer.Option(help="Search engine to rebuild: postgres or opensearch")
    ] = "postgres",
    kind: Annotated[str, typer.Option(help="postgres: all, tutors or coaches")] = "all",
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Follow the run with a progress bar until it ends"),
    ] = False,
    poll_s: Annotated[float, typer.Option(min=0.05, help="Seconds between polls")] = 0.5,
    rollback: Annotated[
        bool,
        typer.Option("--rollback", help="opensearch: point the aliases back at the previous index"),
    ] = False,
) -> None:
    """Rebuild a search engine's index with no downtime.

    Exit codes: 0 done (or queued), 1 failed or canceled, 2 bad input, 3 another reindex
    of this engine is active."""
    if rollback and engine == "opensearch":
        _opensearch_rollback()
        return
    if rollback:
        raise typer.BadParameter(
            "--rollback applies to --engine opensearch", param_hint="--rollback"
        )
    _queue(engine, kind, wait, poll_s)
