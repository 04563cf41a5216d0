"""`educonnect payments …`: the reconciliation command (a typer sub-app registered by the
CLI).

`educonnect payments reconcile --since 2030-03-01T00:00:00Z [--fix]` lists the gateway's
PaymentIntents created since that instant and prints every local payment whose state
differs (`differs`), and every orphan — an intent with metadata `booking_id` but no local
payment, e.g. after a crash between the Stripe call and the commit (`orphan`); with `--fix`
each is moved through the same compare-and-swap path as the webhooks (`fixed`), an orphan
gets its payment row first and is then applied like a webhook (`adopted`: a succeeded one
confirms its booking, or is refunded in full when the seat is gone), refunds left pending are sent again, and stored webhook events not
processed after a minute are processed. Exit code 1 when differences remain unfixed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

payments_app = typer.Typer(no_args_is_help=True, help="Payments: reconciliation with Stripe.")


def _parse_since(value: str) -> datetime:
    if value.endswith("d") and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(days=int(value[:-1]))
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@payments_app.command("reconcile")
def reconcile_cmd(
    since: Annotated[str, typer.Option(help="RFC 3339 instant, or N days back as '7d'")] = "7d",
    fix: Annotated[bool, typer.Option("--fix", help="Repair through the CAS path")] = False,
) -> None:
    """Compare Stripe's PaymentIntents with our payments; report (and with --fix repair)."""
    from core.db import dispose_engines
    from payments import jobs
    from payments.stripe_adapter import get_provider

    async def main() -> tuple[list[jobs.Difference], int]:
        try:
            diffs = await jobs.reconcile(get_provider(), since=_parse_since(since), fix=fix)
            swept = await jobs.sweep_events(get_provider()) if fix else 0
            return diffs, swept
        finally:
            await dispose_engines()

    diffs, swept = asyncio.run(main())
    for d in diffs:
        if d.orphan:
            state = "adopted" if d.fixed else "orphan"
            where = f"booking={d.booking_id}"
        else:
            state = "fixed" if d.fixed else "differs"
            where = f"payment={d.payment_id or '-'}"
        typer.echo(f"{state}\t{d.ref}\tlocal={d.local or 'missing'}\tstripe={d.gateway}\t{where}")
    typer.echo(
        f"{len(diffs)} difference(s); {sum(d.fixed for d in diffs)} fixed; {swept} stored event(s) processed"
    )
    if any(not d.fixed for d in diffs) and fix:
        raise typer.Exit(1)
