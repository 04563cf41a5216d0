"""`educonnect notifications …`: run the outbox consumers, re-queue dead letters.

A typer sub-app (`notifications_app`), registered by the `educonnect` command.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console

from core.logging import configure_logging, get_logger
from core.settings import get_settings

notifications_app = typer.Typer(no_args_is_help=True, help="Notifications and live updates.")
console = Console()
log = get_logger(__name__)


def _connect(name: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        get_settings().libpq_database_url, autocommit=True, application_name=name
    )


@notifications_app.command("relay")
def relay(
    consumer: Annotated[str, typer.Option(help="notifications | live")] = "notifications",
    once: Annotated[bool, typer.Option("--once", help="Drain what is there, then exit")] = False,
) -> None:
    """Feed a consumer from the outbox in commit order until SIGTERM: `notifications`
    (rows + delivery tasks) or `live` (seat updates to Redis for the SSE routes). Each has
    its own checkpoint; run one process per consumer."""
    from indexer.relay import Relay, RelayConfig, StopFlag, supervise
    from notifications.consumer import CONSUMERS, make_sink

    configure_logging()
    if consumer not in CONSUMERS:
        raise typer.BadParameter(f"unknown consumer {consumer!r} (known: {', '.join(CONSUMERS)})")
    s = get_settings()
    cfg = RelayConfig(
        consumer=consumer, partitions=1, batch_size=500,
        poll_interval_s=s.notifications_poll_interval_s, retention_s=s.outbox_retention_s,
    )  # fmt: skip

    def open_relay() -> tuple[Relay, psycopg.Connection[Any]]:
        sink = make_sink(consumer)
        conn = _connect(f"educonnect-{consumer}")
        listen = _connect(f"educonnect-{consumer}-listen")
        return Relay(conn, sink, cfg, on_commit=sink.after_commit), listen

    if once:
        r, listen = open_relay()
        listen.close()
        n = r.drain()
        console.print(f"{consumer}: applied {n} events")
        r.conn.close()
        return
    log.info("notifications_relay_started", consumer=consumer)
    supervise(open_relay, stop=StopFlag())
    log.info("notifications_relay_stopped", consumer=consumer)


@notifications_app.command("retry-dead")
def retry_dead(
    ids: Annotated[list[str] | None, typer.Argument(help="Notification ids (default: all)")] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind, e.g. booking.confirmed")] = None,
) -> None:
    """Move dead letters back to `queued` (attempts reset) and enqueue their delivery.
    Exit 2 on a malformed id."""
    from notifications import service
    from notifications.tasks import enqueue

    try:
        wanted = [uuid.UUID(i) for i in ids] if ids else None
    except ValueError as exc:
        raise typer.BadParameter(f"not a notification id: {exc}") from None
    with _connect("educonnect-cli") as conn, conn.transaction():
        moved = service.requeue_dead(conn, ids=wanted, kind=kind)
    enqueue(moved)
    console.print(f"re-queued {len(moved)} dead letter(s)")
