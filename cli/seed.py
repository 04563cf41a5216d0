"""`educonnect seed`: load the deterministic demo marketplace (`devdata.seed`).

Bad input (negative counts, an unknown country, a bad date) prints a clear message and
exits with code 2, the usage-error convention of typer/click; nothing is written then.
"""

from __future__ import annotations

import time
from datetime import date
from typing import Annotated, Any

import typer

from cli.common import PhaseProgress, connect, console, counts
from cli.index import build_documents


def seed(
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
    """Replace the marketplace data with a deterministic demo, then build its search documents.

    The demo places providers around real cities (`devdata.seed`); the same parameters
    give the same rows. Progress goes to stderr: a bar on a terminal, else a line every
    few seconds."""
    from devdata.seed import (
        ADMIN_EMAIL,
        DEFAULT_COUNTRIES,
        DEMO_PASSWORD,
        SeedError,
        SeedParams,
        last_seed_params,
    )
    from devdata.seed import seed as run_seed

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

    with connect("educonnect-seed") as conn:
        if if_changed:
            last = last_seed_params(conn)
            same = last is not None and {k: v for k, v in last.items() if k != "start"} == {
                k: v for k, v in params.as_json().items() if k != "start"
            }
            if same:
                c = counts(conn)
                console.print(
                    f"already seeded with these parameters: {c['tutors']} tutors, "
                    f"{c['coaches']} coaches, {c['slots']} slots (use without --if-changed to redo)"
                )
                return
        console.print(
            f"seeding {params.tutors:,} tutors, {params.coaches:,} coaches and mentors, "
            f"{params.students:,} students",
            highlight=False,
        )
        with PhaseProgress("seeding") as bar:
            result = run_seed(conn, params, progress=bar.update)
        console.print("building the search documents", highlight=False)
        t0 = time.perf_counter()
        n = build_documents(conn)
        console.print(f"search documents built: {n} in {time.perf_counter() - t0:.1f} s")
        c = counts(conn)
    console.print(
        f"seeded {c['tutors']} tutors, {c['coaches']} coaches, {c['slots']} slots, "
        f"{result.students} students, {result.parents} parents in {result.seconds:.1f} s "
        f"(accounts' password: {DEMO_PASSWORD!r}, admin: {ADMIN_EMAIL})"
    )
