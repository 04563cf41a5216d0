"""`educonnect index …`: the PostgreSQL search documents, rebuilt in bulk."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import typer

from cli.common import connect, console

index_app = typer.Typer(no_args_is_help=True, help="Search documents (PostgreSQL engine).")


def build_documents(conn: psycopg.Connection[Any]) -> int:
    """Rebuild `tutor_documents` and `coach_documents` from the source tables in one
    transaction; returns the number of documents."""
    from indexer.projection import build_all

    with conn.transaction():
        return build_all(conn)


@index_app.command("build")
def index_build() -> None:
    """Rebuild tutor_documents and coach_documents from the source tables (bulk)."""
    t0 = time.perf_counter()
    with connect() as conn:
        n = build_documents(conn)
    console.print(f"built {n} search documents in {time.perf_counter() - t0:.1f} s")
