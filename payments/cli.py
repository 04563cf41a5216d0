"""`educonnect payments …`: the reconciliation command (a typer sub-app registered by the
CLI).

`educonnect payments reconcile --since 2030-03-01T00:00:00Z [--fix]` lists the gateway's
PaymentIntents created since that instant and prints every local payment whose state
differs (`differs`), and every orphan — an intent with metadata `booking_id` but no local
payment, e.g. after a crash between the Stripe call and the commit (`orphan`); with `--fix`
each is moved through the same compare-and-swap path as the webhooks (`fixed`), an orphan
gets its payment row first and is then applied like a webhook (`adopted`: a succeeded one
confirms its booking, or is refunded in full when the seat is gone), then the sweep runs
(`payments sweep`: stored webhook events not processed, refunds left pending, open intents
of canceled bookings — due for `--older-than` seconds, default 60). Exit code 1 when
differences remain unfixed.

`educonnect payments sweep [--older-than 60]` runs only the sweep (beat's `payments.sweep`).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

payments_app = typer.Typer(
    no_args_is_help=True,
    help="Payments: reconciliation with Stripe, and the sweep of work left pending.",
)


def _parse_since(value: str) -> datetime:
    if value.endswith("d") and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(days=int(value[:-1]))
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@payments_app.command("reconcile")
def reconcile_cmd(
    since: Annotated[str, typer.Option(help="RFC 3339 instant, or N days back as '7d'")] = "7d",
    fix: Annotated[bool, typer.Option("--fix", help="Repair through the CAS path")] = False,
    older_than: Annotated[
        float, typer.Option(help="With --fix: sweep work due for at least this many seconds")
    ] = 60.0,
) -> None:
    """Compare Stripe's PaymentIntents with our payments; report (and with --fix repair)."""
    from core.db import dispose_engines
    from payments import jobs
    from payments.stripe_adapter import get_provider

    async def main() -> tuple[list[jobs.Difference], dict[str, int]]:
        try:
            diffs = await jobs.reconcile(get_provider(), since=_parse_since(since), fix=fix)
            swept = await jobs.sweep(get_provider(), older_than_s=older_than) if fix else {}
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
    typer.echo(f"{len(diffs)} difference(s); {sum(d.fixed for d in diffs)} fixed; {_swept(swept)}")
    if any(not d.fixed for d in diffs) and fix:
        raise typer.Exit(1)


def _swept(done: dict[str, int]) -> str:
    return (
        f"{done.get('events', 0)} stored event(s) processed, {done.get('refunds', 0)} pending"
        f" refund(s) sent, {done.get('intents', 0)} open intent(s) of canceled bookings canceled"
    )


@payments_app.command("sweep")
def sweep_cmd(
    older_than: Annotated[
        float, typer.Option(help="Only work due for at least this many seconds")
    ] = 60.0,
) -> None:
    """Finish work left by a dead process or a lost task: unprocessed webhook events,
    pending refunds, open intents of canceled bookings (what beat's `payments.sweep` does)."""
    from core.db import dispose_engines
    from payments import jobs
    from payments.stripe_adapter import get_provider

    async def main() -> dict[str, int]:
        try:
            return await jobs.sweep(get_provider(), older_than_s=older_than)
        finally:
            await dispose_engines()

    typer.echo(_swept(asyncio.run(main())))
