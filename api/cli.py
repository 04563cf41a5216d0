"""The `educonnect` command line (typer): database migrations, seed data, the API server.

Bad input (negative counts, an unknown country) prints a clear message and exits with
code 2, the usage-error convention of typer/click; nothing is written in that case.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from api.cli_indexer import indexer_app
from api.cli_reindex import reindex_cmd
from core.settings import get_settings
from credits.cli import credits_app
from payments.cli import payments_app

app = typer.Typer(no_args_is_help=True, help="EduConnect: tutoring and coaching marketplace.")
db_app = typer.Typer(no_args_is_help=True, help="Database migrations (Alembic).")
app.add_typer(db_app, name="db")
app.add_typer(indexer_app, name="indexer")
app.add_typer(payments_app, name="payments")
app.add_typer(credits_app, name="credits")
app.command("reindex")(reindex_cmd)
console = Console(stderr=True)


def _connect() -> psycopg.Connection[Any]:
    return psycopg.connect(get_settings().libpq_database_url, autocommit=True)


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


def _counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE kind = 'tutor'), count(*) FILTER (WHERE kind <> 'tutor')"
        " FROM provider_profiles"
    ).fetchone()
    slots = conn.execute("SELECT count(*) FROM availability_slots").fetchone()
    assert row is not None
    assert slots is not None
    return {"tutors": int(row[0]), "coaches": int(row[1]), "slots": int(slots[0])}


@app.command("seed")
def seed_cmd(
    tutors: Annotated[int, typer.Option(help="Number of tutors (≥ 0)")] = 20_000,
    coaches: Annotated[int, typer.Option(help="Number of coaches and mentors (≥ 0)")] = 5_000,
    students: Annotated[int, typer.Option(help="Number of student accounts (≥ 0)")] = 1_000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same data")] = 42,
    country: Annotated[
        list[str] | None,
        typer.Option("--country", help="ISO country code; repeat for several (default: all)"),
    ] = None,
    weeks: Annotated[int, typer.Option(help="Weeks of availability to generate")] = 4,
    start: Annotated[
        str | None, typer.Option(help="First day of availability, YYYY-MM-DD (default: tomorrow)")
    ] = None,
    if_changed: Annotated[
        bool, typer.Option("--if-changed", help="Skip when the same parameters are already loaded")
    ] = False,
) -> None:
    """Replace the marketplace data with a deterministic demo on real geography."""
    from profiles.seed import (
        DEFAULT_COUNTRIES,
        DEMO_PASSWORD,
        SeedError,
        SeedParams,
        last_seed_params,
    )
    from profiles.seed import seed as run_seed

    try:
        start_date = date.fromisoformat(start) if start else None
    except ValueError:
        raise typer.BadParameter(f"not a date: {start!r}", param_hint="--start") from None
    try:
        kwargs: dict[str, Any] = {
            "tutors": tutors, "coaches": coaches, "students": students, "seed": seed,
            "weeks": weeks,
            "countries": tuple(c.upper() for c in country) if country else DEFAULT_COUNTRIES,
        }  # fmt: skip
        if start_date:
            kwargs["start"] = start_date
        params = SeedParams(**kwargs)
    except SeedError as exc:
        raise typer.BadParameter(str(exc)) from None

    with _connect() as conn:
        if if_changed:
            last = last_seed_params(conn)
            same = last is not None and {k: v for k, v in last.items() if k != "start"} == {
                k: v for k, v in params.as_json().items() if k != "start"
            }
            if same:
                c = _counts(conn)
                console.print(
                    f"already seeded with these parameters: {c['tutors']} tutors, "
                    f"{c['coaches']} coaches, {c['slots']} slots (use without --if-changed to redo)"
                )
                return
        total = params.tutors + params.coaches
        with Progress(
            TextColumn("[bold]seeding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False, disable=total == 0,
        ) as bar:  # fmt: skip
            task = bar.add_task("providers", total=total)
            result = run_seed(conn, params, progress=lambda n: bar.advance(task, n))
        after_seed(conn)
        c = _counts(conn)
    console.print(
        f"seeded {c['tutors']} tutors, {c['coaches']} coaches, {c['slots']} slots, "
        f"{result.students} students, {result.parents} parents in {result.seconds:.1f} s "
        f"(accounts' password: {DEMO_PASSWORD!r}, admin: admin@educonnect.dev)"
    )


def after_seed(conn: psycopg.Connection[Any]) -> None:
    """Work that follows a seed: build the search document tables in bulk."""
    from indexer.projection import build_all

    with conn.transaction():
        n = build_all(conn)
    console.print(f"search documents built: {n}")


index_app = typer.Typer(no_args_is_help=True, help="Search documents (PostgreSQL engine).")
app.add_typer(index_app, name="index")


@index_app.command("build")
def index_build() -> None:
    """Rebuild tutor_documents and coach_documents from the source tables (bulk)."""
    import time

    from indexer.projection import build_all

    t0 = time.perf_counter()
    with _connect() as conn, conn.transaction():
        n = build_all(conn)
    console.print(f"built {n} search documents in {time.perf_counter() - t0:.1f} s")


@app.command("stats")
def stats() -> None:
    """Print the number of tutors, coaches and slots in the database."""
    with _connect() as conn:
        c = _counts(conn)
    typer.echo(f"tutors={c['tutors']} coaches={c['coaches']} slots={c['slots']}")


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default API_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default API_PORT)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
    reload: Annotated[bool, typer.Option(help="Reload on code changes (development)")] = False,
) -> None:
    """Run the HTTP API with uvicorn: one process per worker, the connections dealt to
    them in turn (`api.server`)."""
    from api import server

    s = get_settings()
    server.serve(host or s.api_host, port or s.api_port, workers, reload=reload)


if __name__ == "__main__":
    app()
