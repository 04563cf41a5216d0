"""`educonnect db …`: database migrations (Alembic)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import console

db_app = typer.Typer(no_args_is_help=True, help="Database migrations (Alembic).")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from core.migrate import current_revision, upgrade

    upgrade(revision)
    console.print(f"database at revision [bold]{current_revision()}[/]")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, or 'base'")],
) -> None:
    """Revert migrations down to REVISION."""
    from core.migrate import current_revision, downgrade

    downgrade(revision)
    console.print(f"database at revision [bold]{current_revision()}[/]")


@db_app.command("current")
def db_current() -> None:
    """Print the database's current revision."""
    from core.migrate import current_revision

    typer.echo(current_revision() or "(unmigrated)")
