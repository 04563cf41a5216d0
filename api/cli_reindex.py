"""`educonnect reindex --engine opensearch [--rollback]`: rebuild the OpenSearch indices
behind their aliases with no downtime, or swap the aliases back.

The PostgreSQL reindex (issue 6, a Celery task with an admin endpoint) is built on its
own branch; when both are merged the admin task calls
`indexer.opensearch_reindex.reindex` for `engine=opensearch` and this command can move
under the shared one.
"""

from __future__ import annotations

from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.logging import configure_logging
from core.settings import get_settings

console = Console(stderr=True)


def reindex_cmd(
    engine: Annotated[str, typer.Option(help="Engine to rebuild: opensearch")] = "opensearch",
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Point the aliases back at the previous index")
    ] = False,
) -> None:
    """Rebuild OpenSearch into new versioned indices and swap the aliases atomically
    (or roll the aliases back). Exit 2 on bad input, 1 when the cluster refuses."""
    from indexer.opensearch_reindex import ReindexError
    from indexer.opensearch_reindex import reindex as run_reindex
    from indexer.opensearch_reindex import rollback as run_rollback
    from indexer.opensearch_sink import client_from_settings

    if engine != "opensearch":
        raise typer.BadParameter(
            "only --engine opensearch here; the PostgreSQL reindex is the admin task of issue 6",
            param_hint="--engine",
        )
    configure_logging()
    s = get_settings()
    client = client_from_settings()
    with psycopg.connect(s.libpq_database_url, autocommit=True) as conn:
        try:
            if rollback:
                result = run_rollback(conn, client, prefix=s.opensearch_index_prefix)
            else:
                row = conn.execute(
                    "SELECT count(*) FROM search_document_source WHERE searchable"
                ).fetchone()
                total = int(row[0]) if row else 0
                with Progress(
                    TextColumn("[bold]indexing"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console,
                ) as bar:  # fmt: skip
                    task = bar.add_task("documents", total=total)
                    result = run_reindex(
                        conn,
                        client,
                        prefix=s.opensearch_index_prefix,
                        replicas=s.opensearch_replicas,
                        max_retries=s.opensearch_bulk_max_retries,
                        progress=lambda n: bar.advance(task, n),
                    )
        except ReindexError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
    for alias, (old, new) in result.swapped.items():
        console.print(f"{alias}: {old or '(none)'} → {new}")
    console.print(
        f"{result.documents} documents, {result.replayed} outbox events replayed"
        f" in {result.seconds:.1f} s"
    )
