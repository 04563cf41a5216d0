"""`educonnect stats`: what the database holds."""

from __future__ import annotations

import typer

from cli.common import connect, counts


def stats() -> None:
    """Print the number of tutors, coaches and slots in the database."""
    with connect() as conn:
        c = counts(conn)
    typer.echo(f"tutors={c['tutors']} coaches={c['coaches']} slots={c['slots']}")
