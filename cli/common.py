"""What the command modules share: a database connection and the console."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from core.settings import get_settings

# Progress and messages go to stderr; stdout carries only what a command prints as its
# result (a task id, counts), so it can be piped.
# No wrapping: a log file keeps each message on one line whatever the width.
console = Console(stderr=True, soft_wrap=True)


def connect(application_name: str = "educonnect-cli") -> psycopg.Connection[Any]:
    """An autocommit psycopg connection to `DATABASE_URL`."""
    return psycopg.connect(
        get_settings().libpq_database_url, autocommit=True, application_name=application_name
    )


def counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Tutors, coaches (and mentors) and availability slots in the database."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE kind = 'tutor'), count(*) FILTER (WHERE kind <> 'tutor')"
        " FROM provider_profiles"
    ).fetchone()
    slots = conn.execute("SELECT count(*) FROM availability_slots").fetchone()
    assert row is not None
    assert slots is not None
    return {"tutors": int(row[0]), "coaches": int(row[1]), "slots": int(slots[0])}


class PhaseProgress:
    """Progress of a long command, in phases of `done` out of `total` items: rich's bar
    when the console is a terminal; otherwise (a log file, a pipe, `make run > log`) one
    plain line at most every `every_s` seconds and one at the end of each phase, so the
    log shows the command is alive. Use as a context manager; call `update`."""

    def __init__(self, label: str, *, every_s: float = 5.0) -> None:
        self.label = label
        self.every_s = every_s
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._started = 0.0
        self._last_line = 0.0
        self._last: tuple[str, int] | None = None

    def __enter__(self) -> PhaseProgress:
        self._started = self._last_line = time.monotonic()
        if console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, phase: str, done: int, total: int) -> None:
        """`done` of `total` items of `phase` are finished."""
        if self._bar is not None and self._task is not None:
            description = f"{self.label}: {phase}"
            self._bar.update(self._task, description=description, completed=done, total=total)
            return
        now = time.monotonic()
        if (phase, done) == self._last or (done < total and now - self._last_line < self.every_s):
            return
        self._last, self._last_line = (phase, done), now
        percent = 100 * done // total if total else 100
        console.print(
            f"{self.label}: {phase} {done:,}/{total:,} ({percent} %), "
            f"{now - self._started:.0f} s elapsed",
            highlight=False,
        )
