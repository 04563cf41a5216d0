"""`educonnect credits …`: the beat jobs by hand (a typer sub-app registered by the CLI).

- `educonnect credits expire [--at RFC3339]`: expire lapsed credits and emit the
  week-ahead `credits.expiring` events (idempotent; `--at` replays the job at an instant);
- `educonnect credits allocate`: re-read live subscriptions whose period ended and grant
  the months of their paid invoices not granted yet (once per invoice).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer

credits_app = typer.Typer(no_args_is_help=True, help="Credits: expiry and monthly allocation.")


def _at(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@credits_app.command("expire")
def expire_cmd(
    at: Annotated[str | None, typer.Option(help="RFC 3339 instant (default: now)")] = None,
) -> None:
    """Expire the credits lapsed at AT and send the week-ahead notices."""
    from core.db import dispose_engines
    from credits.jobs import expire_and_notify

    when = _at(at)

    async def main() -> tuple[int, int]:
        try:
            return await expire_and_notify(now=lambda: when)
        finally:
            await dispose_engines()

    expired, notified = asyncio.run(main())
    typer.echo(f"{expired} grant(s) expired, {notified} expiry notice(s) emitted")


@credits_app.command("allocate")
def allocate_cmd() -> None:
    """Grant the paid months of subscriptions whose period ended (once per invoice)."""
    from core.db import dispose_engines
    from credits.jobs import allocate_monthly

    async def main() -> int:
        try:
            return await allocate_monthly()
        finally:
            await dispose_engines()

    typer.echo(f"{asyncio.run(main())} grant(s) made")
